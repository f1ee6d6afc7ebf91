"""Fused elementwise chains over channels-last tensors.

One kernel computes, for every element of an [M, C] view (M = N*H*W pixels for NHWC),

    y = x (* other[m, c]) (* scale + shift) (+ bias[c]) -> act1 -> (+ residual[m, c]) -> act2

where scale/shift are either per channel ([C]: batchnorm at inference, folded to an affine)
or per (sample, channel) ([N, C]: groupnorm's normalisation, squeeze-excitation gates).
The chain after the affine is the shared :mod:`epilogue`. Everything is a single read of
x (and of each optional operand) and a single write: the whole chain costs the memory
traffic of one copy, which is the point of fusing it.

Pointwise kernels are bandwidth bound, so there is no autotuning: a 2-D tile of about
``TILE_ELEMS`` elements, at most ``MAX_BLOCK_C`` channels wide so that each row segment is
one contiguous, coalesced run.
"""

import triton
import triton.language as tl

from ._host import (KernelError, Launch, check_io_dtype, interpreting, meta_tensor, needs_int64, rows_in_out,
                    rows_of, run, spec_of)
from .epilogue import Epilogue, apply_epilogue

# Tile heuristics (GPU) and the small tile used under the interpreter, where fewer and
# smaller programs are what matters and small blocks exercise the masking paths.
TILE_ELEMS, MAX_BLOCK_C, NUM_WARPS = 2048, 128, 4
INTERPRET_TILE_ELEMS, INTERPRET_MAX_BLOCK_C = 256, 16

# AFFINE modes
AFFINE_NONE, AFFINE_CHANNEL, AFFINE_SAMPLE = 0, 1, 2


