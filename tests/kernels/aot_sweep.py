"""Build every shipped config of every kernel for sm_80 and sm_90 and check the resources.

Not a pytest module (it takes minutes): run it after changing a kernel or a config list,

    python tests/kernels/aot_sweep.py [--dtypes fp16,bf16,fp32] [--workers 2]

Every build must have 0 spills, <= 255 registers, shared memory within the target's
limit, and conv/linear/bmm/attention must use tensor cores (HMMA on sm_80, HGMMA on sm_90;
attention tiles under 64 query rows get HMMA on sm_90 too) for fp16, bf16 and TF32. The
split-K kernels (partial sums under every config, and the reduction) build for every target;
the sm_90-only configs (BLOCK_K 64, tiles up to 128x256) and the TMA linear for sm_90 alone.
Shapes: a channel-aligned one (the JIT's 16-divisibility hints hold, loads vectorize) and
an unaligned one (odd channel counts), with a heavy epilogue.
"""

import argparse
import re
import sys
import time

import torch

from netdsl.kernels import (adaptive_pool, aot, attention, bmm, conv, conv_direct, conv_transpose, embedding, matmul,
                            norm, pointwise, pool, softmax, upsample)
from netdsl.kernels import recurrence
from netdsl.kernels.conv_common import HOPPER_CONFIGS
from netdsl.kernels.epilogue import Epilogue

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# Epilogue pieces (Epilogue.planned keyword arguments).
HEAVY = dict(bias=True, act1="gelu", residual=True, act2="mish")   # the "medium" tier
# No residual, piecewise-linear activations: the only epilogue the 128x256 sm_90 tiles are offered with.
PLAIN = dict(bias=True, act1="relu")
# The heaviest epilogues that still get the fast tier (all configs): one transcendental act.
LIGHT = (dict(bias=True, act1="mish", residual=True, act2="relu6"),
         dict(bias=True, act1="relu", residual=True, act2="mish"))


# attention variants (specialization keywords, from the dtype): the register-hungriest mask
# and causal combinations of each kind.
ATTENTION_VARIANTS = (
    ("plain", lambda dt: {}),
    ("causal", lambda dt: dict(causal=True)),
    ("key-padding bool causal", lambda dt: dict(mask_shape=(2, 1, 1, 1024), causal=True)),
    ("mask [L,S] additive causal", lambda dt: dict(mask_shape=(1024, 1024), mask_dtype=dt, causal=True)),
    ("mask [B,1,L,S] bool", lambda dt: dict(mask_shape=(2, 1, 1024, 1024))),
)


def ep(out_shape, dtype, pieces):
    return Epilogue.planned(out_shape, dtype, **pieces)


