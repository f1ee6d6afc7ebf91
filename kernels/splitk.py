"""Split-K for the GEMM kernels (conv, linear): more programs when the output alone is too small.

A GEMM with few output tiles (batch 1: ResNet-50's last stages have M = 49 pixels) launches fewer
programs than the GPU has SMs, and most of the machine idles while each program walks a long K loop.
Split-K cuts that loop into SPLIT slices:

1. the GEMM's *partial* kernel runs a grid of tiles x SPLIT programs; program (tile, s) sums its
   slice of K and stores the fp32 tile, with no epilogue, into a workspace [SPLIT, M, N];
2. :func:`splitk_reduce_kernel` adds the SPLIT partial tiles in a fixed order (s = 0, 1, ...: the
   result is bit-for-bit the same on every run, unlike atomics), then applies the full epilogue
   (bias, activations, residual, channel-slice output, rounding to the output dtype) in one store.

The cost is the workspace round trip (SPLIT * M * N * 4 bytes written and read), so a split is only
taken when the tile grid does not cover the SMs even with the most parallel eligible config and each
slice keeps at least :data:`MIN_K_PER_SPLIT` of the reduction. :func:`choose_split` decides, as a
pure function of the shape, the configs and the SM count (108 on A100, 132 on H100/H200; on a GPU,
:func:`device_sm_count` reads it), so the decision is testable without a GPU.
"""

from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from ._host import Launch, needs_int64, run, spec_of
from .epilogue import Epilogue, store_tile

# Each slice keeps at least this much of the reduction (elements of K: 4 BLOCK_K steps of 32, 2 of
# 64): a shorter slice is mostly its pipeline's prologue, and its 8 bytes of workspace traffic per
# output (an fp32 write and read, from L2 at these sizes) weigh more than its 128 multiply-adds.
MIN_K_PER_SPLIT = 128
# Beyond this many slices the reduction kernel's reads dominate.
MAX_SPLIT = 16
# SM counts of the GPUs netdsl is built for (the ``sm_count`` of :func:`choose_split`).
SM_COUNTS = {"A100": 108, "H100": 132, "H200": 132}

# The reduction is memory-bound: wide along the contiguous channels, few rows per program.
REDUCE_CONFIG = triton.Config({"BLOCK_M": 16, "BLOCK_N": 128}, num_warps=4, num_stages=1)
REDUCE_INTERPRET_CONFIG = triton.Config({"BLOCK_M": 8, "BLOCK_N": 16}, num_warps=4, num_stages=1)


def device_sm_count(t: torch.Tensor) -> Optional[int]:
    """The SM count of ``t``'s GPU; None off a GPU (interpreter, meta tensors): then no automatic split."""
    if t.device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(t.device).multi_processor_count


def tiles_of(config: triton.Config, m: int, n: int, groups: int = 1) -> int:
    """Output tiles (programs without split-K) of a GEMM [m, n] per group, ``groups`` groups."""
    kw = config.kwargs
    return triton.cdiv(m, kw["BLOCK_M"]) * triton.cdiv(n, kw["BLOCK_N"]) * groups


def k_steps_of(config: triton.Config, k_per_tap: int, taps: int = 1) -> int:
    """BLOCK_K steps of the K loop: ``taps`` runs of ``k_per_tap`` (conv: KH*KW taps of ICg channels)."""
    return taps * triton.cdiv(k_per_tap, config.kwargs["BLOCK_K"])


def useful_split(split: int, k_steps: int) -> int:
    """``split`` capped so that no slice is empty: slice s of the kernels takes the K steps
    [s * k_steps // split, (s + 1) * k_steps // split), all non-empty when split <= k_steps."""
    return max(1, min(split, k_steps))


