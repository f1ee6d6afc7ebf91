"""Basic indexing along one dim, as torch: ``slice`` and ``select``.

``slice(dim, start=0, end=None, step=1)`` is ``x[..., start:end:step]`` on dim ``dim`` (``x.narrow`` with a
step): the dim is kept. Python's rules: a negative bound counts from the end, a bound out of range clamps,
``end`` None is the end; the step is at least 1 (torch has no negative steps). ``select(dim, index)`` is
``x.select(dim, index)`` (``x[:, index]``): the dim is removed; a negative index counts from the end and one
out of range is an error. The language's ``x[...]`` indexing becomes chains of these two ops.

Bounds and indices may be symbolic dims (``pos[:T]`` slices a [1024, 768] table to [T, 768]). A symbolic
bound counts from the start when it is non-negative for every size of its dims (``T``, ``T - 1``) and from
the end when it is negative for every size (``-T``); one whose sign depends on the sizes (``T - 5``) is an
error. The output size is then the exact expression for bounds that fall inside the dim (``pos[:T]`` gives
``T``, ``x[1:]`` of a dim ``T`` gives ``T - 1``): whether they do is known only once the sizes are bound,
so a bound that would clamp there (``T`` > 1024) is an error when the network runs, not a silently
shorter tensor. References are plain NumPy indexing with the bound sizes (a copy, in the input's dtype).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import NetDSLError
from ..ir.dims import SymDim
from ..ir.printer import format_attr as _show
from ..ir.types import TensorType
from .registry import Attr, OpDef, OpKind, ShapeError, register

DIM_HINT = "dims count from 0; a negative dim counts from the end (-1 is the last)"
FIXED_HINT = ("give the dim a fixed size, or use a bound whose sign does not depend on the sizes (`T`, `T - 1`: from "
              "the start; `-T`: from the end)")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _axis(t: TensorType, dim, op: str) -> int:
    if not _is_int(dim) or not -t.rank <= dim < t.rank:
        span = f"{-t.rank}..{t.rank - 1}" if t.rank else "none: it has no dims"
        raise ShapeError(f"`{op}` dim={_show(dim)} is out of range for {t} (dims {span})", hint=DIM_HINT, arg="dim")
    return dim % t.rank


def _bound(value: Any, op: str, name: str, none_ok: bool = False):
    """An integer or a symbolic dim (or None where ``none_ok``), as given."""
    if (value is None and none_ok) or _is_int(value) or isinstance(value, SymDim):
        return value
    also = ", or left out for the end" if none_ok else ""
    raise ShapeError(f"`{op}` {name} must be an integer or a dim of the input (e.g. `T`){also}, got {_show(value)}",
                     arg=name)


def _sign(d: SymDim) -> int:
    """+1 when ``d`` is >= 0 for every size of its dims (each at least 1), -1 when it is < 0 for every size,
    0 when that depends on the sizes. A floor division (``(T - 1)//2``) counts as >= 0."""
    plain = [c for atom, c in d.terms if isinstance(atom, str)]
    coeffs = [c for _, c in d.terms]
    if all(c > 0 for c in coeffs) and d.const + sum(plain) >= 0:
        return 1
    if all(c < 0 for c in coeffs) and d.const + sum(plain) < 0:
        return -1
    return 0


def _position(b, size, op: str, name: str):
    """Where bound ``b`` falls in a dim of ``size``, as Python's slicing puts it: a negative bound counts from
    the end and positions clamp to [0, size]. A symbolic position is assumed to lie inside the dim (that is
    checked once the sizes are bound); an integer one is clamped here where the size allows."""
    if b is None:
        return size
    if isinstance(b, SymDim):
        sign = _sign(b)
        if sign == 0:
            raise ShapeError(f"`{op}` {name}={b}: whether it counts from the start or from the end (a negative "
                             "bound) depends on the sizes, so the output size cannot be written down",
                             hint=FIXED_HINT, arg=name)
        p = b if sign > 0 else size + b
    else:
        p = b if b >= 0 else size + b
    if _is_int(p):
        p = max(p, 0)  # a negative position clamps to 0 whatever the size
        if _is_int(size):
            p = min(p, size)
    return p


def slice_length(size, start, end, step: int, op: str = "slice"):
    """The length of ``x[start:end:step]`` along a dim of ``size``: Python's for integers; with symbolic ones,
    the exact expression for bounds inside the dim (whether they are is checked when sizes are bound)."""
    if not _is_int(step) or step < 1:
        raise ShapeError(f"`{op}` step={_show(step)}: the step must be at least 1",
                         hint="torch slices with positive steps only (a negative step is an error there too): "
                              "give a step of 1 or more", arg="step")
    if _is_int(size) and _is_int(start) and (end is None or _is_int(end)):
        return len(range(*slice(start, end, step).indices(size)))
    diff = _position(end, size, op, "end") - _position(start, size, op, "start")
    if _is_int(diff):
        return max(0, -(-diff // step))
    return 0 if _sign(diff) < 0 else (diff + step - 1) // step


def _slice_infer(types, attrs):
    (t,) = types
    d = _axis(t, attrs["dim"], "slice")
    start = _bound(attrs["start"], "slice", "start")
    end = _bound(attrs["end"], "slice", "end", none_ok=True)
    length = slice_length(t.shape[d], start, end, attrs["step"])
    return t.with_shape(t.shape[:d] + (length,) + t.shape[d + 1:])


def slice_reference(x: np.ndarray, dim: int, start: int = 0, end: int | None = None, step: int = 1) -> np.ndarray:
    """``x[..., start:end:step]`` along ``dim`` (integers: the reference backend binds symbolic bounds), a copy."""
    d = dim % x.ndim
    return np.array(x[(slice(None),) * d + (slice(start, end, step),)], order="C")


register(OpDef("slice", OpKind.INJECTIVE, _slice_infer,
               lambda xs, p, a: slice_reference(xs[0], a["dim"], a["start"], a["end"], a["step"]),
               lambda ins, out, a: 0,
               (Attr("dim", "int", doc="the dim to slice (-1: the last)"),
                Attr("start", "any", 0, doc="the first index: an integer or a dim of the input (negative: from the end)"),
                Attr("end", "any", None, doc="the end (exclusive): an integer or a dim; left out: to the end"),
                Attr("step", "int", 1, doc="take every step-th element (at least 1)")),
               doc="x[..., start:end:step] along one dim (Python's rules; the dim is kept)",
               strided_inputs=True, strided_output=True, launches=0))


def _select_infer(types, attrs):
    (t,) = types
    d = _axis(t, attrs["dim"], "select")
    index, size = _bound(attrs["index"], "select", "index"), t.shape[d]
    if isinstance(index, SymDim) and _sign(index) == 0:
        raise ShapeError(f"`select` index={index}: whether it counts from the start or from the end (a negative "
                         "index) depends on the sizes", hint=FIXED_HINT, arg="index")
    if _is_int(index) and _is_int(size) and not -size <= index < size:
        raise ShapeError(f"`select` index {index} is out of range for dim {d} of {t}, of size {size}",
                         hint=f"an index counts from 0 to {size - 1}; a negative one from the end (-1 is the last)",
                         arg="index")
    return t.with_shape(t.shape[:d] + t.shape[d + 1:])


def select_index(size: int, index: int) -> int:
    """``index`` (negative: from the end) in 0..size-1; out of range is a NetDSLError (once sizes are bound)."""
    if not -size <= index < size:
        raise NetDSLError(f"`select` index {index} is out of range for a dim of size {size}",
                          hint="the index, with the sizes bound, must name an element of the dim: "
                               f"{-size} <= index < {size}")
    return index % size


def select_reference(x: np.ndarray, dim: int, index: int) -> np.ndarray:
    """``x.select(dim, index)``, a copy (integers: the reference backend binds a symbolic index)."""
    d = dim % x.ndim
    return np.array(x[(slice(None),) * d + (select_index(x.shape[d], index),)], order="C")  # rank 0 stays rank 0


register(OpDef("select", OpKind.INJECTIVE, _select_infer,
               lambda xs, p, a: select_reference(xs[0], a["dim"], a["index"]), lambda ins, out, a: 0,
               (Attr("dim", "int", doc="the dim to remove (-1: the last)"),
                Attr("index", "any", doc="the element of that dim to keep: an integer or a dim (negative: from the end)")),
               doc="x.select(dim, index): one element along a dim, which is removed",
               strided_inputs=True, strided_output=True, launches=0))
