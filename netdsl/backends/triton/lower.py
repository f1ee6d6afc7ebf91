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


def _last_dim_kernel(x: torch.Tensor, ir_dim: int, kernel, out=None) -> torch.Tensor:
    """Run a kernel that reduces over the last axis on IR axis ``ir_dim`` of internal tensor ``x``."""
    d = internal_dim(ir_dim, x.dim())
    if d == x.dim() - 1:
        return kernel(x, out)
    y = kernel(x.movedim(d, -1).contiguous(), None)  # layout fix-up: a copy each way
    y = y.movedim(-1, d)
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

    def run(inputs, out):
        return matmul.linear(inputs[0], packed, epilogue=_with_residual(ep, node, inputs), out=out,
                             allow_tf32=ctx.allow_tf32)

    return Step(node, run, kernel="linear")


def lower_activation(node: Node, ctx: LowerCtx) -> Step:
    ep = _activation_epilogue(ctx, node)
    return Step(node, lambda inputs, out: pointwise.pointwise(inputs[0], epilogue=ep, out=out), kernel="pointwise")


def _channel_last_only(node: Node, what: str) -> None:
    t = node.inputs[0].type
    if t.rank not in (2, 4):
        raise NetDSLError(f"{what} over a rank-{t.rank} tensor has no Triton lowering (ranks 2 and 4 do)",
                          node.loc)


def lower_batchnorm(node: Node, ctx: LowerCtx) -> Step:
    _channel_last_only(node, "batchnorm")
    scale, shift = batchnorm_affine(ctx.param(node, "weight"), ctx.param(node, "bias"),
                                    ctx.param(node, "running_mean"), ctx.param(node, "running_var"), node.attrs["eps"])
    s, t = ctx.tensor(scale), ctx.tensor(shift)
    return Step(node, lambda inputs, out: pointwise.channel_affine(inputs[0], s, t, out=out), kernel="pointwise")


def lower_fused_pointwise(node: Node, ctx: LowerCtx) -> Step:
    _channel_last_only(node, "fused_pointwise")
    s = t = None
    if node.attrs["bn"]:
        scale, shift = batchnorm_affine(ctx.param(node, "bn_weight"), ctx.param(node, "bn_bias"),
                                        ctx.param(node, "bn_mean"), ctx.param(node, "bn_var"), node.attrs["bn_eps"])
        s, t = ctx.tensor(scale), ctx.tensor(shift)
    ep = epilogue_of(ctx, node)

    def run(inputs, out):
        return pointwise.pointwise(inputs[0], scale=s, shift=t, epilogue=_with_residual(ep, node, inputs), out=out)

    return Step(node, run, kernel="pointwise")


def _ln_params(ctx, node):
    w, b = ctx.param(node, "weight"), ctx.param(node, "bias")
    return (ctx.tensor(w) if w is not None else None), (ctx.tensor(b) if b is not None else None)


def lower_layernorm(node: Node, ctx: LowerCtx) -> Step:
    w, b = _ln_params(ctx, node)
    eps = node.attrs["eps"]
    ep = epilogue_of(ctx, node)
    add_before = node.attrs.get("add_before", False)

    def run(inputs, out):
        addend = inputs[1] if add_before else None
        e = _with_residual(ep, node, inputs)
        rank = inputs[0].dim()
        if rank == 4:  # normalising over W of an NHWC tensor: fix the layout around the kernel
            def k(x, o):
                return norm.layernorm(x, w, b, eps, out=o)
            if addend is not None or e.residual is not None or e.act1 != "none":
                raise NetDSLError("a fused layernorm over a rank-4 tensor has no Triton lowering", node.loc)
            return _last_dim_kernel(inputs[0], -1, k, out)
        return norm.layernorm(inputs[0], w, b, eps, residual_before=addend, epilogue=e, out=out)

    return Step(node, run, kernel="layernorm")


def lower_groupnorm(node: Node, ctx: LowerCtx) -> Step:
    _channel_last_only(node, "groupnorm")
    w, b = ctx.tensor(ctx.param(node, "weight")), ctx.tensor(ctx.param(node, "bias"))
    ep = epilogue_of(ctx, node)
    groups, eps = node.attrs["groups"], node.attrs["eps"]

    def run(inputs, out):
        x = inputs[0]
        e = _with_residual(ep, node, inputs)
        if x.dim() == 2:
            n, c = x.shape
            x = x.reshape(n, 1, 1, c)
            if e.residual is not None:
                e = dataclasses.replace(e, residual=e.residual.reshape(n, 1, 1, c))
            o = out.reshape(n, 1, 1, c) if out is not None else None
            return norm.groupnorm(x, groups, w, b, eps, epilogue=e, out=o).reshape(n, c)
        return norm.groupnorm(x, groups, w, b, eps, epilogue=e, out=out)

    return Step(node, run, launches=2, kernel="groupnorm")


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
    return Step(node, lambda inputs, out: _last_dim_kernel(inputs[0], dim, lambda x, o: fn(x, out=o), out),
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

    def run(inputs, out):  # general case: a layout copy back to the IR's order
        y = to_ir(inputs[0]).reshape(*to_ir(inputs[0]).shape[:start], -1)
        return to_internal(y)

    return Step(node, run, writes_out=False, kernel="layout copy")


def _binary(node: Node, ctx: LowerCtx, kind: str) -> Step:
    def run(inputs, out):
        a, b = inputs
        if tuple(b.shape) != tuple(a.shape):
            if tuple(a.shape) != tuple(torch.broadcast_shapes(a.shape, b.shape)):
                a, b = b, a  # the broadcast operand goes second (both ops commute)
            if kind == "mul" and b.dim() == 4 and b.shape[1] == 1 and b.shape[2] == 1:
                return pointwise.mul(a, b, out=out)  # per (sample, channel) scale, e.g. squeeze-excite
            b = b.expand(a.shape).contiguous()
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
