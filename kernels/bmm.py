"""Batched matmul of two activations: out[b] = epilogue(a[b] @ b[b]), a [B, M, K], b [B, K, N].

Unlike :func:`matmul.linear`, neither operand is a weight packed ahead of time: both come
from the running model (attention's scores, a transposed view of an activation), so both
are read through their own three strides. A transpose is a swap of strides and costs
nothing: ``bmm(x, y.transpose(1, 2))`` reads y in place. A batch stride of 0 (a size-1
batch dim, broadcast) shares one operand across the batch.

Each program computes one BLOCK_M x BLOCK_N tile of one batch entry with ``tl.dot`` in fp32
(tensor cores for fp16/bf16; TF32 or exact IEEE fp32 for fp32 inputs, ``allow_tf32``),
then applies the shared epilogue (bias over N, activations, a residual [B, M, N]) and
stores once. Traffic per tile: BLOCK_M x K of a and K x BLOCK_N of b, so each element of a
is read cdiv(N, BLOCK_N) times and of b cdiv(M, BLOCK_M) times (mostly from L2: the tiles
of a batch entry run consecutively, in GROUP_M swizzled order), and the output once. The
loads are coalesced along whichever dim of an operand has stride 1 (K or M for a, N or K
for b); the JIT specializes unit strides, so the compiler sees which.

The output, like the residual, is viewed as B*M rows of N channels with one row stride:
it may be a channel slice of a wider buffer.
"""

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
    run,
    spec_of,
)
from .conv_common import dot_tier
from .epilogue import Epilogue, store_tile
from .matmul import INTERPRET_CONFIG, TIERED_CONFIGS
from .tiling import grouped_tile

# The configs and tiers of matmul.linear (same tiles, same register budget per tier): an
# operand without a unit stride, or with unaligned strides, takes the "medium" tier.
CONFIGS = [config for config, _ in TIERED_CONFIGS]


