"""The sizes a benchmark runs a model at, shared by the benchmark scripts."""

from __future__ import annotations

from netdsl.ir.sizes import concrete_dims, parse_dims


def model_dims(graph, batch: int | None = None, size: int | None = None, seq: int | None = None,
               dims_text: str | None = None) -> dict[str, int]:
    """Concrete sizes of the inputs' symbolic dims: ``dims_text`` ("T=128,S=64"), then N = ``batch``,
    H = W = ``size`` and every other dim (T, S) = ``seq``, where the inputs have them; then the file's
    defaults (netdsl.ir.sizes.concrete_dims)."""
    symbols = set().union(*(v.type.symbols() for v in graph.inputs))
    over = {}
    for sym in symbols:
        if sym == "N" and batch is not None:
            over[sym] = batch
        elif sym in ("H", "W") and size is not None:
            over[sym] = size
        elif sym not in ("N", "H", "W") and seq is not None:
            over[sym] = seq
    over.update(parse_dims(dims_text))
    return concrete_dims(graph, over)
