"""Parsing: .net text -> AST, with Lark (LALR, positions on) and friendly syntax errors."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..errors import NetDSLError, SourceLoc
from . import ast

KEYWORDS = {"block", "network", "input", "output", "param", "import", "true", "false"}

# How deeply constructs may nest inside one another: parentheses of calls, groups, tuples and subscripts,
# unary minus, and the right operand of an operator (`1 + (1 + (1 + ...))`). A left-associative run of
# operators (`x + x + ... + x`, any length) is one level: the elaborator folds it in a loop. The limit keeps
# the elaborator's recursion (a few Python frames per level) well inside Python's default recursion limit
# (1000 frames), whoever calls it; no model needs more than a dozen levels.
MAX_NESTING = 100
_NESTING = frozenset({"call", "stage_call", "group", "tuple", "neg", "subscript"})
_BINOPS = frozenset({"add", "sub", "mul", "div", "floordiv"})


_OPTIONS = dict(parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True)
CACHE_ENV = "NETDSL_CACHE_DIR"
# How the parser of this process was made: "hit" (read from the cache), "miss" (built, then cached) or
# "off" (built; no cache directory could be written). Tests read it from a second process.
cache_status = "off"


def cache_dir() -> Path:
    """Where netdsl keeps what it may rebuild: ``$NETDSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/netdsl``,
    else ``~/.cache/netdsl``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "netdsl"


def cache_file(grammar: str) -> Path:
    """The cache file of the parser built from ``grammar``: keyed by the grammar's text, the options, Lark's
    and Python's versions, so that a change to any of them builds (and caches) a new parser."""
    key = "\0".join([grammar, repr(sorted(_OPTIONS.items())), lark.__version__, sys.version])
    return cache_dir() / f"parser-{hashlib.sha256(key.encode()).hexdigest()[:24]}.lark"


def build_parser(grammar: str) -> Lark:
    """The LALR parser of ``grammar``, from the per-user cache when it holds one (building the tables takes
    most of a second, reading them a few milliseconds). A missing, unreadable or damaged cache file, or a
    directory that cannot be written, costs only the time to build the parser. The file is a pickle (Lark's
    format), so the directory is made private to the user; it is written whole or not at all."""
    global cache_status
    try:
        path = cache_file(grammar)
    except RuntimeError:  # no home directory to find a cache in
        cache_status = "off"
        return Lark(grammar, **_OPTIONS)
    try:
        with open(path, "rb") as f:
            parser = Lark.load(f)
        cache_status = "hit"
        return parser
    except Exception:  # not there yet, or damaged (a crash mid-write elsewhere): rebuild it
        pass
    parser = Lark(grammar, **_OPTIONS)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                parser.save(f)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        cache_status = "miss"
    except OSError:
        cache_status = "off"
    return parser


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return build_parser(resources.files("netdsl.grammar").joinpath("netdsl.lark").read_text(encoding="utf-8"))


# Lark's terminal names, as a user would write them.
_TOKEN_NAMES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string", "LPAR": "`(`",
    "RPAR": "`)`", "LBRACE": "`{`", "RBRACE": "`}`", "LSQB": "`[`", "RSQB": "`]`", "COMMA": "`,`",
    "COLON": "`:`", "EQUAL": "`=`", "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`",
    "__ANON_0": "`->`", "__ANON_1": "`//`", "BLOCK": "`block`", "NETWORK": "`network`", "INPUT": "`input`", "OUTPUT": "`output`",
    "TRUE": "`true`", "FALSE": "`false`", "$END": "end of file", "PARAM": "`param`", "IMPORT": "`import`",
    "DOT": "`.`",
}


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
                          _loc_at(text, file, offset), hint="save the file as UTF-8 (this byte is how another "
                          "encoding, e.g. latin-1 or cp1252, writes a non-ASCII character)") from None


def parse(source: str | bytes, file: str = "<string>") -> ast.Module:
    """Parse .net text into an AST; a syntax error is a NetDSLError pointing at the offending token."""
    if isinstance(source, (bytes, bytearray)):
        source = decode(bytes(source), file)
    source = source.removeprefix("\ufeff")  # a byte order mark (some editors write one) is not text
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


def tokens_and_tree(source: str, file: str = "<string>") -> tuple[list[Token], Tree]:
    """Every token of ``source`` as the parser reads it (the contextual lexer: comments and spaces left out)
    and the parse tree, for tools that keep the text (``netdsl fmt``); ``parse``'s errors, from one parse."""
    source = source.removeprefix("\ufeff")
    ip = _parser().parse_interactive(source)
    try:
        tokens = list(ip.iter_parse())
        tree = ip.resume_parse()
    except UnexpectedInput as e:
        raise _syntax_error(e, source, file) from None
    try:
        _Builder(file, source).transform(tree)  # the checks made while building the AST
    except VisitError as e:
        if isinstance(e.orig_exc, NetDSLError):
            raise e.orig_exc from None
        raise
    return tokens, tree


