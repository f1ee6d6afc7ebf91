"""Parsing: .net text -> AST, with Lark (LALR, positions on) and friendly syntax errors."""

from __future__ import annotations

import functools
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..errors import NetDSLError, SourceLoc
from . import ast

KEYWORDS = {"block", "network", "input", "output", "true", "false"}


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("netdsl.grammar").joinpath("netdsl.lark").read_text()
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True)


# Lark's terminal names, as a user would write them.
_TOKEN_NAMES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string", "LPAR": "`(`",
    "RPAR": "`)`", "LBRACE": "`{`", "RBRACE": "`}`", "LSQB": "`[`", "RSQB": "`]`", "COMMA": "`,`",
    "COLON": "`:`", "EQUAL": "`=`", "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`",
    "__ANON_0": "`->`", "BLOCK": "`block`", "NETWORK": "`network`", "INPUT": "`input`", "OUTPUT": "`output`",
    "TRUE": "`true`", "FALSE": "`false`", "$END": "end of file",
}


class _Builder(Transformer):
    """Parse tree -> AST. Method names are the grammar's rule (and alias) names."""

    def __init__(self, file: str, source: str):
        super().__init__()
        self.file, self.source = file, source

    def _loc(self, meta_or_token) -> SourceLoc:
        m = meta_or_token
        if isinstance(m, Token):
            return SourceLoc(self.file, m.line, m.column, len(str(m)), self.source)
        if getattr(m, "empty", False) or not hasattr(m, "line"):
            return SourceLoc(self.file, 1, 1, 1, self.source)
        width = m.end_column - m.column if m.end_line == m.line else len(self.source.splitlines()[m.line - 1]) - m.column + 1
        return SourceLoc(self.file, m.line, m.column, max(1, width), self.source)

    # --- atoms -------------------------------------------------------------------------------
    def int(self, children):
        (t,) = children
        return ast.Num(int(t), self._loc(t))

    def float(self, children):
        (t,) = children
        return ast.Num(float(t), self._loc(t))

    def string(self, children):
        (t,) = children
        return ast.Str(str(t)[1:-1], self._loc(t))

    @v_args(meta=True)
    def true(self, meta, children):
        return ast.Bool(True, self._loc(meta))

    @v_args(meta=True)
    def false(self, meta, children):
        return ast.Bool(False, self._loc(meta))

    def name(self, children):
        (t,) = children
        return ast.Name(str(t), self._loc(t))

    @v_args(meta=True)
    def kwarg(self, meta, children):
        name, value = children
        return ast.Kwarg(str(name), value, self._loc(name))

    def _call(self, meta, children) -> ast.Call:
        func, *args = children
        args = [a for a in args if a is not None]
        return ast.Call(str(func), [a for a in args if not isinstance(a, ast.Kwarg)],
                        [a for a in args if isinstance(a, ast.Kwarg)], self._loc(meta), self._loc(func))

    @v_args(meta=True)
    def call(self, meta, children):
        return self._call(meta, children)

    @v_args(meta=True)
    def tuple(self, meta, children):
        return ast.Tuple(list(children), self._loc(meta))

    @v_args(meta=True)
    def neg(self, meta, children):
        return ast.Neg(children[0], self._loc(meta))

    def _binop(self, op, meta, children):
        left, right = children
        return ast.BinOp(op, left, right, self._loc(meta))

    @v_args(meta=True)
    def add(self, meta, children):
        return self._binop("+", meta, children)

    @v_args(meta=True)
    def sub(self, meta, children):
        return self._binop("-", meta, children)

    @v_args(meta=True)
    def mul(self, meta, children):
        return self._binop("*", meta, children)

    @v_args(meta=True)
    def div(self, meta, children):
        return self._binop("/", meta, children)

    # --- chains --------------------------------------------------------------------------------
    @v_args(meta=True)
    def stage_name(self, meta, children):
        (t,) = children
        loc = self._loc(t)
        return ast.Call(str(t), [], [], loc, loc)

    @v_args(meta=True)
    def stage_call(self, meta, children):
        return self._call(meta, children)

    @v_args(meta=True)
    def group(self, meta, children):
        return ast.Group(list(children), self._loc(meta))

    @v_args(meta=True)
    def stage(self, meta, children):
        label, body, repeat = children
        return ast.Stage(str(label) if label is not None else None, body, repeat, self._loc(meta),
                         self._loc(label) if label is not None else None)

    @v_args(meta=True)
    def chain(self, meta, children):
        source, *stages = children
        return ast.Chain(source, stages, self._loc(meta))

    # --- statements ----------------------------------------------------------------------------
    def static_dim(self, children):
        (t,) = children
        return ast.Dim(int(t), None, self._loc(t))

    def symbolic_dim(self, children):
        name, default = children
        return ast.Dim(str(name), int(default) if default is not None else None, self._loc(name))

    @v_args(meta=True)
    def tensor_type(self, meta, children):
        dtype, *dims = children
        return ast.TypeExpr(str(dtype), dims, self._loc(meta), self._loc(dtype))

    def input_decl(self, children):
        name, type_ = children
        return ast.InputDecl(str(name), type_, self._loc(name))

    @v_args(meta=True)
    def input_stmt(self, meta, children):
        return ast.InputStmt(list(children), self._loc(meta))

    def assign_stmt(self, children):
        name, value = children
        return ast.Assign(str(name), value, self._loc(name))

    @v_args(meta=True)
    def output_item(self, meta, children):
        name, value = children
        return ast.OutputItem(str(name) if name is not None else None, value, self._loc(meta))

    @v_args(meta=True)
    def output_stmt(self, meta, children):
        return ast.OutputStmt(list(children), self._loc(meta))

    def param(self, children):
        name, default = children
        return ast.Param(str(name), default, self._loc(name))

    def block_def(self, children):
        name, *rest = children
        params = [c for c in rest if isinstance(c, ast.Param)]
        body = [c for c in rest if c is not None and not isinstance(c, ast.Param)]
        return ast.BlockDef(str(name), params, body, self._loc(name))

    def network_def(self, children):
        name, *body = children
        return ast.NetworkDef(str(name), list(body), self._loc(name))

    def start(self, children):
        module = ast.Module(file=self.file, source=self.source)
        for d in children:
            table = module.blocks if isinstance(d, ast.BlockDef) else module.networks
            if d.name in module.blocks or d.name in module.networks:
                raise NetDSLError(f"`{d.name}` is defined twice", d.loc,
                                  hint="block and network names must be unique in a file")
            table[d.name] = d
        return module


