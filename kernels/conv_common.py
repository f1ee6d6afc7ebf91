"""Host-side pieces shared by the convolution kernels (and the tensor-core tiers by matmul).

The import arrows run one way: ``conv_common`` imports no kernel module (only ``_host`` and
``epilogue``); ``conv_direct``, ``conv_transpose``, ``conv``, ``matmul`` (the tiers), ``pool``
and ``upsample`` (argument checks) import it, and ``conv`` imports ``conv_direct`` to hand it
depthwise convolutions. Nothing here launches a kernel.

* argument normalisation and checks: :func:`pair`, :func:`check_nhwc`, :func:`check_packed`,
  :func:`conv_out`, :func:`check_conv_args`;
* geometry: :func:`conv_output_size`, :func:`is_depthwise`;
* which autotuning tier a ``tl.dot`` kernel's configs come from: :func:`dot_tier`.
"""

import operator

import torch

from ._host import KernelError, aligned16, check_io_dtype, check_writable_rows
from .epilogue import heavy_epilogue


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


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """torch's conv2d output size along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


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
    (ph, pw), (dh, dw) = pair(padding, "padding"), pair(dilation, "dilation")
    if groups < 1 or out_channels < 1 or C_in % groups or out_channels % groups:
        raise KernelError(f"channels ({C_in} in, {out_channels} out) not divisible by groups {groups}")
    ICg, OCg = C_in // groups, out_channels // groups
    if min(sh, sw, dh, dw, KH, KW) < 1 or min(ph, pw) < 0:
        raise KernelError("kernel, stride and dilation must be >= 1 and padding >= 0")
    check_packed(packed, (groups, KH * KW * ICg, OCg), "pack_conv_weight")
    OH, OW = conv_output_size(H, KH, sh, ph, dh), conv_output_size(W, KW, sw, pw, dw)
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


def eligible_tiered(tiered_configs, args: dict) -> list:
    """The configs of ``tiered_configs`` ([(config, tiers)]) worth trying for an implicit-GEMM conv
    (conv2d, conv_transpose2d) with these kernel arguments: those of the arguments' ``dot_tier``."""
    aligned = all(aligned16(args[k]) for k in ("x_ptr", "sxn", "sxh", "sxw", "ICg", "w_ptr", "OCg"))
    return [c for c, tiers in tiered_configs if dot_tier(args, aligned) in tiers]
