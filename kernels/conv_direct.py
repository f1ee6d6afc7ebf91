"""Depthwise 2-D convolution as a direct kernel over (pixels x channels) tiles.

In a depthwise convolution (groups == C_in; each output channel oc reads only input
channel oc // MULT, MULT = C_out / C_in the channel multiplier) the GEMM of each group has
K = KH*KW (e.g. 9): an implicit GEMM would pad K to a 16-wide tensor-core tile and waste
most of it. The direct form is better: each program owns BLOCK_M output pixels x BLOCK_C
output channels, walks the KH x KW taps, and for each tap does one coalesced load of
BLOCK_M x BLOCK_C input values (channels contiguous in NHWC) and a broadcast multiply-add
with BLOCK_C weights. All math is fp32 FMA; the input tile of neighbouring taps overlaps,
so after the first tap most loads hit L1/L2.

The weight comes in the same packed layout as :mod:`conv` ([G, KH*KW*ICg, OCg] with
G = C_in, ICg = 1, OCg = MULT, from ``pack_conv_weight``), so the compiler packs every
convolution one way and either kernel can run it. The epilogue is the shared one.
"""

import triton
import triton.language as tl

from ._host import (
    Launch,
    aligned16,
    autotuned,
    interpreting,
    meta_tensor,
    needs_int64,
    run,
    spec_of,
)
from .conv_common import check_conv_args, check_nhwc, pair
from .epilogue import Epilogue, heavy_epilogue, store_tile
from .tiling import window_origin

