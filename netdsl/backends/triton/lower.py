"""Lowering: each node of a (fused) IR graph becomes one kernel launch from ``netdsl.kernels``.

``LOWERINGS`` maps every registry op to a function ``(node, ctx) -> Step``. A lowering packs its
weights once, at compile time (batchnorm folded into the conv/linear weight by
``netdsl.ops.fused.fold_batchnorm``, weights pre-packed for the kernel's K-contiguous loads, cast to the
compute dtype), and returns a ``Step`` whose ``run(inputs, out)`` launches the kernel. ``out`` is a view
to write into (a channel slice of a concat buffer) or None.

Layout: inside the module every rank-4 tensor is NHWC (channels contiguous); other ranks keep the IR's
layout. The IR is NCHW, so the module converts at its boundary, ``internal_dim`` maps IR axes, and an
op that reduces over a non-channel axis of an NHWC tensor gets a layout fix-up copy around its kernel.
A flatten of an NHWC map feeding only linear layers is a free view: those linears' weight columns are
permuted from (C, H, W) to (H, W, C) order at pack time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ...errors import NetDSLError
from ...ir.graph import Graph, Node
from ...kernels import conv, matmul, norm, pointwise, pool, softmax
from ...kernels.epilogue import Epilogue
from ...ops import REGISTRY
from ...ops.fused import batchnorm_affine, fold_batchnorm
from ...ops.nn import conv_padding

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Step:
    node: Node
    run: Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor]
    writes_out: bool = True  # run() can write into a given out view
    launches: int = 1  # kernel launches per call (0 for views)
    kernel: str = ""  # for reports


@dataclass
class LowerCtx:
    graph: Graph
    weights: dict[str, np.ndarray]
    dtype: torch.dtype
    device: torch.device | str
    allow_tf32: bool = False
    hwc_flatten: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # value -> (C, H, W)

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return t.to(device=self.device, dtype=self.dtype)

    def param(self, node: Node, role: str) -> np.ndarray | None:
        name = node.params.get(role)
        return None if name is None else np.asarray(self.weights[name], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# layout helpers
# --------------------------------------------------------------------------------------------

def to_internal(x: torch.Tensor) -> torch.Tensor:
    """IR layout (NCHW) -> internal layout (NHWC for rank 4)."""
    return x.permute(0, 2, 3, 1).contiguous() if x.dim() == 4 else x.contiguous()


def to_ir(x: torch.Tensor) -> torch.Tensor:
    """Internal layout -> IR layout (a view)."""
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def internal_dim(dim: int, rank: int) -> int:
    dim %= rank
    return (0, 3, 1, 2)[dim] if rank == 4 else dim


def along_last(ir_dim: int, x: torch.Tensor, kernel, out: torch.Tensor | None = None, *others):
    """Run ``kernel(x, others, out)``, which works along the last axis, along IR axis ``ir_dim`` of ``x``.

    When ``ir_dim`` is not the last internal axis (softmax over W of an NHWC map, batchnorm over dim 1
    of a rank-3 tensor, ...) this is a layout fix-up: ``x`` and every tensor in ``others`` of the same
    rank (residuals, addends) are copied with that axis moved last, the kernel runs, and the result is
    moved back (into ``out`` when given). ``others`` may hold None.
    """
    d = internal_dim(ir_dim, x.dim())
    if d == x.dim() - 1:
        return kernel(x, list(others), out)

    def moved(t):
        return t.movedim(d, -1).contiguous() if t is not None and t.dim() == x.dim() else t

    y = kernel(moved(x), [moved(t) for t in others], None).movedim(-1, d)
    if out is not None:
        out.copy_(y)
        return out
    return y.contiguous()


# --------------------------------------------------------------------------------------------
# epilogues
# --------------------------------------------------------------------------------------------

def _act(ctx: LowerCtx, node: Node, which: str) -> dict[str, Any]:
    name = node.attrs.get(which, "none")
    i = which[-1]
    if name == "none":
        return {}
    kname, alpha, beta = REGISTRY[name].kernel_act(node.attrs.get(which + "_attrs", {}))
    out = {f"act{i}": kname, f"alpha{i}": float(alpha), f"beta{i}": float(beta)}
    if kname == "prelu":
        out[f"slope{i}"] = ctx.tensor(ctx.param(node, f"slope{i}").reshape(-1))
    return out


def epilogue_of(ctx: LowerCtx, node: Node, bias: np.ndarray | None = None) -> Epilogue:
    """The static part of a fused node's epilogue (the residual is bound per call)."""
    return Epilogue(bias=ctx.tensor(bias) if bias is not None else None, **_act(ctx, node, "act1"),
                    **_act(ctx, node, "act2"))


def _with_residual(ep: Epilogue, node: Node, inputs: list[torch.Tensor]) -> Epilogue:
    return dataclasses.replace(ep, residual=inputs[-1]) if node.attrs.get("residual") else ep


