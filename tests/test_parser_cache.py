"""The parser cache shared by processes: read when it holds this grammar's parser, rebuilt when it is
missing, damaged or made for another grammar, and never more than a cost in time when it cannot be written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netdsl.frontend import parser

_STATUS = "from netdsl.frontend import parser as p; p.parse('network n { input x: f32[1] output x }'); " \
          "print(p.cache_status)"


def _status_of_a_new_process(cache: Path) -> str:
    env = {**os.environ, parser.CACHE_ENV: str(cache)}
    out = subprocess.run([sys.executable, "-c", _STATUS], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_a_second_process_reads_the_parser_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    assert _status_of_a_new_process(cache) == "miss"
    (file,) = cache.iterdir()
    built = file.read_bytes()
    assert _status_of_a_new_process(cache) == "hit"
    assert list(cache.iterdir()) == [file] and file.read_bytes() == built  # read, not rewritten


def test_a_changed_grammar_gets_its_own_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv(parser.CACHE_ENV, str(tmp_path))
    grammar = (Path(parser.__file__).parents[2] / "grammar" / "netdsl.lark").read_text()
    parser.build_parser(grammar)
    assert parser.cache_status == "miss"
    parser.build_parser(grammar)
    assert parser.cache_status == "hit"
    # a grammar that differs only in a comment is another grammar: built, not read
    changed = grammar + "\n// one more line\n"
    assert parser.cache_file(changed) != parser.cache_file(grammar)
    p = parser.build_parser(changed)
    assert parser.cache_status == "miss" and len(list(tmp_path.iterdir())) == 2
    # and one that really differs parses differently: `%` is an operator only in the changed grammar
    changed = grammar.replace('| product "//" unary', '| product "//" unary\n        | product "%" unary')
    p = parser.build_parser(changed)
    assert parser.cache_status == "miss"
    p.parse("network n { input x: f32[1] output x % x }")


def test_a_damaged_cache_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv(parser.CACHE_ENV, str(tmp_path))
    grammar = "start: \"a\"+\n"
    parser.cache_file(grammar).write_bytes(b"not a parser")
    p = parser.build_parser(grammar)
    assert parser.cache_status == "miss" and p.parse("aa")
    parser.build_parser(grammar)
    assert parser.cache_status == "hit"


def test_a_cache_dir_that_cannot_be_made_costs_only_time(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(parser.CACHE_ENV, str(blocker / "cache"))  # a directory inside a file: never
    p = parser.build_parser("start: \"a\"+\n")
    assert parser.cache_status == "off" and p.parse("aaa")
    assert [f.name for f in tmp_path.iterdir()] == ["a_file"]  # no stray temporary file either


def test_the_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(parser.CACHE_ENV, str(tmp_path / "x"))
    assert parser.cache_dir() == tmp_path / "x"
    monkeypatch.delenv(parser.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert parser.cache_dir() == tmp_path / "xdg" / "netdsl"


@pytest.fixture(autouse=True)
def _keep_status():
    """build_parser records what it did in a module global; leave it as this process's parser set it."""
    status = parser.cache_status
    yield
    parser.cache_status = status
