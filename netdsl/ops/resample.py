"""Resampling layers: transposed convolution and interpolation (upsampling), as in torch.nn.functional.

``conv_transpose2d`` is ``F.conv_transpose2d`` (weight in PyTorch's layout [C_in, C_out/groups, KH, KW],
so an ``nn.ConvTranspose2d`` state_dict loads as it is); ``upsample`` is ``F.interpolate`` on
[N, C, H, W] with mode "nearest" or "bilinear". References are vectorised NumPy (no Python loop over
pixels or channels) and compute in the dtype of their inputs (float32 or float64).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Mapping

import numpy as np

from ..ir.dims import SymDim
from ..ir.graph import ParamSpec
from ..ir.types import numel
from .registry import Attr, OpDef, OpKind, ShapeError, register


def _static(d, what: str) -> int:
    if isinstance(d, SymDim):
        raise ShapeError(f"{what} must be a static size, but it is `{d}`",
                         hint="give this input dimension a fixed size in the network's input type")
    return d


def _rank4(t, op: str) -> None:
    if t.rank != 4:
        raise ShapeError(f"`{op}` expects a rank-4 input [N, C, H, W], got {t}")


# ---------------------------------------------------------------------------------------------
# conv_transpose2d
# ---------------------------------------------------------------------------------------------

def conv_transpose_output_size(size, kernel_size: int, stride: int = 1, padding: int = 0, output_padding: int = 0,
                               dilation: int = 1):
    """Output size of a transposed conv along one axis, as PyTorch computes it:
    (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1.
    ``size`` may be an int or a symbolic dimension."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1


def _conv_t_infer(types, attrs):
    (t,) = types
    _rank4(t, "conv_transpose2d")
    n, c, h, w = t.shape
    c = _static(c, "the channel dimension of a conv_transpose2d input")
    g, oc = attrs["groups"], attrs["out_channels"]
    hint = "groups must divide both the input channels and out_channels"
    if c % g:
        raise ShapeError(f"conv_transpose2d input has {c} channels, not divisible by groups={g}", hint=hint,
                         arg="groups")
    if oc % g:
        raise ShapeError(f"conv_transpose2d out_channels={oc} is not divisible by groups={g}", hint=hint,
                         arg="groups")
    k, s, p, op, d = (attrs[a] for a in ("kernel_size", "stride", "padding", "output_padding", "dilation"))
    for i in range(2):
        if not (op[i] < s[i] or op[i] < d[i]):  # PyTorch's rule
            raise ShapeError(f"conv_transpose2d output_padding={op} must be smaller than either stride={s} or "
                             f"dilation={d}",
                             hint="output_padding only picks one of the `stride` output sizes that a strided conv "
                                  "maps to the same input size; it is at most stride - 1",
                             arg="output_padding")
    out = []
    for axis, size in (("height", h), ("width", w)):
        i = len(out)
        o = conv_transpose_output_size(size, k[i], s[i], p[i], op[i], d[i])
        if isinstance(o, int) and o < 1:
            raise ShapeError(f"conv_transpose2d output {axis} would be {o}: (size - 1) * stride - 2 * padding "
                             f"+ dilation * (kernel_size - 1) + output_padding + 1 with size {size}",
                             hint="the padding is too large for this input and kernel", arg="padding")
        out.append(o)
    return t.with_shape((n, oc, out[0], out[1]))


def _conv_t_params(types, attrs):
    c = types[0].shape[1]
    g, oc = attrs["groups"], attrs["out_channels"]
    kh, kw = attrs["kernel_size"]
    # As PyTorch's ConvTranspose2d.reset_parameters: the weight is [C_in, C_out/groups, KH, KW] and its fan_in
    # is weight.size(1) * KH * KW = C_out/groups * KH * KW. The initialiser itself is netdsl's (He normal,
    # seeded per parameter name, zero bias), like conv2d's.
    fan_in, fan_out = oc // g * kh * kw, c // g * kh * kw
    out = {"weight": ParamSpec((c, oc // g, kh, kw), "kaiming", fan_in, fan_out)}
    if attrs["bias"]:
        out["bias"] = ParamSpec((oc,), "zeros", fan_in, fan_out)
    return out


def conv_transpose2d_reference(x, weight, bias, stride, padding, output_padding, dilation, groups):
    """F.conv_transpose2d in NCHW, vectorised: one GEMM per kernel tap (KH * KW of them), each
    [C_out, C_in] x [C_in, N * H * W] (batched over groups), scattered with ``+=`` into a strided view of
    an uncropped output buffer; then the padding is cropped off and the bias added.

    ``weight`` is [C_in, C_out/groups, KH, KW]; ``stride``, ``padding``, ``output_padding`` and ``dilation``
    are (h, w) pairs. Computes in ``np.result_type(x, weight)``."""
    n, c, h, w = x.shape
    cw, ocg, kh, kw = weight.shape
    g = groups
    if cw != c or c % g:
        raise ValueError(f"conv_transpose2d_reference: input has {c} channels, weight {weight.shape}, groups={g}")
    cg, oc = c // g, ocg * g
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    oh = conv_transpose_output_size(h, kh, sh, ph, oph, dh)
    ow = conv_transpose_output_size(w, kw, sw, pw, opw, dw)
    dtype = np.result_type(x, weight)
    # every tap lands inside [0, full); the output is [pad, pad + out), which may reach past full by output_padding
    full_h, full_w = (h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw * (kw - 1) + 1
    buf = np.zeros((n, oc, max(full_h, ph + oh), max(full_w, pw + ow)), dtype=dtype)
    # inputs as [g, C/g, N * H * W] (one copy), weights per tap as [g, C_out/g, C/g]
    xm = np.ascontiguousarray(x.reshape(n, g, cg, h * w).transpose(1, 2, 0, 3), dtype=dtype).reshape(g, cg, n * h * w)
    wt = weight.astype(dtype, copy=False).reshape(g, cg, ocg, kh, kw).transpose(3, 4, 0, 2, 1)  # [KH, KW, g, OC/g, C/g]
    if g == 1:
        xm, wt = xm[0], wt[:, :, 0]
    tmp = np.empty((oc, n * h * w) if g == 1 else (g, ocg, n * h * w), dtype=dtype)
    contrib = tmp.reshape(oc, n, h, w).transpose(1, 0, 2, 3)  # [N, OC, H, W] view of tmp
    for i in range(kh):
        for j in range(kw):
            np.matmul(np.ascontiguousarray(wt[i, j]), xm, out=tmp)
            buf[:, :, i * dh: i * dh + (h - 1) * sh + 1: sh, j * dw: j * dw + (w - 1) * sw + 1: sw] += contrib
    out = buf[:, :, ph: ph + oh, pw: pw + ow]
    if bias is not None:
        out += bias.astype(dtype, copy=False).reshape(oc, 1, 1)
    return np.ascontiguousarray(out)


def _conv_t_ref(xs, params, attrs):
    return conv_transpose2d_reference(xs[0], params["weight"], params.get("bias"), attrs["stride"], attrs["padding"],
                                      attrs["output_padding"], attrs["dilation"], attrs["groups"])


def _conv_t_flops(ins, out, attrs):
    n, c, h, w = ins[0]
    kh, kw = attrs["kernel_size"]
    ocg = attrs["out_channels"] // attrs["groups"]
    return 2 * n * c * h * w * ocg * kh * kw + (numel(out) if attrs["bias"] else 0)


CONV_TRANSPOSE_ATTRS = (
    Attr("out_channels", "int", positive=True, doc="number of output channels"),
    Attr("kernel_size", "pair", positive=True, doc="kernel size: k or (kh, kw)"),
    Attr("stride", "pair", 1, positive=True),
    Attr("padding", "pair", 0, doc="rows/columns cropped from each side of the full output: p or (ph, pw)"),
    Attr("output_padding", "pair", 0, doc="extra rows/columns added on the bottom/right: smaller than stride or "
                                          "dilation"),
    Attr("dilation", "pair", 1, positive=True),
    Attr("groups", "int", 1, positive=True),
    Attr("bias", "bool", True),
)

register(OpDef("conv_transpose2d", OpKind.OUT_FUSABLE, _conv_t_infer, _conv_t_ref, _conv_t_flops,
               CONV_TRANSPOSE_ATTRS, params=_conv_t_params,
               doc="2-D transposed convolution over NCHW (F.conv_transpose2d; weight [C_in, C_out/groups, KH, KW])",
               axis=1, fused_form="fused_conv_transpose2d"))


# ---------------------------------------------------------------------------------------------
# upsample (F.interpolate, nearest / bilinear)
# ---------------------------------------------------------------------------------------------

UPSAMPLE_MODES = ("nearest", "bilinear")
# a scale factor whose exact binary value has a denominator up to this gives a symbolic output size
# floor(H * scale) == (H * numerator) // denominator (2, 3, 1.5, 0.5, 0.25, ...); others need a static size
_MAX_SYMBOLIC_DENOMINATOR = 1 << 10


def upsample_scales(attrs: Mapping[str, Any]) -> tuple[float, float] | None:
    """The checked (scale_h, scale_w) of an upsample's ``scale_factor`` attribute, or None when ``size`` is
    given instead; raises ShapeError for a bad combination of attributes."""
    sf, size, mode = attrs.get("scale_factor"), attrs.get("size"), attrs.get("mode", "nearest")
    usage = "give exactly one of scale_factor=s (or (sh, sw)) and size=n (or (h, w))"
    if sf is not None and size is not None:
        raise ShapeError("`upsample` takes scale_factor or size, not both", hint=usage, arg="size")
    if sf is None and size is None:
        raise ShapeError("`upsample` needs scale_factor or size", hint=usage)
    if attrs.get("align_corners") is not None and mode != "bilinear":
        raise ShapeError(f'attribute `align_corners` can only be given with mode="bilinear", not mode="{mode}"',
                         hint='nearest interpolation has no corners to align: remove align_corners, or use '
                              'mode="bilinear"', arg="align_corners")
    if sf is None:
        return None

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    pair = (sf, sf) if number(sf) else sf
    if not (isinstance(pair, tuple) and len(pair) == 2 and all(number(v) for v in pair)):
        raise ShapeError(f"attribute `scale_factor` must be a number or a pair of numbers, got {_show(sf)}",
                         hint="e.g. scale_factor=2, scale_factor=1.5 or scale_factor=(2, 1)", arg="scale_factor")
    if not all(math.isfinite(v) and v > 0 for v in pair):
        raise ShapeError(f"attribute `scale_factor` must be positive, got {_show(sf)}", arg="scale_factor")
    return float(pair[0]), float(pair[1])


def _show(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        return "(" + ", ".join(_show(x) for x in v) + ")"
    return str(v)


def upsample_output_size(size, scale: float, what: str = "height"):
    """floor(size * scale), as PyTorch computes it (in float64). ``size`` may be symbolic when the scale
    is a binary fraction with a small denominator (2, 1.5, 0.5, ...)."""
    if isinstance(size, SymDim):
        frac = Fraction(scale)
        if frac.denominator > _MAX_SYMBOLIC_DENOMINATOR:
            raise ShapeError(f"upsample with scale_factor={scale:g} needs a static {what}, but it is `{size}`",
                             hint="give the input a fixed size, use size=..., or a scale factor such as 2, 1.5 "
                                  "or 0.5 (floor(H * scale) is then exact for any H)")
        return (size * frac.numerator) // frac.denominator
    out = math.floor(float(size) * scale)
    if out < 1:
        raise ShapeError(f"upsample output {what} would be {out} (floor({size} * {scale:g}))",
                         hint="use a larger scale_factor, or give the output size with size=...",
                         arg="scale_factor")
    return out


def _upsample_geometry(shape, attrs):
    """(out_h, out_w, scales or None) of an upsample of an [N, C, H, W] ``shape``."""
    scales = upsample_scales(attrs)
    h, w = shape[2], shape[3]
    if scales is None:
        oh, ow = attrs["size"]
    else:
        oh, ow = upsample_output_size(h, scales[0], "height"), upsample_output_size(w, scales[1], "width")
    return oh, ow, scales


def _upsample_infer(types, attrs):
    (t,) = types
    _rank4(t, "upsample")
    mode = attrs["mode"]
    if mode not in UPSAMPLE_MODES:  # bind_attrs already checks the choices; for graphs built by hand
        raise ShapeError(f"attribute `mode` must be one of {', '.join(map(_show, UPSAMPLE_MODES))}, got {_show(mode)}",
                         arg="mode")
    oh, ow, _ = _upsample_geometry(t.shape, attrs)
    return t.with_shape(t.shape[:2] + (oh, ow))


def nearest_source_index(in_size: int, out_size: int, scale: float | None = None) -> np.ndarray:
    """The input index each output index of a nearest upsample reads, exactly as PyTorch's CPU kernel:
    src = min(floor(dst * s), in - 1) in float32, with s = float32(1 / scale) when a scale factor is given
    and float32(in) / out otherwise (identity when out == in, dst // 2 when out == 2 * in)."""
    dst = np.arange(out_size)
    if out_size == in_size:
        return dst
    if out_size == 2 * in_size:
        return dst >> 1
    s = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(in_size) / np.float32(out_size)
    src = np.floor(dst.astype(np.float32) * s).astype(np.int64)
    return np.minimum(src, in_size - 1)


def bilinear_source_weights(in_size: int, out_size: int, align_corners: bool, scale: float | None = None):
    """(i0, i1, l0, l1): each output index of a bilinear upsample reads l0 * x[i0] + l1 * x[i1], as PyTorch
    computes it (in float64): with align_corners src = dst * (in - 1) / (out - 1); without,
    src = max((dst + 0.5) * s - 0.5, 0) with s = 1 / scale when a scale factor is given, in / out
    otherwise; i0 = min(floor(src), in - 1), i1 = min(i0 + 1, in - 1), l1 = clamp(src - i0, 0, 1)."""
    dst = np.arange(out_size, dtype=np.float64)
    if out_size == in_size:  # PyTorch copies
        idx = np.arange(out_size)
        return idx, idx, np.ones(out_size), np.zeros(out_size)
    if align_corners:
        s = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * s
    else:
        s = 1.0 / scale if scale is not None and scale > 0 else in_size / out_size
        src = np.maximum((dst + 0.5) * s - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    l1 = np.clip(src - i0, 0.0, 1.0)
    return i0, i1, 1.0 - l1, l1


def upsample_reference(x, size, mode: str = "nearest", align_corners: bool | None = None, scales=None):
    """F.interpolate of ``x`` [N, C, H, W] to ``size`` (out_h, out_w): mode "nearest" or "bilinear";
    ``scales`` is the (scale_h, scale_w) scale factor the size came from, or None when the size was given
    (PyTorch's source indices depend on which). Computes in ``x``'s dtype; no loop over pixels."""
    h, w = x.shape[2:]
    oh, ow = size
    sh, sw = scales if scales is not None else (None, None)
    if mode == "nearest":
        return x.take(nearest_source_index(h, oh, sh), axis=2).take(nearest_source_index(w, ow, sw), axis=3)
    if mode != "bilinear":
        raise ValueError(f"upsample_reference: unknown mode {mode!r}")
    ac = bool(align_corners)
    r0, r1, a0, a1 = bilinear_source_weights(h, oh, ac, sh)
    c0, c1, b0, b1 = bilinear_source_weights(w, ow, ac, sw)
    dt = x.dtype
    a0, a1 = a0.astype(dt).reshape(-1, 1), a1.astype(dt).reshape(-1, 1)
    b0, b1 = b0.astype(dt), b1.astype(dt)
    # interpolate along H ([N, C, OH, W]), then along W; gathers with take() (faster than fancy indexing)
    rows = x.take(r0, axis=2)
    rows *= a0
    tmp = x.take(r1, axis=2)
    tmp *= a1
    rows += tmp
    out = rows.take(c0, axis=3)
    out *= b0
    tmp = rows.take(c1, axis=3)
    tmp *= b1
    out += tmp
    return out


def _upsample_ref(xs, params, attrs):
    x = xs[0]
    oh, ow, scales = _upsample_geometry(x.shape, attrs)
    return upsample_reference(x, (oh, ow), attrs["mode"], attrs["align_corners"], scales)


def _upsample_flops(ins, out, attrs):
    # nearest only copies; bilinear is 4 multiplies and 3 adds per output element (2 lerps along H feeding
    # 1 along W, with precomputed weights): 7 FLOPs
    return 0 if attrs["mode"] == "nearest" else 7 * numel(out)


UPSAMPLE_ATTRS = (
    Attr("scale_factor", "any", None, doc="a number or a pair of numbers (sh, sw): output size floor(H * sh)"),
    Attr("size", "pair", None, positive=True, doc="the output size: n or (h, w)"),
    Attr("mode", "str", "nearest", choices=UPSAMPLE_MODES, doc='"nearest" or "bilinear"'),
    Attr("align_corners", "bool", None, doc='bilinear only (default false), as in F.interpolate'),
)

register(OpDef("upsample", OpKind.INJECTIVE, _upsample_infer, _upsample_ref, _upsample_flops, UPSAMPLE_ATTRS,
               doc="F.interpolate over NCHW: nearest or bilinear, by scale_factor or to a size", axis=1))