def _activation_epilogue(ctx: LowerCtx, node: Node) -> Epilogue:
    kname, alpha, beta = REGISTRY[node.op].kernel_act(node.attrs)
    slope = ctx.tensor(ctx.param(node, "weight").reshape(-1)) if kname == "prelu" else None
    return Epilogue(act1=kname, alpha1=float(alpha), beta1=float(beta), slope1=slope)


# --------------------------------------------------------------------------------------------
# lowerings
# --------------------------------------------------------------------------------------------

def _weight_and_bias(ctx: LowerCtx, node: Node) -> tuple[np.ndarray, np.ndarray | None]:
    w, b = ctx.param(node, "weight"), ctx.param(node, "bias")
    if node.attrs.get("bn"):
        w, b = fold_batchnorm(w, b, ctx.param(node, "bn_weight"), ctx.param(node, "bn_bias"),
                              ctx.param(node, "bn_mean"), ctx.param(node, "bn_var"), node.attrs["bn_eps"])
    return w, b


def lower_conv(node: Node, ctx: LowerCtx) -> Step:
    a = node.attrs
    w, b = _weight_and_bias(ctx, node)
    packed = conv.pack_conv_weight(ctx.tensor(w), a["groups"])
    ep = epilogue_of(ctx, node, b)
    padding = conv_padding(a)
    depthwise = conv.is_depthwise(node.inputs[0].type.shape[1], a["groups"])

    def run(inputs, out):
        return conv.conv2d(inputs[0], packed, out_channels=a["out_channels"], kernel_size=a["kernel_size"],
                           stride=a["stride"], padding=padding, dilation=a["dilation"], groups=a["groups"],
                           epilogue=_with_residual(ep, node, inputs), out=out, allow_tf32=ctx.allow_tf32)

    return Step(node, run, kernel="depthwise_conv2d" if depthwise else "conv2d")


def lower_linear(node: Node, ctx: LowerCtx) -> Step:
    w, b = _weight_and_bias(ctx, node)
    src = node.inputs[0].name
    if src in ctx.hwc_flatten:  # the input is an NHWC map flattened as (H, W, C): permute the columns
        c, h, wd = ctx.hwc_flatten[src]
        w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    packed = matmul.pack_linear_weight(ctx.tensor(w))
    ep = epilogue_of(ctx, node, b)

    def kernel(x, others, out):
        return matmul.linear(x, packed, epilogue=dataclasses.replace(ep, residual=others[0]), out=out,
                             allow_tf32=ctx.allow_tf32)

    def run(inputs, out):  # over the IR's last axis: W of a rank-4 (NHWC) input needs a layout fix-up
        return along_last(-1, inputs[0], kernel, out, _with_residual(ep, node, inputs).residual)

    return Step(node, run, kernel="linear")


def lower_activation(node: Node, ctx: LowerCtx) -> Step:
    ep = _activation_epilogue(ctx, node)
    per_channel = ep.slope1 is not None and ep.slope1.numel() > 1  # a prelu slope per channel (IR dim 1)

    def run(inputs, out):
        if per_channel:
            return along_last(1, inputs[0], lambda x, _, o: pointwise.pointwise(x, epilogue=ep, out=o), out)
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
        return along_last(1, inputs[0], lambda x, _, o: pointwise.channel_affine(x, s, t, out=o), out)

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
        return along_last(1, inputs[0], kernel, out, _with_residual(ep, node, inputs).residual)

    return Step(node, run, kernel="pointwise")


def _ln_params(ctx, node):
    w, b = ctx.param(node, "weight"), ctx.param(node, "bias")
    return (ctx.tensor(w) if w is not None else None), (ctx.tensor(b) if b is not None else None)


def lower_layernorm(node: Node, ctx: LowerCtx) -> Step:
    w, b = _ln_params(ctx, node)
    eps = node.attrs["eps"]
    ep = epilogue_of(ctx, node)
    add_before = node.attrs.get("add_before", False)

    def kernel(x, others, out):
        addend, residual = others
        return norm.layernorm(x, w, b, eps, residual_before=addend, epilogue=dataclasses.replace(ep, residual=residual),
                              out=out)

    def run(inputs, out):  # over the IR's last axis: W of a rank-4 (NHWC) tensor needs a layout fix-up
        addend = inputs[1] if add_before else None
        return along_last(-1, inputs[0], kernel, out, addend, _with_residual(ep, node, inputs).residual)

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
        return along_last(1, inputs[0], kernel, out, _with_residual(ep, node, inputs).residual)

    # three launches: partial statistics, their merge into a per-(sample, channel) affine, the apply
    return Step(node, run, launches=3, kernel="groupnorm")


def lower_maxpool(node: Node, ctx: LowerCtx) -> Step:
    a = node.attrs
    return Step(node, lambda inputs, out: pool.maxpool2d(inputs[0], a["kernel_size"], a["stride"], a["padding"],
                                                         a["dilation"], a["ceil_mode"], out=out), kernel="maxpool2d")


