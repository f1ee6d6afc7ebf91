"""Normalisation layers: batchnorm (inference), layernorm, groupnorm.

* Batchnorm at inference is a per-channel affine, y = x * scale + shift with
  scale = gamma / sqrt(var + eps) and shift = beta - mean * scale folded at compile time:
  that is :func:`pointwise.channel_affine`, re-exported here.
* Layernorm normalises each row of an [M, C] tensor. A program owns BLOCK_M rows; when a
  row fits in one block (C <= BLOCK_C) it is read once, kept in registers, and the
  statistics and the output come from that single read. Longer rows are streamed in
  BLOCK_C chunks: a first pass merges per-chunk (mean, M2) with Chan's parallel formula
  (numerically stable, unlike sum/sum-of-squares), a second pass normalises. Optional
  "add & norm": the residual is added first (and the sum may be written out for the
  next residual connection).
* Groupnorm's statistics run over (H, W, C/G) of each (sample, group): too much for one
  block, and too little parallelism if one program did a whole group. Three launches:
  partial statistics over pixel ranges (grid: samples*groups x splits), a merge that also
  folds gamma/beta into a per-(sample, channel) affine table, and the pointwise kernel
  applying that table with the fused activation epilogue.

All statistics are fp32; variance is biased (divide by the count), as in torch.
"""

import torch
import triton
import triton.language as tl

from ._host import (KernelError, Launch, check_io_dtype, check_writable_rows, interpreting, meta_tensor,
                    needs_int64, rows_of, run, spec_of)
from .epilogue import Epilogue, apply_epilogue
from .pointwise import _plan_pointwise, channel_affine  # noqa: F401  (channel_affine is re-exported)

# Layernorm blocking: rows up to MAX_SINGLE_BLOCK_C channels are read once; longer rows are
# streamed in CHUNK_C chunks. A tile holds about TILE_ELEMS elements (several short rows).
LN_MAX_SINGLE_BLOCK_C, LN_CHUNK_C, LN_TILE_ELEMS = 8192, 2048, 4096
LN_INTERPRET = (32, 16, 128)          # the same three under the interpreter (exercise both paths)

# Groupnorm: each statistics program covers about GN_ELEMS_PER_PROGRAM elements of a group,
# in tiles of GN_TILE_ELEMS, unless there are already GN_ENOUGH_PROGRAMS (sample, group)
# pairs to fill the GPU; the merge runs over GN_MERGE_BLOCK_C channels per program.
GN_ELEMS_PER_PROGRAM, GN_TILE_ELEMS, GN_MERGE_BLOCK_C, GN_MAX_SPLITS, GN_ENOUGH_PROGRAMS = 32768, 2048, 128, 64, 512
GN_INTERPRET = (64, 64, 16, 64, 512)


