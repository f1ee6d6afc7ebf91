"""The README's first-model walkthrough stays true: its model file and every command it shows run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np

from netdsl.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _walkthrough() -> tuple[str, list[list[str]], str]:
    """(tiny.net's text, the netdsl commands shown after it, the error block shown)."""
    model = re.search(r"Write `tiny.net`:\n\n```\n(.*?)```", README, re.S).group(1)
    rest = README[README.index("Write `tiny.net`:"):README.index("## Weights from PyTorch")]
    commands = [shlex.split(line.split("#")[0]) for line in rest.splitlines() if line.startswith("netdsl ")]
    error = re.search(r"```\n(tiny\.net:\d+:\d+: error:.*?)```", rest, re.S).group(1)
    return model, commands, error


def test_the_first_model_and_its_commands(tmp_path, monkeypatch, capsys):
    model, commands, _ = _walkthrough()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NETDSL_QUIET_INTERPRETER", "1")
    Path("tiny.net").write_text(model)
    np.save("x.npy", np.random.rand(4, 3, 32, 32).astype(np.float32))  # the README's python -c line
    assert len(commands) >= 7
    for argv in commands:
        rc = main(argv[1:])
        out, err = capsys.readouterr()
        assert rc == 0, f"{' '.join(argv)} exited {rc}\n{out}{err}"
    assert Path("y.npy").exists() and np.load("y.npy").shape == (4, 10)
    assert Path("tiny.svg").read_text().startswith("<svg") or "<svg" in Path("tiny.svg").read_text()
    assert Path("tiny.net").read_text() == model, "the README's model is not in the canonical layout (netdsl fmt)"


def test_the_error_shown_is_the_error_given(tmp_path, capsys):
    model, _, shown = _walkthrough()
    path = tmp_path / "tiny.net"
    path.write_text(model.replace("bn1: batchnorm", "bn1: btachnorm"))
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.replace(str(path), "tiny.net") == shown
