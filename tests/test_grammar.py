"""The grammar is conflict-free LALR(1) with no terminal collisions (Lark's strict mode)."""

from importlib import resources

from lark import Lark


def test_grammar_builds_in_strict_mode():
    grammar = resources.files("netdsl.grammar").joinpath("netdsl.lark").read_text()
    Lark(grammar, parser="lalr", lexer="contextual", strict=True, propagate_positions=True, maybe_placeholders=True)