def parse(source: str, file: str = "<string>") -> ast.Module:
    """Parse .net text into an AST; a syntax error is a NetDSLError pointing at the offending token."""
    try:
        tree = _parser().parse(source)
    except UnexpectedInput as e:
        raise _syntax_error(e, source, file) from None
    try:
        return _Builder(file, source).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, NetDSLError):
            raise e.orig_exc from None
        raise


def _syntax_error(e: UnexpectedInput, source: str, file: str) -> NetDSLError:
    line, col = max(1, e.line), max(1, e.column)
    if isinstance(e, UnexpectedCharacters):
        ch = source[e.pos_in_stream] if e.pos_in_stream < len(source) else "?"
        hint = "names are letters, digits and `_`; comments start with `#`"
        if ch == ">" or (ch == "-" and source[e.pos_in_stream + 1: e.pos_in_stream + 2] != ">"):
            hint = "chains are written with `->`"
        return NetDSLError(f"unexpected character `{ch}`", SourceLoc(file, line, col, 1, source), hint)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        lines = source.splitlines() or [""]
        loc = SourceLoc(file, len(lines), len(lines[-1]) + 1, 1, source)
        return NetDSLError("unexpected end of file", loc, hint=_expected_hint(e) or "is a `}` or `)` missing?")
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    loc = SourceLoc(file, line, col, max(1, len(str(tok))), source)
    hint = _expected_hint(e)
    text = str(tok)
    if tok.type == "NAME" and "__ANON_0" in e.expected:
        hint = f"missing `->` before `{text}`?"
    elif set(e.expected) == {"EQUAL"}:
        hint = "a statement is `name = expression`; is a `->` missing before the previous name?"
    elif text in KEYWORDS:
        hint = (hint + "; " if hint else "") + f"`{text}` is a keyword"
    return NetDSLError(f"unexpected `{text}`", loc, hint)


def _expected_hint(e: UnexpectedInput) -> str | None:
    expected = sorted({_TOKEN_NAMES.get(t, t) for t in (getattr(e, "expected", None) or ())})
    if not expected:
        return None
    if len(expected) > 6:
        expected = expected[:6] + ["..."]
    return "expected " + ", ".join(expected)
