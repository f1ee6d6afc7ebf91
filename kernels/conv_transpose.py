"""Transposed 2-D convolution ("deconvolution") as an implicit GEMM over NHWC, one output phase at a time.

torch's conv_transpose2d scatters: input pixel (ih, iw) adds ``x[ih, iw] * w[:, :, kh, kw]`` to
output pixel (oh, ow) = (ih*S - P + kh*D, iw*S - P + kw*D). A kernel that scatters needs atomics
(slow, and non-deterministic). The gather form has none: each output pixel sums over the taps
(kh, kw) whose source ``ih = (oh + P - kh*D) / S`` is an integer inside the input (and likewise
for w). That is an implicit GEMM like :mod:`conv`'s, with K = KH*KW*IC/G.

Done naively, the GEMM would be mostly zeros: with stride S only about 1/S of the taps of each
axis divide evenly for a given output pixel, but a tile of pixels with mixed remainders has to
run them all. The sub-pixel decomposition removes the waste: split the output into its S_h*S_w
*phases* (oh mod S_h, ow mod S_w). All pixels of a phase (a, b) share the same valid taps, an
arithmetic progression along each axis:

    kh = kh0 + t * S'   (t = 0, 1, ...),   S' = S / gcd(S, D),
    kh0 = the smallest kh >= 0 with kh*D = (a + P) (mod S)  (none when gcd(S, D) does not divide a + P),

and for output row oh = a + S*i the source row is ih = i + base - t * D / gcd(S, D), with
base = (a + P - kh0*D) / S (an exact division). The grid gets a third axis over phases and each
program's K loop visits only its phase's valid taps: S_h*S_w times less tensor-core work than
the naive gather, and no per-row divisibility tests. Phases without taps (stride > kernel span)
still write their pixels: the epilogue of zero (bias, activations, residual).

Everything else is :mod:`conv`'s recipe: the weight is packed once into a K-major
[G, KH*KW*ICg, OCg] matrix (:func:`pack_conv_transpose_weight`; K ordered (kh, kw, ic)) so the
B tile is a plain 2-D load; a K step is one tap x BLOCK_K contiguous input channels; groups are a
grid axis; fp32 accumulation in ``tl.dot``; the shared epilogue (bias -> act1 -> + residual -> act2)
runs in registers before the single store, which may go to a channel slice of a bigger buffer.

Semantics are exactly torch.nn.functional.conv_transpose2d's (stride, padding, output_padding,
dilation, groups; weight [C_in, C_out/groups, KH, KW]), with output size
(H - 1)*S - 2P + D*(K - 1) + output_padding + 1 per axis.
"""

import math

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
    run,
    spec_of,
)
from .conv_common import check_nhwc, check_packed, conv_out, eligible_tiered, pair
from .epilogue import Epilogue, store_tile
from .tiling import grouped_tile

# Autotuning configs with the tiers they are tried in (see conv.py and conv_common.dot_tier):
# fast (fp16/bf16, aligned channel runs, light epilogue), medium (unaligned, heaviest epilogue,
# TF32), fma (exact fp32). Every (config, tier) pair compiles with 0 spills on sm_80 and sm_90
# (tests/kernels/aot_sweep.py). conv's 128x64 tile on 4 warps is left out: the per-row phase
# bookkeeping puts it at the 255-register limit on sm_80 (bf16, mish epilogue); 8 warps cover it.
TIERED_CONFIGS = [
    (triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=3),
     ("fast", "medium")),
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
# Under the interpreter: tiles smaller than the test shapes, so masking is exercised.
INTERPRET_CONFIG = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2}, num_warps=4,
                                 num_stages=1)