def sweep_specs(dtypes):
    """(label, spec, needs_mma) for every kernel x config x dtype x shape."""
    out = []

    def add(label, specs, mma=False):
        specs = specs if isinstance(specs, list) else [specs]
        out.extend((f"{label} [{i}]" if len(specs) > 1 else label, s, mma) for i, s in enumerate(specs))

    for name in dtypes:
        dt = DTYPES[name]
        for tf32 in ((False, True) if name == "fp32" else (False,)):
            mma = name != "fp32" or tf32
            tag = f"{name}{'-tf32' if tf32 else ''}"
            # implicit-GEMM conv: aligned (64 -> 128 channels, 3x3) and unaligned (2 groups, 5 -> 7, 5x5 s2 d2)
            add(f"conv {tag} aligned", conv.specialization(
                (2, 56, 56, 64), dt, (1, 9 * 64, 128), 128, 3, 1, 1, 1, 1, ep((2, 56, 56, 128), dt, HEAVY),
                allow_tf32=tf32, config="all"), mma)
            add(f"conv {tag} unaligned", conv.specialization(
                (2, 33, 31, 10), dt, (2, 25 * 5, 7), 14, 5, 2, 2, 2, 2, ep((2, 15, 14, 14), dt, HEAVY),
                allow_tf32=tf32, config="all"), mma)
            add(f"linear {tag} aligned", matmul.specialization(
                (4, 77, 256), dt, 512, ep((4, 77, 512), dt, HEAVY), allow_tf32=tf32, config="all"), mma)
            add(f"linear {tag} unaligned", matmul.specialization(
                (77, 45), dt, 29, ep((77, 29), dt, HEAVY), allow_tf32=tf32, config="all"), mma)
            add(f"conv_transpose {tag} aligned", conv_transpose.specialization(
                (2, 28, 28, 64), dt, 64, 4, 2, 1, 0, 1, 1, ep((2, 56, 56, 64), dt, HEAVY),
                allow_tf32=tf32, config="all"), mma)
            add(f"conv_transpose {tag} unaligned", conv_transpose.specialization(
                (2, 15, 13, 10), dt, 14, 3, 3, 1, 2, 2, 2, ep((2, 47, 41, 14), dt, HEAVY),
                allow_tf32=tf32, config="all"), mma)
            # batched matmul: contiguous, both operands transposed views, broadcast b, unaligned
            add(f"bmm {tag} aligned", bmm.specialization(
                (8, 77, 256), dt, 512, ep((8, 77, 512), dt, HEAVY), allow_tf32=tf32, config="all"), mma)
            add(f"bmm {tag} transposed", bmm.specialization(
                (8, 128, 64), dt, 128, ep((8, 128, 128), dt, HEAVY), transpose_a=True, transpose_b=True,
                allow_tf32=tf32, config="all"), mma)
            add(f"bmm {tag} broadcast-b", bmm.specialization(
                (8, 128, 64), dt, 96, ep((8, 128, 96), dt, HEAVY), transpose_b=True, b_batch=1,
                allow_tf32=tf32, config="all"), mma)
            add(f"bmm {tag} unaligned", bmm.specialization(
                (3, 77, 45), dt, 29, ep((3, 77, 29), dt, HEAVY), transpose_b=True, allow_tf32=tf32, config="all"),
                mma)
            # attention: every head dim tier, with causal, key-padding and per-row masks; unaligned heads
            for E in (32, 64, 80, 128):
                for label, kw in ATTENTION_VARIANTS:
                    add(f"attention {tag} E={E} {label}", attention.specialization(
                        (2, 8, 1024, E), dt, **kw(dt), allow_tf32=tf32, config="all"), mma)
            # rows aligned to 8 elements only (E = 40, 72), and "narrow" rows (not 16-byte aligned)
            for E in ((40, 72) + ((36, 100) if name != "fp32" else (42, 90))):
                for label, kw in ATTENTION_VARIANTS:
                    kw = {k: v for k, v in kw(dt).items() if k != "mask_shape"}
                    mask = {"key-padding": (2, 1, 1, 93), "mask [L,S]": (77, 93), "mask [B,1,L,S]": (2, 1, 77, 93)}
                    shape = [m for prefix, m in mask.items() if label.startswith(prefix)]
                    add(f"attention {tag} E={E}/Ev={E - 16} L=77 S=93 {label}", attention.specialization(
                        (2, 3, 77, E), dt, 93, ev=E - 16, mask_shape=shape[0] if shape else None, **kw,
                        allow_tf32=tf32, config="all"), mma)
            # recurrent layers: the projection GEMM (fp32 out) and the recurrence, both directions, an initial
            # state; H = 33 and 64 keep W_hh resident, 128 too for rnn in fp16/bf16, 200 streams it (unaligned)
            for cell in ("rnn", "lstm", "gru"):
                for H in (33, 64, 128, 200):
                    add(f"recurrence {cell} {tag} H={H}", recurrence.specialization(
                        cell, 64, 35, 256, H, dt, bidirectional=True, initial_state=True, allow_tf32=tf32), mma)
                # 64-bit offsets (a batch x time x features past 2^31 elements), streamed
                add(f"recurrence {cell} {tag} H=200 int64", recurrence.specialization(
                    cell, 65536, 128, 64, 200, dt, bidirectional=True, allow_tf32=tf32), mma)
        for j, pieces in enumerate(LIGHT):
            if name != "fp32":
                add(f"conv {name} aligned light{j}", conv.specialization(
                    (2, 56, 56, 64), dt, (1, 9 * 64, 128), 128, 3, 1, 1, 1, 1, ep((2, 56, 56, 128), dt, pieces),
                    config="all"), True)
                add(f"linear {name} aligned light{j}", matmul.specialization(
                    (4, 77, 256), dt, 512, ep((4, 77, 512), dt, pieces), config="all"), True)
                add(f"conv_transpose {name} aligned light{j}", conv_transpose.specialization(
                    (2, 28, 28, 64), dt, 64, 4, 2, 1, 0, 1, 1, ep((2, 56, 56, 64), dt, pieces), config="all"), True)
            add(f"depthwise {name} light{j}", conv_direct.specialization(
                (2, 56, 56, 64), dt, 64, 3, 1, 1, 1, ep((2, 56, 56, 64), dt, pieces), config="all"))
        add(f"depthwise {name}", conv_direct.specialization((2, 56, 56, 64), dt, 64, 3, 1, 1, 1,
                                                            ep((2, 56, 56, 64), dt, HEAVY), config="all"))
        add(f"depthwise {name} x2 unaligned", conv_direct.specialization(
            (2, 33, 31, 7), dt, 14, 5, 2, 2, 2, ep((2, 15, 14, 14), dt, HEAVY), config="all"))
        add(f"pointwise {name}", pointwise.specialization(
            (2, 28, 28, 96), dt, scale_shape=(96,), shift_shape=(96,), epilogue=ep((2, 28, 28, 96), dt, HEAVY)))
        add(f"pointwise {name} odd", pointwise.specialization(
            (2, 9, 7, 13), dt, scale_shape=(2, 13), shift_shape=(2, 13), mul_other=True,
            epilogue=ep((2, 9, 7, 13), dt, HEAVY)))
        for C in (768, 8192, 20000):
            add(f"layernorm {name} C={C}", norm.layernorm_specialization(
                (64, C), dt, residual_before=True, sum_out=True, epilogue=ep((64, C), dt, dict(act1="gelu_tanh"))))
        add(f"groupnorm {name}", norm.groupnorm_specialization((2, 32, 32, 320), dt, 32,
                                                               epilogue=ep((2, 32, 32, 320), dt, dict(act1="silu"))))
        add(f"maxpool {name}", pool.specialization((2, 56, 56, 64), dt, "max", 3, 2, 1))
        add(f"avgpool {name}", pool.specialization((2, 56, 56, 64), dt, "avg", 3, 2, 1, count_include_pad=False))
        add(f"global_avgpool {name}", pool.specialization((2, 7, 7, 2048), dt, "global_avg"))
        add(f"adaptive_avgpool {name}", adaptive_pool.specialization((2, 14, 14, 512), dt, (5, 5)))
        add(f"adaptive_avgpool {name} odd", adaptive_pool.specialization((2, 9, 61, 13), dt, (4, 3)))
        for mode, corners in (("nearest", False), ("bilinear", False), ("bilinear", True)):
            add(f"upsample {mode}{'-ac' if corners else ''} {name}", upsample.specialization(
                (2, 28, 28, 64), dt, (56, 56), mode, align_corners=corners))
            add(f"upsample {mode}{'-ac' if corners else ''} {name} odd", upsample.specialization(
                (2, 9, 7, 13), dt, (20, 15), mode, align_corners=corners, scale_factor=(2.3, 2.2)))
        for D, V in ((4096, 32000), (77, 1000)):
            for ids_dtype in (torch.int32, torch.int64):
                add(f"embedding {name} D={D} {str(ids_dtype)[6:]}", embedding.specialization(
                    (4, 77), ids_dtype, V, D, dt))
        for C in (1000, 8192, 50000):
            add(f"softmax {name} C={C}", softmax.specialization((64, C), dt))
            add(f"log_softmax {name} C={C}", softmax.specialization((64, C), dt, log=True))
    return out


