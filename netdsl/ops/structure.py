"""Structure ops: ``split`` and ``chunk`` (torch.split / torch.chunk: several results), ``unflatten`` and
``expand`` (a dim split in several; size-1 dims repeated), and ``parameter`` (a learned tensor read as a
value).

``q, k, v = x -> chunk(3, dim=-1)`` binds the three pieces at once; each piece is a result of one node
(``OpDef.infer`` returns a tuple of types). In the Triton backend the pieces are strided views of the
input when every reader takes strided operands (attention after the head split: Q, K and V of one GEMM
cost no copy; the layout plan's ``split_views``), else one torch copy each into planned storage.

``parameter`` is how a file reads a parameter as a tensor: one declared with ``param cls: [1, 1, 768]``,
or a layer's, by its label and role (``tok.weight``: GPT-2's output head tied to its token embedding).
It has no inputs and computes nothing: its value is the weight itself (``OpDef.constant``), stored with
the weights, never in the activation memory plan.
"""

from __future__ import annotations

import numpy as np

from ..ir.dims import SymDim
from ..ir.graph import ParamSpec
from ..ir.printer import format_attr as _show
from ..ir.types import TensorType
from .registry import ORDERED, Attr, OpDef, OpKind, ShapeError, register


def _axis(t: TensorType, dim, op: str) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or not -t.rank <= dim < t.rank:
        raise ShapeError(f"`{op}` dim={_show(dim)} is out of range for {t} (dims {-t.rank}..{t.rank - 1})",
                         hint="dims count from 0; a negative dim counts from the end (-1 is the last)", arg="dim")
    return dim % t.rank


def split_sizes(t: TensorType, attrs, op: str) -> tuple[int, ...]:
    """The size of each piece along the split dim, as torch.split / torch.chunk cut it."""
    axis = _axis(t, attrs["dim"], op)
    n = t.shape[axis]
    if isinstance(n, SymDim):
        raise ShapeError(f"`{op}` along dim {axis} of {t}: its size `{n}` is not known, so neither is the number "
                         "of pieces", hint="split a dim of fixed size")
    if op == "chunk":
        chunks = attrs["chunks"]
        size = -(-n // chunks)  # torch.chunk: pieces of ceil(n / chunks), the last smaller (maybe fewer pieces)
        return tuple(min(size, n - at) for at in range(0, n, size))
    sizes = attrs["split_size_or_sections"]
    if isinstance(sizes, int) and not isinstance(sizes, bool):
        if sizes < 1:
            raise ShapeError(f"`split` size must be positive, got {sizes}", arg="split_size_or_sections")
        return tuple(min(sizes, n - at) for at in range(0, n, sizes))
    if not (isinstance(sizes, tuple) and sizes and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                        for s in sizes)):
        raise ShapeError(f"`split` takes a piece size or a tuple of sizes, got {_show(sizes)}",
                         hint="e.g. split(64, dim=-1) or split((512, 256, 256), dim=-1)", arg="split_size_or_sections")
    if sum(sizes) != n:
        raise ShapeError(f"`split` sizes {_show(sizes)} add up to {sum(sizes)}, but dim {axis} of {t} is {n}",
                         hint="the sizes must add up to the size of the split dim", arg="split_size_or_sections")
    return sizes


def _split_infer(op: str):
    def infer(types, attrs):
        (t,) = types
        axis = attrs["dim"] % t.rank if t.rank else 0
        pieces = tuple(t.with_shape(t.shape[:axis] + (s,) + t.shape[axis + 1:]) for s in split_sizes(t, attrs, op))
        return pieces if len(pieces) > 1 else pieces[0]  # one piece is one result
    return infer


def split_reference(x: np.ndarray, sizes, dim: int) -> tuple[np.ndarray, ...]:
    bounds = np.cumsum(sizes)[:-1]
    return tuple(np.ascontiguousarray(p) for p in np.split(x, bounds, axis=dim))


def _split_ref(op: str):
    def ref(xs, params, attrs):
        (x,) = xs
        pieces = split_reference(x, split_sizes(TensorType(x.shape), attrs, op), attrs["dim"] % x.ndim)
        return pieces if len(pieces) > 1 else pieces[0]
    return ref


DIM = Attr("dim", "int", 0, doc="the dim to cut (torch's default 0; -1 is the last)")

register(OpDef("split", OpKind.INJECTIVE, _split_infer("split"), _split_ref("split"), lambda ins, out, a: 0,
               (Attr("split_size_or_sections", "any", doc="the size of each piece, or a tuple of sizes"), DIM),
               doc="torch.split: pieces of a given size (the last smaller), or of the given sizes",
               axis=ORDERED, launches=0, split_axis=lambda a: a["dim"]))
