"""The per-user cache of the LALR parser: building Lark's tables takes most of a second, reading them back a
few milliseconds, and every ``netdsl`` process parses. The cache is keyed by everything the tables depend on,
so a stale file is never read; any failure to read or write it costs only the time to build the parser."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import lark
from lark import Lark

OPTIONS = dict(parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True)
CACHE_ENV = "NETDSL_CACHE_DIR"


def cache_dir() -> Path:
    """Where netdsl keeps what it may rebuild: ``$NETDSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/netdsl``,
    else ``~/.cache/netdsl``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "netdsl"


def cache_file(grammar: str) -> Path:
    """The cache file of the parser built from ``grammar``: keyed by the grammar's text, the options, Lark's
    and Python's versions, so that a change to any of them builds (and caches) a new parser."""
    key = "\0".join([grammar, repr(sorted(OPTIONS.items())), lark.__version__, sys.version])
    return cache_dir() / f"parser-{hashlib.sha256(key.encode()).hexdigest()[:24]}.lark"


def load_or_build(grammar: str) -> tuple[Lark, str]:
    """The LALR parser of ``grammar`` and how it was made: "hit" (read from the cache), "miss" (built, then
    cached) or "off" (built; no cache directory could be written). A missing, unreadable or damaged cache
    file, or a directory that cannot be written, costs only the time to build the parser. The file is a
    pickle (Lark's format), so the directory is made private to the user; it is written whole or not at all.
    The status is returned, not kept, so that the parser module records it for the process's own parser."""
    try:
        path = cache_file(grammar)
    except RuntimeError:  # no home directory to find a cache in
        return Lark(grammar, **OPTIONS), "off"
    try:
        with open(path, "rb") as f:
            return Lark.load(f), "hit"
    except Exception:  # not there yet, or damaged (a crash mid-write elsewhere): rebuild it
        pass
    parser = Lark(grammar, **OPTIONS)
    try:
        _write(parser, path)
    except OSError:
        return parser, "off"
    return parser, "miss"


def _write(parser: Lark, path: Path) -> None:
    """Save ``parser`` at ``path`` through a temporary file in the same directory, replaced into place, so
    that a reader in another process sees the old file, the new one or none, never half of one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            parser.save(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
