"""The fused epilogue shared by conv, matmul, norm and pointwise kernels.

A producer kernel computes an fp32 tile ``acc[m, c]`` (rows m = pixels or matrix rows,
columns c = output channels) and, before its single store, applies

    acc (+ bias[c]) -> act1 -> (+ residual[m, c]) -> act2

which covers conv+bias+relu, the ResNet "add then relu" tail, and transformer blocks'
bias+gelu. Doing it in registers saves a full write and re-read of the output per fused
op. The host side is the :class:`Epilogue` record; the device side is the one
``@triton.jit`` function :func:`apply_epilogue`. Kernels receive the epilogue as the
runtime arguments and constexprs returned by :meth:`Epilogue.kernel_args`, under the same
names in every kernel.

bias, slope1 and slope2 are vectors over the output channels (a slope of size 1 is shared
by all channels, as torch's PReLU(num_parameters=1)). The residual is an [M, C] / NHWC
tensor with channel stride 1 and its own row stride, so it may be a channel slice of a
bigger buffer. It may even be the output itself (in-place add): every element is read and
then written by the same program, and autotuning restores the output between trials.

Ahead-of-time builds plan launches from shapes alone: :meth:`Epilogue.planned` builds an
Epilogue of storage-less "meta" tensors with the pieces (bias, activations, residual) that
change the compiled kernel, for a kernel module's ``specialization(...)``.
"""

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from ._host import KernelError, check_io_dtype, meta_tensor, rows_of
from .activations import ACT_DEFAULTS, apply_act, check_activation


# Piecewise-linear activations: a few instructions, no extra live registers.
CHEAP_ACTS = ("none", "relu", "relu6", "leaky_relu", "prelu", "hardswish", "hardsigmoid", "hardtanh", "softsign", "affine")


def heavy_epilogue(constexprs: dict) -> bool:
    """Transcendental act1 and act2 around a residual load: the register-hungriest epilogue.

    Kernels keep their largest tiles away from it (they would spill); ``constexprs`` are the
    epilogue constexprs (ACT1, HAS_RES, ACT2) as passed to a kernel.
    """
    return bool(constexprs["HAS_RES"]) and constexprs["ACT1"] not in CHEAP_ACTS and constexprs["ACT2"] not in CHEAP_ACTS


@dataclass(frozen=True, eq=False)
class Epilogue:
    """acc (+ bias) -> act1(alpha1, beta1, slope1) -> (+ residual) -> act2(alpha2, beta2, slope2)."""
    bias: Optional[torch.Tensor] = None       # [C] per output channel
    act1: str = "none"                        # a name from activations.ACTIVATIONS
    alpha1: float = 0.0                       # act1 parameter (see activations docstring)
    beta1: float = 0.0                        # act1 parameter
    slope1: Optional[torch.Tensor] = None     # [C] or [1]: prelu weight for act1
    residual: Optional[torch.Tensor] = None   # [M, C] or [N, H, W, C], channel stride 1
    act2: str = "none"
    alpha2: float = 0.0
    beta2: float = 0.0
    slope2: Optional[torch.Tensor] = None

    def __post_init__(self):
        check_activation(self.act1)
        check_activation(self.act2)
        for act, slope, which in ((self.act1, self.slope1, "1"), (self.act2, self.slope2, "2")):
            if act == "prelu" and slope is None:
                raise KernelError(f"act{which}='prelu' needs slope{which}")
        if self.act1 == "softplus" and self.alpha1 <= 0 or self.act2 == "softplus" and self.alpha2 <= 0:
            raise KernelError("softplus needs its beta (alpha1/alpha2) > 0; torch's default is 1.0 "
                              "(threshold in beta1/beta2, default 20.0)")

    @classmethod
    def planned(cls, out_shape, dtype, bias: bool = False, act1: str = "none", residual: bool = False,
                act2: str = "none") -> "Epilogue":
        """An Epilogue of meta tensors for an output of ``out_shape`` ([..., C]) and ``dtype``.

        For ``specialization(...)`` (AOT builds planned from shapes): bias, prelu slopes
        ([C]) and residual (``out_shape``, contiguous) get the output's dtype; activation
        parameters get torch's defaults (they are runtime arguments: any value compiles
        to the same kernel).
        """
        C = out_shape[-1]
        slope = meta_tensor((C,), dtype)
        (alpha1, beta1), (alpha2, beta2) = ACT_DEFAULTS.get(act1, (0.0, 0.0)), ACT_DEFAULTS.get(act2, (0.0, 0.0))
        return cls(bias=meta_tensor((C,), dtype) if bias else None,
                   act1=act1, alpha1=alpha1, beta1=beta1, slope1=slope if act1 == "prelu" else None,
                   residual=meta_tensor(out_shape, dtype) if residual else None,
                   act2=act2, alpha2=alpha2, beta2=beta2, slope2=slope if act2 == "prelu" else None)

    def kernel_args(self, out: torch.Tensor, rows: int, channels: int) -> tuple[dict, dict]:
        """(runtime args, constexprs) for a kernel writing an [rows, channels] output ``out``.

        Unused pointers are bound to ``out`` so every kernel has one stable signature.
        """
        def vector(t, name, sizes):
            if t is None:
                return out, 0
            check_io_dtype(t, name)
            if t.dim() != 1 or t.shape[0] not in sizes:
                raise KernelError(f"epilogue {name}: expected shape {sizes}, got {tuple(t.shape)}")
            if t.shape[0] == 1:
                return t, 0
            return t, t.stride(0)

        bias, bias_stride = vector(self.bias, "bias", (channels,))
        if bias_stride not in (0, 1):
            raise KernelError("epilogue bias must be contiguous")
        slope1, slope1_stride = vector(self.slope1, "slope1", (channels, 1))
        slope2, slope2_stride = vector(self.slope2, "slope2", (channels, 1))
        res, res_stride = out, 0
        if self.residual is not None:
            check_io_dtype(self.residual, "residual")
            M, C, res_stride = rows_of(self.residual, "epilogue residual")
            if (M, C) != (rows, channels):
                raise KernelError(f"epilogue residual is [{M}, {C}] as rows, output is [{rows}, {channels}]")
            res = self.residual
        args = dict(bias_ptr=bias, slope1_ptr=slope1, slope1_stride=slope1_stride, res_ptr=res,
                    res_stride=res_stride, slope2_ptr=slope2, slope2_stride=slope2_stride,
                    alpha1=float(self.alpha1), beta1=float(self.beta1),
                    alpha2=float(self.alpha2), beta2=float(self.beta2))
        constexprs = dict(HAS_BIAS=self.bias is not None, ACT1=self.act1,
                          HAS_RES=self.residual is not None, ACT2=self.act2)
        return args, constexprs


