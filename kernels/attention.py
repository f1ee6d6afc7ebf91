"""Scaled dot-product attention, forward only, FlashAttention style.

out[b, h, i, :] = sum_j softmax_j(scale * q[b, h, i] . k[b, h, j] + mask[b, h, i, j]) * v[b, h, j, :]

exactly torch.nn.functional.scaled_dot_product_attention (its ``attn_mask``, ``is_causal``
and ``scale``). The naive way writes the [L, S] score matrix of every head to memory and
reads it back twice (softmax, then the product with V): O(L * S) traffic per head, which
dominates for long sequences. Here the scores never leave registers. A program owns
BLOCK_M query rows of one (batch, head); it keeps its Q tile in registers and walks the
keys in BLOCK_N tiles:

    s = (q @ k_tile^T) * scale (+ mask tile)            BLOCK_M x BLOCK_N, fp32, registers only
    m_new = max(m, rowmax(s))                           running row maximum
    p = exp(s - m_new);  l = l * exp(m - m_new) + rowsum(p)
    acc = acc * exp(m - m_new) + p @ v_tile             fp32 accumulator, BLOCK_M x Ev

and divides by l once at the end (the online softmax: rescaling by exp(m_old - m_new)
makes the result independent of the order in which key tiles arrive). Exponentials are
exp2 with log2(e) folded into the scale. Both products are ``tl.dot``: tensor cores for
fp16/bf16 (P is cast to V's dtype, as FlashAttention does), exact IEEE fp32 or TF32 for
fp32 (``allow_tf32``), always with fp32 accumulation.

Memory traffic per (batch, head): Q read once, O written once, K and V read once per
query tile (cdiv(L, BLOCK_M) times, mostly from L2: the programs of one head run next to
each other). A mask that varies along the queries is read once per head, a BLOCK_M x
BLOCK_N tile per step; a mask that does not (key padding, [B, 1, 1, S]: stride 0 along L)
is read as one BLOCK_N row per step, which also keeps its registers out of the loop.

Loads along the head dim vectorize when every row starts 16-byte aligned. The JIT only
proves that for strides that are multiples of 16 elements; the host computes the largest
power of two dividing all row/head strides (``row_alignment``: 8 for E = 40) and the kernel
states it with ``tl.multiple_of``, so E = 40 or 72 in fp16 still loads 16 bytes at a time.

Causal attention (top-left aligned, as torch: query i sees keys j <= i) skips the key
tiles above the diagonal entirely; key tiles fully below it run without the causal
compare, only the tiles that straddle the diagonal apply it. The longest query tiles are
scheduled first so the short ones fill the tail.

Masks: ``mask`` broadcasts to [B, H, L, S] (any strides, stride 0 along broadcast dims);
a boolean mask keeps the True positions, a float mask is added to the scaled scores.
``causal`` and ``mask`` may be combined (both apply), as in torch 2.13.

Fully masked rows (no key left: a boolean mask that is False along a whole row, a float
mask of -inf along it, S = 0) give an output row of zeros, as torch 2.13's
scaled_dot_product_attention does (its "safe softmax"), not NaN: such a row ends with a
zero running sum and the final division is guarded.

The head dims E (of q and k) and Ev (of v) are compile-time constants padded to the next
power of two (>= 16, tl.dot's minimum): E = 80 runs in a 128-wide block with the extra
lanes masked to zero. E and Ev may be at most MAX_HEAD_DIM.
"""

import math

import numpy as np
import torch
import triton
import triton.language as tl

from ._host import (
    KernelError,
    Launch,
    aligned16,
    autotuned,
    check_io_dtype,
    interpreting,
    meta_tensor,
    needs_int64,
    run,
    spec_of,
)

MAX_HEAD_DIM = 128
LOG2E = 1.4426950408889634

# Mask kinds (the MASK_KIND constexpr).
MASK_NONE, MASK_BOOL, MASK_ADD = 0, 1, 2


def _cfg(block_m, block_n, warps, stages):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)


