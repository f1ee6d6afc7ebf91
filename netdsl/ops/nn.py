"""Layers: convolution, linear, pooling, normalisation, shape ops and pointwise arithmetic.

Each op is declared once: attributes, shape rule, parameters, NumPy reference and FLOPs side by side.
References are vectorised (im2col over strided views + one matmul; no Python loop over pixels or
channels) and compute in the dtype of their inputs (float32 or float64).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from ..ir.dims import SymDim
from ..ir.graph import ParamSpec
from ..ir.types import TensorType, numel
from .registry import Attr, OpDef, OpKind, ShapeError, register


def _static(d, what: str) -> int:
    if isinstance(d, SymDim):
        raise ShapeError(f"{what} must be a static size, but it is `{d}`",
                         hint="give this input dimension a fixed size in the network's input type")
    return d


def _rank(t: TensorType, ranks: Sequence[int], op: str, layout: str) -> None:
    if t.rank not in ranks:
        raise ShapeError(f"`{op}` expects a rank-{'/'.join(map(str, ranks))} input {layout}, got {t}")


def _out_size(size, k: int, s: int, p: int, d: int, ceil_mode: bool = False, what: str = "input"):
    span = d * (k - 1) + 1
    if isinstance(size, int) and size + 2 * p < span:
        raise ShapeError(f"{what} of size {size} (padded to {size + 2 * p}) is smaller than the window {span}")
    if not ceil_mode:
        return (size + 2 * p - span) // s + 1
    out = (size + 2 * p - span + s - 1) // s + 1
    if isinstance(size, int):
        if (out - 1) * s >= size + p:  # the last window would start inside the right padding
            out -= 1
    elif p + s >= span + 1:
        raise ShapeError("ceil_mode with this padding needs a static spatial size")
    return out


# ---------------------------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------------------------

def conv_padding(attrs: Mapping[str, Any]) -> tuple[int, int]:
    """Explicit (pad_h, pad_w) for a conv's attributes ("same" needs stride 1 and an odd span)."""
    pad = attrs["padding"]
    if pad == "valid":
        return (0, 0)
    if pad == "same":
        out = []
        for k, d in zip(attrs["kernel_size"], attrs["dilation"]):
            span = d * (k - 1)
            if span % 2:
                raise ShapeError('padding="same" with an even kernel needs asymmetric padding, which is not supported',
                                 hint="use an odd kernel size or explicit padding")
            out.append(span // 2)
        if attrs.get("stride", (1, 1)) != (1, 1):
            raise ShapeError('padding="same" needs stride 1', hint="give the padding explicitly")
        return tuple(out)
    return pad


def _conv_infer(types, attrs):
    (t,) = types
    _rank(t, (4,), "conv2d", "[N, C, H, W]")
    n, c, h, w = t.shape
    c = _static(c, "the channel dimension of a conv2d input")
    g, oc = attrs["groups"], attrs["out_channels"]
    if c % g:
        raise ShapeError(f"conv2d input has {c} channels, not divisible by groups={g}")
    if oc % g:
        raise ShapeError(f"conv2d out_channels={oc} is not divisible by groups={g}")
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel_size"], attrs["stride"], attrs["dilation"]
    ph, pw = conv_padding(attrs)
    return t.with_shape((n, oc, _out_size(h, kh, sh, ph, dh, what="height"), _out_size(w, kw, sw, pw, dw, what="width")))


def _conv_params(types, attrs):
    c = types[0].shape[1]
    g, oc = attrs["groups"], attrs["out_channels"]
    kh, kw = attrs["kernel_size"]
    fan_in, fan_out = c // g * kh * kw, oc // g * kh * kw
    out = {"weight": ParamSpec((oc, c // g, kh, kw), "kaiming", fan_in, fan_out)}
    if attrs["bias"]:
        out["bias"] = ParamSpec((oc,), "zeros", fan_in, fan_out)
    return out


def conv2d_reference(x, weight, bias, stride, padding, dilation, groups):
    """conv2d as im2col over a strided NHWC view and one (batched) matmul."""
    n, c, h, w = x.shape
    oc, cg, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (ph, ph), (pw, pw), (0, 0)))  # NHWC, padded (a copy)
    s0, s1, s2, s3 = xp.strides
    patches = as_strided(xp, (n, oh, ow, kh, kw, c), (s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3), writeable=False)
    m = n * oh * ow
    if cg == 1 and oc == groups:  # depthwise: a weighted sum of kh*kw shifted views
        out = np.zeros((n, oh, ow, c), dtype=x.dtype)
        taps = weight.reshape(c, kh, kw)
        for i in range(kh):
            for j in range(kw):
                out += patches[:, :, :, i, j, :] * taps[:, i, j]
        out = out.reshape(m, oc)
    elif groups == 1:
        cols = patches.reshape(m, kh * kw * c)
        out = cols @ weight.transpose(2, 3, 1, 0).reshape(kh * kw * c, oc)
    else:
        g, ocg = groups, oc // groups
        cols = patches.reshape(m, kh, kw, g, cg).transpose(3, 0, 1, 2, 4).reshape(g, m, kh * kw * cg)
        wg = weight.reshape(g, ocg, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(g, kh * kw * cg, ocg)
        out = np.matmul(cols, wg).transpose(1, 0, 2).reshape(m, oc)
    if bias is not None:
        out = out + bias
    return np.ascontiguousarray(out.reshape(n, oh, ow, oc).transpose(0, 3, 1, 2))


def _conv_ref(xs, params, attrs):
    return conv2d_reference(xs[0], params["weight"], params.get("bias"), attrs["stride"], conv_padding(attrs),
                            attrs["dilation"], attrs["groups"])


def _conv_flops(ins, out, attrs):
    n, oc, oh, ow = out
    kh, kw = attrs["kernel_size"]
    cg = ins[0][1] // attrs["groups"]
    return 2 * n * oc * oh * ow * cg * kh * kw + (numel(out) if attrs["bias"] else 0)


CONV_ATTRS = (
    Attr("out_channels", "int", positive=True, doc="number of output channels"),
    Attr("kernel_size", "pair", positive=True, doc="kernel size: k or (kh, kw)"),
    Attr("stride", "pair", 1, positive=True),
    Attr("padding", "padding", 0, doc='padding: p, (ph, pw), "same" or "valid"'),
    Attr("dilation", "pair", 1, positive=True),
    Attr("groups", "int", 1, positive=True),
    Attr("bias", "bool", True),
)

register(OpDef("conv2d", OpKind.OUT_FUSABLE, _conv_infer, _conv_ref, _conv_flops, CONV_ATTRS, params=_conv_params,
               doc="2-D convolution over NCHW"))


# ---------------------------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------------------------

def _linear_infer(types, attrs):
    (t,) = types
    if t.rank < 1:
        raise ShapeError("`linear` needs an input of rank >= 1")
    _static(t.shape[-1], "the feature dimension of a linear input")
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
))


# ---------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------

def _pool_geometry(attrs):
    k = attrs["kernel_size"]
    s = attrs["stride"] if attrs["stride"] is not None else k
    if isinstance(s, int):
        s = (s, s)
    d = attrs.get("dilation", (1, 1))
    p = attrs["padding"]
    for i in range(2):
        if p[i] * 2 > k[i]:
            raise ShapeError(f"pool padding {p} must be at most half the kernel size {k}")
    return k, s, p, d


def _pool_infer(types, attrs):
    (t,) = types
    _rank(t, (4,), "pooling", "[N, C, H, W]")
    n, c, h, w = t.shape
    k, s, p, d = _pool_geometry(attrs)
    ceil = attrs["ceil_mode"]
    return t.with_shape((n, c, _out_size(h, k[0], s[0], p[0], d[0], ceil, "height"),
                         _out_size(w, k[1], s[1], p[1], d[1], ceil, "width")))


def _windows(x, k, s, p, d, out_hw, fill):
    """[N, C, OH, OW, KH, KW] strided view of the padded input (padding with ``fill``)."""
    oh, ow = out_hw
    h, w = x.shape[2:]
    extra_h = max(0, (oh - 1) * s[0] + d[0] * (k[0] - 1) + 1 - (h + 2 * p[0]))
    extra_w = max(0, (ow - 1) * s[1] + d[1] * (k[1] - 1) + 1 - (w + 2 * p[1]))
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0] + extra_h), (p[1], p[1] + extra_w)), constant_values=fill)
    win = sliding_window_view(xp, (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1), axis=(2, 3))
    return win[:, :, : (oh - 1) * s[0] + 1: s[0], : (ow - 1) * s[1] + 1: s[1], :: d[0], :: d[1]]