def split_k_specs(dtypes):
    """(label, spec, needs_mma) of the split-K kernels, for sm_80 and sm_90: the partial conv and linear
    kernels under every eligible sm_80 config (layer4-sized: 49 rows, long K) and the reduction with the
    heavy epilogue, aligned and unaligned."""
    out = []
    for name in dtypes:
        dt = DTYPES[name]
        for tf32 in ((False, True) if name == "fp32" else (False,)):
            mma, tag = name != "fp32" or tf32, f"{name}{'-tf32' if tf32 else ''}"
            for label, specs in (
                ("conv aligned", conv.specialization((1, 7, 7, 512), dt, (1, 9 * 512, 512), 512, 3, 1, 1, 1, 1,
                                                     ep((1, 7, 7, 512), dt, HEAVY), allow_tf32=tf32, config="all",
                                                     split_k=8)),
                ("conv unaligned", conv.specialization((1, 9, 9, 90), dt, (2, 9 * 45, 35), 70, 3, 1, 1, 1, 2,
                                                       ep((1, 9, 9, 70), dt, HEAVY), allow_tf32=tf32, config="all",
                                                       split_k=3)),
                ("linear aligned", matmul.specialization((1, 2048), dt, 1000, ep((1, 1000), dt, HEAVY),
                                                         allow_tf32=tf32, config="all", split_k=5)),
                ("linear unaligned", matmul.specialization((3, 1001), dt, 77, ep((3, 77), dt, HEAVY),
                                                           allow_tf32=tf32, config="all", split_k=4))):
                *partials, reduce = specs
                out.extend((f"split-K {label} {tag} [{i}]", s, mma) for i, s in enumerate(partials))
                out.append((f"split-K reduce {label} {tag}", reduce, False))
    return out