# Autotuning configs, tagged with the tiers they are tried in: the dot kind -- "half"
# (fp16/bf16 tensor cores), "tf32" (fp32 operands on tensor cores: twice the registers and
# shared memory of half) or "fma" (exact fp32 on CUDA cores: both operands of every dot in
# registers, so small tiles only) -- and the padded head dim ("d64": <= 64, "d128": <= 128),
# or "narrow" when the rows of q, k, v are not 16-byte aligned (a head dim like 36 or 100 in
# fp16): loads then move 2-8 bytes at a time and hold many more addresses in registers.
# BLOCK_M is a multiple of BLOCK_N in every config, so a causal query tile straddles exactly
# BLOCK_M / BLOCK_N diagonal key tiles. Every (config, tier) builds with 0 spills on sm_80 and
# sm_90 with and without causal masking and per-row masks (tests/kernels/aot_sweep.py); the
# first config of a tier is its GPU default.
TIERED_CONFIGS = [
    (_cfg(128, 64, 8, 3), ("half-d64",)),
    (_cfg(64, 64, 4, 3), ("half-d64",)),
    (_cfg(64, 32, 4, 4), ("half-d64",)),
    (_cfg(128, 32, 8, 3), ("half-d128",)),
    (_cfg(128, 32, 8, 2), ("half-d128",)),
    (_cfg(128, 16, 8, 3), ("half-d128", "half-narrow")),
    (_cfg(64, 32, 4, 2), ("tf32-d64",)),
    (_cfg(64, 16, 8, 2), ("tf32-narrow",)),
    (_cfg(32, 32, 8, 2), ("tf32-d64", "tf32-d128", "tf32-narrow", "fma-d64")),
    (_cfg(32, 16, 8, 2), ("fma-d64", "fma-d128")),
    (_cfg(32, 16, 4, 2), ("fma-d64",)),
    (_cfg(16, 16, 4, 2), ("fma-narrow",)),
]
CONFIGS = [config for config, _ in TIERED_CONFIGS]
# Under the interpreter: tiles smaller than the test shapes, so row, key and causal masking all run.
INTERPRET_CONFIG = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)


@triton.jit
def _row_offsets(rows, stride, ALIGN: tl.constexpr):
    """rows[:, None] * stride, telling the compiler what the host proved: every row starts at a
    multiple of ALIGN elements (so loads along the contiguous head dim vectorize even when the
    stride is not a multiple of 16, e.g. E = 40)."""
    offs = rows[:, None] * stride
    if ALIGN > 1:
        offs = tl.multiple_of(offs, [ALIGN, ALIGN])
    return offs


@triton.jit
def _head_offset(b, h, stride_b, stride_h, ALIGN: tl.constexpr):
    """Offset of head (b, h), a multiple of ALIGN elements (see _row_offsets)."""
    off = b * stride_b + h * stride_h
    if ALIGN > 1:
        off = tl.multiple_of(off, ALIGN)
    return off