def _maxpool_ref(xs, params, attrs):
    x = xs[0]
    k, s, p, d = _pool_geometry(attrs)
    out_hw = _pool_infer([TensorType(x.shape)], attrs).shape[2:]
    return _windows(x, k, s, p, d, out_hw, -np.inf).max(axis=(4, 5))


def _avg_divisor(size, out, k, s, p, include_pad):
    start = np.arange(out) * s - p
    end = np.minimum(start + k, size + p)
    if include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def _avgpool_ref(xs, params, attrs):
    x = xs[0]
    k, s, p, d = _pool_geometry(attrs)
    oh, ow = _pool_infer([TensorType(x.shape)], attrs).shape[2:]
    total = _windows(x, k, s, p, d, (oh, ow), 0).sum(axis=(4, 5))
    inc = attrs["count_include_pad"]
    div = np.outer(_avg_divisor(x.shape[2], oh, k[0], s[0], p[0], inc), _avg_divisor(x.shape[3], ow, k[1], s[1], p[1], inc))
    return (total / div.astype(x.dtype)).astype(x.dtype)


def _pool_flops(ins, out, attrs):
    return numel(out) * attrs["kernel_size"][0] * attrs["kernel_size"][1]


POOL_ATTRS = (
    Attr("kernel_size", "pair", positive=True),
    Attr("stride", "pair", None, positive=True, doc="defaults to the kernel size"),
    Attr("padding", "pair", 0),
)
register(OpDef("maxpool2d", OpKind.REDUCE, _pool_infer, _maxpool_ref, _pool_flops,
               POOL_ATTRS + (Attr("dilation", "pair", 1, positive=True), Attr("ceil_mode", "bool", False))),
         aliases=("maxpool",))
