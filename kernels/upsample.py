"""Nearest and bilinear resizing ("upsampling") of channels-last activations.

Semantics are torch.nn.functional.interpolate's for 4-D inputs, modes "nearest" (torch's
legacy nearest, not "nearest-exact") and "bilinear" (align_corners True or False, no
antialias), down to the float32 rounding of the source index. Each output pixel (oh, ow)
reads from a source position computed with one fp32 *scale* per axis, chosen as torch does:

* nearest:  ih = min(floor(oh * scale), H - 1), except that torch copies when OH == H and
  takes oh // 2 when OH == 2*H (reproduced here with scale 1 and 1/2, which give exactly that);
* bilinear: src = scale * oh with align_corners, else max(scale * (oh + 0.5) - 0.5, 0);
  ih0 = min(floor(src), H - 1), ih1 = ih0 + (ih0 < H - 1), weight of ih1 = clamp(src - ih0, 0, 1);
  torch copies when OH == H (scale 1 gives exactly that).

The scale: with align_corners, (H - 1) / (OH - 1) (0 when OH == 1); otherwise 1 / scale_factor
when the user gave a scale factor (interpolate's default ``recompute_scale_factor=None``), else
H / OH. Both are rounded to fp32 on the host exactly as torch rounds them, so a kernel and torch
pick the same source pixels. This is why the wrappers take the output size *and*, optionally,
the scale factors the user wrote, like aten's ``upsample_*2d(input, output_size, scales_h, scales_w)``.

The kernel is a direct one like pooling: a program owns BLOCK_M output pixels x BLOCK_C
channels, computes each pixel's source positions once, and does one (nearest) or four
(bilinear) coalesced BLOCK_M x BLOCK_C loads, channels contiguous in NHWC. Interpolation is
fp32; the output is written once, possibly into a channel slice of a bigger buffer (a decoder
upsamples straight into its concat buffer). Bandwidth bound: fixed tiles, no autotuning.
"""

import torch
import triton
import triton.language as tl

from ._host import KernelError, Launch, interpreting, meta_tensor, needs_int64, run, spec_of
from .conv_common import check_nhwc, conv_out, pair

MODES = ("nearest", "bilinear")

# Tiles: BLOCK_C = min(next_pow2(C), MAX_BLOCK_C), BLOCK_M = TILE_ELEMS // BLOCK_C.
TILE_ELEMS, MAX_BLOCK_C, NUM_WARPS = 2048, 64, 4
INTERPRET_TILE_ELEMS, INTERPRET_MAX_BLOCK_C = 64, 8


@triton.jit
def _source_index(o, size, scale, MODE: tl.constexpr, ALIGN_CORNERS: tl.constexpr):
    """Output indices ``o`` -> (i0, i1, weight of i1) along one axis of an input of ``size``."""
    of = o.to(tl.float32)
    if MODE == "nearest":
        src = of * scale
    elif ALIGN_CORNERS:
        src = scale * of
    else:
        src = tl.maximum(scale * (of + 0.5) - 0.5, 0.0)
    i0 = tl.minimum(tl.floor(src).to(tl.int32), size - 1)
    lam = tl.minimum(tl.maximum(src - i0.to(tl.float32), 0.0), 1.0)   # bilinear only
    i1 = tl.where(i0 < size - 1, i0 + 1, i0)
    return i0, i1, lam


