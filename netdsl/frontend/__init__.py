"""The front end: .net text -> AST (Lark) -> typed IR graph."""

from __future__ import annotations

from pathlib import Path

from ..errors import NetDSLError
from ..ir.graph import Graph
from .elaborate import elaborate
from .parser import parse


def load_source(source: str, file: str = "<string>", network: str | None = None) -> Graph:
    """Parse and elaborate .net text into an IR graph."""
    return elaborate(parse(source, file), network)


def load(path: str | Path, network: str | None = None) -> Graph:
    """Parse and elaborate a .net file into an IR graph."""
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as e:
        raise NetDSLError(f"cannot read {path}: {e.strerror}", None) from None
    return load_source(source, str(path), network)


__all__ = ["parse", "elaborate", "load", "load_source"]