register(OpDef("avgpool2d", OpKind.REDUCE, _pool_infer, _avgpool_ref, _pool_flops,
               POOL_ATTRS + (Attr("ceil_mode", "bool", False), Attr("count_include_pad", "bool", True))),
         aliases=("avgpool",))


def _gap_infer(types, attrs):
    (t,) = types
    _rank(t, (4,), "global_avgpool", "[N, C, H, W]")
    return t.with_shape(t.shape[:2] + (1, 1))


register(OpDef("global_avgpool", OpKind.REDUCE, _gap_infer,
               lambda xs, p, a: xs[0].mean(axis=(2, 3), keepdims=True),
               lambda ins, out, a: numel(ins[0]), doc="mean over H and W; output [N, C, 1, 1]"))


# ---------------------------------------------------------------------------------------------
# normalisation (inference)
# ---------------------------------------------------------------------------------------------

def _channels(t: TensorType, op: str) -> int:
    if t.rank < 2:
        raise ShapeError(f"`{op}` expects an input [N, C, ...], got {t}")
    return _static(t.shape[1], f"the channel dimension of a {op} input")


def _bn_params(types, attrs):
    c = _channels(types[0], "batchnorm")
    return {"weight": ParamSpec((c,), "ones"), "bias": ParamSpec((c,), "zeros"),
            "running_mean": ParamSpec((c,), "zeros"), "running_var": ParamSpec((c,), "ones")}


def batchnorm_scale_shift(params, eps):
    """Inference batchnorm as a per-channel affine y = x * scale + shift."""
    scale = params["weight"] / np.sqrt(params["running_var"] + eps)
    return scale, params["bias"] - params["running_mean"] * scale


def _bn_ref(xs, params, attrs):
    x = xs[0]
    scale, shift = batchnorm_scale_shift(params, attrs["eps"])
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * scale.reshape(shape) + shift.reshape(shape)


def _bn_infer(types, attrs):
    _channels(types[0], "batchnorm")
    return types[0]