register(OpDef("chunk", OpKind.INJECTIVE, _split_infer("chunk"), _split_ref("chunk"), lambda ins, out, a: 0,
               (Attr("chunks", "int", positive=True, doc="how many pieces (torch may give fewer)"), DIM),
               doc="torch.chunk: `chunks` pieces of ceil(size / chunks) (the last smaller)", axis=ORDERED,
               launches=0, split_axis=lambda a: a["dim"]))


# -- parameter -------------------------------------------------------------------------------------

INITS = ("zeros", "ones", "normal", "uniform", "const")


def _param_infer(types, attrs):
    return TensorType(tuple(attrs["shape"]))


def _param_spec(types, attrs) -> dict[str, ParamSpec]:
    return {"value": ParamSpec(tuple(attrs["shape"]), "zeros")}


register(OpDef("parameter", OpKind.INJECTIVE, _param_infer, lambda xs, p, a: p["value"], lambda ins, out, a: 0,
               (Attr("shape", "any", doc="the parameter's shape"),), arity=0, params=_param_spec,
               doc="a learned tensor read as a value (declared with `param`, or a layer's: `tok.weight`)",
               axis=ORDERED, pointwise=False, constant=True, launches=0))


# -- unflatten, expand -------------------------------------------------------------------------------

def _unflatten_infer(types, attrs):
    from .tensor import reshape_shape, shape_items

    (t,) = types
    axis = _axis(t, attrs["dim"], "unflatten")
    sizes = shape_items(attrs["sizes"], "unflatten", "sizes")
    try:
        split = reshape_shape(TensorType((t.shape[axis],)), sizes)
    except ShapeError as e:
        why = e.message.split(": ", 1)[-1]  # reshape's reason, without its own description of the call
        raise ShapeError(f"`unflatten` of dim {axis} of {t} into {_show(tuple(sizes))}: {why}",
                         hint=f"the sizes must multiply to {t.shape[axis]}, the dim's size; one may be -1 (inferred); "
                              "splitting attention heads, the number of heads must divide the model dim",
                         arg="sizes") from None
    return t.with_shape(t.shape[:axis] + tuple(split) + t.shape[axis + 1:])


def _unflatten_ref(xs, params, attrs):
    (x,) = xs
    axis = attrs["dim"] % x.ndim
    return x.reshape(x.shape[:axis] + tuple(attrs["sizes"]) + x.shape[axis + 1:])


register(OpDef("unflatten", OpKind.INJECTIVE, _unflatten_infer, _unflatten_ref, lambda ins, out, a: 0,
               (Attr("dim", "int", doc="the dim to split into several"),
                Attr("sizes", "shape", doc="its new sizes, e.g. (heads, -1); one may be -1")),
               doc="torch.unflatten: one dim becomes several (a view; the heads of attention: unflatten(-1, (h, -1)))",
               axis=ORDERED, view=True, launches=0))


EXPAND_HINT = "expand stretches size-1 dims (and adds leading ones); -1 keeps a dim; e.g. `expand(N, -1, -1)`"


def _expand_infer(types, attrs):
    from .tensor import shape_items

    (t,) = types
    sizes = shape_items(attrs["sizes"], "expand", "sizes")
    if len(sizes) < t.rank:
        raise ShapeError(f"`expand` to {_show(sizes)} names {len(sizes)} dim(s), but {t} has {t.rank}",
                         hint=EXPAND_HINT, arg="sizes")
    lead = len(sizes) - t.rank
    out = []
    for i, s in enumerate(sizes):
        have = t.shape[i - lead] if i >= lead else None
        if isinstance(s, int) and not isinstance(s, bool) and s == -1:
            if have is None:
                raise ShapeError(f"`expand` to {_show(sizes)}: a new leading dim cannot be -1", hint=EXPAND_HINT,
                                 arg="sizes")
            out.append(have)
        elif not (isinstance(s, SymDim) or (isinstance(s, int) and not isinstance(s, bool) and s >= 1)):
            raise ShapeError(f"`expand` sizes are positive integers, dims or -1, got {_show(s)}", hint=EXPAND_HINT,
                             arg="sizes")
        elif have is not None and have != 1 and have != s:
            raise ShapeError(f"`expand` of {t} to {_show(sizes)}: dim {i - lead} is {have}, not 1, so it cannot become "
                             f"{s}", hint=EXPAND_HINT, arg="sizes")
        else:
            out.append(s)
    return t.with_shape(tuple(out))


register(OpDef("expand", OpKind.INJECTIVE, _expand_infer,
               lambda xs, p, a: np.ascontiguousarray(np.broadcast_to(xs[0], tuple(
                   xs[0].shape[i - (len(a["sizes"]) - xs[0].ndim)] if s == -1 else s
                   for i, s in enumerate(a["sizes"])))),
               lambda ins, out, a: 0,
               (Attr("sizes", "shape", doc="the new sizes: -1 keeps a dim, size-1 dims stretch"),),
               doc="Tensor.expand: size-1 dims repeated (ViT's class token for every sample: expand(N, -1, -1))",
               axis=ORDERED, launches=0))
