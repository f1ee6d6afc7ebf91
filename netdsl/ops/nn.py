"""Layers: convolution, linear, pooling, normalisation, shape ops and pointwise arithmetic.

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


def _static(d, what: str) -> int:
    if isinstance(d, SymDim):
        raise ShapeError(f"{what} must be a static size, but it is `{d}`",
                         hint="give this input dimension a fixed size in the network's input type")
    return d


def _rank(t: TensorType, ranks: Sequence[int], op: str, layout: str) -> None:
    if t.rank not in ranks:
        raise ShapeError(f"`{op}` expects a rank-{'/'.join(map(str, ranks))} input {layout}, got {t}")


def _out_size(size, k: int, s: int, pads: tuple[int, int], d: int, ceil_mode: bool = False, what: str = "input"):
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


def _window_out(t: TensorType, attrs, kernel, stride, dilation, ceil_mode: bool = False) -> tuple:
    """(OH, OW) of a conv or pool on ``t`` [N, C, H, W]: ceil(size / stride) for ``padding="same"`` (any
    size, symbolic too), else from the explicit (top, left, bottom, right) padding."""
    hw = t.shape[2:]
    if attrs["padding"] == "same":
        return tuple(n if s == 1 else (n + s - 1) // s for n, s in zip(hw, stride))
    top, left, bottom, right = window_pads(attrs["padding"], hw, kernel, stride, dilation)
    return (_out_size(hw[0], kernel[0], stride[0], (top, bottom), dilation[0], ceil_mode, "height"),
            _out_size(hw[1], kernel[1], stride[1], (left, right), dilation[1], ceil_mode, "width"))


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
    _rank(t, (4,), "conv2d", "[N, C, H, W]")
    n, c, h, w = t.shape
    c = _static(c, "the channel dimension of a conv2d input")
    g, oc = attrs["groups"], attrs["out_channels"]
    if c % g:
        raise ShapeError(f"conv2d input has {c} channels, not divisible by groups={g}",
                         hint="groups must divide both the input channels and out_channels")
    if oc % g:
        raise ShapeError(f"conv2d out_channels={oc} is not divisible by groups={g}",
                         hint="groups must divide both the input channels and out_channels")
    return t.with_shape((n, oc) + _window_out(t, attrs, attrs["kernel_size"], attrs["stride"], attrs["dilation"]))


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
    axis=-1, fused_form="fused_linear", folds_batchnorm=True, reorders_features=True,
))


# ---------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------

def pool_pads(attrs: Mapping[str, Any], size_hw) -> Pads:
    """A pool's (top, left, bottom, right) padding on an input of spatial size ``size_hw``. Each side may pad
    up to the kernel size minus 1, as ONNX allows (torch allows half the kernel)."""
    k, s, _, d = _pool_geometry(attrs)
    pads = window_pads(attrs["padding"], size_hw, k, s, d)
    if any(p >= k[i % 2] for i, p in enumerate(pads)):
        raise ShapeError(f"pool padding (top, left, bottom, right) = {pads} must be smaller than the kernel size {k}",
                         hint="a window must reach the input: pad each side by at most the kernel size - 1",
                         arg="padding")
    return pads


def _pool_geometry(attrs):
    """(kernel, stride, padding attribute, dilation); the stride defaults to the kernel size."""
    k = attrs["kernel_size"]
    s = attrs["stride"] if attrs["stride"] is not None else k
    if isinstance(s, int):
        s = (s, s)
    return k, s, attrs["padding"], attrs.get("dilation", (1, 1))


def _pool_infer(types, attrs):
    (t,) = types
    _rank(t, (4,), "pooling", "[N, C, H, W]")
    k, s, _, d = _pool_geometry(attrs)
    if attrs["padding"] != "same" or all(isinstance(n, int) for n in t.shape[2:]) or s == (1, 1):
        pool_pads(attrs, t.shape[2:])  # (the limit; "same" with stride > 1 on a symbolic size: when run)
    return t.with_shape(t.shape[:2] + _window_out(t, attrs, k, s, d, attrs["ceil_mode"]))


def _tap_range(size: int, out: int, tap: int, s: int, p: int, d: int) -> tuple[int, int, int]:
    """For one window tap along one axis: the outputs [lo, hi) whose tap falls inside the input (not in
    the padding), and the input index that output ``lo`` reads."""
    offset = tap * d - p  # input index read by output 0
    lo = -(offset // s) if offset < 0 else 0  # ceil(-offset / s): the first output past the padding
    hi = min(out, (size - 1 - offset) // s + 1) if size - 1 - offset >= 0 else 0
    return lo, max(lo, hi), offset + lo * s


# Bytes of the accumulator of one chunk of pooling rows: it stays in the L2 cache while every tap is folded in.
POOL_CHUNK_BYTES = 1 << 19


def _pool_reduce(x, k, s, p, d, out_hw, init, combine):
    """Fold the KH * KW taps of every pooling window into ``init`` with ``combine(acc, view, out=acc)``;
    ``p`` is the (top, left) padding. Taps in the padding are skipped (the padding is never materialised):
    max pooling starts from -inf, sum pooling from 0, which is what padding with those values would give.
    The rows (one image's channel) are taken a chunk at a time, so that the accumulator stays in cache
    across the taps. Returns the result and, per output row and column, whether any tap reads the input."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    taps = []  # (output rows, output cols) <- (input rows, input cols) of each tap that reads the input
    rows_hit, cols_hit = np.zeros(oh, bool), np.zeros(ow, bool)
    for i in range(k[0]):
        r0, r1, xr = _tap_range(h, oh, i, s[0], p[0], d[0])
        rows_hit[r0:r1] = True
        for j in range(k[1]):
            c0, c1, xc = _tap_range(w, ow, j, s[1], p[1], d[1])
            cols_hit[c0:c1] = True
            if r1 > r0 and c1 > c0:
                taps.append((slice(r0, r1), slice(c0, c1), slice(xr, xr + (r1 - r0 - 1) * s[0] + 1, s[0]),
                             slice(xc, xc + (c1 - c0 - 1) * s[1] + 1, s[1])))
    rows = x.reshape(n * c, h, w)
    acc = np.full((n * c, oh, ow), init, dtype=x.dtype)
    step = max(1, POOL_CHUNK_BYTES // (oh * ow * x.dtype.itemsize))
    for a in range(0, n * c, step):
        for rs, cs, xr, xc in taps:
            dst = acc[a:a + step, rs, cs]
            combine(dst, rows[a:a + step, xr, xc], out=dst)
    return acc.reshape(n, c, oh, ow), np.outer(rows_hit, cols_hit)


def _pool_setup(x, attrs):
    k, s, _, d = _pool_geometry(attrs)
    pads = pool_pads(attrs, x.shape[2:])
    out_hw = _window_out(TensorType(x.shape), attrs, k, s, d, attrs["ceil_mode"])
    return k, s, pads, d, out_hw


def _maxpool_ref(xs, params, attrs):
    """A window wholly in the padding (a dilated one, or with ONNX's large pads) has no input to take the max
    of: it gives the dtype's lowest finite number, as onnxruntime does (torch's padding rule never forms one)."""
    x = xs[0]
    k, s, pads, d, out_hw = _pool_setup(x, attrs)
    out, hit = _pool_reduce(x, k, s, pads[:2], d, out_hw, -np.inf, np.maximum)
    if not hit.all():
        out[:, :, ~hit] = np.finfo(x.dtype).min
    return out


def _avg_divisor(size, out, k, s, begin, end, include_pad):
    """Per output position along an axis: the window clipped to the padded input (``include_pad``) or to the
    input; never 0 (a window wholly in the padding sums nothing: 0 / 1)."""
    start = np.arange(out) * s - begin
    stop = np.minimum(start + k, size + end)
    if include_pad:
        return stop - start
    return np.maximum(np.minimum(stop, size) - np.maximum(start, 0), 1)


def _avgpool_ref(xs, params, attrs):
    x = xs[0]
    k, s, pads, d, (oh, ow) = _pool_setup(x, attrs)
    total, _ = _pool_reduce(x, k, s, pads[:2], d, (oh, ow), 0, np.add)
    inc = attrs["count_include_pad"]
    div = np.outer(_avg_divisor(x.shape[2], oh, k[0], s[0], pads[0], pads[2], inc),
                   _avg_divisor(x.shape[3], ow, k[1], s[1], pads[1], pads[3], inc))
    return (total / div.astype(x.dtype)).astype(x.dtype)


def _pool_flops(ins, out, attrs):
    return numel(out) * attrs["kernel_size"][0] * attrs["kernel_size"][1]


POOL_ATTRS = (
    Attr("kernel_size", "pair", positive=True),
    Attr("stride", "pair", None, positive=True, doc="defaults to the kernel size"),
    Attr("padding", "padding", 0, doc='padding: p, (ph, pw), (top, left, bottom, right), "same" or "valid"'),
)
register(OpDef("maxpool2d", OpKind.REDUCE, _pool_infer, _maxpool_ref, _pool_flops,
               POOL_ATTRS + (Attr("dilation", "pair", 1, positive=True), Attr("ceil_mode", "bool", False)), axis=1),
         aliases=("maxpool",))
register(OpDef("avgpool2d", OpKind.REDUCE, _pool_infer, _avgpool_ref, _pool_flops,
               POOL_ATTRS + (Attr("ceil_mode", "bool", False), Attr("count_include_pad", "bool", True)), axis=1),
         aliases=("avgpool",))


def _gap_infer(types, attrs):
    (t,) = types
    _rank(t, (4,), "global_avgpool", "[N, C, H, W]")
    return t.with_shape(t.shape[:2] + (1, 1))


register(OpDef("global_avgpool", OpKind.REDUCE, _gap_infer,
               lambda xs, p, a: xs[0].mean(axis=(2, 3), keepdims=True),
               lambda ins, out, a: numel(ins[0]), doc="mean over H and W; output [N, C, 1, 1]", axis=1))


def _adaptive_infer(types, attrs):
    (t,) = types
    _rank(t, (4,), "adaptive_avgpool2d", "[N, C, H, W]")
    return t.with_shape(t.shape[:2] + tuple(attrs["output_size"]))  # any H, W: the bins follow the input


def adaptive_bins(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive pooling bins along one axis: bin i is [floor(i * size / out), ceil((i + 1) * size / out)),
    so bins overlap when ``out`` does not divide ``size`` (and repeat inputs when ``out`` > ``size``)."""
    i = np.arange(out)
    return (i * size) // out, -(-(i + 1) * size // out)


def adaptive_avgpool2d_reference(x, output_size):
    """F.adaptive_avg_pool2d on NCHW: each bin's sum, as 0/1 bin matrices on both sides of x (one matmul per
    axis, no loop over bins), divided by the bin's size."""
    n, c, h, w = x.shape
    rows, cols = (_bin_matrix(size, out, x.dtype) for size, out in zip((h, w), output_size))
    sums = rows @ x @ cols.T  # [OH, H] @ [N, C, H, W] @ [W, OW]
    return (sums / np.outer(rows.sum(axis=1), cols.sum(axis=1))).astype(x.dtype, copy=False)


def _bin_matrix(size: int, out: int, dtype) -> np.ndarray:
    start, end = adaptive_bins(size, out)
    j = np.arange(size)
    return ((j >= start[:, None]) & (j < end[:, None])).astype(dtype)  # [out, size]: 1 where input j is in bin i


def _adaptive_flops(ins, out, attrs):
    # an add per input element of each bin (bins may overlap), a divide per output
    n, c, h, w = ins[0]
    (hs, he), (ws, we) = adaptive_bins(h, out[2]), adaptive_bins(w, out[3])
    return n * c * int((he - hs).sum()) * int((we - ws).sum()) + numel(out)


register(OpDef("adaptive_avgpool2d", OpKind.REDUCE, _adaptive_infer,
               lambda xs, p, a: adaptive_avgpool2d_reference(xs[0], a["output_size"]), _adaptive_flops,
               (Attr("output_size", "pair", positive=True, doc="the output size: n or (oh, ow)"),),
               doc="F.adaptive_avg_pool2d: means over torch's bins of H and W; output [N, C, oh, ow]", axis=1),
         aliases=("adaptive_avgpool",))


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
        _static(d, "a normalised dimension of a layernorm input")
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
        tail *= _static(d, "a flattened dimension")
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
