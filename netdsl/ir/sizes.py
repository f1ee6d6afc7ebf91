"""Concrete sizes for a graph's symbolic input dims (``N``, ``H``, ...).

Everything that needs concrete shapes binds them the same way: the sizes asked for (``--dims``), then
the file's defaults (``input x: f32[N, 3, H=224, W=224]``), then N=1. Used by the command line,
ahead-of-time builds and the benchmarks.
"""

from __future__ import annotations

from typing import Mapping

from ..errors import NetDSLError
from .graph import Graph


def parse_dims(text: str | None) -> dict[str, int]:
    """Sizes written as ``N=1,H=224,W=224`` (the form of ``--dims``); empty for None or ""."""
    dims: dict[str, int] = {}
    if not text:
        return dims
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip().isdigit():
            raise NetDSLError(f"bad --dims entry `{item}`", hint="write --dims N=1,H=224,W=224")
        dims[key.strip()] = int(value)
    return dims


def concrete_dims(graph: Graph, overrides: Mapping[str, int]) -> dict[str, int]:
    """Bind every symbolic input dim: ``overrides``, then the file's defaults, then N=1; any other
    symbol left without a size is a NetDSLError."""
    env = {**graph.dim_defaults, **overrides}
    for v in graph.inputs:
        for sym in sorted(v.type.symbols()):
            if sym not in env:
                if sym == "N":
                    env[sym] = 1
                else:
                    raise NetDSLError(f"input dimension `{sym}` has no size",
                                      hint=f"give one with --dims {sym}=SIZE, or a default in the file ({sym}=224)")
    return env