@triton.jit
def bmm_kernel(
    a_ptr, sab, sam, sak,       # a [B, M, K]: batch, row and column strides (batch stride 0: broadcast)
    b_ptr, sbb, sbk, sbn,       # b [B, K, N]: batch, row and column strides
    out_ptr, out_stride,        # output rows [B*M, N], row stride (column stride 1)
    M, N, K,
    bias_ptr, slope1_ptr, slope1_stride, res_ptr, res_stride,  # epilogue (see epilogue.py); residual rows [B*M, N]
    slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
    HAS_BIAS: tl.constexpr, ACT1: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" or "tf32" (fp32 inputs only)
    DOT_UPCAST: tl.constexpr,     # feed tl.dot fp32 (works around the interpreter's bf16 dot)
    USE_INT64: tl.constexpr,      # 64-bit offsets
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,        # row tiles per L2 swizzle group
):
    # -- which tile: the tiles of one batch entry are consecutive programs, in grouped order.
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    batch = pid // (num_m * num_n)
    pid_m, pid_n = grouped_tile(pid - batch * (num_m * num_n), num_m, num_n, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    bat = batch
    rows, cols = offs_m, offs_n
    if USE_INT64:
        bat = bat.to(tl.int64)
        rows = rows.to(tl.int64)
        cols = cols.to(tl.int64)
    a_ptrs = a_ptr + bat * sab + (rows[:, None] * sam + offs_k[None, :] * sak)
    b_ptrs = b_ptr + bat * sbb + (offs_k[:, None] * sbk + cols[None, :] * sbn)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = (k0 + offs_k) < K
        # BLOCK_M x BLOCK_K of a and BLOCK_K x BLOCK_N of b per step.
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if DOT_UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_K * sak
        b_ptrs += BLOCK_K * sbk

    # -- the epilogue and one store, into output row batch * M + m.
    store_tile(acc, batch * M + offs_m, offs_n, mask_m, mask_n, out_ptr, out_stride, bias_ptr, slope1_ptr,
               slope1_stride, res_ptr, res_stride, slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
               HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)


def _operand_aligned(t_ptr, strides) -> bool:
    """One unit stride (a contiguous dim to vectorize along) and the other strides multiples of 16."""
    unit = [s for s in strides if s == 1]
    return bool(unit) and aligned16(t_ptr) and all(s == 1 or aligned16(s) for s in strides)


def eligible_configs(args: dict) -> list:
    """The autotuning configs worth trying for these kernel arguments (matmul's tiers)."""
    aligned = (_operand_aligned(args["a_ptr"], (args["sab"], args["sam"], args["sak"]))
               and _operand_aligned(args["b_ptr"], (args["sbb"], args["sbk"], args["sbn"])))
    tier = dot_tier({**args, "x_ptr": args["a_ptr"]}, aligned)
    return [c for c, tiers in TIERED_CONFIGS if tier in tiers]


bmm_kernel_tuned = autotuned(bmm_kernel,
    CONFIGS, key=["M", "N", "K", "sam", "sak", "sbk", "sbn", "ACT1", "HAS_RES", "ACT2", "DOT_PRECISION"],
    restore_value=["out_ptr"],
    prune_configs_by={"early_config_prune": lambda configs, nargs, **kw: eligible_configs({**nargs, **kw})},
)


def _plan_bmm(a, b, epilogue, out, allow_tf32, interpret):
    check_io_dtype(a, "a")
    check_io_dtype(b, "b")
    if a.dim() != 3 or b.dim() != 3:
        raise KernelError(f"bmm expects a [B, M, K] and b [B, K, N], got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise KernelError(f"a and b must share a dtype, got {a.dtype} and {b.dtype}")
    (Ba, M, K), (Bb, Kb, N) = a.shape, b.shape
    if Kb != K:
        raise KernelError(f"inner dims differ: a is [.., {M}, {K}], b is [.., {Kb}, {N}]")
    if Ba != Bb and 1 not in (Ba, Bb):
        raise KernelError(f"batch dims {Ba} and {Bb} do not broadcast")
    B = max(Ba, Bb) if min(Ba, Bb) > 0 else 0
    a, b = a.expand(B, M, K), b.expand(B, K, N)     # a broadcast batch gets stride 0
    if out is None:
        out = torch.empty((B, M, N), dtype=a.dtype, device=a.device)
    check_io_dtype(out, "out")
    if tuple(out.shape) != (B, M, N):
        raise KernelError(f"out shape {tuple(out.shape)} != {(B, M, N)}")
    _, _, out_stride = check_writable_rows(out, "out")
    ep_args, ep_constexprs = epilogue.kernel_args(out, B * M, N)
    args = dict(a_ptr=a, sab=a.stride(0), sam=a.stride(1), sak=a.stride(2),
                b_ptr=b, sbb=b.stride(0), sbk=b.stride(1), sbn=b.stride(2),
                out_ptr=out, out_stride=out_stride, M=M, N=N, K=K, **ep_args)
    constexprs = dict(**ep_constexprs,
                      DOT_PRECISION="tf32" if (a.dtype == torch.float32 and allow_tf32) else "ieee",
                      DOT_UPCAST=interpret and a.dtype == torch.bfloat16,
                      USE_INT64=needs_int64(a, b, out, epilogue.residual))
    configs = eligible_configs({**args, **constexprs})
    cfg = INTERPRET_CONFIG if interpret else configs[0]
    grid = lambda meta: (B * triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)
    launch = Launch(bmm_kernel, bmm_kernel_tuned, args, constexprs, grid, cfg, tuple(configs))
    return out, (launch if B * M * N > 0 else None)


def bmm(a, b, *, epilogue=Epilogue(), out=None, allow_tf32=False):
    """out = epilogue(a @ b) per batch entry; a [B, M, K], b [B, K, N] -> [B, M, N].

    a, b       : one dtype (fp32, fp16 or bf16), any strides (a transposed view is free); a batch
                 dim of size 1 (or stride 0) broadcasts against the other's
    epilogue   : bias [N] over the output columns, act1, residual [B, M, N] (channel stride 1, one
                 row stride over its B*M rows), act2
    out        : optional [B, M, N] output (channel stride 1, one row stride: may be a channel slice)
    allow_tf32 : fp32 inputs may use TF32 tensor cores (else exact fp32)
    """
    out, launch = _plan_bmm(a, b, epilogue, out, allow_tf32, interpreting())
    if launch is not None:
        run(launch)
    return out


def specialization(a_shape, dtype, n_out, epilogue=Epilogue(), *, transpose_a=False, transpose_b=False,
                   b_batch=None, allow_tf32=False, config=None) -> dict:
    """AOT specialization of :func:`bmm` for a of ``a_shape`` ([B, M, K]) and N = ``n_out``.

    ``transpose_a`` / ``transpose_b``: the operand is a transposed view of a contiguous tensor
    (stride 1 along M for a, along K for b). ``b_batch``: b's batch size (1 broadcasts; default B).
    ``epilogue``: typically ``Epilogue.planned((B, M, n_out), dtype, ...)``.
    """
    B, M, K = a_shape
    a = meta_tensor((B, K, M), dtype).transpose(1, 2) if transpose_a else meta_tensor(a_shape, dtype)
    bb = B if b_batch is None else b_batch
    b = meta_tensor((bb, n_out, K), dtype).transpose(1, 2) if transpose_b else meta_tensor((bb, K, n_out), dtype)
    _, launch = _plan_bmm(a, b, epilogue, None, allow_tf32, False)
    return spec_of(launch, config)