@triton.jit
def pointwise_kernel(
    x_ptr, x_stride,                    # input [M, C], channel stride 1, row stride x_stride
    other_ptr, other_stride,            # elementwise multiplier [M, C] (read iff MUL_OTHER)
    scale_ptr, shift_ptr,               # [C] or [N, C] affine (read iff HAS_SCALE / HAS_SHIFT)
    rows_per_sample,                    # rows of one sample (AFFINE == 2): sample = row // rows_per_sample
    out_ptr, out_stride,                # output [M, C], row stride out_stride
    M, C,                               # rows (pixels) and channels
    bias_ptr, slope1_ptr, slope1_stride, res_ptr, res_stride,  # epilogue (see epilogue.py)
    slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
    MUL_OTHER: tl.constexpr,            # multiply by other[m, c] first
    AFFINE: tl.constexpr,               # 0 none, 1 per channel, 2 per (sample, channel)
    HAS_SCALE: tl.constexpr,
    HAS_SHIFT: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACT1: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    USE_INT64: tl.constexpr,            # 64-bit offsets
    BLOCK_M: tl.constexpr,              # rows per program
    BLOCK_C: tl.constexpr,              # channels per program
):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_r = rows < M
    mask_c = cols < C
    mask = mask_r[:, None] & mask_c[None, :]
    r = rows
    if USE_INT64:
        r = r.to(tl.int64)

    # read x once: BLOCK_M * BLOCK_C elements, contiguous runs of BLOCK_C along channels.
    x = tl.load(x_ptr + (r[:, None] * x_stride + cols[None, :]), mask=mask, other=0.0).to(tl.float32)
    if MUL_OTHER:
        o = tl.load(other_ptr + (r[:, None] * other_stride + cols[None, :]), mask=mask, other=0.0)
        x = x * o.to(tl.float32)
    if AFFINE == 1:
        # per channel: BLOCK_C values per program, broadcast over rows (L2-resident).
        if HAS_SCALE:
            x = x * tl.load(scale_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        if HAS_SHIFT:
            x = x + tl.load(shift_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    elif AFFINE == 2:
        # per (sample, channel): a gather from a tiny [N, C] table.
        a_off = (r // rows_per_sample)[:, None] * C + cols[None, :]
        if HAS_SCALE:
            x = x * tl.load(scale_ptr + a_off, mask=mask, other=0.0).to(tl.float32)
        if HAS_SHIFT:
            x = x + tl.load(shift_ptr + a_off, mask=mask, other=0.0).to(tl.float32)

    y = apply_epilogue(x, r, cols, mask_r, mask_c, bias_ptr, slope1_ptr, slope1_stride, res_ptr, res_stride,
                       slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
                       HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)
    # write once: BLOCK_M * BLOCK_C elements.
    tl.store(out_ptr + (r[:, None] * out_stride + cols[None, :]), y.to(out_ptr.dtype.element_ty), mask=mask)


def tile_config(C: int, interpret: bool) -> triton.Config:
    """The (BLOCK_M, BLOCK_C) tile for C channels: full channel runs, ~TILE_ELEMS elements."""
    tile, max_c = (INTERPRET_TILE_ELEMS, INTERPRET_MAX_BLOCK_C) if interpret else (TILE_ELEMS, MAX_BLOCK_C)
    block_c = min(triton.next_power_of_2(max(C, 1)), max_c)
    return triton.Config({"BLOCK_M": max(tile // block_c, 1), "BLOCK_C": block_c}, num_warps=NUM_WARPS,
                         num_stages=1)


def _affine_mode(x, M, C, scale, shift):
    """Return (mode, rows_per_sample) for the given scale/shift shapes."""
    given = [t for t in (scale, shift) if t is not None]
    if not given:
        return AFFINE_NONE, 1
    shapes = {tuple(t.shape) for t in given}
    if len(shapes) != 1:
        raise KernelError(f"scale and shift must have the same shape, got {shapes}")
    for t in given:
        check_io_dtype(t, "scale/shift")
        if not t.is_contiguous():
            raise KernelError("scale/shift must be contiguous")
    shape = shapes.pop()
    if shape == (C,):
        return AFFINE_CHANNEL, 1
    # [N, C] or [N, 1, 1, C]: one row of the table per sample.
    if len(shape) >= 2 and shape[-1] == C and all(s == 1 for s in shape[1:-1]):
        N = shape[0]
        if x.dim() == 4 and x.shape[0] != N:
            raise KernelError(f"per-sample scale/shift has {N} samples, x has {x.shape[0]}")
        if M % N:
            raise KernelError(f"{M} rows do not split into {N} samples")
        return AFFINE_SAMPLE, max(M // N, 1)
    raise KernelError(f"scale/shift shape {shape} is neither [C] nor [N, C] with C={C}")


def _plan_pointwise(x, scale, shift, other, epilogue, out, interpret):
    out, M, C, x_stride, out_stride = rows_in_out(x, out)
    mode, rows_per_sample = _affine_mode(x, M, C, scale, shift)
    other_stride = 0
    if other is not None:
        check_io_dtype(other, "other")
        if tuple(other.shape) != tuple(x.shape):
            raise KernelError(f"other shape {tuple(other.shape)} != x shape {tuple(x.shape)}")
        _, _, other_stride = rows_of(other, "other")
    ep_args, ep_constexprs = epilogue.kernel_args(out, M, C)
    cfg = tile_config(C, interpret)
    args = dict(x_ptr=x, x_stride=x_stride, other_ptr=other if other is not None else x, other_stride=other_stride,
                scale_ptr=scale if scale is not None else x, shift_ptr=shift if shift is not None else x,
                rows_per_sample=rows_per_sample, out_ptr=out, out_stride=out_stride, M=M, C=C, **ep_args)
    constexprs = dict(MUL_OTHER=other is not None, AFFINE=mode, HAS_SCALE=scale is not None,
                      HAS_SHIFT=shift is not None, **ep_constexprs,
                      USE_INT64=needs_int64(x, out, other, epilogue.residual))
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(C, meta["BLOCK_C"]))
    return out, Launch(pointwise_kernel, None, args, constexprs, grid, cfg)


def pointwise(x, *, scale=None, shift=None, epilogue=Epilogue(), out=None, other=None):
    """y = x (* other) (* scale + shift) then the epilogue; returns ``out`` (allocated if None).

    x        : [M, C] or [N, H, W, C], channel stride 1 (may be a channel slice)
    scale    : None, [C] per channel, or [N, C] / [N, 1, 1, C] per (sample, channel)
    shift    : like scale (same shape when both are given)
    epilogue : Epilogue applied after the affine (bias, act1, residual, act2)
    out      : output of x's shape (may be a channel slice; may be x itself)
    other    : optional tensor of x's shape multiplied in first (elementwise mul)
    """
    out, launch = _plan_pointwise(x, scale, shift, other, epilogue, out, interpreting())
    run(launch)
    return out


def channel_affine(x, scale, shift, epilogue=Epilogue(), *, out=None):
    """Batchnorm at inference: y = x * scale[c] + shift[c], then the epilogue."""
    return pointwise(x, scale=scale, shift=shift, epilogue=epilogue, out=out)


def add(a, b, *, act="none", alpha=0.0, beta=0.0, slope=None, out=None):
    """y = act(a + b) (b has a's shape; either may be a channel slice)."""
    return pointwise(a, epilogue=Epilogue(residual=b, act2=act, alpha2=alpha, beta2=beta, slope2=slope), out=out)


def mul(a, b, *, out=None):
    """y = a * b, with b of a's shape, [C] (per channel) or [N, C] / [N, 1, 1, C] (per sample)."""
    if tuple(b.shape) == tuple(a.shape):
        return pointwise(a, other=b, out=out)
    return pointwise(a, scale=b, out=out)


def specialization(x_shape, dtype, *, scale_shape=None, shift_shape=None, mul_other=False,
                   epilogue=Epilogue()) -> dict:
    """AOT specialization of :func:`pointwise` for these shapes (contiguous tensors, GPU tiles).

    ``epilogue``: as passed to :func:`pointwise`, e.g. ``Epilogue.planned(x_shape, dtype, act1="relu")``.
    """
    x = meta_tensor(x_shape, dtype)
    scale = meta_tensor(scale_shape, dtype) if scale_shape is not None else None
    shift = meta_tensor(shift_shape, dtype) if shift_shape is not None else None
    other = meta_tensor(x_shape, dtype) if mul_other else None
    _, launch = _plan_pointwise(x, scale, shift, other, epilogue, None, False)
    return spec_of(launch)
