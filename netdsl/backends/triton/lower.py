"""Lowering: each node of a (fused) IR graph becomes one kernel launch from ``netdsl.kernels``.

``LOWERINGS`` maps ops to functions ``(node, ctx) -> Step``: one entry per op, by name; a fused op
derived from an op (``OpDef.base``) lowers with its base's entry, and every activation (kind
ELEMENTWISE) with ``lower_activation``; ``lowering_of`` says which. A lowering packs its weights once,
at compile time (batchnorm folded into the conv/linear weight by ``netdsl.ops.nn.fold_batchnorm``,
weights pre-packed for the kernel's K-contiguous loads, cast to the compute dtype), and returns a
``Step`` whose ``run(inputs, out)`` launches the kernel(s), writing into ``out``: the storage the
memory plan gave the node's output (a buffer of the arena, or a channel slice of a concat's).

Layout is the layout plan's (``netdsl.passes.layout``): 4-D tensors NHWC, other ranks the IR's order.
A node reads its 4-D inputs in the layout the plan says (the module hands it converted copies where
needed); a node the plan gives a fix-up (its ``OpDef.axis`` is not stored last) runs through
``along_last``, which copies its operands with that dim moved last. A flatten the plan reads in (H, W, C)
order is a free view: the linears reading it get their weight columns permuted at pack time.

By theme: what every lowering shares (``Step``, ``LowerCtx``, layout and epilogue helpers) is in
``lower_base``; the sequence and tensor ops (matmul of activations, copies by torch, indexing,
embeddings, attention, recurrences) in ``lower_sequence``; the rest, the table and ``lower`` here.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from ...errors import NetDSLError
from ...ir.dims import SymDim
from ...ir.graph import Node
from ...kernels import adaptive_pool, conv, conv_transpose, matmul, norm, pointwise, pool, softmax, upsample
from ...ops import REGISTRY, OpDef, OpKind
from ...ops.epilogue import Epilogue
from ...ops.fused import folded_weight_and_bias
from ...ops.nn import batchnorm_affine, conv_pads
from ...ops.pooling import pool_pads
from ...ops.resample import upsample_scales
from ...passes.layout import stored_dim
from .lower_base import (TORCH_DTYPES, TORCH_INT_DTYPES, LowerCtx, Step, _with_residual, along_last,  # noqa: F401
                         epilogue_of, kernel_epilogue, to_internal, to_internal_view, to_ir)  # (re-exported)
from .lower_sequence import (lower_embedding, lower_expand, lower_matmul, lower_parameter, lower_permute,
                             lower_positional_encoding, lower_recurrent, lower_sdpa, lower_select, lower_slice,
                             lower_split)

# Split-K (kernels/splitk.py): a conv/linear step runs with the K slices the module's memory plan gives
# its node for the shape (``run(inputs, out, split_k=...)``; the plan counts the workspace, the cost
# report the reduction launch). Left to itself a step never splits: SPLIT_K.
SPLIT_K = 1


def lower_conv(node: Node, ctx: LowerCtx) -> Step:
    a = node.attrs
    w, b = folded_weight_and_bias(ctx.params(node), a)
    packed = conv.pack_conv_weight(ctx.tensor(w), a["groups"])
    ep = epilogue_of(ctx, node, b)
    depthwise = conv.is_depthwise(node.inputs[0].type.shape[1], a["groups"])

    def run(inputs, out, split_k=SPLIT_K):
        return conv.conv2d(inputs[0], packed, out_channels=a["out_channels"], kernel_size=a["kernel_size"],
                           stride=a["stride"], padding=conv_pads(a, inputs[0].shape[1:3]),  # NHWC: (H, W)
                           dilation=a["dilation"], groups=a["groups"],
                           epilogue=_with_residual(ep, node, inputs), out=out, allow_tf32=ctx.allow_tf32,
                           split_k=split_k)

    return Step(node, run, kernel="depthwise_conv2d" if depthwise else "conv2d")


def lower_conv_transpose(node: Node, ctx: LowerCtx) -> Step:
    a = node.attrs
    w, b = folded_weight_and_bias(ctx.params(node), a)
    packed = conv_transpose.pack_conv_transpose_weight(ctx.tensor(w), a["groups"])
    ep = epilogue_of(ctx, node, b)

    def run(inputs, out):
        return conv_transpose.conv_transpose2d(
            inputs[0], packed, out_channels=a["out_channels"], kernel_size=a["kernel_size"], stride=a["stride"],
            padding=a["padding"], output_padding=a["output_padding"], dilation=a["dilation"], groups=a["groups"],
            epilogue=_with_residual(ep, node, inputs), out=out, allow_tf32=ctx.allow_tf32)

    return Step(node, run, kernel="conv_transpose2d")


def lower_upsample(node: Node, ctx: LowerCtx) -> Step:
    a = node.attrs
    scales = upsample_scales(a)  # torch's source indices depend on the scale factor the user gave

    def run(inputs, out):
        size = tuple(out.shape[1:3])  # the planned output, NHWC
        if a["mode"] == "nearest":
            return upsample.upsample_nearest2d(inputs[0], size, scale_factor=scales, out=out)
        return upsample.upsample_bilinear2d(inputs[0], size, align_corners=bool(a["align_corners"]),
                                            scale_factor=scales, out=out)

    return Step(node, run, kernel=f"upsample_{a['mode']}2d")


def lower_linear(node: Node, ctx: LowerCtx) -> Step:
    w, b = folded_weight_and_bias(ctx.params(node), node.attrs)
    src = node.inputs[0].name
    if src in ctx.layout.hwc_flatten:  # the input is an NHWC map flattened as (H, W, C): permute the columns
        c, h, wd = ctx.layout.hwc_flatten[src]
        w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    packed = matmul.pack_linear_weight(ctx.tensor(w))
    ep = epilogue_of(ctx, node, b)

    def run(inputs, out, split_k=SPLIT_K):  # over the IR's last axis: W of a rank-4 (NHWC) input needs a fix-up
        def kernel(x, others, o):
            return matmul.linear(x, packed, epilogue=dataclasses.replace(ep, residual=others[0]), out=o,
                                 allow_tf32=ctx.allow_tf32, split_k=split_k)
        return along_last(ctx.axis(node), inputs[0], kernel, out, _with_residual(ep, node, inputs).residual)

    return Step(node, run, kernel="linear")


def lower_activation(node: Node, ctx: LowerCtx) -> Step:
    """An activation alone: the pointwise kernel with it as act1 (its learned parameter as slope1)."""
    grown, _ = Epilogue().then_activation(node.op, node.attrs)
    ep = kernel_epilogue(ctx, node, grown, slope_roles=("weight", "weight"))
    axis = ctx.axis(node)  # a parameter per channel runs along dim 1; None: any layout

    def run(inputs, out):
        if axis is not None:
            return along_last(axis, inputs[0], lambda x, _, o: pointwise.pointwise(x, epilogue=ep, out=o), out)
        return pointwise.pointwise(inputs[0], epilogue=ep, out=out)

    return Step(node, run, kernel="pointwise")


def _needs_channels(node: Node, what: str) -> None:
    if node.inputs[0].type.rank < 2:
        raise NetDSLError(f"{what} needs an input [N, C, ...]", node.loc)


def lower_batchnorm(node: Node, ctx: LowerCtx) -> Step:
    _needs_channels(node, "batchnorm")
    scale, shift = batchnorm_affine(ctx.param(node, "weight"), ctx.param(node, "bias"),
                                    ctx.param(node, "running_mean"), ctx.param(node, "running_var"), node.attrs["eps"])
    s, t = ctx.tensor(scale), ctx.tensor(shift)

    def run(inputs, out):  # channels are IR dim 1: last inside for ranks 2 and 4, moved there otherwise
        return along_last(ctx.axis(node), inputs[0], lambda x, _, o: pointwise.channel_affine(x, s, t, out=o), out)

    return Step(node, run, kernel="pointwise")


def lower_fused_pointwise(node: Node, ctx: LowerCtx) -> Step:
    _needs_channels(node, "fused_pointwise")
    s = t = None
    if node.attrs["bn"]:
        scale, shift = batchnorm_affine(ctx.param(node, "bn_weight"), ctx.param(node, "bn_bias"),
                                        ctx.param(node, "bn_mean"), ctx.param(node, "bn_var"), node.attrs["bn_eps"])
        s, t = ctx.tensor(scale), ctx.tensor(shift)
    ep = epilogue_of(ctx, node)

    def kernel(x, others, out):
        return pointwise.pointwise(x, scale=s, shift=t, epilogue=dataclasses.replace(ep, residual=others[0]), out=out)

    def run(inputs, out):
        return along_last(ctx.axis(node), inputs[0], kernel, out, _with_residual(ep, node, inputs).residual)

    return Step(node, run, kernel="pointwise")


def _ln_params(ctx, node):
    w, b = ctx.param(node, "weight"), ctx.param(node, "bias")
    return (ctx.tensor(w) if w is not None else None), (ctx.tensor(b) if b is not None else None)


def lower_layernorm(node: Node, ctx: LowerCtx) -> Step:
    """The row kernel over the last dim; over the last k dims (contiguous: the node reads the IR's
    order) it sees rows of their product, and the weight and bias flattened the same way."""
    w, b = _ln_params(ctx, node)
    k = node.attrs["dims"]
    w, b = (t.reshape(-1) if t is not None else None for t in (w, b))
    eps = node.attrs["eps"]
    ep = epilogue_of(ctx, node)
    add_before = node.attrs.get("add_before", False)

    def rows(t):
        return None if t is None or k == 1 else t.reshape(*t.shape[:t.dim() - k], -1)

    def kernel(x, others, out):
        addend, residual = others
        if k > 1:
            x, addend, residual, out_rows = rows(x), rows(addend), rows(residual), rows(out)
            y = norm.layernorm(x, w, b, eps, residual_before=addend,
                               epilogue=dataclasses.replace(ep, residual=residual), out=out_rows)
            return out if out is not None else y
        return norm.layernorm(x, w, b, eps, residual_before=addend, epilogue=dataclasses.replace(ep, residual=residual),
                              out=out)

    def run(inputs, out):  # over the IR's last axis: W of a rank-4 (NHWC) tensor needs a layout fix-up
        addend = inputs[1] if add_before else None
        return along_last(ctx.axis(node), inputs[0], kernel, out, addend, _with_residual(ep, node, inputs).residual)

    return Step(node, run, kernel="layernorm")


def lower_groupnorm(node: Node, ctx: LowerCtx) -> Step:
    _needs_channels(node, "groupnorm")
    w, b = ctx.tensor(ctx.param(node, "weight")), ctx.tensor(ctx.param(node, "bias"))
    ep = epilogue_of(ctx, node)
    groups, eps = node.attrs["groups"], node.attrs["eps"]

    def as_nhwc(t):  # channels-last [N, ..., C] as the kernel's [N, pixels, 1, C] (a view)
        return None if t is None or t.dim() == 4 else t.reshape(t.shape[0], -1, 1, t.shape[-1])

    def kernel(x, others, out):
        if x.dim() == 4:
            return norm.groupnorm(x, groups, w, b, eps, epilogue=dataclasses.replace(ep, residual=others[0]), out=out)
        e = dataclasses.replace(ep, residual=as_nhwc(others[0]))
        y = norm.groupnorm(as_nhwc(x), groups, w, b, eps, epilogue=e, out=as_nhwc(out))
        return y.reshape(x.shape)

    def run(inputs, out):  # channels are IR dim 1: last inside for ranks 2 and 4, moved there otherwise
        return along_last(ctx.axis(node), inputs[0], kernel, out, _with_residual(ep, node, inputs).residual)

    # three launches (OpDef.launches): partial statistics, their merge into a per-(sample, channel)
    # affine, the apply
    return Step(node, run, kernel="groupnorm")


def lower_maxpool(node: Node, ctx: LowerCtx) -> Step:
    a = node.attrs
    return Step(node, lambda inputs, out: pool.maxpool2d(inputs[0], a["kernel_size"], a["stride"],
                                                         pool_pads(a, inputs[0].shape[1:3]),
                                                         a["dilation"], a["ceil_mode"], out=out), kernel="maxpool2d")


def lower_avgpool(node: Node, ctx: LowerCtx) -> Step:
    a = node.attrs
    return Step(node, lambda inputs, out: pool.avgpool2d(inputs[0], a["kernel_size"], a["stride"],
                                                         pool_pads(a, inputs[0].shape[1:3]),
                                                         a["ceil_mode"], a["count_include_pad"], out=out),
                kernel="avgpool2d")


def _lower_global_pool(reduce, kernel: str):
    """The lowering of a global pool: ``reduce`` (kernels.pool's global_avgpool or global_maxpool) over H and
    W of an NHWC input into [N, 1, 1, C]."""
    def lower(node: Node, ctx: LowerCtx) -> Step:
        def run(inputs, out):
            x = inputs[0]
            if out is None:
                out = torch.empty((x.shape[0], 1, 1, x.shape[3]), dtype=x.dtype, device=x.device)
            return reduce(x, out=out)

        return Step(node, run, kernel=kernel)
    return lower


lower_global_avgpool = _lower_global_pool(pool.global_avgpool, "global_avgpool")
lower_global_maxpool = _lower_global_pool(pool.global_maxpool, "global_maxpool")


def lower_adaptive_avgpool(node: Node, ctx: LowerCtx) -> Step:
    """torch's bins: when the output size divides the input's they are an average pool's windows (kernel =
    stride = H / OH; the mean over everything for a 1 x 1 output), run by the pool kernels; otherwise the
    adaptive kernel, which walks each output pixel's bin. H and W may be symbolic: chosen per call."""
    oh, ow = node.attrs["output_size"]

    def run(inputs, out):
        x = inputs[0]
        h, w = x.shape[1:3]
        if (oh, ow) == (1, 1):
            return pool.global_avgpool(x, out=out)
        if h % oh == 0 and w % ow == 0:
            k = (h // oh, w // ow)
            return pool.avgpool2d(x, k, k, (0, 0), out=out)
        return adaptive_pool.adaptive_avgpool2d(x, (oh, ow), out=out)

    h, w = node.inputs[0].type.shape[2:]
    static = not isinstance(h, SymDim) and not isinstance(w, SymDim)
    kernel = "adaptive_avgpool2d"
    if (oh, ow) == (1, 1):
        kernel = "global_avgpool"
    elif static and h % oh == 0 and w % ow == 0:
        kernel = "avgpool2d"
    return Step(node, run, kernel=kernel)


def _lower_softmax(fn):
    def lowering(node: Node, ctx: LowerCtx) -> Step:
        axis = ctx.axis(node)
        return Step(node, lambda inputs, out: along_last(axis, inputs[0], lambda x, _, o: fn(x, out=o), out),
                    kernel=node.op)
    return lowering


def lower_view(node: Node, ctx: LowerCtx) -> Step:
    """A view op (``OpDef.view``: flatten, reshape, squeeze, dropout) runs nothing: the module reshapes
    what the node reads to the output's stored shape -- the IR's order (a 4-D map stored NHWC was
    converted for it), or an NHWC map as it is when that is the same order ([N, C, 1, 1]) or an
    (H, W, C) flatten."""
    return Step(node, lambda inputs, out: inputs[0], kernel="view")


def _broadcast_operand(operand: str, a: torch.Tensor, b: torch.Tensor, out):
    """``a (+|*) b`` for a ``b`` that broadcasts per channel or per (sample, channel) as the pointwise
    kernel's affine (no expanded copy of ``b``); None for other broadcasts."""
    if b.dim() not in (2, 4) or b.shape[-1] != a.shape[-1]:
        return None
    if all(s == 1 for s in b.shape[:-1]):  # [1, ..., 1, C]: per channel
        v = b.reshape(-1).contiguous()
    elif b.dim() == 4 and b.shape[0] == a.shape[0] and b.shape[1] == b.shape[2] == 1:  # [N, 1, 1, C]
        v = b.contiguous()
    else:
        return None
    return pointwise.pointwise(a, **{operand: v}, out=out)  # scale: e.g. squeeze-excitation gates


def _binary(node: Node, ctx: LowerCtx, kernel, operand: str) -> Step:
    """add / mul: ``kernel(a, b, out)`` on same-shape operands; a per-channel or per-(sample, channel)
    operand goes to the pointwise kernel's affine as its ``operand`` ("shift" or "scale"). Operands of
    a lower rank broadcast as torch's (leading size-1 dims); when the node reads NHWC they are viewed
    so too."""
    rank = node.output.type.rank
    nhwc = rank == 4 and ctx.layout.reads_in(node) == "NHWC"

    def as_output_rank(t):
        if t.dim() == rank:
            return t
        t = t.reshape((1,) * (rank - t.dim()) + tuple(t.shape))
        return to_internal_view(t) if nhwc else t

    def run(inputs, out):
        a, b = (as_output_rank(t) for t in inputs)
        shape = np.broadcast_shapes(a.shape, b.shape)  # numpy's (torch's imports sympy)
        if tuple(a.shape) != tuple(shape):
            a, b = b, a  # the broadcast operand goes second (both ops commute)
        if tuple(a.shape) != tuple(shape):  # both broadcast ([N, C, H, 1] + [N, C, 1, W])
            a = a.expand(shape).contiguous()
        if tuple(b.shape) != tuple(shape):
            y = _broadcast_operand(operand, a, b, out)
            if y is not None:
                return y
            b = b.expand(shape).contiguous()
        return kernel(a, b, out=out)

    return Step(node, run, kernel="pointwise")


def lower_concat(node: Node, ctx: LowerCtx) -> Step:
    """Concat along channels: producers normally wrote their slices already (see TritonModule); the
    step copies only the inputs that did not, with the pointwise kernel into the buffer's slice."""
    rank = node.output.type.rank
    d = stored_dim(REGISTRY[node.op].concat_axis(node.attrs), rank, ctx.layout.reads_in(node))

    def run(inputs, out):
        if d != rank - 1:  # not along channels: a plain copy (by torch) in the stored layout
            return torch.cat(inputs, dim=d, out=out)
        if out is None:
            shape = list(inputs[0].shape)
            shape[-1] = sum(x.shape[-1] for x in inputs)
            out = torch.empty(shape, dtype=inputs[0].dtype, device=inputs[0].device)
        c0 = 0
        for x in inputs:
            c1 = c0 + x.shape[-1]
            dst = out[..., c0:c1]
            if x.data_ptr() != dst.data_ptr() or x.stride() != dst.stride():
                pointwise.pointwise(x, out=dst)
            c0 = c1
        return out

    return Step(node, run, kernel="concat")


LOWERINGS: dict[str, Callable[[Node, LowerCtx], Step]] = {
    "conv2d": lower_conv,
    "conv_transpose2d": lower_conv_transpose,
    "upsample": lower_upsample,
    "linear": lower_linear,
    "matmul": lower_matmul,
    "transpose": lower_permute,
    "permute": lower_permute,
    "slice": lower_slice,
    "select": lower_select,
    "embedding": lower_embedding,
    "split": lower_split,
    "chunk": lower_split,
    "parameter": lower_parameter,
    "expand": lower_expand,
    "positional_encoding": lower_positional_encoding,
    "scaled_dot_product_attention": lower_sdpa,
    "batchnorm": lower_batchnorm,
    "fused_pointwise": lower_fused_pointwise,
    "layernorm": lower_layernorm,
    "groupnorm": lower_groupnorm,
    "maxpool2d": lower_maxpool,
    "avgpool2d": lower_avgpool,
    "global_avgpool": lower_global_avgpool,
    "global_maxpool": lower_global_maxpool,
    "adaptive_avgpool2d": lower_adaptive_avgpool,
    "softmax": _lower_softmax(softmax.softmax),
    "log_softmax": _lower_softmax(softmax.log_softmax),
    "add": lambda n, c: _binary(n, c, pointwise.add, "shift"),
    "mul": lambda n, c: _binary(n, c, pointwise.mul, "scale"),
    "concat": lower_concat,
    "rnn": lower_recurrent,
    "lstm": lower_recurrent,
    "gru": lower_recurrent,
}


def lowering_of(op: OpDef) -> Callable[[Node, LowerCtx], Step] | None:
    """The op's own entry, else its base's (a derived fused op), else by kind (an activation)."""
    if op.name in LOWERINGS:
        return LOWERINGS[op.name]
    if op.view:
        return lower_view
    if op.base is not None:
        return LOWERINGS.get(op.base)
    if op.kind is OpKind.ELEMENTWISE:
        return lower_activation
    return None


def lower(node: Node, ctx: LowerCtx) -> Step:
    lowering = lowering_of(REGISTRY[node.op])
    if lowering is None:
        raise NetDSLError(f"op `{node.op}` has no Triton lowering", node.loc)
    return lowering(node, ctx)