# Autotuning configs (pixels x channels tiles). Tiles with more than SLOW_PATH_ELEMS outputs
# per thread need vectorized loads (channel multiplier 1, 16-byte aligned rows) and a light
# epilogue; otherwise only the small ones are tried. All compile with 0 spills on
# sm_80/sm_90 (tests/kernels/aot_sweep.py).
CONFIGS = [
    triton.Config({"BLOCK_M": 64, "BLOCK_C": 64}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK_M": 128, "BLOCK_C": 32}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK_M": 32, "BLOCK_C": 128}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK_M": 128, "BLOCK_C": 64}, num_warps=8, num_stages=1),
    triton.Config({"BLOCK_M": 32, "BLOCK_C": 64}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK_M": 64, "BLOCK_C": 32}, num_warps=4, num_stages=1),
]
SLOW_PATH_ELEMS = 16
INTERPRET_CONFIG = triton.Config({"BLOCK_M": 16, "BLOCK_C": 8}, num_warps=4, num_stages=1)


@triton.jit
def depthwise_conv2d_kernel(
    x_ptr,                      # input [N, H, W, C_in], channel stride 1
    sxn, sxh, sxw,              # input strides of n, h, w (elements)
    w_ptr,                      # packed weight [C_in, KH*KW, MULT], contiguous
    out_ptr,                    # output rows [N*OH*OW, C_out], channel stride 1
    out_stride,                 # output row stride
    H, W, OH, OW,               # spatial sizes
    M,                          # N * OH * OW
    C_out, MULT,                # output channels; output channels per input channel
    KH, KW,                     # kernel size
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    bias_ptr, slope1_ptr, slope1_stride, res_ptr, res_stride,  # epilogue (see epilogue.py)
    slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
    HAS_BIAS: tl.constexpr, ACT1: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    USE_INT64: tl.constexpr,    # 64-bit offsets for huge tensors
    BLOCK_M: tl.constexpr,      # output pixels per program
    BLOCK_C: tl.constexpr,      # output channels per program
):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_m = offs_m < M
    mask_c = cols < C_out
    ic = cols // MULT                            # the input channel each output channel reads
    taps = KH * KW
    w_cols = w_ptr + ic * (taps * MULT) + (cols - ic * MULT)   # packed weight of tap 0

    n, ih0, iw0 = window_origin(offs_m, OH, OW, stride_h, stride_w, pad_h, pad_w, USE_INT64)
    x_rows = n * sxn                             # [BLOCK_M] offsets of pixel (n, 0, 0)

    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for kh in range(0, KH):
        ih = ih0 + kh * dil_h
        row_ok = mask_m & (ih >= 0) & (ih < H)
        for kw in range(0, KW):
            iw = iw0 + kw * dil_w
            ok = row_ok & (iw >= 0) & (iw < W)
            # BLOCK_M x BLOCK_C input values, contiguous along channels (when MULT == 1).
            xv = tl.load(x_ptr + ((x_rows + ih * sxh + iw * sxw)[:, None] + ic[None, :]),
                         mask=ok[:, None] & mask_c[None, :], other=0.0)
            # BLOCK_C weights of this tap (a few KB over the whole kernel: L1/L2 resident).
            wv = tl.load(w_cols + (kh * KW + kw) * MULT, mask=mask_c, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]

    store_tile(acc, offs_m, cols, mask_m, mask_c, out_ptr, out_stride, bias_ptr, slope1_ptr, slope1_stride,
               res_ptr, res_stride, slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
               HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)


def eligible_configs(args: dict) -> list:
    """The autotuning configs worth trying for these kernel arguments (see CONFIGS)."""
    vector = args["MULT"] == 1 and all(aligned16(args[k]) for k in ("x_ptr", "sxn", "sxh", "sxw", "out_stride"))
    if vector and not heavy_epilogue(args):
        return list(CONFIGS)
    return [c for c in CONFIGS if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_C"] <= SLOW_PATH_ELEMS * 32 * c.num_warps]


depthwise_conv2d_kernel_tuned = autotuned(depthwise_conv2d_kernel,
    CONFIGS, key=["M", "C_out", "MULT", "KH", "KW", "sxw", "ACT1", "HAS_RES", "ACT2"], restore_value=["out_ptr"],
    prune_configs_by={"early_config_prune": lambda configs, nargs, **kw: eligible_configs({**nargs, **kw})},
)


def _plan_depthwise(x, packed, out_channels, kernel_size, stride, padding, dilation, epilogue, out, interpret):
    groups = check_nhwc(x)[-1]
    geo, out = check_conv_args(x, packed, out_channels, kernel_size, stride, padding, dilation, groups, out)
    M = geo["N"] * geo["OH"] * geo["OW"]
    ep_args, ep_constexprs = epilogue.kernel_args(out, M, out_channels)
    args = dict(x_ptr=x, sxn=x.stride(0), sxh=x.stride(1), sxw=x.stride(2), w_ptr=packed, out_ptr=out,
                out_stride=geo["out_stride"], H=geo["H"], W=geo["W"], OH=geo["OH"], OW=geo["OW"], M=M,
                C_out=out_channels, MULT=geo["OCg"], KH=geo["KH"], KW=geo["KW"],
                stride_h=geo["stride_h"], stride_w=geo["stride_w"], pad_h=geo["pad_h"], pad_w=geo["pad_w"],
                dil_h=geo["dil_h"], dil_w=geo["dil_w"], **ep_args)
    constexprs = dict(**ep_constexprs, USE_INT64=needs_int64(x, packed, out, epilogue.residual))
    configs = eligible_configs({**args, **constexprs})
    cfg = INTERPRET_CONFIG if interpret else configs[0]
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(out_channels, meta["BLOCK_C"]))
    return out, Launch(depthwise_conv2d_kernel, depthwise_conv2d_kernel_tuned, args, constexprs, grid, cfg,
                       tuple(configs))


def depthwise_conv2d(x, packed, *, out_channels, kernel_size, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                     epilogue=Epilogue(), out=None):
    """Depthwise conv (groups = C_in, out_channels = C_in * multiplier) in NHWC.

    Same arguments as :func:`conv.conv2d` minus ``groups`` (it is C_in) and ``allow_tf32``
    (no tensor cores here); ``packed`` = pack_conv_weight(w, groups=C_in).
    """
    out, launch = _plan_depthwise(x, packed, out_channels, kernel_size, stride, padding, dilation, epilogue, out,
                                  interpreting())
    run(launch)
    return out


def specialization(x_shape, dtype, out_channels, kernel_size, stride, padding, dilation,
                   epilogue=Epilogue(), *, config=None) -> dict:
    """AOT specialization of :func:`depthwise_conv2d` (contiguous tensors).

    ``epilogue``: as passed to :func:`depthwise_conv2d`, typically
    ``Epilogue.planned(conv.output_shape(x_shape, ...), dtype, ...)``.
    """
    C_in = x_shape[-1]
    KH, KW = pair(kernel_size, "kernel_size")
    x = meta_tensor(x_shape, dtype)
    packed = meta_tensor((C_in, KH * KW, out_channels // C_in), dtype)
    _, launch = _plan_depthwise(x, packed, out_channels, kernel_size, stride, padding, dilation, epilogue, None,
                                False)
    return spec_of(launch, config)
