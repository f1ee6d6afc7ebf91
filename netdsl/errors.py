"""One error type for every user mistake, with its origin in the source.

A ``NetDSLError`` renders as::

    model.net:12:14: error: unknown layer `rleu`
       12 |     y = x -> rleu
          |              ^^^^
    hint: did you mean `relu`?
    note: in block `basic`, instantiated at model.net:30:18
       30 |     -> layer1: basic(64) * 2
          |                ^^^^^^^^^

The CLI prints ``str(err)`` and exits non-zero; it never shows a Python traceback for a user's mistake.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class SourceLoc:
    """A span in a source file: 1-based line and column, and the span's width on that line."""

    file: str
    line: int
    col: int
    width: int = 1
    source: str | None = field(default=None, repr=False, compare=False)  # the file's text, for the snippet

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def snippet(self) -> str:
        text = source_line(self.source, self.line) if self.source else None
        if text is None:
            return ""
        gutter = f"{self.line:>5} | "
        col, width = self.col, max(1, self.width)
        # the caret's padding copies the line's tabs, so that it lines up wherever the terminal puts tab stops
        pad = "".join("\t" if ch == "\t" else " " for ch in text[: col - 1])
        pad += " " * (col - 1 - len(pad))
        caret = " " * (len(gutter) - 2) + "| " + pad + "^" * width
        return f"{gutter}{text}\n{caret}"


# Characters shown as a space in a snippet: control characters other than tab (a form feed, a carriage
# return, an escape sequence must not move the terminal's cursor) and the Unicode line and paragraph
# separators. Each stays one column wide, so the caret still lines up.
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def source_line(source: str, line: int) -> str | None:
    """Line ``line`` (1-based) of ``source`` as a snippet shows it, or None when there is no such line.

    Lines are split at ``\\n`` only, as Lark counts them (and as every line:col of the front end is
    computed); ``str.splitlines`` would also split at a form feed, U+0085, U+2028, ... and show the wrong
    line. A line's trailing ``\\r`` (a CRLF file) is dropped."""
    if line < 1:
        return None
    start = 0
    for _ in range(line - 1):
        start = source.find("\n", start) + 1
        if start == 0:
            return None
    end = source.find("\n", start)
    text = source[start:] if end < 0 else source[start:end]
    if end < 0 and not text and line > 1:  # the empty "line" after a final newline
        return None
    return _UNPRINTABLE.sub(" ", text.removesuffix("\r"))


@dataclass
class NetDSLError(Exception):
    """A user mistake: what went wrong, where, and how to fix it."""

    message: str
    loc: SourceLoc | None = None
    hint: str | None = None
    notes: list[tuple[str, SourceLoc | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def with_note(self, message: str, loc: SourceLoc | None) -> "NetDSLError":
        self.notes.append((message, loc))
        return self

    def __str__(self) -> str:
        head = f"{self.loc}: error: {self.message}" if self.loc else f"error: {self.message}"
        parts = [head]
        if self.loc and self.loc.snippet():
            parts.append(self.loc.snippet())
        if self.hint:
            parts.append(f"hint: {self.hint}")
        for message, loc in self.notes:
            parts.append(f"note: {message}" + (f" at {loc}" if loc else ""))
            if loc and loc.snippet():
                parts.append(loc.snippet())
        return "\n".join(parts)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, or None when nothing is close."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None
