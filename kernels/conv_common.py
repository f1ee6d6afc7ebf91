"""Host-side pieces shared by the convolution kernels (and the tensor-core tiers by matmul).

The import arrows run one way: ``conv_common`` imports no kernel module (only ``_host`` and
``epilogue``); ``conv_direct``, ``conv_transpose``, ``conv``, ``matmul`` (the tiers), ``pool``
and ``upsample`` (argument checks) import it, and ``conv`` imports ``conv_direct`` to hand it
depthwise convolutions. Nothing here launches a kernel.

* argument normalisation and checks: :func:`pair`, :func:`check_nhwc`, :func:`check_packed`,
  :func:`conv_out`, :func:`check_conv_args`;
* geometry: :func:`conv_output_size`, :func:`is_depthwise`;
* which autotuning tier a ``tl.dot`` kernel's configs come from: :func:`dot_tier`; the sm_90-only
  configs (BLOCK_K 64, tiles up to 128x256) and their pruning by problem shape: :func:`hopper_configs`.
"""

import operator
from typing import Optional

import torch
import triton

from ._host import KernelError, aligned16, check_io_dtype, check_writable_rows
from .epilogue import CHEAP_ACTS, heavy_epilogue


def pair(v, name: str = "argument") -> tuple:
    """An int or an (h, w) pair of ints (anything with ``__index__``) -> (h, w) Python ints."""
    try:
        if not isinstance(v, (tuple, list)):
            i = operator.index(v)
            return (i, i)
        h, w = v
        return (operator.index(h), operator.index(w))
    except (TypeError, ValueError):
        raise KernelError(f"{name} must be an int or a pair of ints, got {v!r}") from None


_pair = pair   # the name conv.py and conv_direct.py used to share


def conv_output_size(size: int, kernel: int, stride: int, padding, dilation: int) -> int:
    """The conv2d output size along one axis; ``padding``: one pad for both ends (torch), or (begin, end)."""
    begin, end = padding if isinstance(padding, tuple) else (padding, padding)
    return (size + begin + end - dilation * (kernel - 1) - 1) // stride + 1


def conv_pads(padding) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a padding given as p, (ph, pw) or (top, left, bottom, right). The
    kernels read only the top/left offset and mask past the input's end, so bottom/right only size the
    output."""
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        return tuple(int(p) for p in padding)
    ph, pw = pair(padding, "padding")
    return (ph, pw, ph, pw)


def is_depthwise(in_channels: int, groups: int) -> bool:
    """One input channel per group (and more than one group): handled by the direct kernel.

    A conv with groups == 1 is a GEMM even when it has a single input channel (LeNet's first
    layer): it stays on the implicit GEMM and its tensor cores.
    """
    return groups > 1 and groups == in_channels


def check_nhwc(x: torch.Tensor, name: str = "x") -> tuple:
    """x must be an fp32/fp16/bf16 NHWC tensor with channel stride 1; returns (N, H, W, C)."""
    check_io_dtype(x, name)
    if x.dim() != 4:
        raise KernelError(f"{name} must be NHWC [N, H, W, C], got shape {tuple(x.shape)}")
    if x.shape[3] > 1 and x.stride(3) != 1:
        raise KernelError(f"{name} must be channels-last with channel stride 1")
    return tuple(x.shape)


def check_packed(packed: torch.Tensor, shape: tuple, packer: str) -> None:
    """A packed weight must have exactly ``shape`` and be contiguous (``packer`` made it)."""
    if tuple(packed.shape) != tuple(shape):
        raise KernelError(f"packed weight shape {tuple(packed.shape)} != {tuple(shape)} (use {packer})")
    if not packed.is_contiguous():
        raise KernelError("packed weight must be contiguous")
    check_io_dtype(packed, "packed weight")


def conv_out(x: torch.Tensor, out, shape: tuple):
    """The output (allocated like x when None) checked to be ``shape`` with writable rows.

    Returns (out, out_row_stride)."""
    if out is None:
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
    check_io_dtype(out, "out")
    if tuple(out.shape) != tuple(shape):
        raise KernelError(f"out shape {tuple(out.shape)} != {tuple(shape)}")
    _, _, out_stride = check_writable_rows(out, "out")
    return out, out_stride


def check_conv_args(x, packed, out_channels, kernel_size, stride, padding, dilation, groups, out):
    """Shared shape checks of conv2d and depthwise_conv2d; returns (geometry dict, out)."""
    N, H, W, C_in = check_nhwc(x)
    (KH, KW), (sh, sw) = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    (ph, pw, pb, pr), (dh, dw) = conv_pads(padding), pair(dilation, "dilation")
    if groups < 1 or out_channels < 1 or C_in % groups or out_channels % groups:
        raise KernelError(f"channels ({C_in} in, {out_channels} out) not divisible by groups {groups}")
    ICg, OCg = C_in // groups, out_channels // groups
    if min(sh, sw, dh, dw, KH, KW) < 1 or min(ph, pw, pb, pr) < 0:
        raise KernelError("kernel, stride and dilation must be >= 1 and padding >= 0")
    check_packed(packed, (groups, KH * KW * ICg, OCg), "pack_conv_weight")
    OH, OW = conv_output_size(H, KH, sh, (ph, pb), dh), conv_output_size(W, KW, sw, (pw, pr), dw)
    if OH < 1 or OW < 1:
        raise KernelError(f"output would be empty ({OH}x{OW})")
    out, out_stride = conv_out(x, out, (N, OH, OW, out_channels))
    geo = dict(N=N, H=H, W=W, C_in=C_in, OH=OH, OW=OW, KH=KH, KW=KW, ICg=ICg, OCg=OCg, G=groups,
               stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw, dil_h=dh, dil_w=dw, out_stride=out_stride)
    return geo, out


def dot_tier(args: dict, aligned: bool) -> str:
    """fast / medium / fma: which configs suit a tl.dot kernel with these arguments.

    fast   - fp16/bf16 tensor cores, 16-byte aligned rows (vector loads), light epilogue;
    medium - fp16/bf16 with unaligned rows or the heaviest epilogue, and TF32;
    fma    - exact fp32 (CUDA-core FMA dot).
    """
    if args["x_ptr"].dtype == torch.float32:
        return "medium" if args["DOT_PRECISION"] == "tf32" else "fma"
    return "fast" if aligned and not heavy_epilogue(args) else "medium"


def conv_aligned(args: dict) -> bool:
    """An implicit-GEMM conv's rows and channels are 16-byte aligned (vector loads: the fast tier)."""
    return all(aligned16(args[k]) for k in ("x_ptr", "sxn", "sxh", "sxw", "ICg", "w_ptr", "OCg"))