@triton.jit
def _phase_taps(a, KH, stride, pad, dil, g, inv):
    """The valid taps of output phase ``a`` along one axis: (first tap kh0, number of taps, base).

    Taps are kh0 + t*(stride/g) for t < count; the source index of output index a + stride*i is
    i + base - t*(dil/g). ``g`` = gcd(stride, dil), ``inv`` = (dil/g)^-1 mod (stride/g) (host-computed).
    """
    step = stride // g
    r = (a + pad) % stride                       # a, pad >= 0: no negative remainders
    has = (r % g) == 0                           # kh*dil = r (mod stride) is solvable
    kh0 = ((r // g) * inv) % step
    count = tl.maximum(KH - kh0 + step - 1, 0) // step
    count = tl.where(has, count, 0)
    base = (a + pad - kh0 * dil) // stride       # exact whenever count > 0
    return kh0, count, base


@triton.jit
def conv_transpose2d_kernel(
    x_ptr,                      # input [N, H, W, C_in], channel stride 1
    sxn, sxh, sxw,              # input strides of n, h, w (elements)
    w_ptr,                      # packed weight [G, KH*KW*ICg, OCg], contiguous
    out_ptr,                    # output rows [N*OH*OW, C_out], channel stride 1
    out_stride,                 # output row stride (>= C_out when writing into a channel slice)
    H, W, OH, OW,               # input and output spatial sizes
    OHq, OWq,                   # rows / columns of one phase: cdiv(OH, stride_h), cdiv(OW, stride_w)
    Mq,                         # N * OHq * OWq: GEMM rows of one phase
    OCg, ICg,                   # output / input channels per group
    KH, KW,                     # kernel height and width
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    gcd_h, gcd_w,               # gcd(stride, dilation) per axis
    inv_h, inv_w,               # (dil/gcd)^-1 mod (stride/gcd) per axis (0 when stride/gcd == 1)
    bias_ptr, slope1_ptr, slope1_stride, res_ptr, res_stride,  # epilogue (see epilogue.py)
    slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
    HAS_BIAS: tl.constexpr, ACT1: tl.constexpr, HAS_RES: tl.constexpr, ACT2: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" or "tf32" (only matters for fp32 inputs)
    DOT_UPCAST: tl.constexpr,     # feed tl.dot fp32 (works around the interpreter's bf16 dot)
    USE_INT64: tl.constexpr,      # 64-bit offsets for huge tensors
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,        # M-tiles per L2 swizzle group
):
    # -- which tile: (row tile, channel tile) in grouped order, the group, the output phase (a, b).
    pid = tl.program_id(0)
    g = tl.program_id(1)
    phase = tl.program_id(2)
    a = phase // stride_w
    b = phase - a * stride_w
    pid_m, pid_n = grouped_tile(pid, tl.cdiv(Mq, BLOCK_M), tl.cdiv(OCg, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_n = offs_n < OCg

    # -- row m of the phase is output pixel (n, a + stride_h*i, b + stride_w*j).
    pix = OHq * OWq
    n = offs_m // pix
    rem = offs_m - n * pix
    i = rem // OWq
    j = rem - i * OWq
    oh = a + stride_h * i
    ow = b + stride_w * j
    mask_m = (offs_m < Mq) & (oh < OH) & (ow < OW)   # the last phase row/column may fall outside
    if USE_INT64:
        n = n.to(tl.int64)
        i = i.to(tl.int64)
        j = j.to(tl.int64)
    out_rows = (n * OH + oh) * OW + ow                # output row (pixel) index of each GEMM row
    x_rows = n * sxn + g * ICg                        # [BLOCK_M] offsets of pixel (n, 0, 0), group channel 0

    # -- the taps of this phase along each axis.
    kh0, n_h, base_h = _phase_taps(a, KH, stride_h, pad_h, dil_h, gcd_h, inv_h)
    kw0, n_w, base_w = _phase_taps(b, KW, stride_w, pad_w, dil_w, gcd_w, inv_w)
    step_h = stride_h // gcd_h
    step_w = stride_w // gcd_w
    dq_h = dil_h // gcd_h                             # source row decrement per tap step
    dq_w = dil_w // gcd_w

    K = KH * KW * ICg
    w_group = w_ptr + g * K * OCg                     # this group's [K, OCg] weight matrix
    if USE_INT64:
        w_group = w_ptr + g.to(tl.int64) * K * OCg

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    c_blocks = tl.cdiv(ICg, BLOCK_K)
    n_w1 = tl.maximum(n_w, 1)
    k_steps = n_h * n_w * c_blocks                    # one step = one valid tap x BLOCK_K channels
    for step in range(0, k_steps):
        tap = step // c_blocks
        c0 = (step - tap * c_blocks) * BLOCK_K
        th = tap // n_w1
        tw = tap - th * n_w1
        kh = kh0 + th * step_h
        kw = kw0 + tw * step_w
        ih = i + (base_h - th * dq_h)
        iw = j + (base_w - tw * dq_w)
        in_img = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        cs = c0 + offs_k
        mask_k = cs < ICg
        # A tile: BLOCK_M pixels x BLOCK_K channels, each pixel a contiguous channel run.
        a_offs = (x_rows + ih * sxh + iw * sxw)[:, None] + cs[None, :]
        x_tile = tl.load(x_ptr + a_offs, mask=in_img[:, None] & mask_k[None, :], other=0.0)
        # B tile: BLOCK_K rows of the packed weight (K index (kh*KW + kw)*ICg + c), BLOCK_N channels each.
        b_offs = ((kh * KW + kw) * ICg + cs)[:, None] * OCg + offs_n[None, :]
        w_tile = tl.load(w_group + b_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if DOT_UPCAST:
            x_tile = x_tile.to(tl.float32)
            w_tile = w_tile.to(tl.float32)
        acc = tl.dot(x_tile, w_tile, acc, input_precision=DOT_PRECISION)

    # -- fused epilogue in registers, then one store of BLOCK_M x BLOCK_N outputs (rows S pixels apart).
    cols = g * OCg + offs_n
    store_tile(acc, out_rows, cols, mask_m, mask_n, out_ptr, out_stride, bias_ptr, slope1_ptr, slope1_stride,
               res_ptr, res_stride, slope2_ptr, slope2_stride, alpha1, beta1, alpha2, beta2,
               HAS_BIAS, ACT1, HAS_RES, ACT2, USE_INT64)


def eligible_configs(args: dict) -> list:
    """The autotuning configs worth trying for these kernel arguments (see TIERED_CONFIGS)."""
    return eligible_tiered(TIERED_CONFIGS, args)


# The GPU path: autotuned per problem size and tier; restore_value keeps an in-place residual
# (residual is out) correct while configs are benchmarked.
conv_transpose2d_kernel_tuned = autotuned(conv_transpose2d_kernel,
    CONFIGS, key=["Mq", "OCg", "ICg", "KH", "KW", "stride_h", "stride_w", "sxw", "ACT1", "HAS_RES", "ACT2",
                  "DOT_PRECISION"],
    restore_value=["out_ptr"],
    prune_configs_by={"early_config_prune": lambda configs, nargs, **kw: eligible_configs({**nargs, **kw})},
)


def pack_conv_transpose_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """[C_in, C_out/G, KH, KW] (torch's conv_transpose2d layout) -> [G, KH*KW*C_in/G, C_out/G].

    K is ordered (kh, kw, ic): packed[g, (kh*KW + kw)*ICg + ic, oc] = w[g*ICg + ic, oc, kh, kw].
    """
    if w.dim() != 4:
        raise KernelError(f"conv_transpose weight must be [C_in, C_out/groups, KH, KW], got {tuple(w.shape)}")
    C_in, OCg, KH, KW = w.shape
    if groups < 1 or C_in % groups:
        raise KernelError(f"in channels {C_in} not divisible by groups {groups}")
    ICg = C_in // groups
    packed = w.reshape(groups, ICg, OCg, KH, KW).permute(0, 3, 4, 1, 2)
    return packed.reshape(groups, KH * KW * ICg, OCg).contiguous()


def conv_transpose_output_size(size: int, kernel: int, stride: int, padding: int, output_padding: int,
                               dilation: int) -> int:
    """torch's conv_transpose2d output size along one axis."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def output_shape(x_shape, out_channels, kernel_size, stride=1, padding=0, output_padding=0, dilation=1) -> tuple:
    """[N, OH, OW, out_channels]: the NHWC output shape of :func:`conv_transpose2d`."""
    N, H, W, _ = x_shape
    (KH, KW), (sh, sw), (ph, pw) = pair(kernel_size), pair(stride), pair(padding)
    (oph, opw), (dh, dw) = pair(output_padding), pair(dilation)
    return (N, conv_transpose_output_size(H, KH, sh, ph, oph, dh), conv_transpose_output_size(W, KW, sw, pw, opw, dw),
            out_channels)


def _axis_solver(stride: int, dilation: int) -> tuple[int, int]:
    """(gcd(stride, dilation), (dilation/gcd)^-1 mod (stride/gcd)) for :func:`_phase_taps`."""
    g = math.gcd(stride, dilation)
    return g, pow(dilation // g, -1, stride // g)


def _plan_conv_transpose(x, packed, out_channels, kernel_size, stride, padding, output_padding, dilation, groups,
                         epilogue, out, allow_tf32, interpret):
    N, H, W, C_in = check_nhwc(x)
    (KH, KW), (sh, sw) = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    (ph, pw), (oph, opw) = pair(padding, "padding"), pair(output_padding, "output_padding")
    dh, dw = pair(dilation, "dilation")
    if min(sh, sw, dh, dw, KH, KW) < 1 or min(ph, pw, oph, opw) < 0:
        raise KernelError("kernel, stride and dilation must be >= 1, padding and output_padding >= 0")
    if oph >= max(sh, dh) or opw >= max(sw, dw):
        raise KernelError(f"output_padding {(oph, opw)} must be smaller than stride {(sh, sw)} or dilation "
                          f"{(dh, dw)} (torch's rule)")
    if groups < 1 or out_channels < 1 or C_in % groups or out_channels % groups:
        raise KernelError(f"channels ({C_in} in, {out_channels} out) not divisible by groups {groups}")
    ICg, OCg = C_in // groups, out_channels // groups
    check_packed(packed, (groups, KH * KW * ICg, OCg), "pack_conv_transpose_weight")
    OH = conv_transpose_output_size(H, KH, sh, ph, oph, dh)
    OW = conv_transpose_output_size(W, KW, sw, pw, opw, dw)
    if OH < 1 or OW < 1:
        raise KernelError(f"output would be empty ({OH}x{OW})")
    out, out_stride = conv_out(x, out, (N, OH, OW, out_channels))
    ep_args, ep_constexprs = epilogue.kernel_args(out, N * OH * OW, out_channels)

    OHq, OWq = triton.cdiv(OH, sh), triton.cdiv(OW, sw)
    Mq = N * OHq * OWq
    (gcd_h, inv_h), (gcd_w, inv_w) = _axis_solver(sh, dh), _axis_solver(sw, dw)
    args = dict(x_ptr=x, sxn=x.stride(0), sxh=x.stride(1), sxw=x.stride(2), w_ptr=packed, out_ptr=out,
                out_stride=out_stride, H=H, W=W, OH=OH, OW=OW, OHq=OHq, OWq=OWq, Mq=Mq, OCg=OCg, ICg=ICg,
                KH=KH, KW=KW, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw, dil_h=dh, dil_w=dw,
                gcd_h=gcd_h, gcd_w=gcd_w, inv_h=inv_h, inv_w=inv_w, **ep_args)
    fp32 = x.dtype == torch.float32
    constexprs = dict(**ep_constexprs, DOT_PRECISION="tf32" if (fp32 and allow_tf32) else "ieee",
                      DOT_UPCAST=interpret and x.dtype == torch.bfloat16,
                      USE_INT64=needs_int64(x, packed, out, epilogue.residual))
    configs = eligible_configs({**args, **constexprs})
    cfg = INTERPRET_CONFIG if interpret else configs[0]
    grid = lambda meta: (triton.cdiv(Mq, meta["BLOCK_M"]) * triton.cdiv(OCg, meta["BLOCK_N"]), groups, sh * sw)
    return out, Launch(conv_transpose2d_kernel, conv_transpose2d_kernel_tuned, args, constexprs, grid, cfg,
                       tuple(configs))


def conv_transpose2d(x, packed, *, out_channels, kernel_size, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                     dilation=(1, 1), groups=1, epilogue=Epilogue(), out=None, allow_tf32=False):
    """y = epilogue(conv_transpose2d(x, w)) in NHWC; returns ``out`` [N, OH, OW, out_channels].

    x              : [N, H, W, C_in], channel stride 1 (may be a channel slice of a bigger buffer)
    packed         : pack_conv_transpose_weight(w, groups), w in torch's [C_in, C_out/groups, KH, KW]
    kernel_size, stride, padding, output_padding, dilation : (h, w) pairs (or ints), torch's meaning
    groups         : input and output channels split into this many independent groups
    epilogue       : bias / act1 / residual / act2, fused before the store
    out            : optional output [N, OH, OW, out_channels] with channel stride 1 and one row
                     stride (e.g. a channel slice of a concat buffer); nothing else of it is written
    allow_tf32     : fp32 inputs may use TF32 tensor cores (else exact fp32 FMA)
    """
    out, launch = _plan_conv_transpose(x, packed, out_channels, kernel_size, stride, padding, output_padding,
                                       dilation, groups, epilogue, out, allow_tf32, interpreting())
    run(launch)
    return out


def specialization(x_shape, dtype, out_channels, kernel_size, stride=1, padding=0, output_padding=0, dilation=1,
                   groups=1, epilogue=Epilogue(), *, allow_tf32=False, config=None) -> dict:
    """AOT specialization of :func:`conv_transpose2d` (contiguous tensors).

    ``epilogue``: as passed to :func:`conv_transpose2d`, typically
    ``Epilogue.planned(output_shape(x_shape, ...), dtype, bias=True, act1="relu")``.
    ``config``: None = the default (first eligible) config, an index into the eligible configs, or "all".
    """
    KH, KW = pair(kernel_size, "kernel_size")
    C_in = x_shape[-1]
    x = meta_tensor(x_shape, dtype)
    packed = meta_tensor((groups, KH * KW * (C_in // groups), out_channels // groups), dtype)
    _, launch = _plan_conv_transpose(x, packed, out_channels, kernel_size, stride, padding, output_padding, dilation,
                                     groups, epilogue, None, allow_tf32, False)
    return spec_of(launch, config)
