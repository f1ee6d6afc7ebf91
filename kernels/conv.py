"""2-D convolution as an implicit GEMM over channels-last activations.

A convolution is a matrix product that is never materialised: with

    M = N * OH * OW   (output pixels),   N_gemm = OC / G,   K = KH * KW * IC / G

output[m, oc] = sum_k A[m, k] * B[k, oc], where row m of A is the receptive field of output
pixel m (im2col) and B is the weight. Instead of building A (KH*KW times the input), each
program gathers its [BLOCK_M, BLOCK_K] slice of A straight from the NHWC input: with K
ordered (kh, kw, ic), a K-block is BLOCK_K consecutive input channels of one tap (kh, kw),
i.e. one contiguous run per pixel, so the gather is as coalesced as a plain matrix load.
The weight is packed once, at compile time, into [G, KH*KW*IC/G, OC/G] (K-major rows,
output channels contiguous) so the B tile is a plain 2-D load too. The K loop is one flat
loop over (tap, channel-block) pairs so Triton's software pipeliner can prefetch across taps.

Groups are a grid axis: each group is its own GEMM over its channel slices of input,
weight and output. Accumulation is fp32 via ``tl.dot`` (tensor cores for fp16/bf16; for
fp32 ``allow_tf32`` chooses TF32 tensor cores over exact IEEE fp32). Bias, activations and
a residual add are applied by the shared epilogue before the single store, which may go
into a channel slice of a bigger buffer (concat without a copy).

Depthwise convolutions (one input channel per group) have K = KH*KW, far too small for a
GEMM tile: :func:`conv2d` hands them to the direct kernel in :mod:`conv_direct`.

When the output has fewer tiles than the GPU has SMs (batch 1: ResNet-50's last stage is 49
pixels), :func:`conv2d` may split the K loop (see :mod:`splitk`): :func:`conv_tile_sum` is the one
K loop, run over all of K by ``conv2d_kernel`` and over one slice by ``conv2d_splitk_kernel``.
On sm_90 the autotuner also tries BLOCK_K 64 tiles up to 128x256 (``conv_common.HOPPER_CONFIGS``).
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from ._host import (
    KernelError,
    Launch,
    autotuned,
    interpreting,
    meta_tensor,
    needs_int64,
)

# check_conv_args, conv_output_size, is_depthwise, dot_tier and _pair live in conv_common (shared with
# conv_direct, conv_transpose and matmul) and stay importable from here.
from .conv_common import (  # noqa: F401
    HOPPER_CONFIGS,
    _pair,
    check_conv_args,
    conv_aligned,
    conv_output_size,
    conv_pads,
    dot_tier,
    eligible_tiered,
    hopper_configs,
    is_depthwise,
    pair,
    target_cc,
)
from .conv_direct import _plan_depthwise
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
from .tiling import grouped_tile, window_origin

# Autotuning configs. Every tile is >= 16 in M, N and K (tl.dot's minimum) and fits shared
# memory on sm_80 and sm_90. Each config is tagged with the tiers it is tried in:
#   fast   - fp16/bf16 tensor cores, 16-byte aligned rows (vector loads), light epilogue;
#   medium - fp16/bf16 with unaligned rows or the heaviest epilogue, and TF32: at most 32
#            accumulators per thread, or the big tiles spill;
#   fma    - exact fp32 (CUDA-core FMA dot): small tiles only.
# Every (config, tier) pair is checked for 0 spills on sm_80/sm_90 by tests/kernels/aot_sweep.py.
TIERED_CONFIGS = [
    (triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=3),
     ("fast", "medium")),
    (triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=3),
     ("fast",)),
    (triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=3),
     ("fast",)),
    (triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=8, num_stages=3),
     ("fast",)),
    (triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=8, num_stages=3),
     ("fast", "medium")),
    (triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=3),
     ("fast", "medium", "fma")),
    (triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=3),
     ("medium", "fma")),
]
CONFIGS = [config for config, _ in TIERED_CONFIGS]
# Under the interpreter: one small config (blocks smaller than the test shapes exercise masking).
INTERPRET_CONFIG = triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2}, num_warps=4,
                                 num_stages=1)


@triton.jit
def conv_tile_sum(
    x_ptr, sxn, sxh, sxw, w_ptr, H, W, OH, OW, M, OCg, ICg, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    splits,                       # K slices (split-K; read iff SPLIT)
    SPLIT: tl.constexpr,          # sum only this program's slice of K (program id 2)
    DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """The fp32 tile of program (program_id(0), group program_id(1)) summed over its K steps, and where it
    goes: (acc, rows, output columns, row mask, column mask). Shared by the fused and split-K kernels."""
    # -- which tile: grouped ordering so consecutive programs share weight columns in L2.
    pid = tl.program_id(0)
    g = tl.program_id(1)
    pid_m, pid_n = grouped_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(OCg, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < OCg

    # -- output pixel (n, oh, ow) of every row, and the top-left input tap of its window.
    n, ih0, iw0 = window_origin(offs_m, OH, OW, stride_h, stride_w, pad_h, pad_w, USE_INT64)
    K = KH * KW * ICg
    w_group = w_ptr + g * K * OCg               # this group's [K, OCg] weight matrix
    if USE_INT64:
        w_group = w_ptr + g.to(tl.int64) * K * OCg
    x_rows = n * sxn + g * ICg                  # [BLOCK_M] offsets of pixel (n, 0, 0), group channel 0

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    c_blocks = tl.cdiv(ICg, BLOCK_K)
    k_steps = KH * KW * c_blocks                # one step = one tap x one block of BLOCK_K channels
    step_lo = 0
    step_hi = k_steps
    if SPLIT:
        step_lo, step_hi = split_range(k_steps, splits)
    for step in range(step_lo, step_hi):
        tap = step // c_blocks
        c0 = (step - tap * c_blocks) * BLOCK_K
        kh = tap // KW
        kw = tap - kh * KW
        ih = ih0 + kh * dil_h
        iw = iw0 + kw * dil_w
        in_img = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)   # zero padding
        cs = c0 + offs_k
        mask_k = cs < ICg
        # A tile: BLOCK_M pixels x BLOCK_K channels, each pixel a contiguous channel run.
        a_offs = (x_rows + ih * sxh + iw * sxw)[:, None] + cs[None, :]
        a = tl.load(x_ptr + a_offs, mask=in_img[:, None] & mask_k[None, :], other=0.0)
        # B tile: BLOCK_K rows of the packed weight (K index tap*ICg + c), BLOCK_N channels each.
        b_offs = (tap * ICg + cs)[:, None] * OCg + offs_n[None, :]
        b = tl.load(w_group + b_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if DOT_UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    return acc, offs_m, g * OCg + offs_n, mask_m, mask_n


@triton.jit
def conv2d_kernel(
    x_ptr,                      # input [N, H, W, C_in], channel stride 1
    sxn, sxh, sxw,              # input strides of n, h, w (elements)
    w_ptr,                      # packed weight [G, KH*KW*ICg, OCg], contiguous
    out_ptr,                    # output rows [N*OH*OW, C_out], channel stride 1
    out_stride,                 # output row stride (>= C_out when writing into a channel slice)
    H, W, OH, OW,               # input and output spatial sizes
    M,                          # N * OH * OW: GEMM rows
    OCg, ICg,                   # output / input channels per group
    KH, KW,                     # kernel height and width
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    bias_ptr, slope1_ptr, slope1_stride, res_ptr, res_stride,  # epilogue (see epilogue.py)
    slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
    HAS_BIAS: tl.constexpr, ACT1: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" or "tf32" (only matters for fp32 inputs)
    DOT_UPCAST: tl.constexpr,     # feed tl.dot fp32 (works around the interpreter's bf16 dot)
    USE_INT64: tl.constexpr,      # 64-bit offsets for huge tensors
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,        # M-tiles per L2 swizzle group
):
    acc, rows, cols, mask_m, mask_n = conv_tile_sum(
        x_ptr, sxn, sxh, sxw, w_ptr, H, W, OH, OW, M, OCg, ICg, KH, KW, stride_h, stride_w, pad_h, pad_w,
        dil_h, dil_w, 1, False, DOT_PRECISION, DOT_UPCAST, USE_INT64, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    # -- fused epilogue in registers, then one store of BLOCK_M x BLOCK_N outputs.
    store_tile(acc, rows, cols, mask_m, mask_n, out_ptr, out_stride, bias_ptr, slope1_ptr, slope1_stride,
               res_ptr, res_stride, slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
               HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)


@triton.jit
def conv2d_splitk_kernel(
    x_ptr, sxn, sxh, sxw, w_ptr,  # as conv2d_kernel
    ws_ptr,                     # fp32 workspace [splits, M, C_out]: this program's partial tile
    H, W, OH, OW, M, OCg, ICg, KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    C_out,                      # workspace row length (G * OCg)
    splits,                     # K slices: grid axis 2
    DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Split-K partial sums (see splitk.py): the epilogue runs in splitk_reduce_kernel."""
    acc, rows, cols, mask_m, mask_n = conv_tile_sum(
        x_ptr, sxn, sxh, sxw, w_ptr, H, W, OH, OW, M, OCg, ICg, KH, KW, stride_h, stride_w, pad_h, pad_w,
        dil_h, dil_w, splits, True, DOT_PRECISION, DOT_UPCAST, USE_INT64, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    store_partial(acc, ws_ptr, rows, cols, mask_m, mask_n, M, C_out, USE_INT64)


def eligible_configs(args: dict, cc: Optional[int] = None) -> list:
    """The autotuning configs worth trying for these kernel arguments (see TIERED_CONFIGS) on a GPU of
    compute capability ``cc`` (90 and up: the sm_90 configs that fit the problem too, after those)."""
    tier = dot_tier(args, conv_aligned(args))
    return eligible_tiered(TIERED_CONFIGS, args) + hopper_configs(tier, args, cc, args["M"], args["OCg"], args["ICg"])


# The GPU path: same kernel, autotuned per problem size and per tier (the epilogue and the
# dot precision are in the key because they change which configs are eligible).
# restore_value keeps an in-place residual (residual is out) correct while configs are benchmarked.
conv2d_kernel_tuned = autotuned(conv2d_kernel,
    CONFIGS + HOPPER_CONFIGS, key=["M", "OCg", "ICg", "KH", "KW", "sxw", "ACT1", "HAS_RES", "ACT2", "DOT_PRECISION"],
    restore_value=["out_ptr"],
    prune_configs_by={"early_config_prune": lambda configs, nargs, **kw: eligible_configs(
        {**nargs, **kw}, target_cc(nargs["x_ptr"]))},
)


def pack_conv_weight(w_oihw: torch.Tensor, groups: int) -> torch.Tensor:
    """[OC, IC/G, KH, KW] (torch layout) -> [G, KH*KW*IC/G, OC/G], K ordered (kh, kw, ic)."""
    if w_oihw.dim() != 4:
        raise KernelError(f"conv weight must be [OC, IC/G, KH, KW], got {tuple(w_oihw.shape)}")
    OC, ICg, KH, KW = w_oihw.shape
    if groups < 1 or OC % groups:
        raise KernelError(f"out channels {OC} not divisible by groups {groups}")
    OCg = OC // groups
    packed = w_oihw.reshape(groups, OCg, ICg, KH, KW).permute(0, 3, 4, 2, 1)
    return packed.reshape(groups, KH * KW * ICg, OCg).contiguous()


def _plan_conv(x, packed, out_channels, kernel_size, stride, padding, dilation, groups, epilogue, out,
               allow_tf32, interpret, *, split_k=1, sm_count=None, cc=None):
    """(out, launch), or (out, [partial launch, reduction launch]) for a split-K plan.

    ``split_k``: an int forces that many K slices (1: the fused kernel alone); None lets
    :func:`splitk.choose_split` decide for ``sm_count`` SMs (None: the device's, none off a GPU).
    ``cc``: the target's compute capability (None: x's GPU's; 90 adds the sm_90 configs).
    """
    if x.dim() == 4 and is_depthwise(x.shape[-1], groups):
        return _plan_depthwise(x, packed, out_channels, kernel_size, stride, padding, dilation, epilogue, out,
                               interpret)
    geo, out = check_conv_args(x, packed, out_channels, kernel_size, stride, padding, dilation, groups, out)
    M = geo["N"] * geo["OH"] * geo["OW"]
    ep_args, ep_constexprs = epilogue.kernel_args(out, M, out_channels)
    fp32 = x.dtype == torch.float32
    gemm = dict(x_ptr=x, sxn=x.stride(0), sxh=x.stride(1), sxw=x.stride(2), w_ptr=packed)
    shape = dict(H=geo["H"], W=geo["W"], OH=geo["OH"], OW=geo["OW"], M=M, OCg=geo["OCg"], ICg=geo["ICg"],
                 KH=geo["KH"], KW=geo["KW"], stride_h=geo["stride_h"], stride_w=geo["stride_w"],
                 pad_h=geo["pad_h"], pad_w=geo["pad_w"], dil_h=geo["dil_h"], dil_w=geo["dil_w"])
    args = dict(**gemm, out_ptr=out, out_stride=geo["out_stride"], **shape, **ep_args)
    dot = dict(DOT_PRECISION="tf32" if (fp32 and allow_tf32) else "ieee",
               DOT_UPCAST=interpret and x.dtype == torch.bfloat16)
    constexprs = dict(**ep_constexprs, **dot, USE_INT64=needs_int64(x, packed, out, epilogue.residual))
    G, OCg = geo["G"], geo["OCg"]
    configs = eligible_configs({**args, **constexprs}, cc if cc is not None else target_cc(x))
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(OCg, meta["BLOCK_N"]), G)
    config, split = configs[0], split_k or 1
    if split_k is None:
        sms = sm_count if sm_count is not None else device_sm_count(x)
        config, split = choose_split(M, OCg, geo["ICg"], configs, sms, taps=geo["KH"] * geo["KW"], groups=G)
    if split == 1:
        cfg = INTERPRET_CONFIG if interpret else configs[0]
        return out, Launch(conv2d_kernel, conv2d_kernel_tuned, args, constexprs, grid, cfg, tuple(configs))
    # split-K: fp32 partial tiles of each K slice, then one reduction applies the epilogue.
    ws = workspace(split, M, out_channels, x.device)
    cfg = INTERPRET_CONFIG if interpret else config
    partial_args = dict(**gemm, ws_ptr=ws, **shape, C_out=out_channels, splits=split)
    partial_constexprs = dict(**dot, USE_INT64=needs_int64(x, packed, ws))
    partial_grid = lambda meta: (*grid(meta), split)
    partial = Launch(conv2d_splitk_kernel, None, partial_args, partial_constexprs, partial_grid, cfg, tuple(configs))
    return out, [partial, plan_reduce(ws, out, geo["out_stride"], epilogue, interpret)]


