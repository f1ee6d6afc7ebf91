"""`netdsl fmt model.net [--check]`: one canonical layout for .net files, comments kept.

The formatter rewrites only the space between tokens: it reads the file's tokens with the parser's own
(contextual) lexer, so it never re-tokenises differently, and the comments from the gaps between them.
The layout, the examples' house style made mechanical:

- one statement per line, indented 4 inside a `block`/`network`; `}` at the left; one blank line kept
  where the file had one or more (none after `{` or before `}`), one after each definition and one
  between the imports and the first definition;
- spaces around binary operators, `->` and a statement's `=`, none around `=` inside brackets
  (`stride=2`, `H=224`) or `:` inside a subscript (`x[:, 0]`); `name: type`, `label: layer`;
- a line break is kept before a `->` and after a `,` where the file had one, and dropped anywhere else;
  a continued chain lines its `->` up under its first `->` when a name alone precedes that one on the
  same line (`y = x -> ...`); otherwise 4 in from the statement, or, inside brackets, under the chain's
  first token; after a `,` a line continues under the first token inside the bracket;
- a line longer than ``MAX_WIDTH`` (comments aside) is broken before every `->` of its outermost chain,
  one stage per line; trailing comments on consecutive lines are lined up, two spaces past the longest.

Each choice depends only on the tokens and on where the file breaks lines at a `->` or `,` — and the
output breaks lines exactly there — so formatting twice gives what formatting once gives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_WIDTH = 100
INDENT = 4
_STATEMENTS = frozenset({"input_stmt", "param_stmt", "assign_stmt", "output_stmt"})
_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB"}
_VALUES = frozenset({"NAME", "INT", "FLOAT", "STRING", "RPAR", "RSQB", "TRUE", "FALSE"})  # a `-` after: binary
_COMMENT = re.compile(r"#[^\n]*")


def add_parser(sub) -> None:
    """The `netdsl fmt` subcommand (called by netdsl.cli; keep this module's imports light)."""
    c = sub.add_parser("fmt", help="rewrite .net files in the canonical layout (--check: only report which would change)")
    c.add_argument("files", nargs="+", help=".net files")
    c.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    c.set_defaults(fn=run)


def run(args) -> int:
    """Format the files in place, or with --check name those that would change (exit 1). Every file is
    formatted before any is written: a syntax error in one leaves them all as they were; each is
    replaced whole (``write_atomically``)."""
    from pathlib import Path

    from ..errors import NetDSLError
    from ..files import write_atomically
    from .parser import decode

    changed: list[tuple[Path, str]] = []
    for name in dict.fromkeys(args.files):
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise NetDSLError(f"cannot read {path}: {e.strerror}", None,
                              hint="name .net files that exist and may be read") from None
        text = format_source(decode(data, str(path)), str(path))
        if text.encode("utf-8") != data:
            changed.append((path, text))
    for path, text in changed:
        if args.check:
            print(f"would reformat {path}")
        else:
            write_atomically(path, lambda tmp, text=text: Path(tmp).write_bytes(text.encode("utf-8")), ".net file")
            print(f"reformatted {path}")
    return 1 if args.check and changed else 0


@dataclass
class _Tok:
    type: str
    text: str
    newline_before: bool = False  # the file breaks the line between the previous token and this one
    blank_before: bool = False  # ... with an empty line
    comments: list[tuple[str, bool]] = field(default_factory=list)  # full-line comments before it (text, blank before)
    trailing: str | None = None  # the comment ending this token's line
    starts: str | None = None  # "top" (import, block, network) or "statement"
    unary: bool = False  # a `-` that negates
    chain: tuple[int, int] | None = None  # for `->`: (its bracket's token index, segment): which chain
    depth: int = 0  # brackets open around it in its statement


def format_source(source: str, file: str = "<string>") -> str:
    """``source`` in the canonical layout. A file that does not parse is its NetDSLError."""
    toks = _tokens(source.removeprefix("\ufeff"), file)
    breaks = {i for i, t in enumerate(toks) if t.type == "__ANON_0" and t.newline_before}
    while True:  # break over-long lines, outermost chain first, until every line fits or cannot break
        lines = _Layout(toks, breaks).run()
        more = _width_breaks(toks, lines, breaks)
        if not more:
            return _render(lines)
        breaks |= more


def _tokens(source: str, file: str = "<string>") -> list[_Tok]:
    """The file's tokens, as the parser reads them, with the comments and line breaks around them; a
    final token of type "EOF" carries the comments after the last one. A syntax error is parse()'s."""
    from .parser import tokens_and_tree

    lark_toks, tree = tokens_and_tree(source, file)
    starts = {}
    for t in tree.iter_subtrees():
        if t.data in _STATEMENTS:
            starts[t.meta.start_pos] = "statement"
    for t in tree.children:
        starts[t.meta.start_pos] = "top"
    toks, end = [], 0
    for lt in lark_toks + [None]:
        start = len(source) if lt is None else lt.start_pos
        tok = _Tok("EOF", "") if lt is None else _Tok(lt.type, str(lt), starts=starts.get(lt.start_pos))
        _read_gap(source[end:start], toks[-1] if toks else None, tok)
        toks.append(tok)
        end = start if lt is None else lt.end_pos
    _classify(toks)
    return toks


def _read_gap(gap: str, prev: _Tok | None, tok: _Tok) -> None:
    """Record the comments and line breaks of the text between two tokens."""
    pos = 0
    for m in _COMMENT.finditer(gap):
        between = gap[pos:m.start()]
        if prev is not None and pos == 0 and "\n" not in between:
            prev.trailing = m.group().rstrip()
        else:
            tok.comments.append((m.group().rstrip(), between.count("\n") > 1))
        pos = m.end()
    tok.newline_before = "\n" in gap
    tok.blank_before = gap[pos:].count("\n") > 1


def _classify(toks: list[_Tok]) -> None:
    """Mark negating `-`s, and give each `->` its chain: the bracket it is in and the segment (between
    `,`s and `=`s) of that bracket."""
    stack: list[list[int]] = [[-1, 0]]  # [opener index, segment]
    for i, t in enumerate(toks):
        if t.starts:
            stack = [[i, 0]]
        prev = toks[i - 1] if i else None
        if t.type == "MINUS":
            dotted = prev is not None and i >= 2 and toks[i - 2].type == "DOT"
            t.unary = prev is None or not (prev.type in _VALUES or dotted)
        t.depth = len(stack) - 1
        if t.type in _OPENERS:
            stack.append([i, 0])
        elif t.type in ("RPAR", "RSQB") and len(stack) > 1:
            stack.pop()
        elif t.type in ("COMMA", "EQUAL"):
            stack[-1][1] += 1
        elif t.type == "__ANON_0":
            t.chain = (stack[-1][0], stack[-1][1])


@dataclass
class _Line:
    indent: int
    code: str = ""  # the code, or a full-line comment
    comment: str | None = None  # a trailing comment
    blank_before: bool = False
    arrows: list[int] = field(default_factory=list)  # token indices of the `->`s inside the line (not first)


@dataclass
class _Level:
    """A bracket (or the statement itself) while laying it out."""

    opener: str | None  # "(" or "[" or None (the statement)
    col: int  # the bracket's column
    first: int | None = None  # column of the first token of the current segment (since a `,` or `=`)
    arrow: int | None = None  # column of the segment's first `->`, when a single token (a name) precedes it
    count: int = 0  # tokens of the segment so far


class _Layout:
    """Lays the tokens out line by line, breaking before the `->`s in ``breaks`` and where the rules in
    the module's docstring say."""

    def __init__(self, toks: list[_Tok], breaks: set[int]):
        self.toks, self.breaks = toks, breaks
        self.lines: list[_Line] = []
        self.body = 0  # 1 inside a block's or network's braces
        self.levels = [_Level(None, 0)]
        self.stmt_indent = 0
        self.blank_due = False  # a blank line goes before the next line (a definition just closed)
        self.opened = False  # the last line opened a body (`{`): no blank line after it
        self.last_top = ""  # the first token of the last top-level item

    def run(self) -> list[_Line]:
        for i, t in enumerate(self.toks):
            if not self._place(i, t):
                break
        return self.lines

    def _add(self, line: _Line, blank: bool) -> _Line:
        line.blank_before = (blank or self.blank_due) and bool(self.lines) and not self.opened
        self.blank_due = self.opened = False
        self.lines.append(line)
        return line

    def _place(self, i: int, t: _Tok) -> bool:
        prev = self.toks[i - 1] if i else None
        level = self.levels[-1]
        top = bool(t.starts) or t.type in ("RBRACE", "EOF")
        if t.starts == "top":  # a definition after the imports is set apart from them
            self.blank_due |= t.type != "IMPORT" and prev is not None and self.last_top == "IMPORT"
            self.last_top = t.type
        if top:
            indent = 0 if t.type == "RBRACE" else INDENT * self.body
            self.levels, self.stmt_indent = [_Level(None, 0)], indent
            level = self.levels[-1]
        new_line = top or bool(t.comments) or (prev is not None and prev.trailing is not None) or \
            (t.type == "__ANON_0" and i in self.breaks) or (prev is not None and prev.type == "COMMA" and t.newline_before)
        if new_line and not top:
            indent = _continuation(t, level, self.stmt_indent)
        for text, blank in t.comments:  # full-line comments: at the indent of what follows (inside a body at `}`)
            self._add(_Line(INDENT * self.body if t.type == "RBRACE" else indent, text), blank and top)
        if t.type == "EOF":
            return False
        if new_line:
            line = self._add(_Line(indent), t.blank_before and top and t.type != "RBRACE")
            col = indent
        else:
            line = self.lines[-1]
            space = _space(prev, t, level)
            line.code += space
            col = line.indent + len(line.code)
        line.code += t.text
        if t.trailing is not None:
            line.comment = t.trailing
        self._track(i, t, level, col, new_line)
        return True

    def _track(self, i: int, t: _Tok, level: _Level, col: int, new_line: bool) -> None:
        """What the token at ``col`` opens, closes or starts."""
        if t.starts and t.type in ("INPUT", "OUTPUT", "PARAM"):
            return  # the keyword is not part of the statement's first expression
        if level.first is None:
            level.first = col
        level.count += 1
        if t.type == "__ANON_0":
            if level.count == 2 and self.toks[i - 1].type == "NAME" and not new_line:  # `y = x -> ...`
                level.arrow = col
            if not new_line:
                self.lines[-1].arrows.append(i)
        elif t.type in _OPENERS:
            self.levels.append(_Level(t.text, col))
        elif t.type in ("RPAR", "RSQB") and len(self.levels) > 1:
            self.levels.pop()
        elif t.type in ("COMMA", "EQUAL"):
            level.first, level.arrow, level.count = None, None, 0
        elif t.type == "LBRACE":
            self.body, self.opened = 1, True
        elif t.type == "RBRACE":
            self.body, self.blank_due = 0, True


def _continuation(t: _Tok, level: _Level, stmt_indent: int) -> int:
    """The indent of a line that continues a statement and starts with ``t``."""
    if t.type in ("RPAR", "RSQB"):
        return level.col
    if t.type == "__ANON_0":
        if level.arrow is not None:
            return level.arrow
        if level.opener is None:
            return stmt_indent + INDENT
        return level.first if level.first is not None else level.col + 1
    if level.opener is not None:
        return level.col + 1
    return stmt_indent + INDENT


def _space(prev: _Tok | None, t: _Tok, level: _Level) -> str:
    """The space between two tokens on one line."""
    if prev is None or prev.type in ("LPAR", "LSQB", "DOT") or prev.unary:
        return ""
    if t.type in ("RPAR", "RSQB", "COMMA", "DOT", "COLON"):
        return ""
    if prev.type == "COLON":
        return "" if level.opener == "[" else " "
    if "EQUAL" in (t.type, prev.type):
        return "" if level.opener else " "
    if t.type == "LPAR":
        return "" if prev.type == "NAME" else " "
    if t.type == "LSQB":
        return " " if prev.type in ("COLON", "COMMA") else ""
    return " "


def _width_breaks(toks: list[_Tok], lines: list[_Line], breaks: set[int]) -> set[int]:
    """For the first line too long that has a `->` to break before, every `->` of the outermost chain
    with one in that line; empty when there is none."""
    for line in lines:
        if line.indent + len(line.code) <= MAX_WIDTH or not line.arrows:
            continue
        chain = toks[min(line.arrows, key=lambda i: (toks[i].depth, i))].chain
        return {i for i, t in enumerate(toks) if t.chain == chain} - breaks
    return set()


def _render(lines: list[_Line]) -> str:
    """The text of ``lines``, with the trailing comments of consecutive lines lined up."""
    out: list[str] = []
    run: list[tuple[int, str]] = []  # (index in out, comment) of consecutive lines with trailing comments

    def flush() -> None:
        col = max(len(out[k]) for k, _ in run) + 2
        for k, comment in run:
            out[k] = out[k].ljust(col) + comment
        run.clear()

    for line in lines:
        if run and (line.blank_before or line.comment is None):
            flush()
        if line.blank_before:
            out.append("")
        out.append(" " * line.indent + line.code)
        if line.comment is not None:
            run.append((len(out) - 1, line.comment))
    if run:
        flush()
    return "".join(x + "\n" for x in out)
