"""Syntax errors explained: a Lark ``UnexpectedInput`` -> a ``NetDSLError`` that names the token in the
user's words, points at it with a caret, and says what was expected or which bracket is still open.

Kept apart from the parser so that the grammar's happy path reads on its own; the parser calls
``syntax_error`` for every error Lark raises.
"""

from __future__ import annotations

import re

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..errors import NetDSLError, SourceLoc

KEYWORDS = {"block", "network", "input", "output", "param", "import", "true", "false"}

# Lark's terminal names, as a user would write them.
_TOKEN_NAMES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string", "LPAR": "`(`",
    "RPAR": "`)`", "LBRACE": "`{`", "RBRACE": "`}`", "LSQB": "`[`", "RSQB": "`]`", "COMMA": "`,`",
    "COLON": "`:`", "EQUAL": "`=`", "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`",
    "__ANON_0": "`->`", "__ANON_1": "`//`", "BLOCK": "`block`", "NETWORK": "`network`", "INPUT": "`input`", "OUTPUT": "`output`",
    "TRUE": "`true`", "FALSE": "`false`", "$END": "end of file", "PARAM": "`param`", "IMPORT": "`import`",
    "DOT": "`.`",
}

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


def loc_at(source: str, file: str, offset: int, width: int = 1) -> SourceLoc:
    """The location of character ``offset`` of ``source`` (Lark's errors and our scan give offsets)."""
    line = source.count("\n", 0, offset) + 1
    col = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return SourceLoc(file, line, col, max(1, width), source)


def syntax_error(e: UnexpectedInput, source: str, file: str) -> NetDSLError:
    """The NetDSLError for Lark's ``e``, raised while parsing ``source``."""
    if isinstance(e, UnexpectedCharacters):
        return _character_error(e, source, file)
    word = _keyword_taken_as_name(e)
    if word is not None:
        # a keyword the parser took as the start of a label, dotted name or keyword argument, and what came
        # next does not fit one: the keyword is the mistake (`y = network`, `x -> relu -> output`)
        err = NetDSLError(f"unexpected `{word}`", loc_at(source, file, word.start_pos, len(word)),
                          hint=f"`{word}` is a keyword; as a name it may only label a layer (`{word}: ...`), be "
                               f"part of a dotted name (`{word}.weight`) or name a keyword argument")
        stack = _open_brackets(_tokens_before(source, word.start_pos))
        if stack and stack[-1][1] != "{":
            err.with_note(f"`{stack[-1][1]}` opened here is not closed", loc_at(source, file, stack[-1][0]))
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
            err.with_note(f"`{bracket}` opened here", loc_at(source, file, off))
        return err
    if tok.type == "NAME" and "__ANON_0" in expected:
        return NetDSLError(f"unexpected `{text}`", loc, hint=f"missing `->` before `{text}`?")
    hint = _expected_hint(e)
    if expected in ({"EQUAL"}, {"EQUAL", "COMMA"}):
        # `name` then something other than `=`: either a chain went on without `->` (`x -> relu relu`:
        # the statement ended and the next began), or a statement that is not an assignment (`x -> relu`).
        off, name = before[-1]
        if loc_at(source, file, off).line < loc.line or tok.type in ("RBRACE", "OUTPUT", "INPUT"):
            return NetDSLError(f"unexpected `{name}`", loc_at(source, file, off, len(name)),
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
    return err.with_note(f"`{bracket}` opened here is not closed", loc_at(source, file, off))


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
