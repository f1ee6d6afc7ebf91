"""`netdsl fmt`: one canonical layout that keeps every comment, is idempotent, and never changes what a
program means — the elaborated graph's printed IR and its parameter names are the same before and after,
for every example, the standard library and a few hundred fuzzed programs."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl import NetDSLError
from netdsl.cli import main
from netdsl.frontend.fmt import MAX_WIDTH, format_source
from netdsl.ir.printer import format_graph

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import fuzz  # noqa: E402  (the token-level mutator of programs)

SOURCES = sorted((ROOT / "examples").glob("*.net")) + sorted((ROOT / "stdlib").glob("*.net"))
# the language's tokens, comments included (as benchmarks/fuzz.py reads them): an oracle independent of
# the formatter's own (Lark's) tokens
TOKEN = re.compile(r'#[^\n]*|"[^"\n]*"|[A-Za-z_]\w*|\d+\.\d*(?:[eE][-+]?\d+)?|(?<!\w)\.\d+(?:[eE][-+]?\d+)?|\d+'
                   r'(?:[eE][-+]?\d+)?|->|//|\S')  # (`a.1` is a dotted name, `.1` alone a number)


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def meaning(source: str, file: str) -> str | tuple[str, str]:
    """What a program means: its printed IR and parameter table, or its error's message."""
    try:
        graph = netdsl.load_source(source, file)
    except NetDSLError as e:
        return ("error", e.message)
    params = "\n".join(f"{k}: {tuple(v.shape)}" for k, v in sorted(graph.used_params().items()))
    return format_graph(graph) + "\n" + params


def stdlib_as_file(path: Path) -> str:
    """The file name a source is loaded under: imports inside it resolve as they do for the file."""
    return str(path)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_formatting_keeps_the_meaning_and_every_comment(path):
    source = path.read_text()
    out = format_source(source, str(path))
    assert format_source(out, str(path)) == out  # idempotent
    assert tokens(out) == tokens(source)  # the same tokens and comments, in the same order
    file = stdlib_as_file(path)
    if path.parent.name == "stdlib":  # a module of blocks: give them a network that uses them
        source, out = source + STDLIB_USER, out + STDLIB_USER
    before, after = meaning(source, file), meaning(out, file)
    assert not isinstance(before, tuple), before  # every example compiles
    assert after == before


# a network over every block of the standard library's `transformer` module
STDLIB_USER = """
network uses_the_module {
    input src: f32[N, S=5, 32], tgt: f32[N, T=4, 32]
    y = tgt -> t: transformer(src, 32, 4, 1, 1, 64)
    m = src -> pre: encoder_layer_pre(32, 4, 64)
    output y, z = tgt -> dec: decoder_layer_pre(m, 32, 4, 64)
}
"""


def test_the_layout_rules():
    messy = ('network   n{input x:f32[N,3,H=8,W=8]\n'
             '   # a comment on its own line\n'
             'y=x->c1:conv2d(4,3,padding=1 ,bias = false)->relu   # trailing\n'
             '\n\n\n'
             'z = y[:,0] -> flatten(-1)\n'
             '  -> linear(2*3//1 - -1)\n'
             'output y,z}\n'
             'block b(c=1){input x output x}')
    assert format_source(messy) == (
        'network n {\n'
        '    input x: f32[N, 3, H=8, W=8]\n'
        '    # a comment on its own line\n'
        '    y = x -> c1: conv2d(4, 3, padding=1, bias=false) -> relu  # trailing\n'
        '\n'
        '    z = y[:, 0] -> flatten(-1)\n'
        '        -> linear(2 * 3 // 1 - -1)\n'  # the chain's source is not a bare name: 4 in
        '    output y, z\n'
        '}\n'
        '\n'
        'block b(c=1) {\n'
        '    input x\n'
        '    output x\n'
        '}\n')


@pytest.mark.parametrize("src, expected", [
    ("", ""),
    ("# only\n\n\n# comments", "# only\n\n# comments\n"),
    ("\ufeffnetwork n {\r\n  input x: f32[1]  # c\r\n output x\r\n}\r\n",
     "network n {\n    input x: f32[1]  # c\n    output x\n}\n"),
    ("network n { }", "network n {\n}\n"),
    ("network n {  # head\n\n\n input x: f32[1]\n\n\n}  # end\n# tail\n",
     "network n {  # head\n    input x: f32[1]\n}  # end\n\n# tail\n"),
    ('import transformer\nimport "a.net"\n# c\nnetwork n{input x:f32[1] output x}',
     'import transformer\nimport "a.net"\n\n# c\nnetwork n {\n    input x: f32[1]\n    output x\n}\n'),
    ("network n {\n input x: f32[1]\n y = x ->  # why\n relu\n output y\n}",
     "network n {\n    input x: f32[1]\n    y = x ->  # why\n        relu\n    output y\n}\n"),
    ("block b(a,\n b=2) {\n input x\n output x -> f(\n a, # one\n b)\n}",
     "block b(a,\n        b=2) {\n    input x\n    output x -> f(a,  # one\n                  b)\n}\n"),
])
def test_edges_of_files(src, expected):
    assert format_source(src) == expected


