"""Every entry of the catalogue of bad inputs (tests/error_catalogue.py) fails the way a user deserves.

A model file or a command line: exit code 2, one error on stderr (never a traceback) with the key words,
a hint, and, where the mistake is in a file, ``file:line:col`` and a caret under the text at fault; and
no file left behind. An API call: a ``NetDSLError`` with the key words and a hint.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netdsl import NetDSLError
from netdsl.cli import main

from error_catalogue import SMALL, Api, Cli, Source, catalogue

CATALOGUE = catalogue()


def test_the_catalogue_is_large_and_its_names_unique():
    ids = [e.id for e in CATALOGUE]
    assert len(ids) >= 250
    assert len(set(ids)) == len(ids)
    kinds = {type(e) for e in CATALOGUE}
    assert kinds == {Source, Cli, Api}


def _position(text: str, at: str, nth: int) -> tuple[int, int]:
    """(line, col), 1-based, of the nth occurrence of ``at`` in ``text``."""
    start = -1
    for _ in range(nth):
        start = text.index(at, start + 1)
    line = text.count("\n", 0, start) + 1
    return line, start - (text.rfind("\n", 0, start) + 1) + 1


def _assert_located(err: str, path: Path, text: str, at: str, nth: int = 1) -> None:
    line, col = _position(text, at, nth)
    head = err.splitlines()[0]
    assert head.startswith(f"{path}:{line}:{col}: error: "), f"expected {path.name}:{line}:{col}\n{err}"
    caret = next(s for s in err.splitlines() if re.fullmatch(r"\s*\| *\t*[ \t]*\^+", s))
    assert caret.count("^") >= 1


def _assert_words(message: str, words) -> None:
    for word in words:
        assert word.lower() in message.lower(), f"`{word}` not in:\n{message}"


def _run_cli(capsys, argv) -> str:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own checks (an unknown command or choice) exit 2 with a usage line
        rc = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    assert rc == 2, f"exit {rc}\n{out}{err}"
    return err


def _contents(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.id)
def test_bad_input(entry, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if isinstance(entry, Api):
        with pytest.raises(NetDSLError) as info:
            entry.call(tmp_path)
        _assert_words(str(info.value), entry.words)
        assert info.value.hint, f"no hint: {info.value}"
        return
    model = tmp_path / "model.net"
    if isinstance(entry, Source):
        model.write_bytes(entry.raw if entry.raw is not None else entry.text.encode("utf-8"))
        for name, text in entry.imports.items():
            (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        argv = ("init", model, "-o", tmp_path / "w.safetensors")
        text = entry.text
    else:
        text = entry.model if entry.model is not None else SMALL
        model.write_text(text)
        for name, write in entry.files.items():
            write(tmp_path / name)
        argv = tuple(a.format(model=model, dir=tmp_path) for a in entry.argv)
    before = _contents(tmp_path)
    err = _run_cli(capsys, argv)
    assert _contents(tmp_path) == before, "a file was left behind or changed"
    if "usage: netdsl" in err:  # argparse's own errors: a usage line, no hint
        _assert_words(err, entry.words)
        return
    _assert_words(err, entry.words)
    assert "\nhint: " in err, f"no hint:\n{err}"
    if entry.at is not None:
        where = getattr(entry, "where", None)
        if where is not None:  # a mistake inside an imported file is shown there
            model, text = tmp_path / where, entry.imports[where]
        _assert_located(err, model, text, entry.at, getattr(entry, "nth", 1))