def conv2d(x, packed, *, out_channels, kernel_size, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
           epilogue=Epilogue(), out=None, allow_tf32=False, split_k=None, sm_count=None):
    """y = epilogue(conv2d(x, w)) in NHWC; returns ``out`` [N, OH, OW, out_channels].

    x           : [N, H, W, C_in], channel stride 1 (may be a channel slice of a bigger buffer)
    packed      : pack_conv_weight(w_oihw, groups)
    kernel_size, stride, padding, dilation : (h, w) pairs (or ints); padding is symmetric
    groups      : groups == C_in (depthwise, any channel multiplier) runs conv_direct's kernel
    epilogue    : bias / act1 / residual / act2, fused before the store
    out         : optional output (e.g. a channel slice of a concat buffer)
    allow_tf32  : fp32 inputs may use TF32 tensor cores (else exact fp32 FMA)
    split_k     : K slices (split-K, see splitk.py); None chooses from the shape and ``sm_count``
    sm_count    : SMs to fill (None: the GPU's; off a GPU no automatic split)
    """
    out, launches = _plan_conv(x, packed, out_channels, kernel_size, stride, padding, dilation, groups, epilogue,
                               out, allow_tf32, interpreting(), split_k=split_k, sm_count=sm_count)
    run_all(launches)
    return out


