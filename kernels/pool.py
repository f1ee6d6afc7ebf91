"""Pooling over channels-last activations: max, average, global average and global max.

Windowed pools are direct kernels over (output pixels x channels) tiles that walk the
KH x KW taps, like the depthwise convolution: each tap is one coalesced BLOCK_M x BLOCK_C
load (channels contiguous in NHWC), overlapping taps hit L1/L2, and the output is written
once. Semantics are torch's, including ``ceil_mode`` (a last window that starts in the
padding is dropped) and average pooling's divisor: with ``count_include_pad`` the window
clipped to the padded input, otherwise only the real pixels (or ``divisor_override``).
Padding may differ per side, (top, left, bottom, right), and reach the kernel size minus 1,
as ONNX allows (torch: half the kernel); a max window wholly in the padding (possible with
dilation) gives the dtype's lowest finite number, as onnxruntime does.

Global average (and max) pooling is a reduction over H*W per (sample, channel): a program
owns BLOCK_C channels of one sample and streams the pixels in BLOCK_M chunks into an fp32
tile, reducing it once at the end. It returns [N, C] (view it as [N, 1, 1, C] for NHWC).
The max keeps a NaN (torch's rule): both the running maximum and the final reduction
propagate it.

Pools are bandwidth bound: fixed tiles, no autotuning.
"""

import torch
import triton
import triton.language as tl

from ._host import (KernelError, Launch, check_io_dtype, check_writable_rows, interpreting, meta_tensor,
                    needs_int64, rows_of, run, spec_of)
from .conv_common import pair
from .tiling import window_origin

# Tiles: BLOCK_C = min(next_pow2(C), MAX_BLOCK_C), BLOCK_M = TILE_ELEMS // BLOCK_C.
TILE_ELEMS, MAX_BLOCK_C, NUM_WARPS = 2048, 64, 4
INTERPRET_TILE_ELEMS, INTERPRET_MAX_BLOCK_C = 128, 16