@triton.jit
def apply_epilogue(
    acc,                    # [BM, BN] fp32 tile
    rows,                   # [BM] row (pixel) indices of the tile
    cols,                   # [BN] output-channel indices of the tile
    mask_rows,              # [BM] rows inside the output
    mask_cols,              # [BN] channels inside the output
    bias_ptr,               # *[C] bias (read iff HAS_BIAS)
    slope1_ptr,             # *[C] or *[1] prelu weight for act1 (read iff ACT1 == "prelu")
    slope1_stride,          # 1 per channel, 0 shared
    res_ptr,                # *[M, C] residual (read iff HAS_RES)
    res_stride,             # residual row stride in elements
    slope2_ptr,             # prelu weight for act2
    slope2_stride,          # 1 per channel, 0 shared
    alpha1, beta1,          # act1 parameters (fp32)
    alpha2, beta2,          # act2 parameters (fp32)
    HAS_BIAS: tl.constexpr,
    ACT1: tl.constexpr,
    HAS_RES: tl.constexpr,
    ACT2: tl.constexpr,
    USE_INT64: tl.constexpr,  # residual offsets need 64 bits
):
    if HAS_BIAS:
        # C elements, read once per tile column block (L2-resident).
        bias = tl.load(bias_ptr + cols, mask=mask_cols, other=0.0).to(tl.float32)
        acc = acc + bias[None, :]
    slope1 = 0.0
    if ACT1 == "prelu":
        slope1 = tl.load(slope1_ptr + cols * slope1_stride, mask=mask_cols, other=0.0).to(tl.float32)[None, :]
    acc = apply_act(acc, ACT1, alpha1, beta1, slope1)
    if HAS_RES:
        r = rows
        if USE_INT64:
            r = r.to(tl.int64)
        # one read of the residual tile: BM*BN elements, contiguous along channels.
        res = tl.load(res_ptr + (r[:, None] * res_stride + cols[None, :]),
                      mask=mask_rows[:, None] & mask_cols[None, :], other=0.0)
        acc = acc + res.to(tl.float32)
    slope2 = 0.0
    if ACT2 == "prelu":
        slope2 = tl.load(slope2_ptr + cols * slope2_stride, mask=mask_cols, other=0.0).to(tl.float32)[None, :]
    acc = apply_act(acc, ACT2, alpha2, beta2, slope2)
    return acc


@triton.jit
def store_tile(
    acc, rows, cols, mask_rows, mask_cols,   # the fp32 tile and where it goes (as in apply_epilogue)
    out_ptr,                                 # *[M, C] output (may be a channel slice)
    out_stride,                              # output row stride in elements
    bias_ptr, slope1_ptr, slope1_stride, res_ptr, res_stride, slope2_ptr, slope2_stride,
    alpha1, beta1, alpha2, beta2,
    HAS_BIAS: tl.constexpr, ACT1: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    USE_INT64: tl.constexpr,
):
    """The tail every GEMM-like kernel shares: the epilogue in registers, then one store."""
    acc = apply_epilogue(acc, rows, cols, mask_rows, mask_cols, bias_ptr, slope1_ptr, slope1_stride, res_ptr,
                         res_stride, slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
                         HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)
    r = rows
    if USE_INT64:
        r = r.to(tl.int64)
    # one store of the tile: BM x BN outputs, contiguous along channels.
    tl.store(out_ptr + (r[:, None] * out_stride + cols[None, :]), acc.to(out_ptr.dtype.element_ty),
             mask=mask_rows[:, None] & mask_cols[None, :])