def output_shape(x_shape, out_channels, kernel_size, stride=1, padding=0, dilation=1) -> tuple:
    """[N, OH, OW, out_channels]: the NHWC output shape of :func:`conv2d` for an input of ``x_shape``."""
    N, H, W, _ = x_shape
    (KH, KW), (sh, sw), (dh, dw) = map(pair, (kernel_size, stride, dilation))
    top, left, bottom, right = conv_pads(padding)
    return (N, conv_output_size(H, KH, sh, (top, bottom), dh), conv_output_size(W, KW, sw, (left, right), dw),
            out_channels)


def specialization(x_shape, dtype, packed_shape, out_channels, kernel_size, stride, padding, dilation, groups,
                   epilogue=Epilogue(), *, allow_tf32=False, config=None, split_k=1, sm_count=None, cc=None):
    """The AOT specialization (module, kernel, signature, constexprs, num_warps, num_stages)
    of the kernel :func:`conv2d` launches for these arguments (contiguous tensors).

    ``epilogue``: as passed to :func:`conv2d`, typically
    ``Epilogue.planned(output_shape(x_shape, ...), dtype, bias=True, act1="relu")``.
    ``config``: None = the default (first) autotuning config, or an index into the configs
    eligible for these arguments (``eligible_configs``; all of CONFIGS on the fast path).
    ``split_k``, ``sm_count``: as :func:`conv2d` (a split-K plan gives a list: the partial kernel's
    spec(s), then the reduction's). ``cc``: the target (90 adds the sm_90 configs).
    """
    x = meta_tensor(x_shape, dtype)
    packed = meta_tensor(packed_shape, dtype)
    _, launches = _plan_conv(x, packed, out_channels, kernel_size, stride, padding, dilation, groups, epilogue, None,
                             allow_tf32, False, split_k=split_k, sm_count=sm_count, cc=cc)
    return specs_of(launches, config)