@triton.jit
def upsample2d_kernel(
    x_ptr, sxn, sxh, sxw,           # input [N, H, W, C], channel stride 1
    out_ptr, out_stride,            # output rows [N*OH*OW, C], channel stride 1
    H, W, OH, OW, M, C,             # sizes; M = N*OH*OW
    scale_h, scale_w,               # fp32 source-index scales (see the module docstring)
    MODE: tl.constexpr,             # "nearest" or "bilinear"
    ALIGN_CORNERS: tl.constexpr,    # bilinear only
    USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr,          # output pixels per program
    BLOCK_C: tl.constexpr,          # channels per program
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_m = offs_m < M
    mask_c = cols < C
    mask = mask_m[:, None] & mask_c[None, :]

    # -- output pixel (n, oh, ow) of every row, and where it reads from (once per pixel).
    pix = OH * OW
    n = offs_m // pix
    rem = offs_m - n * pix
    oh = rem // OW
    ow = rem - oh * OW
    h0, h1, lh = _source_index(oh, H, scale_h, MODE, ALIGN_CORNERS)
    w0, w1, lw = _source_index(ow, W, scale_w, MODE, ALIGN_CORNERS)
    rows = offs_m
    if USE_INT64:
        n = n.to(tl.int64)
        h0 = h0.to(tl.int64)
        h1 = h1.to(tl.int64)
        w0 = w0.to(tl.int64)
        w1 = w1.to(tl.int64)
        rows = rows.to(tl.int64)
    x_n = x_ptr + n * sxn

    if MODE == "nearest":
        # one BLOCK_M x BLOCK_C gather, channel-contiguous: a copy, no arithmetic.
        y = tl.load(x_n[:, None] + (h0 * sxh + w0 * sxw)[:, None] + cols[None, :], mask=mask, other=0.0)
    else:
        # four channel-contiguous taps, blended in fp32 (rows first, as torch does).
        x_h0 = x_n + h0 * sxh
        x_h1 = x_n + h1 * sxh
        v00 = tl.load(x_h0[:, None] + (w0 * sxw)[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        v01 = tl.load(x_h0[:, None] + (w1 * sxw)[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        v10 = tl.load(x_h1[:, None] + (w0 * sxw)[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        v11 = tl.load(x_h1[:, None] + (w1 * sxw)[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        lw_ = lw[:, None]
        lh_ = lh[:, None]
        top = v00 * (1.0 - lw_) + v01 * lw_
        bottom = v10 * (1.0 - lw_) + v11 * lw_
        y = top * (1.0 - lh_) + bottom * lh_
    tl.store(out_ptr + (rows[:, None] * out_stride + cols[None, :]), y.to(out_ptr.dtype.element_ty), mask=mask)


def output_size(in_size, scale_factor) -> tuple:
    """torch's interpolate output size (OH, OW) for (H, W) ``in_size`` and ``scale_factor`` (float or pair):
    floor(size * scale) computed in double, as torch does."""
    H, W = in_size
    sh, sw = _scale_pair(scale_factor)
    return int(H * sh), int(W * sw)


def _scale_pair(scale_factor) -> tuple:
    if isinstance(scale_factor, (tuple, list)):
        if len(scale_factor) != 2:
            raise KernelError(f"scale_factor must be a float or an (h, w) pair, got {scale_factor!r}")
        scales = tuple(scale_factor)
    else:
        scales = (scale_factor, scale_factor)
    try:
        scales = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise KernelError(f"scale_factor must be a float or an (h, w) pair, got {scale_factor!r}") from None
    if not all(s > 0 for s in scales):
        raise KernelError(f"scale_factor must be positive, got {scale_factor!r}")
    return scales


def _f32(value: float) -> float:
    """``value`` rounded to fp32 (a Python float the kernel receives exactly)."""
    return torch.tensor(value, dtype=torch.float64).to(torch.float32).item()


def source_scale(in_size: int, out_size: int, mode: str, align_corners: bool, scale_factor=None) -> float:
    """The fp32 scale torch uses to map output indices to input indices along one axis."""
    if out_size == in_size:
        return 1.0                    # torch copies (nearest and bilinear)
    if mode == "nearest" and out_size == 2 * in_size:
        return 0.5                    # torch's oh >> 1
    if mode == "bilinear" and align_corners:
        return (torch.tensor(in_size - 1, dtype=torch.float32) / (out_size - 1)).item() if out_size > 1 else 0.0
    if scale_factor is not None:
        return _f32(1.0 / scale_factor)
    return (torch.tensor(in_size, dtype=torch.float32) / out_size).item()


def tile_config(C: int, interpret: bool) -> triton.Config:
    tile, max_c = (INTERPRET_TILE_ELEMS, INTERPRET_MAX_BLOCK_C) if interpret else (TILE_ELEMS, MAX_BLOCK_C)
    block_c = min(triton.next_power_of_2(max(C, 1)), max_c)
    return triton.Config({"BLOCK_M": max(1, tile // block_c), "BLOCK_C": block_c}, num_warps=NUM_WARPS,
                         num_stages=1)


def _plan_upsample(x, size, scale_factor, mode, align_corners, out, interpret):
    if mode not in MODES:
        raise KernelError(f"upsample mode {mode!r} is not one of {MODES}")
    N, H, W, C = check_nhwc(x)
    scales = _scale_pair(scale_factor) if scale_factor is not None else (None, None)
    if size is None:
        if scale_factor is None:
            raise KernelError("upsample needs the output size or a scale factor")
        size = output_size((H, W), scales)
    OH, OW = pair(size, "size")
    if OH < 1 or OW < 1:
        raise KernelError(f"upsample output would be empty ({OH}x{OW})")
    if mode == "nearest" and align_corners:
        raise KernelError("align_corners only applies to bilinear upsampling (torch's rule)")
    out, out_stride = conv_out(x, out, (N, OH, OW, C))
    M = N * OH * OW
    args = dict(x_ptr=x, sxn=x.stride(0), sxh=x.stride(1), sxw=x.stride(2), out_ptr=out, out_stride=out_stride,
                H=H, W=W, OH=OH, OW=OW, M=M, C=C,
                scale_h=source_scale(H, OH, mode, align_corners, scales[0]),
                scale_w=source_scale(W, OW, mode, align_corners, scales[1]))
    constexprs = dict(MODE=mode, ALIGN_CORNERS=bool(align_corners), USE_INT64=needs_int64(x, out))
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(C, meta["BLOCK_C"]))
    return out, Launch(upsample2d_kernel, None, args, constexprs, grid, tile_config(C, interpret))


def upsample_nearest2d(x, size=None, scale_factor=None, *, out=None):
    """torch's interpolate(mode="nearest") on NHWC x [N, H, W, C] -> [N, OH, OW, C].

    size         : (OH, OW) or an int; None = from ``scale_factor`` (torch's floor(H * scale))
    scale_factor : the scale factor(s) the user gave (float or (h, w)), or None; with it the
                   source index uses 1/scale_factor as torch does. Pass None where torch would
                   not use it: interpolate(size=...) or recompute_scale_factor=True
    out          : optional output with channel stride 1 and one row stride (e.g. a channel
                   slice of a concat buffer); nothing else of it is written
    """
    out, launch = _plan_upsample(x, size, scale_factor, "nearest", False, out, interpreting())
    run(launch)
    return out


def upsample_bilinear2d(x, size=None, align_corners=False, scale_factor=None, *, out=None):
    """torch's interpolate(mode="bilinear", align_corners=...) on NHWC x -> [N, OH, OW, C] (fp32 math).

    Arguments as :func:`upsample_nearest2d`; with ``align_corners`` the scale factor is not used
    for the source index (torch ignores it too).
    """
    out, launch = _plan_upsample(x, size, scale_factor, "bilinear", align_corners, out, interpreting())
    run(launch)
    return out


def specialization(x_shape, dtype, size, mode="nearest", *, align_corners=False, scale_factor=None) -> dict:
    """AOT specialization of :func:`upsample_nearest2d` / :func:`upsample_bilinear2d` (contiguous NHWC x)."""
    _, launch = _plan_upsample(meta_tensor(x_shape, dtype), size, scale_factor, mode, align_corners, None, False)
    return spec_of(launch)
