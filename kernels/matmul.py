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
"""

import torch
import triton
import triton.language as tl

from ._host import (KernelError, Launch, aligned16, check_io_dtype, check_writable_rows, interpreting,
                    meta_tensor, needs_int64, rows_of, run, spec_of)
from .conv_common import dot_tier
from .epilogue import Epilogue, store_tile
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
    x_ptrs = x_ptr + rows[:, None] * sxm + offs_k[None, :] * sxk
    w_ptrs = w_ptr + offs_k[:, None] * swk + offs_n[None, :]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = (k0 + offs_k) < K
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

    store_tile(acc, offs_m, offs_n, mask_m, mask_n, out_ptr, out_stride, bias_ptr, slope1_ptr, slope1_stride,
               res_ptr, res_stride, slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
               HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)


def eligible_configs(args: dict) -> list:
    """The autotuning configs worth trying for these kernel arguments (see TIERED_CONFIGS)."""
    aligned = args["sxk"] == 1 and all(aligned16(args[k]) for k in ("x_ptr", "sxm", "w_ptr", "swk"))
    return [c for c, tiers in TIERED_CONFIGS if dot_tier(args, aligned) in tiers]


linear_kernel_tuned = triton.autotune(
    CONFIGS, key=["M", "N", "K", "sxm", "ACT1", "HAS_RES", "ACT2", "DOT_PRECISION"], restore_value=["out_ptr"],
    prune_configs_by={"early_config_prune": lambda configs, nargs, **kw: eligible_configs({**nargs, **kw})},
)(linear_kernel)


def pack_linear_weight(w: torch.Tensor) -> torch.Tensor:
    """torch's [N, K] (out_features, in_features) -> contiguous [K, N]."""
    if w.dim() != 2:
        raise KernelError(f"linear weight must be [N, K], got {tuple(w.shape)}")
    return w.t().contiguous()


def _plan_linear(x, w_packed, epilogue, out, allow_tf32, interpret):
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
    args = dict(x_ptr=x, sxm=sxm, sxk=sxk, w_ptr=w_packed, swk=w_packed.stride(0), out_ptr=out,
                out_stride=out_stride, M=M, N=N, K=K, **ep_args)
    constexprs = dict(**ep_constexprs,
                      DOT_PRECISION="tf32" if (x.dtype == torch.float32 and allow_tf32) else "ieee",
                      DOT_UPCAST=interpret and x.dtype == torch.bfloat16,
                      USE_INT64=needs_int64(x, w_packed, out, epilogue.residual))
    configs = eligible_configs({**args, **constexprs})
    cfg = INTERPRET_CONFIG if interpret else configs[0]
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)
    return out, Launch(linear_kernel, linear_kernel_tuned, args, constexprs, grid, cfg, tuple(configs))


def linear(x, w_packed, *, epilogue=Epilogue(), out=None, allow_tf32=False):
    """out = epilogue(x @ w_packed); x [M, K] (or [..., K]), w_packed [K, N] -> [M, N] (or [..., N]).

    epilogue.bias is per output column (torch's linear bias). ``out`` may be a column slice.
    """
    out, launch = _plan_linear(x, w_packed, epilogue, out, allow_tf32, interpreting())
    run(launch)
    return out


def specialization(x_shape, dtype, n_out, epilogue=Epilogue(), *, allow_tf32=False, config=None) -> dict:
    """AOT specialization of :func:`linear` for x of ``x_shape`` ([..., K]) and N = ``n_out``.

    ``epilogue``: as passed to :func:`linear`, typically
    ``Epilogue.planned((*x_shape[:-1], n_out), dtype, ...)``.
    """
    x = meta_tensor(x_shape, dtype)
    w = meta_tensor((x_shape[-1], n_out), dtype)
    _, launch = _plan_linear(x, w, epilogue, None, allow_tf32, False)
    return spec_of(launch, config)