@triton.jit
def _attend_key_tiles(
    acc, m_i, l_i,              # running state: [BM, BEV] fp32 output sum, [BM] max (log2 units), [BM] sum
    q,                          # [BM, BE] query tile (registers)
    k_base, sks,                # this head's K [S, E] and its row stride
    v_base, svs,                # this head's V [S, Ev] and its row stride
    mask_base, sml, sms,        # this head's mask [L, S] and its strides (read iff MASK_KIND)
    offs_m, offs_e, offs_ev,    # query rows, head-dim lanes of q/k, lanes of v
    lo, hi,                     # key range [lo, hi) to walk, in BLOCK_N steps
    S, L, qk_scale,             # keys, queries, scale * log2(e)
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
    MASK_KIND: tl.constexpr,    # 0 none, 1 boolean (nonzero = attend), 2 additive
    MASK_2D: tl.constexpr,      # the mask varies along the query rows (else one [S] row: key padding)
    DIAGONAL: tl.constexpr,     # apply the causal compare (tiles straddling the diagonal)
    DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, USE_INT64: tl.constexpr,
    QKV_ALIGN: tl.constexpr, MASK_ALIGN: tl.constexpr,  # proven row alignments (elements)
    BLOCK_N: tl.constexpr,
):
    """The online softmax over key tiles [lo, hi): returns the updated (acc, m_i, l_i)."""
    lanes_e = offs_e < HEAD_DIM
    lanes_ev = offs_ev < HEAD_DIM_V
    in_rows = offs_m < L
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_keys = offs_n < S
        if USE_INT64:
            offs_n = offs_n.to(tl.int64)
        # K tile: BLOCK_N rows of E contiguous elements.
        k = tl.load(k_base + (_row_offsets(offs_n, sks, QKV_ALIGN) + offs_e[None, :]),
                    mask=in_keys[:, None] & lanes_e[None, :], other=0.0)
        if DOT_UPCAST:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        valid = in_keys[None, :]
        if MASK_KIND != 0:
            if MASK_2D:
                # BLOCK_M x BLOCK_N mask elements (each read once per head when the mask is per head).
                mval = tl.load(mask_base + (_row_offsets(offs_m, sml, MASK_ALIGN) + offs_n[None, :] * sms),
                               mask=in_rows[:, None] & in_keys[None, :], other=0)
            else:
                # the same mask for every query row (key padding): BLOCK_N elements.
                mval = tl.load(mask_base + offs_n * sms, mask=in_keys, other=0)[None, :]
            if MASK_KIND == 1:
                valid = valid & (mval != 0)
            else:
                s = s + mval.to(tl.float32) * 1.4426950408889634
        if DIAGONAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # while a row has seen only masked keys its maximum is -inf: measure from 0 instead, so
        # exp2(-inf - -inf) never makes a NaN (p and the correction are then exactly 0).
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        correction = tl.exp2(m_i - m_ref)
        p = tl.exp2(s - m_ref[:, None])
        l_i = l_i * correction + tl.sum(p, axis=1)
        # V tile: BLOCK_N rows of Ev contiguous elements.
        v = tl.load(v_base + (_row_offsets(offs_n, svs, QKV_ALIGN) + offs_ev[None, :]),
                    mask=in_keys[:, None] & lanes_ev[None, :], other=0.0)
        p = p.to(v.dtype)
        if DOT_UPCAST:
            p = p.to(tl.float32)
            v = v.to(tl.float32)
        acc = tl.dot(p, v, acc * correction[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def attention_fwd_kernel(
    q_ptr, sqb, sqh, sql,       # q [B, H, L, E]: batch, head and row strides (last dim stride 1)
    k_ptr, skb, skh, sks,       # k [B, H, S, E]
    v_ptr, svb, svh, svs,       # v [B, H, S, Ev]
    o_ptr, sob, soh, sol,       # out [B, H, L, Ev]
    mask_ptr, smb, smh, sml, sms,  # mask [B, H, L, S] (strides 0 where broadcast; read iff MASK_KIND)
    H, L, S,                    # heads, queries, keys
    qk_scale,                   # scale * log2(e) (fp32)
    HEAD_DIM: tl.constexpr,     # E
    HEAD_DIM_V: tl.constexpr,   # Ev
    MASK_KIND: tl.constexpr,    # 0 none, 1 boolean (as uint8), 2 additive float
    MASK_2D: tl.constexpr,      # mask stride along L is not 0 (else a key-padding row, read as [S])
    CAUSAL: tl.constexpr,       # query i attends to keys j <= i only
    DOT_PRECISION: tl.constexpr,  # "ieee" or "tf32" (fp32 inputs only)
    DOT_UPCAST: tl.constexpr,   # feed tl.dot fp32 (works around the interpreter's bf16 dot)
    USE_INT64: tl.constexpr,    # 64-bit offsets
    QKV_ALIGN: tl.constexpr,    # every head and row of q, k, v, out starts at a multiple of this (elements)
    MASK_ALIGN: tl.constexpr,   # the same for the mask's heads and rows
    BLOCK_M: tl.constexpr,      # query rows per program
    BLOCK_N: tl.constexpr,      # keys per step
    BLOCK_E: tl.constexpr,      # E padded to a power of two
    BLOCK_EV: tl.constexpr,     # Ev padded to a power of two
):
    # -- which tile: the query tiles of one (batch, head) are consecutive programs (K, V shared in L2).
    pid = tl.program_id(0)
    num_m = tl.cdiv(L, BLOCK_M)
    bh = pid // num_m
    pid_m = pid - bh * num_m
    if CAUSAL:
        pid_m = num_m - 1 - pid_m           # the longest (last) query tiles first
    b = bh // H
    h = bh - b * H
    if USE_INT64:
        b = b.to(tl.int64)
        h = h.to(tl.int64)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, BLOCK_E)
    offs_ev = tl.arange(0, BLOCK_EV)
    rows = offs_m
    if USE_INT64:
        rows = rows.to(tl.int64)

    # -- Q tile: read once, BLOCK_M rows of E contiguous elements, kept in registers.
    q = tl.load(q_ptr + _head_offset(b, h, sqb, sqh, QKV_ALIGN) + (_row_offsets(rows, sql, QKV_ALIGN)
                                                                    + offs_e[None, :]),
                mask=(offs_m < L)[:, None] & (offs_e < HEAD_DIM)[None, :], other=0.0)
    if DOT_UPCAST:
        q = q.to(tl.float32)
    k_base = k_ptr + _head_offset(b, h, skb, skh, QKV_ALIGN)
    v_base = v_ptr + _head_offset(b, h, svb, svh, QKV_ALIGN)
    mask_base = mask_ptr + _head_offset(b, h, smb, smh, MASK_ALIGN)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_EV), dtype=tl.float32)
    if CAUSAL:
        # keys below every row of the tile (j < start_m): no causal compare needed.
        full_end = tl.minimum(start_m - start_m % BLOCK_N, S)
        acc, m_i, l_i = _attend_key_tiles(acc, m_i, l_i, q, k_base, sks, v_base, svs, mask_base, sml, sms,
                                          rows, offs_e, offs_ev, 0, full_end, S, L, qk_scale,
                                          HEAD_DIM, HEAD_DIM_V, MASK_KIND, MASK_2D, False, DOT_PRECISION, DOT_UPCAST,
                                          USE_INT64, QKV_ALIGN, MASK_ALIGN, BLOCK_N)
        # keys straddling the diagonal; tiles past the last row's key (j > start_m + BLOCK_M - 1) are skipped.
        acc, m_i, l_i = _attend_key_tiles(acc, m_i, l_i, q, k_base, sks, v_base, svs, mask_base, sml, sms,
                                          rows, offs_e, offs_ev, full_end, tl.minimum(start_m + BLOCK_M, S), S, L,
                                          qk_scale, HEAD_DIM, HEAD_DIM_V, MASK_KIND, MASK_2D, True, DOT_PRECISION,
                                          DOT_UPCAST, USE_INT64, QKV_ALIGN, MASK_ALIGN, BLOCK_N)
    else:
        acc, m_i, l_i = _attend_key_tiles(acc, m_i, l_i, q, k_base, sks, v_base, svs, mask_base, sml, sms,
                                          rows, offs_e, offs_ev, 0, S, S, L, qk_scale,
                                          HEAD_DIM, HEAD_DIM_V, MASK_KIND, MASK_2D, False, DOT_PRECISION, DOT_UPCAST,
                                          USE_INT64, QKV_ALIGN, MASK_ALIGN, BLOCK_N)

    # -- normalise once; a row that saw no unmasked key has l = 0 and acc = 0: it stays 0 (as torch).
    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    # -- one write: BLOCK_M rows of Ev contiguous elements.
    tl.store(o_ptr + _head_offset(b, h, sob, soh, QKV_ALIGN) + (_row_offsets(rows, sol, QKV_ALIGN) + offs_ev[None, :]),
             out.to(o_ptr.dtype.element_ty), mask=(offs_m < L)[:, None] & (offs_ev < HEAD_DIM_V)[None, :])


