"""Layers: convolution, linear, normalisation, shape ops and pointwise arithmetic (pooling: ``pooling.py``).

Each op is declared once: attributes, shape rule, parameters, NumPy reference and FLOPs side by side.
References are vectorised (no Python loop over single pixels or channels: conv2d's is im2col + GEMM or
a tap loop, in ``convolution.py``; the window and channel loops run over cache-sized chunks) and compute
in the dtype of their inputs (float32 or float64).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..ir.dims import SymDim
from ..ir.graph import ParamSpec
from ..ir.types import TensorType, numel
from .convolution import Pads, conv2d_reference, window_pads
from .registry import ORDERED, Attr, OpDef, OpKind, ShapeError, register


def static_size(d, what: str) -> int:
    if isinstance(d, SymDim):
        raise ShapeError(f"{what} must be a static size, but it is `{d}`",
                         hint="give this input dimension a fixed size in the network's input type")
    return d


def check_rank(t: TensorType, ranks: Sequence[int], op: str, layout: str) -> None:
    if t.rank not in ranks:
        raise ShapeError(f"`{op}` expects a rank-{'/'.join(map(str, ranks))} input {layout}, got {t}")


def window_out_size(size, k: int, s: int, pads: tuple[int, int], d: int, ceil_mode: bool = False, what: str = "input"):
    """Output size along an axis padded by ``pads`` (begin, end); torch's and ONNX's ceil_mode rule drops a last
    window that would start in the end padding."""
    begin, end = pads
    span = d * (k - 1) + 1
    if isinstance(size, int) and size + begin + end < span:
        raise ShapeError(f"{what} of size {size} (padded to {size + begin + end}) is smaller than the window {span}",
                         hint="the input is too small here: pad it, use a smaller kernel, or downsample less")
    if not ceil_mode:
        return (size + begin + end - span) // s + 1
    out = (size + begin + end - span + s - 1) // s + 1
    if isinstance(size, int):
        if (out - 1) * s >= size + begin:  # the last window would start inside the end padding
            out -= 1
    elif end + s >= span + 1:
        raise ShapeError("ceil_mode with this padding needs a static spatial size")
    return out


def window_output(t: TensorType, attrs, kernel, stride, dilation, ceil_mode: bool = False) -> tuple:
    """(OH, OW) of a conv or pool on ``t`` [N, C, H, W]: ceil(size / stride) for ``padding="same"`` (any
    size, symbolic too), else from the explicit (top, left, bottom, right) padding."""
    hw = t.shape[2:]
    if attrs["padding"] == "same":
        return tuple(n if s == 1 else (n + s - 1) // s for n, s in zip(hw, stride))
    top, left, bottom, right = window_pads(attrs["padding"], hw, kernel, stride, dilation)
    return (window_out_size(hw[0], kernel[0], stride[0], (top, bottom), dilation[0], ceil_mode, "height"),
            window_out_size(hw[1], kernel[1], stride[1], (left, right), dilation[1], ceil_mode, "width"))


# ---------------------------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------------------------

def conv_pads(attrs: Mapping[str, Any], size_hw) -> Pads:
    """A conv's (top, left, bottom, right) padding on an input of spatial size ``size_hw`` (``"same"`` with
    stride > 1 depends on it)."""
    return window_pads(attrs["padding"], size_hw, attrs["kernel_size"], attrs["stride"], attrs["dilation"])


def conv_padding(attrs: Mapping[str, Any]) -> tuple[int, int]:
    """A conv's padding as one (pad_h, pad_w) for both sides, for code that pads symmetrically only; an
    asymmetric padding (also "same" with an even kernel span, or with stride > 1) is an error here:
    such code must take ``conv_pads`` instead."""
    if attrs["padding"] == "same" and tuple(attrs["stride"]) != (1, 1):
        raise ShapeError('padding="same" with stride > 1 depends on the input size', hint="use conv_pads")
    top, left, bottom, right = conv_pads(attrs, (1, 1))  # (stride 1: any size gives the same padding)
    if (top, left) != (bottom, right):
        raise ShapeError(f"asymmetric padding (top, left, bottom, right) = {(top, left, bottom, right)}",
                         hint="use conv_pads")
    return (top, left)


def _conv_infer(types, attrs):
    (t,) = types
    check_rank(t, (4,), "conv2d", "[N, C, H, W]")
    n, c, h, w = t.shape
    c = static_size(c, "the channel dimension of a conv2d input")
    g, oc = attrs["groups"], attrs["out_channels"]
    if c % g:
        raise ShapeError(f"conv2d input has {c} channels, not divisible by groups={g}",
                         hint="groups must divide both the input channels and out_channels")
    if oc % g:
        raise ShapeError(f"conv2d out_channels={oc} is not divisible by groups={g}",
                         hint="groups must divide both the input channels and out_channels")
    return t.with_shape((n, oc) + window_output(t, attrs, attrs["kernel_size"], attrs["stride"], attrs["dilation"]))


def _conv_params(types, attrs):
    c = types[0].shape[1]
    g, oc = attrs["groups"], attrs["out_channels"]
    kh, kw = attrs["kernel_size"]
    fan_in, fan_out = c // g * kh * kw, oc // g * kh * kw
    out = {"weight": ParamSpec((oc, c // g, kh, kw), "kaiming", fan_in, fan_out)}
    if attrs["bias"]:
        out["bias"] = ParamSpec((oc,), "zeros", fan_in, fan_out)
    return out


def _conv_ref(xs, params, attrs):
    return conv2d_reference(xs[0], params["weight"], params.get("bias"), attrs["stride"],
                            conv_pads(attrs, xs[0].shape[2:]), attrs["dilation"], attrs["groups"])


def _conv_flops(ins, out, attrs):
    n, oc, oh, ow = out
    kh, kw = attrs["kernel_size"]
    cg = ins[0][1] // attrs["groups"]
    return 2 * n * oc * oh * ow * cg * kh * kw + (numel(out) if attrs["bias"] else 0)


CONV_ATTRS = (
    Attr("out_channels", "int", positive=True, doc="number of output channels"),
    Attr("kernel_size", "pair", positive=True, doc="kernel size: k or (kh, kw)"),
    Attr("stride", "pair", 1, positive=True),
    Attr("padding", "padding", 0, doc='padding: p, (ph, pw), (top, left, bottom, right), "same" or "valid"'),
    Attr("dilation", "pair", 1, positive=True),
    Attr("groups", "int", 1, positive=True),
    Attr("bias", "bool", True),
)

register(OpDef("conv2d", OpKind.OUT_FUSABLE, _conv_infer, _conv_ref, _conv_flops, CONV_ATTRS, params=_conv_params,
               doc="2-D convolution over NCHW", axis=1, fused_form="fused_conv2d", folds_batchnorm=True))


# ---------------------------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------------------------

def _linear_infer(types, attrs):
    (t,) = types
    if t.rank < 1:
        raise ShapeError("`linear` needs an input of rank >= 1")
    static_size(t.shape[-1], "the feature dimension of a linear input")
    return t.with_shape(t.shape[:-1] + (attrs["out_features"],))


def _linear_params(types, attrs):
    fin, fout = types[0].shape[-1], attrs["out_features"]
    out = {"weight": ParamSpec((fout, fin), "kaiming", fin, fout)}
    if attrs["bias"]:
        out["bias"] = ParamSpec((fout,), "zeros", fin, fout)
    return out


def _linear_ref(xs, params, attrs):
    y = xs[0] @ params["weight"].T
    return y + params["bias"] if "bias" in params else y


register(OpDef(
    "linear", OpKind.OUT_FUSABLE, _linear_infer, _linear_ref,
    lambda ins, out, a: 2 * numel(out) * ins[0][-1] + (numel(out) if a["bias"] else 0),
    (Attr("out_features", "int", positive=True), Attr("bias", "bool", True)),
    params=_linear_params, doc="y = x W^T + b over the last dimension",
    axis=-1, fused_form="fused_linear", folds_batchnorm=True, reorders_features=True,
))


# ---------------------------------------------------------------------------------------------
# normalisation (inference)
# ---------------------------------------------------------------------------------------------

def _channels(t: TensorType, op: str) -> int:
    if t.rank < 2:
        raise ShapeError(f"`{op}` expects an input [N, C, ...], got {t}")
    return static_size(t.shape[1], f"the channel dimension of a {op} input")


def _bn_params(types, attrs):
    c = _channels(types[0], "batchnorm")
    return {"weight": ParamSpec((c,), "ones"), "bias": ParamSpec((c,), "zeros"),
            "running_mean": ParamSpec((c,), "zeros"), "running_var": ParamSpec((c,), "ones")}


def batchnorm_affine(weight, bias, running_mean, running_var, eps: float):
    """Inference batchnorm as a per-channel affine y = x * scale + shift (NumPy arrays or torch
    tensors alike): the one place of this arithmetic (references, folding and the Triton lowering)."""
    scale = weight / (running_var + eps) ** 0.5
    return scale, bias - running_mean * scale


def fold_batchnorm(weight, bias, bn_weight, bn_bias, bn_mean, bn_var, eps: float):
    """Fold an inference batchnorm into the preceding conv/linear: returns (weight', bias').

    ``weight`` is [OC, ...] (conv OIHW or linear [out, in]), ``bias`` [OC] or None;
    bn(conv(x, w, b)) == conv(x, w * scale[oc], (b - mean) * scale + beta).
    """
    scale, shift = batchnorm_affine(bn_weight, bn_bias, bn_mean, bn_var, eps)
    w = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    b = shift if bias is None else bias * scale + shift
    return w, b


# Bytes of output per chunk of channel_affine: the multiply's output is still in cache when the add reads it.
AFFINE_CHUNK_BYTES = 1 << 18


def channel_affine(x, scale, shift):
    """x * scale[c] + shift[c] along dim 1 of x: one output and no temporary; on an [N, C, ...] input a
    few channels of one image at a time, so that the add finds the product in cache."""
    out = np.empty(x.shape, dtype=np.result_type(x, scale, shift))
    if x.ndim < 3 or x.size == 0:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        np.multiply(x, scale.reshape(shape), out=out)
        out += shift.reshape(shape)
        return out
    n, c = x.shape[:2]
    rows, dst = x.reshape(n, c, -1), out.reshape(n, c, -1)
    scale, shift = scale.reshape(c, 1), shift.reshape(c, 1)
    step = max(1, AFFINE_CHUNK_BYTES // (dst.shape[2] * out.itemsize))  # channels per chunk
    for i in range(n):
        for c0 in range(0, c, step):
            part = dst[i, c0:c0 + step]
            np.multiply(rows[i, c0:c0 + step], scale[c0:c0 + step], out=part)
            part += shift[c0:c0 + step]
    return out


def _bn_ref(xs, params, attrs):
    scale, shift = batchnorm_affine(params["weight"], params["bias"], params["running_mean"], params["running_var"],
                                    attrs["eps"])
    return channel_affine(xs[0], scale, shift)


def _bn_infer(types, attrs):
    _channels(types[0], "batchnorm")
    return types[0]


register(OpDef("batchnorm", OpKind.NORM, _bn_infer, _bn_ref, lambda ins, out, a: 2 * numel(out),
               (Attr("eps", "float", 1e-5, positive=True),), params=_bn_params,
               doc="batch normalisation with running statistics (inference)",
               axis=1, fused_form="fused_pointwise", pointwise=True), aliases=("batchnorm2d",))


def _ln_infer(types, attrs):
    (t,) = types
    k = attrs["dims"]
    if k > t.rank:
        raise ShapeError(f"`layernorm` over the last {k} dims of a rank-{t.rank} input {t}", arg="dims",
                         hint="dims counts the trailing dims normalised together (torch's normalized_shape)")
    for d in t.shape[-k:]:
        static_size(d, "a normalised dimension of a layernorm input")
    return t


def _ln_params(types, attrs):
    shape = tuple(types[0].shape[-attrs["dims"]:])
    return {"weight": ParamSpec(shape, "ones"), "bias": ParamSpec(shape, "zeros")} if attrs["affine"] else {}


def layernorm_reference(x, weight, bias, eps, dims: int = 1):
    """F.layer_norm over the last ``dims`` dims; ``weight``/``bias`` have their shape (or are None)."""
    axes = tuple(range(x.ndim - dims, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y * weight + bias if weight is not None else y


register(OpDef("layernorm", OpKind.NORM, _ln_infer,
               lambda xs, p, a: layernorm_reference(xs[0], p.get("weight"), p.get("bias"), a["eps"], a["dims"]),
               lambda ins, out, a: 7 * numel(out),
               (Attr("eps", "float", 1e-5, positive=True), Attr("affine", "bool", True),
                Attr("dims", "int", 1, positive=True, doc="trailing dims normalised together (torch's normalized_shape)")),
               params=_ln_params, doc="layer normalisation over the last `dims` dimensions", axis=-1,
               fused_form="fused_layernorm", absorbs_add=True))


def _gn_infer(types, attrs):
    c = _channels(types[0], "groupnorm")
    if c % attrs["groups"]:
        raise ShapeError(f"groupnorm: {c} channels are not divisible into {attrs['groups']} groups")
    return types[0]


def groupnorm_reference(x, weight, bias, groups, eps):
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    mean = g.mean(axis=-1, keepdims=True)
    var = ((g - mean) ** 2).mean(axis=-1, keepdims=True)
    y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return y * weight.reshape(shape) + bias.reshape(shape)


register(OpDef("groupnorm", OpKind.NORM, _gn_infer,
               lambda xs, p, a: groupnorm_reference(xs[0], p["weight"], p["bias"], a["groups"], a["eps"]),
               lambda ins, out, a: 7 * numel(out),
               (Attr("groups", "int", positive=True), Attr("eps", "float", 1e-5, positive=True)),
               params=lambda types, a: {"weight": ParamSpec((_channels(types[0], "groupnorm"),), "ones"),
                                        "bias": ParamSpec((_channels(types[0], "groupnorm"),), "zeros")},
               doc="group normalisation over (C/groups, H, W)", axis=1, fused_form="fused_groupnorm",
               launches=3))


# ---------------------------------------------------------------------------------------------
# shape ops, dropout, softmax
# ---------------------------------------------------------------------------------------------

register(OpDef("dropout", OpKind.INJECTIVE, lambda types, a: types[0], lambda xs, p, a: xs[0],
               lambda ins, out, a: 0, (Attr("p", "float", 0.5, bounds=(0.0, 1.0), doc="the probability of zeroing an element in training"),), doc="identity at inference", view=True,
               launches=0))


def _flatten_infer(types, attrs):
    (t,) = types
    start = attrs["start_dim"]
    if not 0 <= start < t.rank:
        raise ShapeError(f"flatten start_dim={start} is out of range for {t}")
    tail = 1
    for d in t.shape[start:]:
        tail *= static_size(d, "a flattened dimension")
    return t.with_shape(t.shape[:start] + (tail,))


register(OpDef("flatten", OpKind.INJECTIVE, _flatten_infer,
               lambda xs, p, a: xs[0].reshape(xs[0].shape[: a["start_dim"]] + (-1,)),
               lambda ins, out, a: 0, (Attr("start_dim", "int", 1),), axis=ORDERED, view=True, launches=0))


def _axis_infer(types, attrs):
    (t,) = types
    if not -t.rank <= attrs["dim"] < t.rank:
        raise ShapeError(f"dim={attrs['dim']} is out of range for {t}")
    return t


def _dim(attrs):
    return attrs["dim"]


def _softmax(x, dim):
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def _log_softmax(x, dim):
    z = x - x.max(axis=dim, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=dim, keepdims=True))


register(OpDef("softmax", OpKind.REDUCE, _axis_infer, lambda xs, p, a: _softmax(xs[0], a["dim"]),
               lambda ins, out, a: 5 * numel(out), (Attr("dim", "int", -1),), axis=_dim))
register(OpDef("log_softmax", OpKind.REDUCE, _axis_infer, lambda xs, p, a: _log_softmax(xs[0], a["dim"]),
               lambda ins, out, a: 5 * numel(out), (Attr("dim", "int", -1),), axis=_dim))


# ---------------------------------------------------------------------------------------------
# pointwise binary ops and concat
# ---------------------------------------------------------------------------------------------

def _broadcast_infer(types, attrs, op="add"):
    """NumPy/torch broadcasting: shapes aligned at their last dims, a missing leading dim counts as 1, and
    a size-1 dim stretches to the other's size (``[N, T, D] + [D]``, ``[N, C, H, W] * [N, C, 1, 1]``)."""
    a, b = types
    rank = max(a.rank, b.rank)
    pa, pb = (1,) * (rank - a.rank) + tuple(a.shape), (1,) * (rank - b.rank) + tuple(b.shape)
    out = []
    for i, (x, y) in enumerate(zip(pa, pb)):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            where = f"dim {i}" if a.rank == b.rank else f"dim {i - rank} (counting from the last)"
            raise ShapeError(f"`{op}` of tensors whose shapes differ in {where}: {a} and {b}",
                             hint="shapes broadcast when, aligned at their last dims, each pair of sizes is equal "
                                  "or one of them is 1; a residual needs both branches to have the same shape")
    return a.with_shape(out)