def eligible_tiered(tiered_configs, args: dict) -> list:
    """The configs of ``tiered_configs`` ([(config, tiers)]) worth trying for an implicit-GEMM conv
    (conv2d, conv_transpose2d) with these kernel arguments: those of the arguments' ``dot_tier``."""
    tier = dot_tier(args, conv_aligned(args))
    return [c for c, tiers in tiered_configs if tier in tiers]


# sm_90 (H100/H200: 227 KB of shared memory per block, wgmma) configs: BLOCK_K 64 and tiles up to
# 128x256; num_stages fills shared memory (fp16/bf16 bytes per stage: (BLOCK_M + BLOCK_N) * 64 * 2,
# 48 KB at 128x256, so 3 stages = 145 KB; 32 KB at 128x128, so 4 = 129 KB). Tiers as in TIERED_CONFIGS,
# plus "plain": the fast tier with no residual and cheap activations only. The 32K-element tiles hold
# 128 fp32 accumulators per thread at 8 warps: a residual tile on top spills (measured: 8-182 spill
# instructions), and 16 warps cap registers at 128 and spill too, so they get the plain tier only.
# Offered only for cc >= 90; each (config, tier) is built with 0 spills by tests/kernels/aot_sweep.py.
HOPPER_TIERED_CONFIGS = [
    (triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
     ("plain",)),
    (triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
     ("plain",)),
    (triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=4),
     ("plain", "fast")),
    (triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
     ("plain", "fast")),
    (triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
     ("plain", "fast")),
    (triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=5),
     ("plain", "fast")),
]
HOPPER_CONFIGS = [config for config, _ in HOPPER_TIERED_CONFIGS]
HOPPER_CC = 90


def target_cc(t: torch.Tensor) -> Optional[int]:
    """The compute capability (80, 90, ...) of ``t``'s GPU; None off a GPU (then only the sm_80 configs)."""
    if t.device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(t.device)
    return 10 * major + minor


def fits_problem(config: triton.Config, m: int, n: int, k_per_step: int) -> bool:
    """A big tile is worth trying only where the problem fills it: BLOCK_M and BLOCK_N at most the
    problem's size rounded up to a power of two (no 256-wide tile for N = 64; wgmma's 64 rows are the
    floor), and BLOCK_K at most the contiguous run of K (a conv's channels per tap) rounded up."""
    kw, p2 = config.kwargs, triton.next_power_of_2
    return (kw["BLOCK_M"] <= max(64, p2(m)) and kw["BLOCK_N"] <= max(64, p2(n))
            and kw["BLOCK_K"] <= max(32, p2(k_per_step)))


def plain_epilogue(constexprs: dict) -> bool:
    """No residual and piecewise-linear activations only: the epilogue the 128x256 tiles can afford."""
    return not constexprs["HAS_RES"] and constexprs["ACT1"] in CHEAP_ACTS and constexprs["ACT2"] in CHEAP_ACTS


def hopper_configs(tier: str, args: dict, cc: Optional[int], m: int, n: int, k_per_step: int) -> list:
    """The sm_90 configs for a kernel of ``tier`` with these arguments (constexprs included) that fit the
    problem; none below cc 90. Autotuning tries them after the sm_80 ones."""
    if cc is None or cc < HOPPER_CC:
        return []
    if tier == "fast" and plain_epilogue(args):
        tier = "plain"
    return [c for c, tiers in HOPPER_TIERED_CONFIGS if tier in tiers and fits_problem(c, m, n, k_per_step)]