def row_alignment(*tensors) -> int:
    """The largest power of two <= 16 dividing every stride but the last of these views (dims of
    size 1 are never stepped along and do not count): the QKV_ALIGN / MASK_ALIGN constexprs."""
    align = 16
    for t in tensors:
        for size, stride in zip(t.shape[:-1], t.stride()[:-1]):
            while size > 1 and stride % align:
                align //= 2
    return align


def head_block(dim: int) -> int:
    """The power-of-two block (>= 16, tl.dot's minimum) a head dim is padded to."""
    return max(16, triton.next_power_of_2(dim))


def attention_tier(args: dict) -> str:
    """half/tf32/fma-d64/d128/narrow: which configs suit these kernel arguments (see TIERED_CONFIGS)."""
    q = args["q_ptr"]
    if q.dtype != torch.float32:
        kind = "half"
    else:
        kind = "tf32" if args["DOT_PRECISION"] == "tf32" else "fma"
    if args["QKV_ALIGN"] * q.element_size() < 16 or not all(
            aligned16(args[p]) for p in ("q_ptr", "k_ptr", "v_ptr", "o_ptr")):
        return f"{kind}-narrow"
    width = max(args["BLOCK_E"], args["BLOCK_EV"])
    return f"{kind}-{'d64' if width <= 64 else 'd128'}"