@triton.jit
def _chan_merge(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    """Merge two (mean, M2, count) summaries (Chan et al.): exact and stable in fp32."""
    n = n_a + n_b
    delta = mean_b - mean_a
    w_b = tl.where(n > 0, n_b / tl.maximum(n, 1.0), 0.0)
    mean = mean_a + delta * w_b
    m2 = m2_a + m2_b + delta * delta * n_a * w_b
    return mean, m2, n


# --------------------------------------------------------------------------- layernorm

@triton.jit
def layernorm_kernel(
    x_ptr, x_stride,                # input rows [M, C], channel stride 1
    r_ptr, r_stride,                # residual added before normalising (read iff HAS_RES_BEFORE)
    sum_ptr, sum_stride,            # x + residual written here (iff WRITE_SUM)
    w_ptr, b_ptr,                   # layernorm weight / bias [C] (iff HAS_WEIGHT / HAS_LN_BIAS)
    out_ptr, out_stride,            # output rows [M, C]
    M, C, eps,
    bias_ptr, slope1_ptr, slope1_stride, res_ptr, res_stride,  # epilogue (see epilogue.py)
    slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
    HAS_RES_BEFORE: tl.constexpr, WRITE_SUM: tl.constexpr,
    HAS_WEIGHT: tl.constexpr, HAS_LN_BIAS: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACT1: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    USE_INT64: tl.constexpr,
    SINGLE_BLOCK: tl.constexpr,     # C <= BLOCK_C: one read per row
    BLOCK_M: tl.constexpr,          # rows per program
    BLOCK_C: tl.constexpr,          # channels per block
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_r = rows < M
    r64 = rows
    if USE_INT64:
        r64 = rows.to(tl.int64)
    offs_c = tl.arange(0, BLOCK_C)

    if SINGLE_BLOCK:
        mask_c = offs_c < C
        mask = mask_r[:, None] & mask_c[None, :]
        # the only read of x (and of the residual): BLOCK_M x C elements.
        x = tl.load(x_ptr + (r64[:, None] * x_stride + offs_c[None, :]), mask=mask, other=0.0).to(tl.float32)
        if HAS_RES_BEFORE:
            x += tl.load(r_ptr + (r64[:, None] * r_stride + offs_c[None, :]), mask=mask, other=0.0).to(tl.float32)
            if WRITE_SUM:
                tl.store(sum_ptr + (r64[:, None] * sum_stride + offs_c[None, :]),
                         x.to(sum_ptr.dtype.element_ty), mask=mask)
        mean = tl.sum(x, axis=1) / C
        d = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / C + eps)
        y = d * rstd[:, None]
        if HAS_WEIGHT:
            y = y * tl.load(w_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        if HAS_LN_BIAS:
            y = y + tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        y = apply_epilogue(y, r64, offs_c, mask_r, mask_c, bias_ptr, slope1_ptr, slope1_stride, res_ptr,
                           res_stride, slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
                           HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)
        tl.store(out_ptr + (r64[:, None] * out_stride + offs_c[None, :]), y.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        # pass 1: stream the row in chunks, merging per-chunk (mean, M2); reads C per row.
        mean = tl.zeros((BLOCK_M,), dtype=tl.float32)
        m2 = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + offs_c
            mask = mask_r[:, None] & (cols < C)[None, :]
            x = tl.load(x_ptr + (r64[:, None] * x_stride + cols[None, :]), mask=mask, other=0.0).to(tl.float32)
            if HAS_RES_BEFORE:
                x += tl.load(r_ptr + (r64[:, None] * r_stride + cols[None, :]), mask=mask, other=0.0).to(tl.float32)
                if WRITE_SUM:
                    tl.store(sum_ptr + (r64[:, None] * sum_stride + cols[None, :]),
                             x.to(sum_ptr.dtype.element_ty), mask=mask)
            n_b = tl.minimum(C - c0, BLOCK_C) * 1.0
            mean_b = tl.sum(x, axis=1) / n_b
            d = tl.where(mask, x - mean_b[:, None], 0.0)
            mean, m2, _ = _chan_merge(mean, m2, c0 * 1.0, mean_b, tl.sum(d * d, axis=1), n_b)
        rstd = 1.0 / tl.sqrt(m2 / C + eps)
        # pass 2: re-read (L2-hot for moderate rows), normalise, epilogue, write.
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + offs_c
            mask_c = cols < C
            mask = mask_r[:, None] & mask_c[None, :]
            x = tl.load(x_ptr + (r64[:, None] * x_stride + cols[None, :]), mask=mask, other=0.0).to(tl.float32)
            if HAS_RES_BEFORE:
                x += tl.load(r_ptr + (r64[:, None] * r_stride + cols[None, :]), mask=mask, other=0.0).to(tl.float32)
            y = (x - mean[:, None]) * rstd[:, None]
            if HAS_WEIGHT:
                y = y * tl.load(w_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
            if HAS_LN_BIAS:
                y = y + tl.load(b_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
            y = apply_epilogue(y, r64, cols, mask_r, mask_c, bias_ptr, slope1_ptr, slope1_stride, res_ptr,
                               res_stride, slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
                               HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)
            tl.store(out_ptr + (r64[:, None] * out_stride + cols[None, :]), y.to(out_ptr.dtype.element_ty),
                     mask=mask)


def layernorm_config(C: int, interpret: bool) -> tuple[dict, int]:
    """(constexprs SINGLE_BLOCK/BLOCK_M/BLOCK_C, num_warps) for rows of C channels."""
    max_single, chunk, tile = LN_INTERPRET if interpret else (LN_MAX_SINGLE_BLOCK_C, LN_CHUNK_C, LN_TILE_ELEMS)
    single = C <= max_single
    block_c = triton.next_power_of_2(max(C, 1)) if single else chunk
    block_m = max(1, tile // block_c)
    num_warps = min(16, max(4, block_m * block_c // 1024))
    return dict(SINGLE_BLOCK=single, BLOCK_M=block_m, BLOCK_C=block_c), num_warps


def _plan_layernorm(x, weight, bias, eps, residual_before, sum_out, epilogue, out, interpret):
    check_io_dtype(x, "x")
    M, C, x_stride = rows_of(x, "x")
    if epilogue.bias is not None:
        raise KernelError("layernorm: pass the layernorm bias as `bias`, not epilogue.bias")
    for t, name in ((weight, "weight"), (bias, "bias")):
        if t is not None and (tuple(t.shape) != (C,) or not t.is_contiguous()):
            raise KernelError(f"layernorm {name} must be a contiguous [{C}] vector")
    r_stride = sum_stride = 0
    if residual_before is not None:
        if tuple(residual_before.shape) != tuple(x.shape):
            raise KernelError("residual_before must have x's shape")
        check_io_dtype(residual_before, "residual_before")
        _, _, r_stride = rows_of(residual_before, "residual_before")
    if sum_out is not None:
        if residual_before is None:
            raise KernelError("sum_out needs residual_before")
        if tuple(sum_out.shape) != tuple(x.shape):
            raise KernelError("sum_out must have x's shape")
        _, _, sum_stride = check_writable_rows(sum_out, "sum_out")
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if tuple(out.shape) != tuple(x.shape):
        raise KernelError(f"out shape {tuple(out.shape)} != x shape {tuple(x.shape)}")
    check_io_dtype(out, "out")
    _, _, out_stride = check_writable_rows(out, "out")
    ep_args, ep_constexprs = epilogue.kernel_args(out, M, C)
    blocking, num_warps = layernorm_config(C, interpret)
    args = dict(x_ptr=x, x_stride=x_stride, r_ptr=residual_before if residual_before is not None else x,
                r_stride=r_stride, sum_ptr=sum_out if sum_out is not None else out, sum_stride=sum_stride,
                w_ptr=weight if weight is not None else x, b_ptr=bias if bias is not None else x,
                out_ptr=out, out_stride=out_stride, M=M, C=C, eps=float(eps), **ep_args)
    constexprs = dict(HAS_RES_BEFORE=residual_before is not None, WRITE_SUM=sum_out is not None,
                      HAS_WEIGHT=weight is not None, HAS_LN_BIAS=bias is not None, **ep_constexprs,
                      USE_INT64=needs_int64(x, out, residual_before, sum_out, epilogue.residual))
    cfg = triton.Config(blocking, num_warps=num_warps, num_stages=1)
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]),)
    return out, Launch(layernorm_kernel, None, args, constexprs, grid, cfg)


def layernorm(x, weight, bias, eps=1e-5, *, residual_before=None, sum_out=None, epilogue=Epilogue(), out=None):
    """y = epilogue(layernorm(x (+ residual_before)) * weight + bias) over the last dim.

    x               : [M, C] or [..., C] (rows uniformly strided, channel stride 1)
    weight, bias    : [C] or None (elementwise_affine=False)
    residual_before : optional tensor of x's shape added before normalising ("add & norm")
    sum_out         : optional output receiving x + residual_before (the next residual)
    epilogue        : act1 / residual / act2 after the affine (epilogue.bias must be None)
    """
    out, launch = _plan_layernorm(x, weight, bias, eps, residual_before, sum_out, epilogue, out, interpreting())
    run(launch)
    return out


# --------------------------------------------------------------------------- groupnorm

@triton.jit
def groupnorm_stats_kernel(
    x_ptr, sxn, sxp,                # input [N, HW, C] (pixel stride sxp, channel stride 1)
    part_ptr,                       # partial stats [N*G, SPLITS, 3] fp32: mean, M2, count
    HW, C, Cg, G,                   # pixels, channels, channels per group, groups
    pix_per_split,                  # pixels handled by one program
    SPLITS,                         # programs per (sample, group)
    USE_INT64: tl.constexpr,
    BLOCK_P: tl.constexpr,          # pixels per tile
    BLOCK_C: tl.constexpr,          # group channels per tile
):
    ng = tl.program_id(0)           # n * G + g
    s = tl.program_id(1)
    n = ng // G
    g = ng - n * G
    p_start = s * pix_per_split
    p_end = tl.minimum(p_start + pix_per_split, HW)
    offs_p = tl.arange(0, BLOCK_P)
    offs_c = tl.arange(0, BLOCK_C)
    base = x_ptr + n * sxn + g * Cg
    if USE_INT64:
        base = x_ptr + n.to(tl.int64) * sxn + g * Cg
    mean = tl.zeros((), dtype=tl.float32)
    m2 = tl.zeros((), dtype=tl.float32)
    count = tl.zeros((), dtype=tl.float32)
    for p0 in range(p_start, p_end, BLOCK_P):
        p = p0 + offs_p
        mask_p = p < p_end
        if USE_INT64:
            p = p.to(tl.int64)
        for c0 in range(0, Cg, BLOCK_C):
            cs = c0 + offs_c
            mask = mask_p[:, None] & (cs < Cg)[None, :]
            # one read of a BLOCK_P x BLOCK_C tile of the group (channel runs of Cg).
            x = tl.load(base + p[:, None] * sxp + cs[None, :], mask=mask, other=0.0).to(tl.float32)
            n_b = (tl.minimum(p_end - p0, BLOCK_P) * tl.minimum(Cg - c0, BLOCK_C)) * 1.0
            mean_b = tl.sum(tl.sum(x, axis=1), axis=0) / n_b
            d = tl.where(mask, x - mean_b, 0.0)
            m2_b = tl.sum(tl.sum(d * d, axis=1), axis=0)
            mean, m2, count = _chan_merge(mean, m2, count, mean_b, m2_b, n_b)
    out = part_ptr + (ng * SPLITS + s) * 3
    tl.store(out, mean)
    tl.store(out + 1, m2)
    tl.store(out + 2, count)


@triton.jit
def groupnorm_affine_kernel(
    part_ptr,                       # partial stats [N*G, SPLITS, 3] fp32
    w_ptr, b_ptr,                   # groupnorm weight / bias [C] (iff HAS_WEIGHT / HAS_GN_BIAS)
    scale_ptr, shift_ptr,           # output tables [N, C] fp32: y = x * scale + shift
    C, Cg, G, SPLITS, eps,
    HAS_WEIGHT: tl.constexpr, HAS_GN_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    n = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = cols < C
    ng = n * G + cols // Cg
    mean = tl.zeros((BLOCK_C,), dtype=tl.float32)
    m2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    count = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for s in range(0, SPLITS):
        # tiny gathers: 3 fp32 per split per channel, all L2-resident.
        p = part_ptr + (ng * SPLITS + s) * 3
        mean_b = tl.load(p, mask=mask, other=0.0)
        m2_b = tl.load(p + 1, mask=mask, other=0.0)
        n_b = tl.load(p + 2, mask=mask, other=0.0)
        mean, m2, count = _chan_merge(mean, m2, count, mean_b, m2_b, n_b)
    rstd = 1.0 / tl.sqrt(m2 / tl.maximum(count, 1.0) + eps)
    scale = rstd
    if HAS_WEIGHT:
        scale = scale * tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    shift = -mean * scale
    if HAS_GN_BIAS:
        shift += tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(scale_ptr + n * C + cols, scale, mask=mask)
    tl.store(shift_ptr + n * C + cols, shift, mask=mask)


def groupnorm_config(HW: int, Cg: int, num_groups_total: int, interpret: bool) -> dict:
    per_program, tile, merge_c, max_splits, enough = GN_INTERPRET if interpret else (
        GN_ELEMS_PER_PROGRAM, GN_TILE_ELEMS, GN_MERGE_BLOCK_C, GN_MAX_SPLITS, GN_ENOUGH_PROGRAMS)
    block_c = min(triton.next_power_of_2(Cg), tile)
    block_p = max(1, tile // block_c)
    splits = max(1, min(max_splits, HW, triton.cdiv(HW * Cg, per_program)))
    if num_groups_total >= enough:
        splits = 1
    pix_per_split = triton.cdiv(HW, splits)
    splits = triton.cdiv(HW, pix_per_split)          # no empty split
    return dict(BLOCK_P=block_p, BLOCK_C=block_c, SPLITS=splits, pix_per_split=pix_per_split,
                MERGE_BLOCK_C=merge_c)


def _plan_groupnorm(x, num_groups, weight, bias, eps, epilogue, out, interpret):
    check_io_dtype(x, "x")
    if x.dim() != 4:
        raise KernelError(f"groupnorm expects NHWC [N, H, W, C], got {tuple(x.shape)}")
    N, H, W, C = x.shape
    if C % num_groups:
        raise KernelError(f"{C} channels not divisible into {num_groups} groups")
    for t, name in ((weight, "weight"), (bias, "bias")):
        if t is not None and (tuple(t.shape) != (C,) or not t.is_contiguous()):
            raise KernelError(f"groupnorm {name} must be a contiguous [{C}] vector")
    if epilogue.bias is not None:
        raise KernelError("groupnorm: pass the groupnorm bias as `bias`, not epilogue.bias")
    M, _, sxp = rows_of(x, "x")
    HW, Cg = H * W, C // num_groups
    sxn = HW * sxp                                   # rows_of checked the pixels are uniformly strided
    cfg = groupnorm_config(HW, Cg, N * num_groups, interpret)
    splits = cfg["SPLITS"]
    part = torch.empty((N * num_groups, splits, 3), dtype=torch.float32, device=x.device)
    scale = torch.empty((N, C), dtype=torch.float32, device=x.device)
    shift = torch.empty((N, C), dtype=torch.float32, device=x.device)

    stats = Launch(
        groupnorm_stats_kernel, None,
        dict(x_ptr=x, sxn=sxn, sxp=sxp, part_ptr=part, HW=HW, C=C, Cg=Cg, G=num_groups,
             pix_per_split=cfg["pix_per_split"], SPLITS=splits),
        dict(USE_INT64=needs_int64(x)),
        lambda meta: (N * num_groups, splits),
        triton.Config({"BLOCK_P": cfg["BLOCK_P"], "BLOCK_C": cfg["BLOCK_C"]}, num_warps=4, num_stages=1))
    affine = Launch(
        groupnorm_affine_kernel, None,
        dict(part_ptr=part, w_ptr=weight if weight is not None else scale, b_ptr=bias if bias is not None else scale,
             scale_ptr=scale, shift_ptr=shift, C=C, Cg=Cg, G=num_groups, SPLITS=splits, eps=float(eps)),
        dict(HAS_WEIGHT=weight is not None, HAS_GN_BIAS=bias is not None),
        lambda meta: (N, triton.cdiv(C, meta["BLOCK_C"])),
        triton.Config({"BLOCK_C": cfg["MERGE_BLOCK_C"]}, num_warps=4, num_stages=1))
    out, apply = _plan_pointwise(x, scale, shift, None, epilogue, out, interpret)
    return out, [stats, affine, apply]


def groupnorm(x, num_groups, weight, bias, eps=1e-5, *, epilogue=Epilogue(), out=None):
    """y = epilogue(groupnorm(x)) for NHWC x [N, H, W, C]; statistics over (H, W, C/G) in fp32.

    weight, bias : [C] or None (affine=False); epilogue: act1 / residual / act2 (no bias).
    """
    out, launches = _plan_groupnorm(x, num_groups, weight, bias, eps, epilogue, out, interpreting())
    for launch in launches:
        run(launch)
    return out


# --------------------------------------------------------------------------- AOT

def layernorm_specialization(x_shape, dtype, *, affine=True, residual_before=False, sum_out=False,
                             epilogue=Epilogue()) -> dict:
    """AOT specialization of :func:`layernorm` for a contiguous x of ``x_shape``.

    ``epilogue``: as passed to :func:`layernorm`, e.g. ``Epilogue.planned(x_shape, dtype, act1="gelu")``.
    """
    C = x_shape[-1]
    x = meta_tensor(x_shape, dtype)
    w = meta_tensor((C,), dtype) if affine else None
    r = meta_tensor(x_shape, dtype) if residual_before else None
    s = meta_tensor(x_shape, dtype) if sum_out else None
    _, launch = _plan_layernorm(x, w, w, 1e-5, r, s, epilogue, None, False)
    return spec_of(launch)


def groupnorm_specialization(x_shape, dtype, num_groups, *, affine=True, epilogue=Epilogue()) -> list:
    """AOT specializations (a list: stats, affine, apply) of :func:`groupnorm`."""
    C = x_shape[-1]
    x = meta_tensor(x_shape, dtype)
    w = meta_tensor((C,), dtype) if affine else None
    _, launches = _plan_groupnorm(x, num_groups, w, w, 1e-5, epilogue, None, False)
    return [spec_of(launch) for launch in launches]