def test_chains_continue_under_their_first_arrow_or_four_in():
    src = ("network n {\n input x: f32[N, 4]\n"
           " a = x -> relu\n -> relu\n"                       # under the first `->`
           " b = (x + a)\n -> relu -> relu\n"                 # a longer source: 4 in
           " c = (b -> relu\n -> tanh)\n"                     # inside brackets too
           " output (b + c -> relu\n -> tanh), a\n}\n")      # ... but under the chain's first token
    lines = format_source(src).splitlines()
    assert lines[3] == " " * 10 + "-> relu"
    assert lines[4:6] == ["    b = (x + a)", "        -> relu -> relu"]
    assert lines[6:8] == ["    c = (b -> relu", " " * 11 + "-> tanh)"]
    assert lines[8:10] == ["    output (b + c -> relu", " " * 12 + "-> tanh), a"]


def test_long_chains_are_broken_one_stage_per_line():
    stages = " -> ".join(f"l{i}: linear({i + 1})" for i in range(12))
    src = f"network n {{\n    input x: f32[N, 4]\n    y = x -> {stages}\n    output y\n}}\n"
    out = format_source(src)
    code = [line for line in out.splitlines() if "linear" in line]
    assert len(code) == 12 and all(len(line) <= MAX_WIDTH for line in code)
    assert [line.strip().removeprefix("y = x ").removeprefix("-> ") for line in code] == stages.split(" -> ")
    assert meaning(out, "m.net") == meaning(src, "m.net")


def test_trailing_comments_on_consecutive_lines_line_up():
    src = "network n {\n input x: f32[1] # a\n y = x -> relu -> relu # b\n\n output y # c\n}\n"
    lines = format_source(src).splitlines()
    assert lines[1].index("# a") == lines[2].index("# b") == len("    y = x -> relu -> relu  ")
    assert lines[4] == "    output y  # c"


def test_comments_anywhere_are_kept_in_order(tmp_path):
    rng = random.Random(7)
    for path in SOURCES[:6]:
        lines = path.read_text().splitlines()
        for k in sorted(rng.sample(range(len(lines)), min(8, len(lines))), reverse=True):
            if '"' not in lines[k] and "#" not in lines[k]:
                lines.insert(k, f"# note {k}") if k % 2 else lines.__setitem__(k, lines[k] + f"  # note {k}")
        src = "\n".join(lines) + "\n"
        out = format_source(src)
        assert tokens(out) == tokens(src) and format_source(out) == out


def test_fuzzed_programs_that_parse_keep_their_meaning():
    """200 mutations of the examples and the standard library that parse (most mutations do not)."""
    rng, seeds, kept = random.Random(11), fuzz.seeds(), 0
    for _ in range(4000):
        src = fuzz.mutate(rng.choice(seeds), rng)
        try:
            out = format_source(src, "fuzz.net")
        except NetDSLError:
            continue  # a syntax error: nothing to format (the CLI says so, exit 2)
        assert format_source(out, "fuzz.net") == out, src
        assert tokens(out) == tokens(src), src
        assert meaning(out, "fuzz.net") == meaning(src, "fuzz.net"), src
        kept += 1
        if kept == 200:
            break
    assert kept == 200


def test_space_between_tokens_does_not_matter():
    """Programs that differ only in spaces (and in line breaks other than before `->` or after `,`)
    format alike."""
    rng = random.Random(3)

    def gap(before: str, space: str) -> str:
        if "\n" in space:
            return space
        if before == "(" and rng.random() < 0.3:
            return "\n"  # a line break after `(`: dropped
        return " " * rng.randint(0 if not space else 1, 3)

    for path in SOURCES:
        src = path.read_text()
        found = list(TOKEN.finditer(src))
        respaced = src[:found[0].end()] + "".join(
            gap(a.group(), src[a.end():b.start()]) + b.group() for a, b in zip(found, found[1:])) + "\n"
        assert respaced != src and tokens(respaced) == tokens(src)
        assert format_source(respaced) == format_source(src), path.name


# ---- the command line ---------------------------------------------------------------------------

UGLY = "network n {input x: f32[1]\n  output x->relu}\n"
PRETTY = "network n {\n    input x: f32[1]\n    output x -> relu\n}\n"


def test_check_names_the_files_that_would_change_and_changes_nothing(tmp_path, capsys):
    ugly, pretty = tmp_path / "ugly.net", tmp_path / "pretty.net"
    ugly.write_text(UGLY)
    pretty.write_text(PRETTY)
    assert main(["fmt", "--check", str(ugly), str(pretty)]) == 1
    out = capsys.readouterr().out
    assert str(ugly) in out and str(pretty) not in out
    assert ugly.read_text() == UGLY
    assert main(["fmt", "--check", str(pretty)]) == 0


def test_fmt_rewrites_in_place_and_leaves_no_temporary_file(tmp_path):
    ugly = tmp_path / "ugly.net"
    ugly.write_text(UGLY)
    assert main(["fmt", str(ugly)]) == 0
    assert ugly.read_text() == PRETTY
    assert [p.name for p in tmp_path.iterdir()] == ["ugly.net"]
    assert main(["fmt", "--check", str(ugly)]) == 0


def test_a_syntax_error_exits_2_without_a_traceback_and_writes_nothing(tmp_path):
    ugly, bad = tmp_path / "a.net", tmp_path / "b.net"
    ugly.write_text(UGLY)
    bad.write_text("network n {\n    input x: f32[1]\n    output x -> \n}\n")
    r = subprocess.run([sys.executable, "-m", "netdsl", "fmt", str(ugly), str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{bad}:4:1" in r.stderr and "^" in r.stderr
    assert ugly.read_text() == UGLY  # formatted only once every file is known to parse
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.net", "b.net"]


def test_a_missing_file_is_an_error(tmp_path, capsys):
    assert main(["fmt", str(tmp_path / "none.net")]) == 2
    assert "cannot read" in capsys.readouterr().err
