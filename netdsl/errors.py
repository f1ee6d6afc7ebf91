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
        if not self.source:
            return ""
        lines = self.source.splitlines()
        if not 1 <= self.line <= len(lines):
            return ""
        text = lines[self.line - 1]
        gutter = f"{self.line:>5} | "
        caret = " " * (len(gutter) - 2) + "| " + " " * (self.col - 1) + "^" * max(1, self.width)
        return f"{gutter}{text}\n{caret}"


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
