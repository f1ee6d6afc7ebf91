"""Parsing: .net text -> AST, with Lark (LALR, positions on) and friendly syntax errors.

The parser's tables come from a per-user cache (``parser_cache``); a syntax error is explained by
``syntax_errors``. Both are re-exported here, where the rest of netdsl and its tests look for them.
"""

from __future__ import annotations

import functools
from importlib import resources

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedInput, VisitError

from ..errors import NetDSLError, SourceLoc
from . import ast
from .parser_cache import CACHE_ENV, cache_dir, cache_file, load_or_build
from .syntax_errors import KEYWORDS, loc_at, syntax_error

__all__ = ["CACHE_ENV", "KEYWORDS", "MAX_NESTING", "build_parser", "cache_dir", "cache_file", "cache_status",
           "decode", "parse", "tokens_and_tree"]

# How deeply constructs may nest inside one another: parentheses of calls, groups, tuples and subscripts,
# unary minus, and the right operand of an operator (`1 + (1 + (1 + ...))`). A left-associative run of
# operators (`x + x + ... + x`, any length) is one level: the elaborator folds it in a loop. The limit keeps
# the elaborator's recursion (a few Python frames per level) well inside Python's default recursion limit
# (1000 frames), whoever calls it; no model needs more than a dozen levels.
MAX_NESTING = 100
_NESTING = frozenset({"call", "stage_call", "group", "tuple", "neg", "subscript"})
_BINOPS = frozenset({"add", "sub", "mul", "div", "floordiv"})

# How the parser of this process was made: "hit" (read from the cache), "miss" (built, then cached) or
# "off" (built; no cache directory could be written). Tests read it from a second process.
cache_status = "off"


def build_parser(grammar: str) -> Lark:
    """The LALR parser of ``grammar``, from the per-user cache when it holds one (``load_or_build``); how it
    was made is recorded in ``cache_status``."""
    global cache_status
    parser, cache_status = load_or_build(grammar)
    return parser


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return build_parser(resources.files("netdsl.grammar").joinpath("netdsl.lark").read_text(encoding="utf-8"))


class _Builder(Transformer):
    """Parse tree -> AST. Method names are the grammar's rule (and alias) names.

    ``transform`` walks the tree with explicit stacks, not by recursion (Lark's ``Transformer`` recurses once
    per level, and a 2000-term sum is a tree 2000 levels deep), and rejects nesting deeper than
    ``MAX_NESTING`` levels before any AST is built."""

    def __init__(self, file: str, source: str):
        super().__init__()
        self.file, self.source = file, source
        self._line_lengths: list[int] | None = None

    def transform(self, tree: Tree):
        # pre-order, with each subtree's nesting level: the reverse of the order the builder needs
        rev_postfix: list = []
        todo: list = [(tree, 0)]
        while todo:
            t, level = todo.pop()
            rev_postfix.append(t)
            if not isinstance(t, Tree):
                continue
            right = t.children[-1] if t.data in _BINOPS else None
            for c in t.children:
                deeper = isinstance(c, Tree) and (c.data in _NESTING or (c is right and c.data in _BINOPS))
                if deeper and level >= MAX_NESTING:
                    raise self._too_deep(c)
                todo.append((c, level + deeper))
        # post-order: build each node from its children's results
        stack: list = []
        for x in reversed(rev_postfix):
            if isinstance(x, Tree):
                n = len(x.children)
                args = stack[len(stack) - n:]
                del stack[len(stack) - n:]
                stack.append(self._call_userfunc(x, args))
            else:
                stack.append(x)
        (result,) = stack
        return result

    def _too_deep(self, t: Tree) -> NetDSLError:
        first = t.children[0] if t.children else None
        loc = self._loc(first) if isinstance(first, Token) and first.start_pos == t.meta.start_pos else \
            SourceLoc(self.file, t.meta.line, t.meta.column, 1, self.source)
        return NetDSLError(f"nesting deeper than {MAX_NESTING} levels", loc,
                           hint="give intermediate results names (`y1 = ...`, then use `y1`), or write a chain "
                                "as `a -> b -> c`, without nested parentheses")

    def _loc(self, meta_or_token) -> SourceLoc:
        m = meta_or_token
        if isinstance(m, Token):
            return SourceLoc(self.file, m.line, m.column, len(str(m)), self.source)
        if getattr(m, "empty", False) or not hasattr(m, "line"):
            return SourceLoc(self.file, 1, 1, 1, self.source)
        if m.end_line == m.line:
            width = m.end_column - m.column
        else:  # a span over several lines: underline the rest of its first line (lines end at \n only)
            if self._line_lengths is None:
                self._line_lengths = [len(line) for line in self.source.split("\n")]
            width = self._line_lengths[m.line - 1] - m.column + 1
        return SourceLoc(self.file, m.line, m.column, max(1, width), self.source)

    def _int(self, t: Token) -> int:
        try:
            return int(t)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise NetDSLError("this integer is too long", self._loc(t),
                              hint="sizes and attributes are 64-bit integers") from None

    # --- atoms -------------------------------------------------------------------------------
    def int(self, children):
        (t,) = children
        return ast.Num(self._int(t), self._loc(t))

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

    def kw_name(self, children):
        (t,) = children  # a NAME, or a keyword used as a name (`block: ...`): its token either way
        return t

    @v_args(meta=True)
    def kwarg(self, meta, children):
        name, value = children
        return ast.Kwarg(str(name), value, self._loc(meta))

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

    @v_args(meta=True)
    def floordiv(self, meta, children):
        return self._binop("//", meta, children)

    @v_args(meta=True)
    def qualified(self, meta, children):
        return ast.Qualified([str(t) for t in children], self._loc(meta))

    @v_args(meta=True)
    def subscript(self, meta, children):
        value, *indices = children
        return ast.Subscript(value, list(indices), self._loc(meta))

    @v_args(meta=True)
    def index_slice(self, meta, children):
        start, stop = children
        return ast.SliceIndex(start, stop, None, self._loc(meta))

    @v_args(meta=True)
    def index_slice_step(self, meta, children):
        start, stop, step = children
        return ast.SliceIndex(start, stop, step, self._loc(meta))

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
        return ast.Dim(self._int(t), None, self._loc(t))

    def symbolic_dim(self, children):
        name, default = children
        if default is None:
            return ast.Dim(str(name), None, self._loc(name))
        return ast.Dim(str(name), self._int(default), self._loc(name), self._loc(default))

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
        *names, value = children
        return ast.Assign([str(n) for n in names], value, self._loc(names[0]), [self._loc(n) for n in names])

    def qualname(self, children):
        return children

    def param_stmt(self, children):
        parts, *shape, init = children
        loc = self._loc(parts[0])
        if len(parts) > 1:
            last = self._loc(parts[-1])
            loc = SourceLoc(loc.file, loc.line, loc.col, last.col + last.width - loc.col, loc.source)
        return ast.ParamStmt(".".join(map(str, parts)), shape, init, loc)

    def import_stmt(self, children):
        (t,) = children
        is_file = t.type == "STRING"
        return ast.Import(str(t)[1:-1] if is_file else str(t), is_file, self._loc(t))

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
            if isinstance(d, ast.Import):
                module.imports.append(d)
                continue
            table = module.blocks if isinstance(d, ast.BlockDef) else module.networks
            if d.name in module.blocks or d.name in module.networks:
                first = module.blocks.get(d.name) or module.networks[d.name]
                raise NetDSLError(f"`{d.name}` is defined twice", d.loc,
                                  hint="block and network names must be unique in a file"
                                  ).with_note("first defined", first.loc)
            table[d.name] = d
        return module


