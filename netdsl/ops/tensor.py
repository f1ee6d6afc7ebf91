"""Tensor ops for sequence models, as in PyTorch: ``matmul``, ``reshape``, ``transpose``, ``permute``,
``unsqueeze`` and ``squeeze`` (the sequence layers themselves, embedding, positional encoding and
attention, are in ``sequence.py``).

Each op is one registry entry with torch's semantics (``torch.matmul``, ``Tensor.reshape``, ...). Shapes may hold symbolic dims (``N``, ``T``):
``reshape``'s target may name them (``reshape(N, T, 8, -1)``) and its element counts are compared as
products of dims.py expressions. References are vectorised NumPy and compute in the dtype of their
inputs.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import reduce
from typing import Any, Mapping, Sequence

import numpy as np

from ..ir.dims import SymDim
from ..ir.printer import format_attr as _show
from ..ir.types import TensorType, numel
from .registry import ORDERED, Attr, OpDef, OpKind, ShapeError, register


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_dim(v) -> bool:
    return _is_int(v) or isinstance(v, SymDim)


def _dim_index(dim, rank: int, op: str, t: TensorType, name: str = "dim", extra: int = 0) -> int:
    """``dim`` (negative counts from the end) as an index in 0..rank-1+extra; ``extra`` is 1 for an
    unsqueeze, which may also name the position after the last dim."""
    n = rank + extra
    if not _is_int(dim) or not -n <= dim < n:
        span = f"{-n}..{n - 1}" if n else "none"
        raise ShapeError(f"`{op}` {name}={_show(dim)} is out of range for {t} (dims {span})",
                         hint="dims count from 0; a negative dim counts from the end (-1 is the last)", arg=name)
    return dim % n


def _broadcast(shapes: Sequence[tuple], what: str, hint: str) -> tuple:
    """NumPy/torch broadcasting of batch shapes (aligned at their last dims, a missing dim counts as 1);
    a symbolic dim broadcasts only with itself or 1. ``what`` names the call, for the message."""
    rank = max((len(s) for s in shapes), default=0)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for i in range(rank):
        sizes = [s[i] for s in padded]
        big = [d for d in sizes if d != 1]
        if any(d != big[0] for d in big):
            raise ShapeError(f"{what}: the batch dims do not broadcast: dim {i - rank} (counting from the last) is "
                             f"{' vs '.join(_show(d) for d in sizes)}", hint=hint)
        out.append(big[0] if big else 1)
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------------------------

MATMUL_HINT = ("matmul contracts the last dim of the first tensor with the second-to-last of the second (the only "
               "dim of a 1-D one): [..., n, k] @ [..., k, m] -> [..., n, m]; transpose(-2, -1) one of them?")


def _matmul_infer(types, attrs):
    a, b = types
    for t, which in ((a, "first"), (b, "second")):
        if not 1 <= t.rank <= 4:
            raise ShapeError(f"`matmul` takes tensors of rank 1 to 4, its {which} input is {t}",
                             hint="reshape a scalar to [1], or merge leading batch dims with reshape" if t.rank
                             else "a rank-0 tensor has no dim to contract: reshape it to [1], or scale with `x * c`")
    ka, kb = a.shape[-1], (b.shape[0] if b.rank == 1 else b.shape[-2])
    if ka != kb:
        raise ShapeError(f"`matmul` of {a} and {b}: inner dims {_show(ka)} and {_show(kb)} differ", hint=MATMUL_HINT)
    batch = _broadcast([a.shape[:-2], b.shape[:-2]], f"`matmul` of {a} and {b}",
                       "batch dims (all but the last two) must be equal or 1, as in torch.matmul")
    rows = (a.shape[-2],) if a.rank >= 2 else ()
    cols = (b.shape[-1],) if b.rank >= 2 else ()
    return a.with_shape(batch + rows + cols)


def matmul_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """torch.matmul (NumPy's matmul has the same rules: 1-D operands, batch broadcasting)."""
    return np.asarray(np.matmul(a, b))


register(OpDef("matmul", OpKind.OUT_FUSABLE, _matmul_infer, lambda xs, p, a: matmul_reference(xs[0], xs[1]),
               lambda ins, out, a: 2 * numel(out) * ins[0][-1], arity=2,
               doc="torch.matmul: [..., n, k] @ [..., k, m] -> [..., n, m], batch dims broadcast; a 1-D operand "
                   "is a vector (ranks 1 to 4)",
               axis=-1, strided_inputs=True))


# ---------------------------------------------------------------------------------------------
# reshape: element counts as products of (symbolic) dims
# ---------------------------------------------------------------------------------------------

def _split_dim(d) -> tuple[int, SymDim | None]:
    """A dim as (integer coefficient, symbolic unit): 2*N + 2 -> (2, N + 1); an int -> (d, None). Units are
    canonical (coefficients with gcd 1, the first one positive), so equal products have equal factors."""
    if _is_int(d):
        return d, None
    coeffs = [c for _, c in d.terms] + ([d.const] if d.const else [])
    g = reduce(math.gcd, (abs(c) for c in coeffs))
    if d.terms[0][1] < 0:
        g = -g
    unit = (d if g > 0 else -d) // abs(g)
    return g, unit


def _product(dims) -> tuple[int, Counter]:
    """The product of ``dims`` as (integer coefficient, Counter of symbolic units)."""
    coeff, units = 1, Counter()
    for d in dims:
        c, u = _split_dim(d)
        coeff *= c
        if u is not None:
            units[u] += 1
    return coeff, units


def _show_product(coeff: int, units: Counter) -> str:
    parts = [] if coeff == 1 and units else [str(coeff)]
    for u, k in sorted(units.items(), key=lambda x: str(x[0])):
        simple = len(u.terms) == 1 and not u.const and isinstance(u.terms[0][0], str)
        parts += [str(u) if simple else f"({u})"] * k
    return " * ".join(parts)


def shape_items(value: Any, op: str = "reshape", attr: str = "shape") -> tuple:
    """An attribute holding dims: a tuple, or one int / dim for a rank-1 shape (``reshape(6)``)."""
    if _is_dim(value):
        return (value,)
    if isinstance(value, tuple):
        return value
    raise ShapeError(f"attribute `{attr}` of `{op}` must be a tuple of dims, got {_show(value)}",
                     hint=f"e.g. `{op}(N, T, 8, -1)`" if op == "reshape" else f"e.g. `{op}(0, 2, 1, 3)`", arg=attr)


RESHAPE_HINT = ("the new shape must hold exactly the input's elements; one dim may be -1, inferred as the element "
                "count divided by the other dims")


def reshape_shape(t: TensorType, target: Sequence) -> tuple:
    """The output shape of reshaping ``t`` to ``target`` (ints >= 1, symbolic dims, at most one -1), with
    element counts compared as products of symbolic dims; raises ShapeError when they cannot agree."""
    for v in target:
        if not _is_dim(v):
            raise ShapeError(f"`reshape` dims are integers or dims of the input, got {_show(v)} in "
                             f"{_show(tuple(target))}", hint="e.g. `reshape(N, T, 8, -1)`", arg="shape")
        if _is_int(v) and v < 1 and v != -1:
            raise ShapeError(f"`reshape` dims must be at least 1 (or -1 for the one inferred dim), got {v} in "
                             f"{_show(tuple(target))}", hint=RESHAPE_HINT, arg="shape")
    holes = [i for i, v in enumerate(target) if _is_int(v) and v == -1]
    if len(holes) > 1:
        raise ShapeError(f"`reshape` can infer only one dim, but {_show(tuple(target))} has {len(holes)} -1s",
                         hint="give every dim but one explicitly (symbolic dims such as N may be named)", arg="shape")
    c_in, u_in = _product(t.shape)
    known = [v for v in target if not (_is_int(v) and v == -1)]
    c_out, u_out = _product(known)
    n_in, n_out = _show_product(c_in, u_in), _show_product(c_out, u_out)
    what = f"`reshape` of {t} to {_show(tuple(target))}"
    if not holes:
        if (c_in, u_in) != (c_out, u_out):
            symbolic = " (symbolic element counts must agree for every size of the dims)" if u_in or u_out else ""
            raise ShapeError(f"{what}: {n_in} elements cannot take a shape of {n_out}", hint=RESHAPE_HINT + symbolic)
        return tuple(target)
    if c_in % c_out or u_out - u_in:
        symbolic = " (with symbolic dims the quotient must be exact for every size: give those dims fixed sizes " \
                   "in the input's type)" if u_in or u_out else ""
        raise ShapeError(f"{what}: the {n_in} elements do not divide by the other dims ({n_out})",
                         hint=RESHAPE_HINT + symbolic)
    rest = u_in - u_out
    size: Any = c_in // c_out
    if sum(rest.values()) > 1:
        raise ShapeError(f"{what}: the inferred dim would be {_show_product(size, rest)}, a product of symbolic dims",
                         hint="keep those dims apart (e.g. `reshape(N, T, 8, -1)`), or give the input a fixed size")
    for unit in rest:
        size = unit * size
    return tuple(size if i == holes[0] else v for i, v in enumerate(target))


def _reshape_infer(types, attrs):
    (t,) = types
    return t.with_shape(reshape_shape(t, shape_items(attrs["shape"])))


def reshape_reference(x: np.ndarray, shape: Sequence, dims: Mapping[str, int] | None = None) -> np.ndarray:
    """``x.reshape(shape)``; symbolic dims in ``shape`` are evaluated with ``dims`` (the reference backend
    binds them before calling an op's reference, so registry calls see ints)."""
    items = []
    for v in shape_items(shape):
        if isinstance(v, SymDim):
            if dims is None:
                raise ValueError(f"reshape_reference: the symbolic dim {v} needs its size (pass dims=...)")
            v = v.evaluate(dims)
        items.append(v)
    return x.reshape(items)


register(OpDef("reshape", OpKind.INJECTIVE, _reshape_infer, lambda xs, p, a: reshape_reference(xs[0], a["shape"]),
               lambda ins, out, a: 0,
               (Attr("shape", "shape", doc="the new shape: ints >= 1, dims of the input (N, T), at most one -1"),),
               doc="Tensor.reshape: the same elements in a new shape (one dim may be -1)",
               axis=ORDERED, view=True, launches=0))


# ---------------------------------------------------------------------------------------------
# transpose, permute, unsqueeze, squeeze
# ---------------------------------------------------------------------------------------------

def _transpose_infer(types, attrs):
    (t,) = types
    d0 = _dim_index(attrs["dim0"], t.rank, "transpose", t, "dim0")
    d1 = _dim_index(attrs["dim1"], t.rank, "transpose", t, "dim1")
    shape = list(t.shape)
    shape[d0], shape[d1] = shape[d1], shape[d0]
    return t.with_shape(shape)


def _transposition(attrs, rank: int) -> tuple[int, ...]:
    perm = list(range(rank))
    d0, d1 = attrs["dim0"] % rank, attrs["dim1"] % rank
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return tuple(perm)


register(OpDef("transpose", OpKind.INJECTIVE, _transpose_infer,
               lambda xs, p, a: np.swapaxes(xs[0], a["dim0"], a["dim1"]),  # a view: readers take any strides
               lambda ins, out, a: 0, (Attr("dim0", "int"), Attr("dim1", "int")),
               doc="torch.transpose: swap two dims (the data moves)", axis=ORDERED, launches=0,
               permutation=_transposition))


PERMUTE_HINT = ("`permute` lists every dim of the input exactly once, in its new order (negative dims count from "
                "the end)")


def permutation(t: TensorType, dims) -> tuple[int, ...]:
    """``dims`` checked as a permutation of ``t``'s dims, normalised to 0..rank-1."""
    items = shape_items(dims, "permute", "dims")
    if len(items) != t.rank:
        raise ShapeError(f"`permute` dims {_show(items)} name {len(items)} dim(s), but {t} has {t.rank}",
                         hint=PERMUTE_HINT, arg="dims")
    out = tuple(_dim_index(d, t.rank, "permute", t, "dims") for d in items)
    repeated = sorted({d for d in out if out.count(d) > 1})
    if repeated:
        raise ShapeError(f"`permute` dims {_show(items)} are not a permutation of the {t.rank} dims of {t}: dim "
                         f"{repeated[0]} appears twice", hint=PERMUTE_HINT, arg="dims")
    return out


def _permute_infer(types, attrs):
    (t,) = types
    return t.with_shape(tuple(t.shape[d] for d in permutation(t, attrs["dims"])))


register(OpDef("permute", OpKind.INJECTIVE, _permute_infer,
               lambda xs, p, a: np.transpose(xs[0], shape_items(a["dims"], "permute", "dims")),  # a view
               lambda ins, out, a: 0,
               (Attr("dims", "shape", doc="the input's dims in their new order, e.g. (0, 2, 1, 3)"),),
               doc="Tensor.permute: reorder the dims (the data moves)", axis=ORDERED, launches=0,
               permutation=lambda attrs, rank: tuple(d % rank for d in shape_items(attrs["dims"], "permute", "dims"))))


def _unsqueeze_infer(types, attrs):
    (t,) = types
    d = _dim_index(attrs["dim"], t.rank, "unsqueeze", t, extra=1)
    return t.with_shape(t.shape[:d] + (1,) + t.shape[d:])


register(OpDef("unsqueeze", OpKind.INJECTIVE, _unsqueeze_infer,
               lambda xs, p, a: np.expand_dims(xs[0], a["dim"] % (xs[0].ndim + 1)), lambda ins, out, a: 0,
               (Attr("dim", "int", doc="where the new size-1 dim goes (-1: last)"),),
               doc="torch.unsqueeze: insert a size-1 dim", axis=ORDERED, view=True, launches=0))


SQUEEZE_HINT = ("torch.squeeze would silently return the tensor unchanged here, which usually hides a shape bug; "
                "squeeze only a dim of size 1 (use reshape to change the shape otherwise)")


def _squeeze_infer(types, attrs):
    (t,) = types
    d = _dim_index(attrs["dim"], t.rank, "squeeze", t)
    size = t.shape[d]
    if size != 1:
        why = f"its size {size} is not known to be 1" if isinstance(size, SymDim) else f"its size is {size}, not 1"
        raise ShapeError(f"`squeeze` of dim {d} of {t}: {why}", hint=SQUEEZE_HINT)
    return t.with_shape(t.shape[:d] + t.shape[d + 1:])


register(OpDef("squeeze", OpKind.INJECTIVE, _squeeze_infer,
               lambda xs, p, a: np.squeeze(xs[0], axis=a["dim"]), lambda ins, out, a: 0,
               (Attr("dim", "int", doc="the size-1 dim to remove"),),
               doc="torch.squeeze(x, dim): remove a size-1 dim (an error for any other size)",
               axis=ORDERED, view=True, launches=0))