def lower_avgpool(node: Node, ctx: LowerCtx) -> Step:
    a = node.attrs
    return Step(node, lambda inputs, out: pool.avgpool2d(inputs[0], a["kernel_size"], a["stride"], a["padding"],
                                                         a["ceil_mode"], a["count_include_pad"], out=out),
                kernel="avgpool2d")


def lower_global_avgpool(node: Node, ctx: LowerCtx) -> Step:
    def run(inputs, out):
        x = inputs[0]
        if out is None:
            out = torch.empty((x.shape[0], 1, 1, x.shape[3]), dtype=x.dtype, device=x.device)
        return pool.global_avgpool(x, out=out)

    return Step(node, run, kernel="global_avgpool")


def lower_softmax(node: Node, ctx: LowerCtx) -> Step:
    fn = softmax.log_softmax if node.op == "log_softmax" else softmax.softmax
    dim = node.attrs["dim"]
    return Step(node, lambda inputs, out: along_last(dim, inputs[0], lambda x, _, o: fn(x, out=o), out),
                kernel=node.op)


def lower_dropout(node: Node, ctx: LowerCtx) -> Step:
    return Step(node, lambda inputs, out: inputs[0], writes_out=False, launches=0, kernel="view")


def lower_flatten(node: Node, ctx: LowerCtx) -> Step:
    src = node.inputs[0].type
    start = node.attrs["start_dim"]
    if src.rank == 4 and start == 1:
        c, h, w = src.shape[1:]
        if h == 1 and w == 1:
            return Step(node, lambda inputs, out: inputs[0].reshape(inputs[0].shape[0], -1), writes_out=False,
                        launches=0, kernel="view")
        if node.output.name in ctx.hwc_flatten:
            return Step(node, lambda inputs, out: inputs[0].reshape(inputs[0].shape[0], -1), writes_out=False,
                        launches=0, kernel="view")

    def run(inputs, out):  # general case: a layout copy (by torch) back to the IR's order
        y = to_ir(inputs[0]).reshape(*to_ir(inputs[0]).shape[:start], -1)
        return to_internal(y)

    return Step(node, run, writes_out=False, launches=0, kernel="layout copy")


def _broadcast_operand(kind: str, a: torch.Tensor, b: torch.Tensor, out):
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
    if kind == "mul":
        return pointwise.pointwise(a, scale=v, out=out)  # e.g. squeeze-excitation gates
    return pointwise.pointwise(a, shift=v, out=out)


def _binary(node: Node, ctx: LowerCtx, kind: str) -> Step:
    def run(inputs, out):
        a, b = inputs
        shape = torch.broadcast_shapes(a.shape, b.shape)
        if tuple(a.shape) != tuple(shape):
            a, b = b, a  # the broadcast operand goes second (both ops commute)
        if tuple(a.shape) != tuple(shape):  # both broadcast ([N, C, H, 1] + [N, C, 1, W])
            a = a.expand(shape).contiguous()
        if tuple(b.shape) != tuple(shape):
            y = _broadcast_operand(kind, a, b, out)
            if y is not None:
                return y
            b = b.expand(shape).contiguous()
        return pointwise.add(a, b, out=out) if kind == "add" else pointwise.mul(a, b, out=out)

    return Step(node, run, kernel="pointwise")


def lower_concat(node: Node, ctx: LowerCtx) -> Step:
    """Concat along channels: producers normally wrote their slices already (see TritonModule); the
    step copies only the inputs that did not, with the pointwise kernel into the buffer's slice."""
    rank = node.output.type.rank
    d = internal_dim(node.attrs["dim"], rank)

    def run(inputs, out):
        if d != rank - 1:  # not along channels: a plain copy in the internal layout
            return torch.cat(inputs, dim=d)
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
    "fused_conv2d": lower_conv,
    "linear": lower_linear,
    "fused_linear": lower_linear,
    "batchnorm": lower_batchnorm,
    "fused_pointwise": lower_fused_pointwise,
    "layernorm": lower_layernorm,
    "fused_layernorm": lower_layernorm,
    "groupnorm": lower_groupnorm,
    "fused_groupnorm": lower_groupnorm,
    "maxpool2d": lower_maxpool,
    "avgpool2d": lower_avgpool,
    "global_avgpool": lower_global_avgpool,
    "softmax": lower_softmax,
    "log_softmax": lower_softmax,
    "dropout": lower_dropout,
    "flatten": lower_flatten,
    "add": lambda n, c: _binary(n, c, "add"),
    "mul": lambda n, c: _binary(n, c, "mul"),
    "concat": lower_concat,
}
for _name, _op in REGISTRY.items():
    if _op.is_activation:
        LOWERINGS[_name] = lower_activation