def eligible_configs(args: dict) -> list:
    """The autotuning configs of this tier; short query sequences skip BLOCK_M = 128 (idle rows)."""
    tier = attention_tier(args)
    configs = [c for c, tiers in TIERED_CONFIGS if tier in tiers]
    short = [c for c in configs if c.kwargs["BLOCK_M"] <= 64]
    return short if args["L"] <= 64 and short else configs


attention_fwd_kernel_tuned = autotuned(attention_fwd_kernel,
    CONFIGS, key=["L", "S", "HEAD_DIM", "HEAD_DIM_V", "MASK_KIND", "MASK_2D", "CAUSAL", "DOT_PRECISION", "QKV_ALIGN"],
    prune_configs_by={"early_config_prune": lambda configs, nargs, **kw: eligible_configs({**nargs, **kw})},
)


def _check_qkv(t, name):
    check_io_dtype(t, name)
    if t.dim() != 4:
        raise KernelError(f"{name} must be [B, H, {'L' if name == 'q' else 'S'}, dim], got shape {tuple(t.shape)}")
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        raise KernelError(f"{name}: the last (head) dim must have stride 1, got strides {tuple(t.stride())}")


def _plan_attention(q, k, v, mask, causal, scale, out, allow_tf32, interpret):
    for t, name in ((q, "q"), (k, "k"), (v, "v")):
        _check_qkv(t, name)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise KernelError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    L, E = q.shape[2], q.shape[3]
    S, Ev = k.shape[2], v.shape[3]
    if k.shape[3] != E or v.shape[2] != S:
        raise KernelError(f"k must be [B, H, S, E={E}] and v [B, H, S={S}, Ev]; got k {tuple(k.shape)}, "
                          f"v {tuple(v.shape)}")
    if not (1 <= E <= MAX_HEAD_DIM and 1 <= Ev <= MAX_HEAD_DIM):
        raise KernelError(f"head dims must be in [1, {MAX_HEAD_DIM}], got E={E}, Ev={Ev}")
    try:  # numpy's rule is torch's, without importing sympy (torch's first broadcast_shapes call does)
        B, H = np.broadcast_shapes(tuple(q.shape[:2]), tuple(k.shape[:2]), tuple(v.shape[:2]))
    except ValueError:
        raise KernelError(f"batch/head dims of q {tuple(q.shape[:2])}, k {tuple(k.shape[:2])} and "
                          f"v {tuple(v.shape[:2])} do not broadcast") from None
    q, k, v = q.expand(B, H, L, E), k.expand(B, H, S, E), v.expand(B, H, S, Ev)

    if out is None:
        out = torch.empty((B, H, L, Ev), dtype=q.dtype, device=q.device)
    check_io_dtype(out, "out")
    if tuple(out.shape) != (B, H, L, Ev):
        raise KernelError(f"out shape {tuple(out.shape)} != {(B, H, L, Ev)}")
    if Ev > 1 and out.stride(3) != 1:
        raise KernelError(f"out: the last dim must have stride 1, got strides {tuple(out.stride())}")
    if any(size > 1 and stride == 0 for size, stride in zip(out.shape, out.stride())):
        raise KernelError("out must not be a broadcast (stride 0) view")
    if L > 1 and abs(out.stride(2)) < Ev:
        raise KernelError(f"out rows overlap (row stride {out.stride(2)} < Ev = {Ev})")

    kind, mask_view = MASK_NONE, out
    if mask is not None:
        if mask.dtype == torch.bool:
            kind = MASK_BOOL
        else:
            check_io_dtype(mask, "mask")
            kind = MASK_ADD
        try:
            mask_view = mask.expand(B, H, L, S)
        except RuntimeError:
            raise KernelError(f"mask of shape {tuple(mask.shape)} does not broadcast to {(B, H, L, S)}") from None
        if kind == MASK_BOOL:
            mask_view = mask_view.view(torch.uint8)     # same bytes; Triton reads 0/1
    m_strides = mask_view.stride() if mask is not None else (0, 0, 0, 0)

    if scale is None:
        scale = 1.0 / math.sqrt(E)
    scale = float(scale)
    if not math.isfinite(scale):
        raise KernelError(f"scale must be finite, got {scale}")

    args = dict(q_ptr=q, sqb=q.stride(0), sqh=q.stride(1), sql=q.stride(2),
                k_ptr=k, skb=k.stride(0), skh=k.stride(1), sks=k.stride(2),
                v_ptr=v, svb=v.stride(0), svh=v.stride(1), svs=v.stride(2),
                o_ptr=out, sob=out.stride(0), soh=out.stride(1), sol=out.stride(2),
                mask_ptr=mask_view, smb=m_strides[0], smh=m_strides[1], sml=m_strides[2], sms=m_strides[3],
                H=H, L=L, S=S, qk_scale=scale * LOG2E)
    constexprs = dict(HEAD_DIM=E, HEAD_DIM_V=Ev, MASK_KIND=kind,
                      MASK_2D=kind != MASK_NONE and L > 1 and m_strides[2] != 0, CAUSAL=bool(causal),
                      DOT_PRECISION="tf32" if (q.dtype == torch.float32 and allow_tf32) else "ieee",
                      DOT_UPCAST=interpret and q.dtype == torch.bfloat16,
                      USE_INT64=needs_int64(q, k, v, out, mask_view if mask is not None else None),
                      QKV_ALIGN=row_alignment(q, k, v, out),
                      MASK_ALIGN=row_alignment(mask_view) if mask is not None else 16,
                      BLOCK_E=head_block(E), BLOCK_EV=head_block(Ev))
    configs = eligible_configs({**args, **constexprs})
    cfg = INTERPRET_CONFIG if interpret else configs[0]
    grid = lambda meta: (triton.cdiv(L, meta["BLOCK_M"]) * B * H,)
    launch = Launch(attention_fwd_kernel, attention_fwd_kernel_tuned, args, constexprs, grid, cfg, tuple(configs))
    return out, (launch if B * H * L > 0 else None)


