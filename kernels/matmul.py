"""Linear layers: out[m, n] = epilogue(sum_k x[m, k] * w[n, k]) as a tiled matmul.

The weight is packed once, at compile time, from torch's [N, K] to [K, N] row-major
(:func:`pack_linear_weight`), so both operand tiles are plain row-major 2-D loads:
BLOCK_M x BLOCK_K of x (contiguous along K) and BLOCK_K x BLOCK_N of w (contiguous along
N). Each program accumulates one BLOCK_M x BLOCK_N output tile in fp32 with ``tl.dot``
(tensor cores for fp16/bf16; TF32 or exact IEEE fp32 for fp32 inputs), then applies the
shared epilogue (bias per column, activations, residual) and stores once, possibly into
a column slice of a wider buffer. Programs are ordered in groups of GROUP_M row tiles so
that the weight columns they share stay in L2 (the Triton matmul tutorial's swizzle).

x may have any number of leading dims ([..., K], rows uniformly strided): a transformer's
[B, T, C] activations need no reshape copy.

Short grids (a batch-1 classifier: one row) may split K (see :mod:`splitk`): :func:`linear_tile_sum`
is the one K loop of ``linear_kernel`` and ``linear_splitk_kernel``. On sm_90 the autotuner also
tries BLOCK_K 64 tiles up to 128x256, and ``linear_tma_kernel`` (opt-in: ``tma=True``) loads the
operand tiles with the tensor memory accelerator.
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from ._host import (
    KernelError,
    Launch,
    aligned16,
    autotuned,
    check_io_dtype,
    check_writable_rows,
    interpreting,
    meta_tensor,
    needs_int64,
    rows_of,
)
from .conv_common import HOPPER_CONFIGS, dot_tier, hopper_configs, target_cc
from .epilogue import Epilogue, store_tile
from .splitk import (
    choose_split,
    device_sm_count,
    plan_reduce,
    run_all,
    specs_of,
    split_range,
    store_partial,
    workspace,
)
from .tiling import grouped_tile

# Autotuning configs: tiles >= 16 in M, N, K (tl.dot's minimum), shared memory within the
# sm_80/sm_90 limits, tagged with the tiers they are tried in (fast / medium / fma, as in
# conv.py: fp16/bf16 aligned with a light epilogue / unaligned, heavy epilogue or TF32 /
# exact fp32). 0 spills for every (config, tier), checked by tests/kernels/aot_sweep.py.
TIERED_CONFIGS = [
    (triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=4),
     ("fast", "medium")),
    (triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=4),
     ("fast",)),
    (triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=4),
     ("fast",)),
    (triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=8, num_stages=3),
     ("fast",)),
    (triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
     ("fast",)),
    (triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=8, num_stages=3),
     ("fast", "medium")),
    (triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=3),
     ("medium", "fma")),
    (triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=3),
     ("medium", "fma")),
]
CONFIGS = [config for config, _ in TIERED_CONFIGS]
INTERPRET_CONFIG = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2}, num_warps=4,
                                 num_stages=1)


@triton.jit
def linear_tile_sum(
    x_ptr, sxm, sxk, w_ptr, swk, M, N, K,
    splits,                       # K slices (split-K; read iff SPLIT)
    SPLIT: tl.constexpr,          # sum only this program's slice of K (program id 2)
    DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """The fp32 tile of program program_id(0) summed over its K range, and where it goes: (acc, rows,
    columns, row mask, column mask). Shared by the fused and split-K kernels."""
    pid = tl.program_id(0)
    pid_m, pid_n = grouped_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    rows = offs_m
    if USE_INT64:
        rows = rows.to(tl.int64)
    k_lo = 0
    k_hi = K
    if SPLIT:
        step_lo, step_hi = split_range(tl.cdiv(K, BLOCK_K), splits)
        k_lo = step_lo * BLOCK_K
        k_hi = tl.minimum(step_hi * BLOCK_K, K)
    x_ptrs = x_ptr + rows[:, None] * sxm + (k_lo + offs_k)[None, :] * sxk
    w_ptrs = w_ptr + (k_lo + offs_k)[:, None] * swk + offs_n[None, :]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        mask_k = (k0 + offs_k) < k_hi
        # BLOCK_M x BLOCK_K of x and BLOCK_K x BLOCK_N of w per step: each element of x is
        # read cdiv(N, BLOCK_N) times and of w cdiv(M, BLOCK_M) times overall (mostly from L2).
        a = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(w_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if DOT_UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K * sxk
        w_ptrs += BLOCK_K * swk
    return acc, offs_m, offs_n, mask_m, mask_n


@triton.jit
def linear_kernel(
    x_ptr, sxm, sxk,            # input [M, K] with row / column strides
    w_ptr, swk,                 # packed weight [K, N], row stride swk (column stride 1)
    out_ptr, out_stride,        # output [M, N], row stride (column stride 1)
    M, N, K,
    bias_ptr, slope1_ptr, slope1_stride, res_ptr, res_stride,  # epilogue (see epilogue.py)
    slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
    HAS_BIAS: tl.constexpr, ACT1: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" or "tf32" (fp32 inputs only)
    DOT_UPCAST: tl.constexpr,     # feed tl.dot fp32 (works around the interpreter's bf16 dot)
    USE_INT64: tl.constexpr,      # 64-bit offsets
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,        # row tiles per L2 swizzle group
):
    acc, rows, cols, mask_m, mask_n = linear_tile_sum(
        x_ptr, sxm, sxk, w_ptr, swk, M, N, K, 1, False, DOT_PRECISION, DOT_UPCAST, USE_INT64,
        BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    store_tile(acc, rows, cols, mask_m, mask_n, out_ptr, out_stride, bias_ptr, slope1_ptr, slope1_stride,
               res_ptr, res_stride, slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
               HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)


@triton.jit
def linear_splitk_kernel(
    x_ptr, sxm, sxk, w_ptr, swk,  # as linear_kernel
    ws_ptr,                     # fp32 workspace [splits, M, N]: this program's partial tile
    M, N, K,
    splits,                     # K slices: grid axis 2
    DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Split-K partial sums (see splitk.py): the epilogue runs in splitk_reduce_kernel."""
    acc, rows, cols, mask_m, mask_n = linear_tile_sum(
        x_ptr, sxm, sxk, w_ptr, swk, M, N, K, splits, True, DOT_PRECISION, DOT_UPCAST, USE_INT64,
        BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    store_partial(acc, ws_ptr, rows, cols, mask_m, mask_n, M, N, USE_INT64)


@triton.jit
def linear_tma_kernel(
    x_ptr, sxm,                 # input [M, K] rows (column stride 1; sxm * itemsize a multiple of 16 bytes)
    w_ptr, swk,                 # packed weight [K, N] (column stride 1; swk likewise)
    out_ptr, out_stride,        # output [M, N], row stride (column stride 1)
    M, N, K,
    bias_ptr, slope1_ptr, slope1_stride, res_ptr, res_stride,  # epilogue (see epilogue.py)
    slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
    HAS_BIAS: tl.constexpr, ACT1: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """linear_kernel with its operand tiles fetched by the sm_90 tensor memory accelerator (TMA):
    one descriptor per operand describes the whole row-major matrix, and each step asks the copy
    engine for a [BLOCK_M, BLOCK_K] / [BLOCK_K, BLOCK_N] box straight into shared memory (zero-filled
    past the edges), with no per-thread address math, masks or register staging."""
    pid = tl.program_id(0)
    pid_m, pid_n = grouped_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    x_desc = tl.make_tensor_descriptor(x_ptr, shape=[M, K], strides=[sxm, 1], block_shape=[BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, shape=[K, N], strides=[swk, 1], block_shape=[BLOCK_K, BLOCK_N])
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = x_desc.load([pid_m * BLOCK_M, k0])
        b = w_desc.load([k0, pid_n * BLOCK_N])
        if DOT_UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    store_tile(acc, offs_m, offs_n, offs_m < M, offs_n < N, out_ptr, out_stride, bias_ptr, slope1_ptr,
               slope1_stride, res_ptr, res_stride, slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
               HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)


def eligible_configs(args: dict, cc: Optional[int] = None) -> list:
    """The autotuning configs worth trying for these kernel arguments (see TIERED_CONFIGS) on a GPU of
    compute capability ``cc`` (90 and up: the sm_90 configs that fit the problem too, after those)."""
    aligned = args["sxk"] == 1 and all(aligned16(args[k]) for k in ("x_ptr", "sxm", "w_ptr", "swk"))
    tier = dot_tier(args, aligned)
    return [c for c, tiers in TIERED_CONFIGS if tier in tiers] + hopper_configs(tier, args, cc, args["M"], args["N"],
                                                                               args["K"])


TMA_CC = 90   # the first GPUs with the tensor memory accelerator (TMA)

linear_kernel_tuned = autotuned(linear_kernel,
    CONFIGS + HOPPER_CONFIGS, key=["M", "N", "K", "sxm", "ACT1", "HAS_RES", "ACT2", "DOT_PRECISION"],
    restore_value=["out_ptr"],
    prune_configs_by={"early_config_prune": lambda configs, nargs, **kw: eligible_configs(
        {**nargs, **kw}, target_cc(nargs["x_ptr"]))},
)
linear_tma_kernel_tuned = autotuned(linear_tma_kernel,
    CONFIGS + HOPPER_CONFIGS, key=["M", "N", "K", "sxm", "ACT1", "HAS_RES", "ACT2", "DOT_PRECISION"],
    restore_value=["out_ptr"],
    prune_configs_by={"early_config_prune": lambda configs, nargs, **kw: eligible_configs(
        {**nargs, **kw, "sxk": 1}, TMA_CC)},
)


def _tma_scratch(size: int, alignment: int, stream) -> torch.Tensor:
    """Global memory for the TMA descriptors linear_tma_kernel builds on the device (128 bytes each)."""
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _check_tma(x, w_packed, sxk: int, sxm: int) -> None:
    """TMA copies boxes of a row-major matrix: unit column stride, 16-byte aligned base and rows."""
    size = x.element_size()
    rows_aligned = (sxm * size) % 16 == 0 and (w_packed.stride(0) * size) % 16 == 0
    if sxk != 1 or not (aligned16(x) and aligned16(w_packed) and rows_aligned):
        raise KernelError("the TMA path needs x and w_packed row-major with 16-byte aligned bases and rows")
    if x.device.type == "cuda":
        triton.set_allocator(_tma_scratch)


def pack_linear_weight(w: torch.Tensor) -> torch.Tensor:
    """torch's [N, K] (out_features, in_features) -> contiguous [K, N]."""
    if w.dim() != 2:
        raise KernelError(f"linear weight must be [N, K], got {tuple(w.shape)}")
    return w.t().contiguous()


def _plan_linear(x, w_packed, epilogue, out, allow_tf32, interpret, *, split_k=1, sm_count=None, cc=None,
                 tma=False):
    """(out, launch), or (out, [partial launch, reduction launch]) for a split-K plan.

    ``tma``: load the operand tiles with sm_90's TMA (linear_tma_kernel; no split-K, sm_90 configs).

    ``split_k``: an int forces that many K slices (1: the fused kernel alone); None lets
    :func:`splitk.choose_split` decide for ``sm_count`` SMs (None: the device's, none off a GPU).
    ``cc``: the target's compute capability (None: x's GPU's; 90 adds the sm_90 configs).
    """
    check_io_dtype(x, "x")
    check_io_dtype(w_packed, "w_packed")
    if x.dim() < 1:
        raise KernelError("x must have at least one dimension [..., K]")
    K = x.shape[-1]
    if w_packed.dim() != 2 or w_packed.shape[0] != K:
        raise KernelError(f"w_packed must be [K={K}, N], got {tuple(w_packed.shape)} (use pack_linear_weight)")
    if w_packed.shape[1] > 1 and w_packed.stride(1) != 1:
        raise KernelError("w_packed must have column stride 1")
    N = w_packed.shape[1]
    if x.dim() == 2:
        M, sxm, sxk = x.shape[0], x.stride(0), x.stride(1)
    else:
        M, _, sxm = rows_of(x, "x")
        sxk = 1
    if out is None:
        out = torch.empty((*x.shape[:-1], N), dtype=x.dtype, device=x.device)
    check_io_dtype(out, "out")
    if tuple(out.shape) != (*x.shape[:-1], N):
        raise KernelError(f"out shape {tuple(out.shape)} != {(*x.shape[:-1], N)}")
    _, _, out_stride = check_writable_rows(out, "out")
    ep_args, ep_constexprs = epilogue.kernel_args(out, M, N)
    gemm = dict(x_ptr=x, sxm=sxm, sxk=sxk, w_ptr=w_packed, swk=w_packed.stride(0))
    args = dict(**gemm, out_ptr=out, out_stride=out_stride, M=M, N=N, K=K, **ep_args)
    dot = dict(DOT_PRECISION="tf32" if (x.dtype == torch.float32 and allow_tf32) else "ieee",
               DOT_UPCAST=interpret and x.dtype == torch.bfloat16)
    constexprs = dict(**ep_constexprs, **dot, USE_INT64=needs_int64(x, w_packed, out, epilogue.residual))
    configs = eligible_configs({**args, **constexprs}, cc if cc is not None else target_cc(x))
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)
    if tma:
        _check_tma(x, w_packed, sxk, sxm)
        configs = eligible_configs({**args, **constexprs}, TMA_CC)
        tma_args = {k: v for k, v in args.items() if k != "sxk"}
        return out, Launch(linear_tma_kernel, linear_tma_kernel_tuned, tma_args, constexprs, grid,
                           INTERPRET_CONFIG if interpret else configs[0], tuple(configs))
    config, split = configs[0], split_k or 1
    if split_k is None:
        config, split = choose_split(M, N, K, configs, sm_count if sm_count is not None else device_sm_count(x))
    if split == 1:
        cfg = INTERPRET_CONFIG if interpret else configs[0]
        return out, Launch(linear_kernel, linear_kernel_tuned, args, constexprs, grid, cfg, tuple(configs))
    # split-K: fp32 partial tiles of each K slice, then one reduction applies the epilogue.
    ws = workspace(split, M, N, x.device)
    cfg = INTERPRET_CONFIG if interpret else config
    partial_args = dict(**gemm, ws_ptr=ws, M=M, N=N, K=K, splits=split)
    partial_constexprs = dict(**dot, USE_INT64=needs_int64(x, w_packed, ws))
    partial_grid = lambda meta: (*grid(meta), 1, split)
    partial = Launch(linear_splitk_kernel, None, partial_args, partial_constexprs, partial_grid, cfg, tuple(configs))
    return out, [partial, plan_reduce(ws, out, out_stride, epilogue, interpret)]


def linear(x, w_packed, *, epilogue=Epilogue(), out=None, allow_tf32=False, split_k=None, sm_count=None, tma=False):
    """out = epilogue(x @ w_packed); x [M, K] (or [..., K]), w_packed [K, N] -> [M, N] (or [..., N]).

    epilogue.bias is per output column (torch's linear bias). ``out`` may be a column slice.
    ``split_k``: K slices (split-K, see splitk.py); None chooses from the shape and ``sm_count`` (the SMs
    to fill; None: the GPU's, and off a GPU no automatic split). ``tma``: sm_90's TMA loads (see
    linear_tma_kernel; row-major x and w_packed, 16-byte aligned rows; no split-K).
    """
    out, launches = _plan_linear(x, w_packed, epilogue, out, allow_tf32, interpreting(), split_k=split_k,
                                 sm_count=sm_count, tma=tma)
    run_all(launches)
    return out


def specialization(x_shape, dtype, n_out, epilogue=Epilogue(), *, allow_tf32=False, config=None, split_k=1,
                   sm_count=None, cc=None, tma=False):
    """AOT specialization of :func:`linear` for x of ``x_shape`` ([..., K]) and N = ``n_out``.

    ``epilogue``: as passed to :func:`linear`, typically
    ``Epilogue.planned((*x_shape[:-1], n_out), dtype, ...)``. ``split_k``, ``sm_count``: as :func:`linear`
    (a split-K plan gives a list: the partial kernel's spec(s), then the reduction's). ``cc``: the target
    (90 adds the sm_90 configs). ``tma``: the TMA kernel (sm_90 only).
    """
    x = meta_tensor(x_shape, dtype)
    w = meta_tensor((x_shape[-1], n_out), dtype)
    _, launches = _plan_linear(x, w, epilogue, None, allow_tf32, False, split_k=split_k, sm_count=sm_count, cc=cc,
                               tma=tma)
    return specs_of(launches, config)
