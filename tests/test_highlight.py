"""Editor support: the Pygments lexer reads every example without an error token and classes keywords,
labels, dotted names, ops, numbers, strings and comments as the language means them; the TextMate grammar
is valid JSON whose regexes compile, is the one the lexer's rules give, and, scanned the way an editor
scans (the earliest match wins), classes every example's text as the lexer does."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import import_module
from pathlib import Path

import pytest
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, String

from netdsl.frontend.highlight import RULES, NetDSLLexer, textmate_json
from netdsl.ops import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "examples").glob("*.net")) + sorted((ROOT / "stdlib").glob("*.net"))
TEXTMATE = ROOT / "docs" / "editors" / "netdsl.tmLanguage.json"


def lex(text: str) -> list[tuple[object, str]]:
    return [(t, v) for t, v in NetDSLLexer().get_tokens(text) if v.strip()]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_every_example_lexes_without_an_error_token(path):
    text = path.read_text()
    tokens = lex(text)
    assert not [v for t, v in tokens if t in Error]
    assert "".join(v for _, v in NetDSLLexer().get_tokens(text)).rstrip("\n") == text.rstrip("\n")
    assert sum(1 for t, _ in tokens if t in Comment) == text.count("#") - sum(s.count("#") for s in
                                                                                re.findall(r'"[^"\n]*"', text))


def test_an_unknown_character_is_an_error_token():
    assert any(t in Error for t, _ in lex("network n { input x: f32[1]; output x }"))


def test_token_classes():
    src = ('network n {\n    input x: f32[N, 4]  # x\n    param a.block.1.w: [4] = normal(std=0.5)\n'
           '    y = x -> block: linear(4, bias=false) -> (output: relu) -> my_block(1e-5, "same")\n'
           '    output y, w = block.weight\n}\n')
    tokens = lex(src)
    kinds = {v: t for t, v in reversed(tokens)}  # the first class of each text
    assert kinds["network"] in Keyword and kinds["input"] in Keyword and kinds["param"] in Keyword
    assert kinds["n"] in Name.Class and kinds["f32"] in Keyword.Type
    labels = [v for t, v in tokens if t in Name.Label]
    assert labels == ["block", "output"]  # keywords as labels are labels
    assert [v for t, v in tokens if t in Name.Property] == ["block", "1", "w", "weight"]  # dotted parts
    # keyword arguments (and, as the rules see only the `,` before it, the output name `w`)
    assert [v for t, v in tokens if t in Name.Attribute] == ["std", "bias", "w"]
    assert ("block", Name) in [(v, t) for t, v in tokens]  # the head of `block.weight`: a name
    assert kinds["linear"] in Name.Builtin and kinds["relu"] in Name.Builtin and kinds["my_block"] is Name
    assert kinds["->"] in Operator and kinds["="] in Operator
    assert kinds["1e-5"] in Number.Float and kinds["4"] in Number.Integer and kinds['"same"'] in String
    assert kinds["false"] in Keyword.Constant and kinds["# x"] in Comment


def test_every_op_of_the_registry_is_a_builtin():
    for name in REGISTRY:
        if not name.startswith("fused_") and name != "parameter":
            assert lex(f"x -> {name}")[-1] == (Name.Builtin, name), name


def test_the_lexer_is_registered_in_the_package_metadata():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = meta["project"]["entry-points"]["pygments.lexers"]["netdsl"]
    module, attr = target.split(":")
    assert getattr(import_module(module), attr) is NetDSLLexer
    assert NetDSLLexer.name == "netdsl" and "*.net" in NetDSLLexer.filenames


# ---- TextMate -----------------------------------------------------------------------------------

def test_the_textmate_grammar_is_valid_and_current():
    grammar = json.loads(TEXTMATE.read_text())
    assert grammar["scopeName"] == "source.netdsl" and grammar["patterns"]
    for p in grammar["patterns"]:
        re.compile(p["match"])
        scopes = [p["name"]] if "name" in p else [c["name"] for c in p["captures"].values()]
        assert scopes and all(s.endswith(".netdsl") for s in scopes)
    assert TEXTMATE.read_text() == textmate_json(), \
        "regenerate it: python -m netdsl.frontend.highlight > docs/editors/netdsl.tmLanguage.json"


def _scan_like_an_editor(text: str, patterns: list[dict]) -> list[tuple[str, str]]:
    """(text, scope) of each scoped piece, line by line; at each point the pattern whose match starts
    earliest wins, the first listed among equals (TextMate's rule)."""
    compiled = [(re.compile(p["match"]), p) for p in patterns]
    out = []
    for line in text.split("\n"):
        pos = 0
        while pos < len(line):
            best = None
            for rx, p in compiled:
                m = rx.search(line, pos)
                if m and m.end() > m.start() and (best is None or m.start() < best[0].start()):
                    best = (m, p)
            if best is None:
                break
            m, p = best
            if "name" in p:
                out.append((m.group(), p["name"]))
            for k, c in sorted(p.get("captures", {}).items()):
                if m.group(int(k)):
                    out.append((m.group(int(k)), c["name"]))
            pos = m.end()
    return out


def test_an_editor_classes_every_example_as_the_lexer_does():
    grammar = json.loads(TEXTMATE.read_text())
    pairs = {(t, s) for _, groups in RULES for t, s in groups if s}
    assert len({t for t, _ in pairs}) == len({s for _, s in pairs}) == len(pairs)  # one token type per scope
    scope_of = {t: f"{s}.netdsl" for t, s in pairs}
    for path in SOURCES:
        text = path.read_text()
        assert _scan_like_an_editor(text, grammar["patterns"]) == [(v, scope_of[t]) for t, v in lex(text)], path.name