register(OpDef("batchnorm", OpKind.NORM, _bn_infer, _bn_ref, lambda ins, out, a: 2 * numel(out),
               (Attr("eps", "float", 1e-5, positive=True),), params=_bn_params,
               doc="batch normalisation with running statistics (inference)"), aliases=("batchnorm2d",))


def _ln_infer(types, attrs):
    _static(types[0].shape[-1], "the normalised (last) dimension of a layernorm input")
    return types[0]


def _ln_params(types, attrs):
    f = types[0].shape[-1]
    return {"weight": ParamSpec((f,), "ones"), "bias": ParamSpec((f,), "zeros")} if attrs["affine"] else {}


def layernorm_reference(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y * weight + bias if weight is not None else y


register(OpDef("layernorm", OpKind.NORM, _ln_infer,
               lambda xs, p, a: layernorm_reference(xs[0], p.get("weight"), p.get("bias"), a["eps"]),
               lambda ins, out, a: 7 * numel(out),
               (Attr("eps", "float", 1e-5, positive=True), Attr("affine", "bool", True)), params=_ln_params,
               doc="layer normalisation over the last dimension"))


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
               doc="group normalisation over (C/groups, H, W)"))


# ---------------------------------------------------------------------------------------------
# shape ops, dropout, softmax
# ---------------------------------------------------------------------------------------------

register(OpDef("dropout", OpKind.INJECTIVE, lambda types, a: types[0], lambda xs, p, a: xs[0],
               lambda ins, out, a: 0, (Attr("p", "float", 0.5),), doc="identity at inference"))


def _flatten_infer(types, attrs):
    (t,) = types
    start = attrs["start_dim"]
    if not 0 <= start < t.rank:
        raise ShapeError(f"flatten start_dim={start} is out of range for {t}")
    tail = 1
    for d in t.shape[start:]:
        tail *= _static(d, "a flattened dimension")
    return t.with_shape(t.shape[:start] + (tail,))


register(OpDef("flatten", OpKind.INJECTIVE, _flatten_infer,
               lambda xs, p, a: xs[0].reshape(xs[0].shape[: a["start_dim"]] + (-1,)),
               lambda ins, out, a: 0, (Attr("start_dim", "int", 1),)))


def _axis_infer(types, attrs):
    (t,) = types
    if not -t.rank <= attrs["dim"] < t.rank:
        raise ShapeError(f"dim={attrs['dim']} is out of range for {t}")
    return t


def _softmax(x, dim):
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def _log_softmax(x, dim):
    z = x - x.max(axis=dim, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=dim, keepdims=True))


register(OpDef("softmax", OpKind.REDUCE, _axis_infer, lambda xs, p, a: _softmax(xs[0], a["dim"]),
               lambda ins, out, a: 5 * numel(out), (Attr("dim", "int", -1),)))
register(OpDef("log_softmax", OpKind.REDUCE, _axis_infer, lambda xs, p, a: _log_softmax(xs[0], a["dim"]),
               lambda ins, out, a: 5 * numel(out), (Attr("dim", "int", -1),)))


# ---------------------------------------------------------------------------------------------
# pointwise binary ops and concat
# ---------------------------------------------------------------------------------------------

def _broadcast_infer(types, attrs, op="add"):
    a, b = types
    if a.rank != b.rank:
        raise ShapeError(f"`{op}` of tensors of different ranks: {a} and {b}")
    out = []
    for i, (x, y) in enumerate(zip(a.shape, b.shape)):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ShapeError(f"`{op}` of tensors whose shapes differ in dim {i}: {a} and {b}",
                             hint="a residual needs both branches to have the same shape")
    return a.with_shape(out)


register(OpDef("add", OpKind.BINARY, _broadcast_infer, lambda xs, p, a: xs[0] + xs[1],
               lambda ins, out, a: numel(out), arity=2, doc="x + y (residual add; broadcasting size-1 dims)"))
register(OpDef("mul", OpKind.BINARY, lambda t, a: _broadcast_infer(t, a, "mul"), lambda xs, p, a: xs[0] * xs[1],
               lambda ins, out, a: numel(out), arity=2, doc="x * y (broadcasting size-1 dims)"))


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
               lambda ins, out, a: 0, (Attr("dim", "int", 1),), arity=None, doc="concatenate along a dim (channels)"))