@triton.jit
def pool2d_kernel(
    x_ptr, sxn, sxh, sxw,           # input [N, H, W, C], channel stride 1
    out_ptr, out_stride,            # output rows [N*OH*OW, C]
    H, W, OH, OW, M, C,             # sizes; M = N*OH*OW
    KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,   # pad_h, pad_w: top and left padding
    pad_bottom, pad_right,          # the padding after the input (the divisor's window clipping)
    divisor_override,               # > 0: divide averages by this instead
    lowest,                         # max of a window wholly in the padding: the dtype's lowest finite
    IS_MAX: tl.constexpr,           # max pool (else average)
    COUNT_INCLUDE_PAD: tl.constexpr,
    USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_m = offs_m < M
    mask_c = cols < C
    n, h0, w0 = window_origin(offs_m, OH, OW, stride_h, stride_w, pad_h, pad_w, USE_INT64)
    x_rows = n * sxn                             # [BLOCK_M] offsets of pixel (n, 0, 0)

    if IS_MAX:
        acc = tl.full((BLOCK_M, BLOCK_C), float("-inf"), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    hit = offs_m < 0                             # [BLOCK_M]: a tap of the window read the input
    for kh in range(0, KH):
        ih = h0 + kh * dil_h
        row_ok = mask_m & (ih >= 0) & (ih < H)
        for kw in range(0, KW):
            iw = w0 + kw * dil_w
            ok = row_ok & (iw >= 0) & (iw < W)
            hit = hit | ok
            # one BLOCK_M x BLOCK_C tap, channel-contiguous.
            ptrs = x_ptr + ((x_rows + ih * sxh + iw * sxw)[:, None] + cols[None, :])
            if IS_MAX:
                v = tl.load(ptrs, mask=ok[:, None] & mask_c[None, :], other=float("-inf")).to(tl.float32)
                acc = tl.maximum(acc, v, propagate_nan=tl.PropagateNan.ALL)
            else:
                acc += tl.load(ptrs, mask=ok[:, None] & mask_c[None, :], other=0.0).to(tl.float32)

    if IS_MAX:
        acc = tl.where(hit[:, None], acc, lowest)
    else:
        # torch's divisor: the window clipped to the padded input, or to the real input.
        h_end = tl.minimum(h0 + KH, H + pad_bottom)
        w_end = tl.minimum(w0 + KW, W + pad_right)
        if COUNT_INCLUDE_PAD:
            count = (h_end - h0) * (w_end - w0)
        else:
            count = (tl.minimum(h_end, H) - tl.maximum(h0, 0)) * (tl.minimum(w_end, W) - tl.maximum(w0, 0))
        count = tl.where(divisor_override > 0, divisor_override, count)
        acc = acc / tl.maximum(count, 1).to(tl.float32)[:, None]

    rows = offs_m
    if USE_INT64:
        rows = rows.to(tl.int64)
    tl.store(out_ptr + (rows[:, None] * out_stride + cols[None, :]), acc.to(out_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_c[None, :])


@triton.jit
def _max_nan(a, b):
    # the combine of the final reduction: a NaN wins, as in torch
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _global_reduce(x_ptr, sxn, sxp, HW, C, USE_INT64: tl.constexpr, IS_MAX: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's BLOCK_C channels of sample n over all HW pixels: their sum, or their max (a NaN stays
    NaN); streams HW x BLOCK_C inputs once, BLOCK_M pixels at a time. Returns (n, columns, their mask, result)."""
    n = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = cols < C
    offs_p = tl.arange(0, BLOCK_M)
    base = x_ptr + n * sxn
    if USE_INT64:
        base = x_ptr + n.to(tl.int64) * sxn
    if IS_MAX:
        acc = tl.full((BLOCK_M, BLOCK_C), float("-inf"), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for p0 in range(0, HW, BLOCK_M):
        p = p0 + offs_p
        mask = (p < HW)[:, None] & mask_c[None, :]
        if USE_INT64:
            p = p.to(tl.int64)
        if IS_MAX:
            v = tl.load(base + p[:, None] * sxp + cols[None, :], mask=mask, other=float("-inf")).to(tl.float32)
            acc = tl.maximum(acc, v, propagate_nan=tl.PropagateNan.ALL)
        else:
            acc += tl.load(base + p[:, None] * sxp + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if IS_MAX:
        result = tl.reduce(acc, 0, _max_nan)
    else:
        result = tl.sum(acc, axis=0)
    return n, cols, mask_c, result


@triton.jit
def global_avgpool_kernel(
    x_ptr, sxn, sxp,                # input [N, HW, C]: sample stride, pixel stride, channel stride 1
    out_ptr, out_stride,            # output [N, C] rows
    HW, C, inv_hw,                  # pixels per sample, channels, 1 / HW
    USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr,          # pixels per chunk
    BLOCK_C: tl.constexpr,          # channels per program
):
    n, cols, mask_c, total = _global_reduce(x_ptr, sxn, sxp, HW, C, USE_INT64, False, BLOCK_M, BLOCK_C)
    tl.store(out_ptr + n * out_stride + cols, (total * inv_hw).to(out_ptr.dtype.element_ty), mask=mask_c)


@triton.jit
def global_maxpool_kernel(
    x_ptr, sxn, sxp,                # input [N, HW, C]: sample stride, pixel stride, channel stride 1
    out_ptr, out_stride,            # output [N, C] rows
    HW, C,                          # pixels per sample, channels
    USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr,          # pixels per chunk
    BLOCK_C: tl.constexpr,          # channels per program
):
    n, cols, mask_c, top = _global_reduce(x_ptr, sxn, sxp, HW, C, USE_INT64, True, BLOCK_M, BLOCK_C)
    tl.store(out_ptr + n * out_stride + cols, top.to(out_ptr.dtype.element_ty), mask=mask_c)


def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode) -> int:
    """torch's (and ONNX's) pooling output size along an axis padded by ``padding`` = (begin, end), including
    the ceil_mode rule: a last window that would start in the end padding is dropped."""
    begin, end = padding
    span = size + begin + end - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + begin:
        out -= 1
    return out


def pool_pads(padding) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of ``padding``: p, (ph, pw) or (top, left, bottom, right)."""
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        return tuple(int(p) for p in padding)
    ph, pw = pair(padding, "padding")
    return (ph, pw, ph, pw)


def tile_config(C: int, interpret: bool) -> triton.Config:
    tile, max_c = (INTERPRET_TILE_ELEMS, INTERPRET_MAX_BLOCK_C) if interpret else (TILE_ELEMS, MAX_BLOCK_C)
    block_c = min(triton.next_power_of_2(max(C, 1)), max_c)
    return triton.Config({"BLOCK_M": max(1, tile // block_c), "BLOCK_C": block_c}, num_warps=NUM_WARPS,
                         num_stages=1)


def _plan_pool(x, kernel, stride, padding, dilation, ceil_mode, is_max, count_include_pad, divisor_override, out,
               interpret):
    check_io_dtype(x, "x")
    if x.dim() != 4:
        raise KernelError(f"pooling expects NHWC [N, H, W, C], got {tuple(x.shape)}")
    N, H, W, C = x.shape
    if C > 1 and x.stride(3) != 1:
        raise KernelError("x must be channels-last with channel stride 1")
    stride = kernel if stride is None else stride
    (KH, KW), (sh, sw) = pair(kernel, "kernel"), pair(stride, "stride")
    (pt, pl, pb, pr), (dh, dw) = pool_pads(padding), pair(dilation, "dilation")
    if min(KH, KW, sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0:
        raise KernelError("kernel, stride and dilation must be >= 1 and padding >= 0")
    if max(pt, pb) >= KH or max(pl, pr) >= KW:
        raise KernelError("padding must be smaller than the kernel size (ONNX's rule)")
    OH = pool_output_size(H, KH, sh, (pt, pb), dh, ceil_mode)
    OW = pool_output_size(W, KW, sw, (pl, pr), dw, ceil_mode)
    if OH < 1 or OW < 1:
        raise KernelError(f"pooling output would be empty ({OH}x{OW})")
    if out is None:
        out = torch.empty((N, OH, OW, C), dtype=x.dtype, device=x.device)
    check_io_dtype(out, "out")
    if tuple(out.shape) != (N, OH, OW, C):
        raise KernelError(f"out shape {tuple(out.shape)} != {(N, OH, OW, C)}")
    _, _, out_stride = check_writable_rows(out, "out")
    M = N * OH * OW
    args = dict(x_ptr=x, sxn=x.stride(0), sxh=x.stride(1), sxw=x.stride(2), out_ptr=out, out_stride=out_stride,
                H=H, W=W, OH=OH, OW=OW, M=M, C=C, KH=KH, KW=KW, stride_h=sh, stride_w=sw, pad_h=pt, pad_w=pl,
                dil_h=dh, dil_w=dw, pad_bottom=pb, pad_right=pr, divisor_override=int(divisor_override or 0),
                lowest=float(torch.finfo(out.dtype).min))
    constexprs = dict(IS_MAX=is_max, COUNT_INCLUDE_PAD=count_include_pad, USE_INT64=needs_int64(x, out))
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(C, meta["BLOCK_C"]))
    return out, Launch(pool2d_kernel, None, args, constexprs, grid, tile_config(C, interpret))


def maxpool2d(x, kernel, stride=None, padding=(0, 0), dilation=(1, 1), ceil_mode=False, *, out=None):
    """torch's max_pool2d on NHWC x [N, H, W, C] -> [N, OH, OW, C]; stride None = kernel; padding p,
    (ph, pw) or (top, left, bottom, right).

    NaNs propagate as in torch; ``out`` may be a channel slice of a bigger buffer.
    """
    out, launch = _plan_pool(x, kernel, stride, padding, dilation, ceil_mode, True, True, None, out,
                             interpreting())
    run(launch)
    return out


def avgpool2d(x, kernel, stride=None, padding=(0, 0), ceil_mode=False, count_include_pad=True,
              divisor_override=None, *, out=None):
    """torch's avg_pool2d on NHWC x [N, H, W, C] -> [N, OH, OW, C] (fp32 sums)."""
    out, launch = _plan_pool(x, kernel, stride, padding, (1, 1), ceil_mode, False, count_include_pad,
                             divisor_override, out, interpreting())
    run(launch)
    return out


def _plan_global_pool(x, out, interpret, is_max=False):
    name = "global_maxpool" if is_max else "global_avgpool"
    check_io_dtype(x, "x")
    if x.dim() != 4:
        raise KernelError(f"{name} expects NHWC [N, H, W, C], got {tuple(x.shape)}")
    N, H, W, C = x.shape
    _, _, sxp = rows_of(x, "x")
    if out is None:
        out = torch.empty((N, C), dtype=x.dtype, device=x.device)
    check_io_dtype(out, "out")
    if tuple(out.shape) not in ((N, C), (N, 1, 1, C)):
        raise KernelError(f"out shape {tuple(out.shape)} is neither {(N, C)} nor {(N, 1, 1, C)}")
    _, _, out_stride = check_writable_rows(out, "out")
    HW = H * W
    cfg = tile_config(C, interpret)
    args = dict(x_ptr=x, sxn=HW * sxp, sxp=sxp, out_ptr=out, out_stride=out_stride, HW=HW, C=C)
    if not is_max:
        args["inv_hw"] = 1.0 / HW
    grid = lambda meta: (N, triton.cdiv(C, meta["BLOCK_C"]))
    kernel = global_maxpool_kernel if is_max else global_avgpool_kernel
    return out, Launch(kernel, None, args, dict(USE_INT64=needs_int64(x)), grid, cfg)


def global_avgpool(x, *, out=None):
    """Mean over H and W of NHWC x [N, H, W, C]; returns [N, C] (or writes ``out``, [N, C] or [N, 1, 1, C])."""
    out, launch = _plan_global_pool(x, out, interpreting())
    run(launch)
    return out


def global_maxpool(x, *, out=None):
    """Max over H and W of NHWC x [N, H, W, C] (NaN propagates, as torch's adaptive_max_pool2d(x, 1));
    returns [N, C] (or writes ``out``, [N, C] or [N, 1, 1, C])."""
    out, launch = _plan_global_pool(x, out, interpreting(), is_max=True)
    run(launch)
    return out


def specialization(x_shape, dtype, kind, kernel=(3, 3), stride=None, padding=(0, 0), dilation=(1, 1),
                   ceil_mode=False, count_include_pad=True) -> dict:
    """AOT specialization for ``kind`` in {"max", "avg", "global_avg", "global_max"} (contiguous NHWC x)."""
    x = meta_tensor(x_shape, dtype)
    if kind in ("global_avg", "global_max"):
        _, launch = _plan_global_pool(x, None, False, is_max=kind == "global_max")
    else:
        _, launch = _plan_pool(x, kernel, stride, padding, dilation, ceil_mode, kind == "max", count_include_pad,
                               None, None, False)
    return spec_of(launch)