_STATEMENT = "a statement is `name = expression`, `input ...` or `output ...`"
_CLOSERS = {"(": ")", "[": "]", "{": "}"}
_OPENERS = {v: k for k, v in _CLOSERS.items()}
_CLOSER_TOKENS = {")": "RPAR", "]": "RSQB", "}": "RBRACE"}  # Lark's names for them
_KEYWORD_TERMINALS = frozenset(k.upper() for k in KEYWORDS)
# the tokens of .net text, roughly: enough to find brackets and the token before an error
_SCAN = re.compile(r'#[^\n]*|"[^"\n]*"|[A-Za-z_]\w*|[0-9][\w.]*|->|\S')


def _tokens_before(source: str, end: int) -> list[tuple[int, str]]:
    """(offset, text) of each token of ``source[:end]``, comments left out."""
    return [(m.start(), m.group()) for m in _SCAN.finditer(source, 0, end) if m.group()[0] != "#"]


def _open_brackets(tokens: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The brackets still open at the end of ``tokens``, innermost last."""
    stack: list[tuple[int, str]] = []
    for off, text in tokens:
        if text in _CLOSERS:
            stack.append((off, text))
        elif text in _CLOSERS.values() and stack and _CLOSERS[stack[-1][1]] == text:
            stack.pop()
    return stack


def _loc_at(source: str, file: str, offset: int, width: int = 1) -> SourceLoc:
    line = source.count("\n", 0, offset) + 1
    col = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return SourceLoc(file, line, col, max(1, width), source)


def _syntax_error(e: UnexpectedInput, source: str, file: str) -> NetDSLError:
    if isinstance(e, UnexpectedCharacters):
        return _character_error(e, source, file)
    word = _keyword_taken_as_name(e)
    if word is not None:
        # a keyword the parser took as the start of a label, dotted name or keyword argument, and what came
        # next does not fit one: the keyword is the mistake (`y = network`, `x -> relu -> output`)
        err = NetDSLError(f"unexpected `{word}`", _loc_at(source, file, word.start_pos, len(word)),
                          hint=f"`{word}` is a keyword; as a name it may only label a layer (`{word}: ...`), be "
                               f"part of a dotted name (`{word}.weight`) or name a keyword argument")
        stack = _open_brackets(_tokens_before(source, word.start_pos))
        if stack and stack[-1][1] != "{":
            err.with_note(f"`{stack[-1][1]}` opened here is not closed", _loc_at(source, file, stack[-1][0]))
        return err
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        # the end of the last line that is not empty (lines end at \n only, as Lark counts them)
        lines = source.removesuffix("\n").split("\n")
        loc = SourceLoc(file, len(lines), len(lines[-1].removesuffix("\r")) + 1, 1, source)
        err = NetDSLError("unexpected end of file", loc, hint=_expected_hint(e) or "is a `}` or `)` missing?")
        return _note_unclosed(err, e, source, file, len(source))
    assert isinstance(e, UnexpectedToken)
    return _token_error(e, source, file)


def _character_error(e: UnexpectedCharacters, source: str, file: str) -> NetDSLError:
    """A character that starts no token here."""
    line, col, pos = max(1, e.line), max(1, e.column), e.pos_in_stream
    ch = source[pos] if pos < len(source) else "?"
    if source[pos - 1: pos + 1] == "->":  # the lexer took `-` alone: an arrow where none can be
        expected = sorted({_TOKEN_NAMES.get(t, t) for t in e.allowed if t != "MINUS"})
        err = NetDSLError("unexpected `->`", SourceLoc(file, line, col - 1, 2, source),
                          hint="expected " + ", ".join(expected) if expected else None)
        return _note_unclosed(err, e, source, file, pos)
    hint = "names are letters, digits and `_`; comments start with `#`"
    if ch == ">" or (ch == "-" and source[pos + 1: pos + 2] != ">"):
        hint = "chains are written with `->`"
    elif ch == '"':
        hint = "a string ends on the line where it starts"
    elif ch == ";":
        hint = "statements are separated by line breaks, not `;`"
    shown = f"`{ch}`" if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"  # (an invisible one)
    if ch == "\ufeff":
        hint = "a byte order mark (U+FEFF) may only start the file"
    return NetDSLError(f"unexpected character {shown}", SourceLoc(file, line, col, 1, source), hint)


def _token_error(e: UnexpectedToken, source: str, file: str) -> NetDSLError:
    """A token the grammar does not allow here."""
    tok, text, expected = e.token, str(e.token), set(e.expected)
    loc = SourceLoc(file, max(1, e.line), max(1, e.column), max(1, len(text)), source)
    before = _tokens_before(source, tok.start_pos)
    stack = _open_brackets(before)
    if text in _CLOSER_TOKENS and (not stack or stack[-1][1] != _OPENERS[text]):
        err = NetDSLError(f"unmatched `{text}`", loc, hint=f"no `{_OPENERS[text]}` is open here")
        if stack and stack[-1][1] != "{":
            off, bracket = stack[-1]
            err.hint += f"; the open `{bracket}` is closed with `{_CLOSERS[bracket]}`"
            err.with_note(f"`{bracket}` opened here", _loc_at(source, file, off))
        return err
    if tok.type == "NAME" and "__ANON_0" in expected:
        return NetDSLError(f"unexpected `{text}`", loc, hint=f"missing `->` before `{text}`?")
    hint = _expected_hint(e)
    if expected in ({"EQUAL"}, {"EQUAL", "COMMA"}):
        # `name` then something other than `=`: either a chain went on without `->` (`x -> relu relu`:
        # the statement ended and the next began), or a statement that is not an assignment (`x -> relu`).
        off, name = before[-1]
        if _loc_at(source, file, off).line < loc.line or tok.type in ("RBRACE", "OUTPUT", "INPUT"):
            return NetDSLError(f"unexpected `{name}`", _loc_at(source, file, off, len(name)),
                               hint=f"missing `->` before `{name}`? ({_STATEMENT})")
        hint = f"expected `=`: {_STATEMENT}"
    elif tok.type in ("BLOCK", "NETWORK") and "RBRACE" in expected:
        hint = f"a `{text}` is defined at the top level of the file, not inside another definition"
    elif text in KEYWORDS:
        hint = (hint + "; " if hint else "") + f"`{text}` is a keyword"
    err = NetDSLError(f"unexpected `{text}`", loc, hint)
    if expected & {"RPAR", "RSQB", "RBRACE"}:
        err = _note_unclosed(err, e, source, file, tok.start_pos)
    return err


def _keyword_taken_as_name(e: UnexpectedInput) -> Token | None:
    """The keyword just read as a name (the grammar's kw_name) when the error is that no `:`, `.` or `=`
    followed, so it could not be one; None for any other error. Read from the parser's state: either every
    action left is reducing the keyword to kw_name, or it was reduced and nothing fits after it."""
    ip = getattr(e, "interactive_parser", None)
    if ip is None or not ip.parser_state.value_stack:
        return None
    *below, top = ip.parser_state.value_stack
    if below and isinstance(below[-1], Token) and below[-1].type in ("PARAM", "DOT"):
        return None  # a parameter's name or a part of a dotted name: a name there, whatever follows
    if isinstance(top, Tree) and top.data == "kw_name":
        top = top.children[0]
    elif isinstance(top, Token):
        actions = ip.parser_state.parse_conf.parse_table.states[ip.parser_state.position].values()
        if not all(getattr(arg, "origin", None) is not None and arg.origin.name == "kw_name" for _, arg in actions):
            return None
    else:
        return None
    return top if isinstance(top, Token) and top.type in _KEYWORD_TERMINALS else None


def _note_unclosed(err: NetDSLError, e: UnexpectedInput, source: str, file: str, end: int) -> NetDSLError:
    """Add a note pointing at the innermost bracket left open before ``end``, if there is one (and say in
    the hint that its closer is missing, when the parser would have taken it here)."""
    stack = _open_brackets(_tokens_before(source, end))
    if not stack:
        return err
    off, bracket = stack[-1]
    closer = _CLOSERS[bracket]
    if _CLOSER_TOKENS[closer] in (getattr(e, "expected", None) or ()):
        err.hint = f"is a `{closer}` missing?" + (f" ({err.hint})" if err.hint else "")
    return err.with_note(f"`{bracket}` opened here is not closed", _loc_at(source, file, off))


def _expected_hint(e: UnexpectedInput) -> str | None:
    terminals = set(getattr(e, "expected", None) or ())
    if _KEYWORD_TERMINALS <= terminals:  # a name (kw_name) may come: the keywords are names there, not keywords
        terminals -= _KEYWORD_TERMINALS - ({"TRUE", "FALSE"} if "INT" in terminals else set())
    expected = sorted({_TOKEN_NAMES.get(t, t) for t in terminals})
    if not expected:
        return None
    if len(expected) > 6:
        expected = expected[:6] + ["..."]
    return "expected " + ", ".join(expected)
