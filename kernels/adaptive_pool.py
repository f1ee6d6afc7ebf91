"""Adaptive average pooling of channels-last activations (torch's adaptive_avg_pool2d).

Output pixel (oh, ow) is the mean of its *bin*: input rows [floor(oh * H / OH), ceil((oh + 1) * H / OH))
and columns [floor(ow * W / OW), ceil((ow + 1) * W / OW)), torch's bins. When OH divides H and OW divides W
the bins are the windows of an average pool with kernel = stride = (H / OH, W / OW), and the pool kernel
(``pool.avgpool2d``) does the work; this kernel is for the rest, where bins differ in size by one and
neighbouring bins may share a row or column (or, when the output is bigger than the input, repeat it).

A program owns one output pixel and BLOCK_C channels. It computes its bin once, then walks the bin's rows;
each row is read in chunks of BLOCK_W pixels as one channel-contiguous BLOCK_W x BLOCK_C load (NHWC), summed
in fp32. The sum is reduced over the chunk and divided by the bin's size once, and the mean is written
once, possibly into a channel slice of a bigger buffer. BLOCK_W covers the widest bin when it can, so a
row is usually one load. Bandwidth bound: fixed tiles, no autotuning.
"""

import torch
import triton
import triton.language as tl

from ._host import (KernelError, Launch, check_io_dtype, check_writable_rows, interpreting, meta_tensor,
                    needs_int64, run, spec_of)

# Tiles: BLOCK_C = min(next_pow2(C), MAX_BLOCK_C), BLOCK_W = min(next_pow2(widest bin), TILE_ELEMS // BLOCK_C).
TILE_ELEMS, MAX_BLOCK_C, NUM_WARPS = 1024, 64, 4
INTERPRET_TILE_ELEMS, INTERPRET_MAX_BLOCK_C = 64, 16


@triton.jit
def adaptive_avgpool2d_kernel(
    x_ptr, sxn, sxh, sxw,           # input [N, H, W, C], channel stride 1
    out_ptr, out_stride,            # output rows [N*OH*OW, C], channel stride 1
    H, W, OH, OW, C,                # sizes
    USE_INT64: tl.constexpr,
    BLOCK_W: tl.constexpr,          # bin columns per load
    BLOCK_C: tl.constexpr,          # channels per program
):
    pix = tl.program_id(0)                       # output pixel (n, oh, ow), row-major
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = cols < C
    ow = pix % OW
    oh = (pix // OW) % OH
    n = pix // (OW * OH)
    # torch's bin: [floor(i * size / out), ceil((i + 1) * size / out)) along each axis.
    h0 = (oh * H) // OH
    h1 = ((oh + 1) * H + OH - 1) // OH
    w0 = (ow * W) // OW
    w1 = ((ow + 1) * W + OW - 1) // OW
    row = pix
    if USE_INT64:
        n = n.to(tl.int64)
        row = row.to(tl.int64)
    x_n = x_ptr + n * sxn
    offs_w = tl.arange(0, BLOCK_W)

    acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    for ih in range(h0, h1):
        r = ih
        if USE_INT64:
            r = ih.to(tl.int64)
        x_row = x_n + r * sxh
        for c0 in range(w0, w1, BLOCK_W):
            iw = c0 + offs_w
            if USE_INT64:
                iw = iw.to(tl.int64)
            # one BLOCK_W x BLOCK_C piece of the bin's row, channel-contiguous.
            v = tl.load(x_row + (iw * sxw)[:, None] + cols[None, :], mask=(iw < w1)[:, None] & mask_c[None, :],
                        other=0.0)
            acc += v.to(tl.float32)
    count = ((h1 - h0) * (w1 - w0)).to(tl.float32)
    mean = tl.sum(acc, axis=0) / count
    tl.store(out_ptr + row * out_stride + cols, mean.to(out_ptr.dtype.element_ty), mask=mask_c)


def bins(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive bins along one axis: [(start, end)] of each of the ``out`` outputs."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def widest_bin(size: int, out: int) -> int:
    return max(end - start for start, end in bins(size, out))


def tile_config(C: int, bin_w: int, interpret: bool) -> triton.Config:
    tile, max_c = (INTERPRET_TILE_ELEMS, INTERPRET_MAX_BLOCK_C) if interpret else (TILE_ELEMS, MAX_BLOCK_C)
    block_c = min(triton.next_power_of_2(max(C, 1)), max_c)
    block_w = max(1, min(triton.next_power_of_2(bin_w), tile // block_c))
    return triton.Config({"BLOCK_W": block_w, "BLOCK_C": block_c}, num_warps=NUM_WARPS, num_stages=1)


def _pair(v, name: str) -> tuple:
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in pair):
        raise KernelError(f"{name} must be an int or a pair of ints, got {v!r}")
    return pair


def _plan_adaptive(x, output_size, out, interpret):
    check_io_dtype(x, "x")
    if x.dim() != 4:
        raise KernelError(f"adaptive_avgpool2d expects NHWC [N, H, W, C], got {tuple(x.shape)}")
    N, H, W, C = x.shape
    if C > 1 and x.stride(3) != 1:
        raise KernelError("x must be channels-last with channel stride 1")
    OH, OW = _pair(output_size, "output_size")
    if OH < 1 or OW < 1:
        raise KernelError(f"output_size must be positive, got {(OH, OW)}")
    if H < 1 or W < 1:
        raise KernelError(f"adaptive_avgpool2d of an empty input ({H}x{W})")
    if out is None:
        out = torch.empty((N, OH, OW, C), dtype=x.dtype, device=x.device)
    check_io_dtype(out, "out")
    if tuple(out.shape) != (N, OH, OW, C):
        raise KernelError(f"out shape {tuple(out.shape)} != {(N, OH, OW, C)}")
    _, _, out_stride = check_writable_rows(out, "out")
    args = dict(x_ptr=x, sxn=x.stride(0), sxh=x.stride(1), sxw=x.stride(2), out_ptr=out, out_stride=out_stride,
                H=H, W=W, OH=OH, OW=OW, C=C)
    grid = lambda meta: (N * OH * OW, triton.cdiv(C, meta["BLOCK_C"]))
    cfg = tile_config(C, widest_bin(W, OW), interpret)
    return out, Launch(adaptive_avgpool2d_kernel, None, args, dict(USE_INT64=needs_int64(x, out)), grid, cfg)


def adaptive_avgpool2d(x, output_size, *, out=None):
    """torch's adaptive_avg_pool2d on NHWC x [N, H, W, C] -> [N, OH, OW, C] (fp32 sums).

    output_size : OH or (OH, OW), each >= 1 (bigger than the input is allowed, as in torch)
    out         : optional output with channel stride 1 and one row stride (e.g. a channel
                  slice of a concat buffer); nothing else of it is written
    """
    out, launch = _plan_adaptive(x, output_size, out, interpreting())
    if out.numel():
        run(launch)
    return out


def specialization(x_shape, dtype, output_size) -> dict:
    """AOT specialization of :func:`adaptive_avgpool2d` (contiguous NHWC x)."""
    _, launch = _plan_adaptive(meta_tensor(x_shape, dtype), output_size, None, False)
    return spec_of(launch)