def choose_split(m: int, n: int, k_per_tap: int, configs: Sequence[triton.Config], sm_count: Optional[int], *,
                 taps: int = 1, groups: int = 1) -> tuple[triton.Config, int]:
    """(config, split) for a GEMM of [m, n] outputs per group over K = taps * k_per_tap.

    ``configs``: the eligible configs, the default first. Split 1 (the default config: the autotuner
    still picks the tile) when no SM count is known, when some config's grid covers ``sm_count``
    SMs, or when K is too short to cut (MIN_K_PER_SPLIT per slice). Otherwise, for each config, the
    smallest split whose grid covers the SMs (capped by K and MAX_SPLIT); the config that fills the
    most SMs wins, then the one with the fewest slices (least workspace), then config order.
    """
    default = (configs[0], 1)
    if not sm_count or not configs:
        return default
    if max(tiles_of(c, m, n, groups) for c in configs) >= sm_count:
        return default
    k_limit = min(MAX_SPLIT, (taps * k_per_tap) // MIN_K_PER_SPLIT)
    if k_limit < 2:
        return default
    best, best_key = default, None
    for i, config in enumerate(configs):
        tiles = tiles_of(config, m, n, groups)
        split = useful_split(min(k_limit, triton.cdiv(sm_count, tiles)), k_steps_of(config, k_per_tap, taps))
        key = (-min(tiles * split, sm_count), split, i)
        if best_key is None or key < best_key:
            best, best_key = (config, split), key
    return best if best[1] > 1 else default


def workspace(split: int, rows: int, cols: int, device) -> torch.Tensor:
    """The fp32 partial tiles [split, rows, cols] (every element is written by a partial kernel)."""
    return torch.empty((split, rows, cols), dtype=torch.float32, device=device)


@triton.jit
def split_range(k_steps, splits):
    """[lo, hi) of the K steps of this program's slice (program id 2 of a split-K partial kernel's grid):
    the slices differ by at most one step."""
    s = tl.program_id(2)
    return s * k_steps // splits, (s + 1) * k_steps // splits


@triton.jit
def store_partial(acc, ws_ptr, rows, cols, mask_rows, mask_cols, M, N, USE_INT64: tl.constexpr):
    """Store the fp32 tile of slice program_id(2) into the workspace [SPLIT, M, N] (no epilogue)."""
    s = tl.program_id(2)
    r = rows
    if USE_INT64:
        r = r.to(tl.int64)
        s = s.to(tl.int64)
    ptrs = ws_ptr + s * M * N + r[:, None] * N + cols[None, :]
    tl.store(ptrs, acc, mask=mask_rows[:, None] & mask_cols[None, :])


@triton.jit
def splitk_reduce_kernel(
    ws_ptr,                     # fp32 partial tiles [SPLIT, M, N], contiguous
    M, N, splits,               # rows, columns, slices
    out_ptr, out_stride,        # output [M, N] rows (channel stride 1; may be a channel slice)
    bias_ptr, slope1_ptr, slope1_stride, res_ptr, res_stride,  # epilogue (see epilogue.py)
    slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
    HAS_BIAS: tl.constexpr, ACT1: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    USE_INT64: tl.constexpr,    # 64-bit offsets
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = rows < M
    mask_n = cols < N
    mask = mask_m[:, None] & mask_n[None, :]
    r = rows
    if USE_INT64:
        r = r.to(tl.int64)
    ptrs = ws_ptr + r[:, None] * N + cols[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # slices in a fixed order: a deterministic sum. Each reads BLOCK_M x BLOCK_N fp32 once.
    for s in range(0, splits):
        acc += tl.load(ptrs, mask=mask, other=0.0)
        ptrs += M * N
    store_tile(acc, rows, cols, mask_m, mask_n, out_ptr, out_stride, bias_ptr, slope1_ptr, slope1_stride,
               res_ptr, res_stride, slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
               HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)


def plan_reduce(ws: torch.Tensor, out: torch.Tensor, out_stride: int, epilogue: Epilogue,
                interpret: bool) -> Launch:
    """The reduction launch: out = epilogue(sum over slices of ws), ws [SPLIT, M, N]."""
    split, M, N = ws.shape
    ep_args, ep_constexprs = epilogue.kernel_args(out, M, N)
    args = dict(ws_ptr=ws, M=M, N=N, splits=split, out_ptr=out, out_stride=out_stride, **ep_args)
    constexprs = dict(**ep_constexprs, USE_INT64=needs_int64(ws, out, epilogue.residual))
    cfg = REDUCE_INTERPRET_CONFIG if interpret else REDUCE_CONFIG
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]))
    return Launch(splitk_reduce_kernel, None, args, constexprs, grid, cfg, (cfg,))


def run_all(launches) -> None:
    """Run a plan's launch, or its launches in order (split-K: partial sums, then the reduction)."""
    for launch in launches if isinstance(launches, list) else [launches]:
        run(launch)


def specs_of(launches, config=None):
    """AOT specs of a plan: ``spec_of(launch, config)`` for one launch; for a split-K plan a list, the
    partial kernel's spec(s) under ``config`` (see spec_of: None is the chosen config), then the reduction's."""
    if not isinstance(launches, list):
        return spec_of(launches, config)
    partial, reduce = launches
    first = spec_of(partial, config)
    return [*(first if isinstance(first, list) else [first]), spec_of(reduce)]