def hopper_specs(dtypes):
    """(label, spec, needs_mma) of the sm_90-only configs (BLOCK_K 64, up to 128x256), for sm_90 alone:
    every one on a problem big enough to offer it, with the plain epilogue (the 128x256 tiles' tier) and
    the light ones (the fast tier), and the split-K partial kernels on a layer4-sized conv."""
    def key(kwargs, warps, stages):
        return tuple(kwargs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")), warps, stages
    hopper = {key(c.kwargs, c.num_warps, c.num_stages) for c in HOPPER_CONFIGS}
    only = lambda specs: [s for s in specs if key(s["constexprs"], s["num_warps"], s["num_stages"]) in hopper]
    out = []
    for name in dtypes:
        dt = DTYPES[name]
        if dt == torch.float32:
            continue   # the sm_90 configs are fp16/bf16 tensor-core tiles
        for j, pieces in enumerate((PLAIN, *LIGHT)):
            for label, specs in (
                ("conv", conv.specialization((2, 56, 56, 256), dt, (1, 9 * 256, 256), 256, 3, 1, 1, 1, 1,
                                             ep((2, 56, 56, 256), dt, pieces), config="all", cc=90)),
                ("linear", matmul.specialization((4, 77, 1024), dt, 1024, ep((4, 77, 1024), dt, pieces),
                                                 config="all", cc=90))):
                out.extend((f"sm_90 {label} {name} epilogue{j} [{i}]", s, True) for i, s in enumerate(only(specs)))
        *partials, _ = conv.specialization((1, 7, 7, 512), dt, (1, 9 * 512, 512), 512, 3, 1, 1, 1, 1,
                                           ep((1, 7, 7, 512), dt, LIGHT[0]), config="all", split_k=8, cc=90)
        out.extend((f"sm_90 split-K conv {name} [{i}]", s, True) for i, s in enumerate(only(partials)))
        # the TMA linear: every config it is offered (sm_80's and sm_90's), plain and light epilogues
        for j, pieces in enumerate((PLAIN, *LIGHT)):
            specs = matmul.specialization((4, 77, 1024), dt, 1024, ep((4, 77, 1024), dt, pieces), config="all",
                                          tma=True)
            out.extend((f"sm_90 TMA linear {name} epilogue{j} [{i}]", s, True) for i, s in enumerate(specs))
    return out


def check(report, needs_mma):
    problems = []
    if report.spills:
        problems.append(f"{report.spills} spill instructions")
    if report.registers > aot.MAX_REGISTERS:
        problems.append(f"{report.registers} registers")
    if not report.fits_shared:
        problems.append(f"{report.shared_bytes} B shared memory")
    if needs_mma and not report.uses_mma:
        problems.append("no tensor-core instructions")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="fp16,bf16,fp32")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ccs", default="80,90")
    parser.add_argument("--only", default="", help="regex on the labels")
    args = parser.parse_args(argv)
    ccs = tuple(int(c) for c in args.ccs.split(","))
    dtypes = args.dtypes.split(",")
    # (label, spec, needs_mma, cc) for every build: most for every target, the sm_90 configs for sm_90 alone
    builds = [(label, spec, mma, cc) for label, spec, mma in sweep_specs(dtypes) + split_k_specs(dtypes)
              for cc in ccs]
    builds += [(label, spec, mma, 90) for label, spec, mma in hopper_specs(dtypes) if 90 in ccs]
    builds = [b for b in builds if re.search(args.only, b[0])]
    start = time.time()
    jobs = [{**spec, "cc": cc} for _, spec, _, cc in builds]
    reports = aot.build_many(jobs, max_workers=args.workers)
    failures = 0
    for (label, _, mma, cc), r in zip(builds, reports):
        tiles = {k: v for k, v in r.constexprs.items() if k.startswith("BLOCK") or k == "SPLITS"}
        problems = check(r, mma)
        failures += bool(problems)
        verdict = "FAIL: " + ", ".join(problems) if problems else ""
        print(f"{label:42} sm_{cc} w{r.num_warps}/s{r.num_stages} regs={r.registers:3} spills={r.spills:3} "
              f"smem={r.shared_bytes:6} mma={r.mma or '-':5} {tiles} {verdict}")
    print(f"{len(reports)} builds in {time.time() - start:.0f}s, {failures} failing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
