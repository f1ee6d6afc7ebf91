"""Syntax highlighting for .net files: a Pygments lexer (``NetDSLLexer``, registered as "netdsl" through
the package's ``pygments.lexers`` entry point) and the TextMate grammar of editors
(``docs/editors/netdsl.tmLanguage.json``), both made from one table of rules so they agree.

    python -m netdsl.frontend.highlight > docs/editors/netdsl.tmLanguage.json

regenerates the TextMate grammar (after an op is added: op names come from the registry). The rules are
regular expressions that Python's ``re``, Pygments and TextMate's Oniguruma read alike (fixed-width
look-behinds only). Keywords used as names are told by what follows or precedes them, as the parser
does: a label after `->` or `(` (`-> block: ...`), a part of a dotted name (`x.block.weight`), a
keyword argument after `(` or `,` (`f(input=1)`).
"""

from __future__ import annotations

import json
import sys

from pygments.lexer import RegexLexer, bygroups
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
    _TokenType,
)

from ..ops import ALIASES, REGISTRY

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
DTYPES = ("f32", "f16", "bf16", "f64", "i64", "i32", "bool")


def op_names() -> list[str]:
    """The layers a model may call: the registry's ops and aliases, less the ones only passes make."""
    names = set(REGISTRY) | set(ALIASES)
    return sorted(n for n in names if not n.startswith("fused_") and n != "parameter")


def _words(words) -> str:
    return r"\b(?:" + "|".join(sorted(words, key=lambda w: (-len(w), w))) + r")\b"


# (regex, one (Pygments token, TextMate scope) per group, or a single pair for the whole match), in the
# order they are tried; one token type per scope (the subtypes style as their parents); a keyword followed by `.` is the head of a dotted name (`block.weight`).
RULES: list[tuple[str, list[tuple[_TokenType, str]]]] = [
    (r"#[^\n]*", [(Comment.Single, "comment.line.number-sign")]),
    (r'"[^"\n]*"', [(String.Double, "string.quoted.double")]),
    (rf"(?:(?<=->)|(?<=\())(\s*)({NAME})(\s*)(:)",  # a label, keyword or not
     [(Whitespace, ""), (Name.Label, "entity.name.label"), (Whitespace, ""),
      (Punctuation.Separator, "punctuation.separator")]),
    (rf"(?:(?<=\()|(?<=,))(\s*)({NAME})(\s*)(=)",  # a keyword argument or a parameter's default
     [(Whitespace, ""), (Name.Attribute, "variable.parameter"), (Whitespace, ""), (Operator, "keyword.operator")]),
    (rf"(?<=[A-Za-z0-9_])(\.)({NAME}|[0-9]+)",  # a part of a dotted name
     [(Punctuation.Accessor, "punctuation.accessor"), (Name.Property, "variable.other.member")]),
    (rf"\b(block)(\s+)({NAME})", [(Keyword.Declaration, "keyword.other.declaration"), (Whitespace, ""),
                                  (Name.Function, "entity.name.function")]),
    (rf"\b(network)(\s+)({NAME})", [(Keyword.Declaration, "keyword.other.declaration"), (Whitespace, ""),
                                    (Name.Class, "entity.name.type")]),
    (r"\b(?:block|network|input|output|param)\b(?!\s*\.)", [(Keyword.Declaration, "keyword.other.declaration")]),
    (r"\bimport\b(?!\s*\.)", [(Keyword.Namespace, "keyword.control.import")]),
    (r"\b(?:true|false)\b(?!\s*\.)", [(Keyword.Constant, "constant.language.boolean")]),
    (_words(DTYPES), [(Keyword.Type, "storage.type")]),
    (_words(op_names()), [(Name.Builtin, "support.function.builtin")]),
    (NAME, [(Name, "variable.other")]),
    (r"[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+",
     [(Number.Float, "constant.numeric.float")]),
    (r"[0-9]+", [(Number.Integer, "constant.numeric.integer")]),
    (r"->", [(Operator.Arrow, "keyword.operator.arrow")]),
    (r"//|[-+*/=]", [(Operator, "keyword.operator")]),
    (r"[()\[\]{},:.]", [(Punctuation, "punctuation")]),
    (r"\s+", [(Whitespace, "")]),
]


class NetDSLLexer(RegexLexer):
    """netdsl model files (.net)."""

    name = "netdsl"
    aliases = ["netdsl"]
    filenames = ["*.net"]
    mimetypes = ["text/x-netdsl"]

    tokens = {"root": [(regex, groups[0][0] if len(groups) == 1 else bygroups(*(t for t, _ in groups)))
                       for regex, groups in RULES]}


def _scope(name: str) -> str:
    return f"{name}.netdsl"


def textmate_grammar() -> dict:
    """The TextMate grammar of .net files, rule for rule the lexer's (whitespace left unscoped)."""
    patterns = []
    for regex, groups in RULES:
        if len(groups) == 1:
            if groups[0][1]:
                patterns.append({"match": regex, "name": _scope(groups[0][1])})
            continue
        captures = {str(i): {"name": _scope(scope)} for i, (_, scope) in enumerate(groups, 1) if scope}
        patterns.append({"match": regex, "captures": captures})
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "netdsl",
        "scopeName": "source.netdsl",
        "fileTypes": ["net"],
        "patterns": patterns,
    }


def textmate_json() -> str:
    return json.dumps(textmate_grammar(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(textmate_json())