register(OpDef("add", OpKind.BINARY, _broadcast_infer, lambda xs, p, a: xs[0] + xs[1],
               lambda ins, out, a: numel(out), arity=2, doc="x + y (residual add; NumPy broadcasting)"))
register(OpDef("mul", OpKind.BINARY, lambda t, a: _broadcast_infer(t, a, "mul"), lambda xs, p, a: xs[0] * xs[1],
               lambda ins, out, a: numel(out), arity=2, doc="x * y (NumPy broadcasting)"))


def _concat_infer(types, attrs):
    first = types[0]
    dim = attrs["dim"]
    if not -first.rank <= dim < first.rank:
        raise ShapeError(f"concat dim={dim} is out of range for {first}")
    dim %= first.rank
    total = 0
    for i, t in enumerate(types):
        if t.rank != first.rank or any(j != dim and x != y for j, (x, y) in enumerate(zip(t.shape, first.shape))):
            raise ShapeError(f"concat inputs must agree except in dim {dim}: input 1 is {first}, input {i + 1} is {t}")
        total = total + t.shape[dim]
    return first.with_shape(first.shape[:dim] + (total,) + first.shape[dim + 1:])


register(OpDef("concat", OpKind.INJECTIVE, _concat_infer, lambda xs, p, a: np.concatenate(xs, axis=a["dim"]),
               lambda ins, out, a: 0, (Attr("dim", "int", 1),), arity=None, doc="concatenate along a dim (channels)",
               concat_axis=_dim))