def decode(data: bytes, file: str = "<string>") -> str:
    """The text of a .net file read as bytes: UTF-8, with a byte order mark at the start dropped. Bytes that
    are not UTF-8 are a NetDSLError at the first of them."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        text = data.decode("utf-8", errors="replace")  # for the snippet: the bad bytes show as U+FFFD
        offset = len(data[:e.start].decode("utf-8"))  # characters before the bad byte (they decode)
        if text.startswith("\ufeff"):
            text, offset = text[1:], offset - 1
        raise NetDSLError(f"the file is not UTF-8 text: byte 0x{data[e.start]:02x} is not part of a UTF-8 character",
                          loc_at(text, file, offset), hint="save the file as UTF-8 (this byte is how another "
                          "encoding, e.g. latin-1 or cp1252, writes a non-ASCII character)") from None


def parse(source: str | bytes, file: str = "<string>") -> ast.Module:
    """Parse .net text into an AST; a syntax error is a NetDSLError pointing at the offending token."""
    if isinstance(source, (bytes, bytearray)):
        source = decode(bytes(source), file)
    source = source.removeprefix("\ufeff")  # a byte order mark (some editors write one) is not text
    try:
        tree = _parser().parse(source)
    except UnexpectedInput as e:
        raise syntax_error(e, source, file) from None
    try:
        return _Builder(file, source).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, NetDSLError):
            raise e.orig_exc from None
        raise


def tokens_and_tree(source: str, file: str = "<string>") -> tuple[list[Token], Tree]:
    """Every token of ``source`` as the parser reads it (the contextual lexer: comments and spaces left out)
    and the parse tree, for tools that keep the text (``netdsl fmt``); ``parse``'s errors, from one parse."""
    source = source.removeprefix("\ufeff")
    ip = _parser().parse_interactive(source)
    try:
        tokens = list(ip.iter_parse())
        tree = ip.resume_parse()
    except UnexpectedInput as e:
        raise syntax_error(e, source, file) from None
    try:
        _Builder(file, source).transform(tree)  # the checks made while building the AST
    except VisitError as e:
        if isinstance(e.orig_exc, NetDSLError):
            raise e.orig_exc from None
        raise
    return tokens, tree