def attention(q, k, v, *, mask=None, causal=False, scale=None, out=None, allow_tf32=False):
    """softmax(scale * q @ k^T (+ mask, causal)) @ v, as torch's scaled_dot_product_attention.

    q          : [B, H, L, E]; k: [B, H, S, E]; v: [B, H, S, Ev] -- one dtype (fp32, fp16 or bf16),
                 any strides with the last dim contiguous; B and H broadcast (size 1 or stride 0)
    mask       : None, or broadcastable to [B, H, L, S]: bool (True = attend) or float (added to the
                 scaled scores), any strides
    causal     : query i attends to keys j <= i (top-left aligned); combines with ``mask``
    scale      : defaults to 1 / sqrt(E)
    out        : optional [B, H, L, Ev] output (any strides, last dim contiguous, any I/O dtype)
    allow_tf32 : fp32 inputs may use TF32 tensor cores (else exact fp32)

    Returns ``out`` (q's dtype when allocated). A query row left with no key (fully masked)
    is all zeros, as in torch. E and Ev are at most MAX_HEAD_DIM (128).
    """
    out, launch = _plan_attention(q, k, v, mask, causal, scale, out, allow_tf32, interpreting())
    if launch is not None:
        run(launch)
    return out


def specialization(q_shape, dtype, s_len=None, *, ev=None, mask_shape=None, mask_dtype=torch.bool, causal=False,
                   allow_tf32=False, config=None) -> dict:
    """AOT specialization of :func:`attention` for contiguous q [B, H, L, E], k [B, H, S, E], v [B, H, S, Ev].

    ``s_len``: S (default L); ``ev``: Ev (default E); ``mask_shape``: None or a shape broadcastable to
    [B, H, L, S] (e.g. (B, 1, 1, S) key padding) of ``mask_dtype`` (bool or a float dtype).
    ``config``: None = the default config, an index into the eligible configs, or "all".
    """
    B, H, L, E = q_shape
    S = L if s_len is None else s_len
    Ev = E if ev is None else ev
    mask = meta_tensor(mask_shape, mask_dtype) if mask_shape is not None else None
    _, launch = _plan_attention(meta_tensor(q_shape, dtype), meta_tensor((B, H, S, E), dtype),
                                meta_tensor((B, H, S, Ev), dtype), mask, causal, None, None, allow_tf32, False)
    return spec_of(launch, config)
