"""Ahead-of-time builds for sm_80 and sm_90 (no GPU needed), and the specializations.

This process interprets (conftest sets TRITON_INTERPRET=1), so the builds run in spawn
workers via aot.build_many. Reports are cached (NETDSL_CACHE_DIR or ~/.cache/netdsl/aot),
so only the first run pays the compile time. The exhaustive check of every config is
tests/kernels/aot_sweep.py.
"""

import pytest
import torch

from netdsl.kernels import (adaptive_pool, aot, attention, bmm, conv, conv_direct, conv_transpose, embedding, matmul,
                            norm, pointwise, pool, softmax, upsample)
from netdsl.kernels.epilogue import Epilogue

F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32


def EP(out_shape, dtype):
    """The epilogue every GEMM-like build gets: bias, relu, residual, silu."""
    return Epilogue.planned(out_shape, dtype, bias=True, act1="relu", residual=True, act2="silu")


def int64(spec):
    """The same specialization with 64-bit offsets (as chosen for tensors over 2**31 elements)."""
    return {**spec, "constexprs": {**spec["constexprs"], "USE_INT64": True}}


def specs():
    """(label, spec, needs tensor cores) for at least one fp16 and one fp32 build per kernel."""
    x = (2, 28, 28, 64)
    conv_args = ((1, 9 * 64, 128), 128, 3, 1, 1, 1, 1)
    conv_out = conv.output_shape(x, 128, 3, 1, 1, 1)
    return [
        ("conv fp16 default", conv.specialization(x, F16, *conv_args, EP(conv_out, F16)), True),
        ("conv fp16 largest", conv.specialization(x, F16, *conv_args, EP(conv_out, F16), config=3), True),
        ("conv bf16 unaligned", conv.specialization((2, 9, 9, 6), torch.bfloat16, (3, 9 * 2, 4), 12, 3, 2, 1, 1, 3,
                                                    EP((2, 5, 5, 12), torch.bfloat16)), True),
        ("conv fp32", conv.specialization(x, F32, *conv_args, EP(conv_out, F32)), False),
        ("conv fp16 int64", int64(conv.specialization(x, F16, *conv_args, EP(conv_out, F16))), True),
        ("conv_transpose fp16 default", conv_transpose.specialization(
            x, F16, 64, 4, 2, 1, 0, 1, 1, EP((2, 56, 56, 64), F16)), True),
        ("conv_transpose bf16 unaligned", conv_transpose.specialization(
            (2, 9, 7, 6), torch.bfloat16, 12, 3, 3, 1, 2, 2, 3, EP((2, 29, 23, 12), torch.bfloat16)), True),
        ("conv_transpose fp32", conv_transpose.specialization(x, F32, 64, 4, 2, 1, 0, 1, 1, EP((2, 56, 56, 64), F32)),
         False),
        ("conv_transpose fp16 int64", int64(conv_transpose.specialization(
            x, F16, 64, 4, 2, 1, 0, 1, 1, EP((2, 56, 56, 64), F16))), True),
        ("depthwise fp16", conv_direct.specialization(x, F16, 64, 3, 1, 1, 1, EP(x, F16)), False),
        ("depthwise fp32", conv_direct.specialization(x, F32, 64, 3, 2, 1, 1, EP((2, 14, 14, 64), F32)), False),
        ("linear fp16 default", matmul.specialization((256, 512), F16, 768, EP((256, 768), F16)), True),
        ("linear fp16 largest", matmul.specialization((256, 512), F16, 768, EP((256, 768), F16), config=3), True),
        ("linear fp32", matmul.specialization((256, 512), F32, 768, EP((256, 768), F32)), False),
        ("pointwise fp16", pointwise.specialization(x, F16, scale_shape=(64,), shift_shape=(64,), epilogue=EP(x, F16)),
         False),
        ("pointwise fp32", pointwise.specialization(x, F32, mul_other=True), False),
        ("layernorm fp16", norm.layernorm_specialization((64, 768), F16, residual_before=True, sum_out=True,
                                                          epilogue=Epilogue.planned((64, 768), F16, act1="gelu")),
         False),
        ("layernorm fp32 chunked", norm.layernorm_specialization((64, 20000), F32), False),
        *[(f"groupnorm fp16 {i}", s, False) for i, s in enumerate(norm.groupnorm_specialization(
            (2, 16, 16, 64), F16, 8, epilogue=Epilogue.planned((2, 16, 16, 64), F16, act1="silu")))],
        ("maxpool fp16", pool.specialization((2, 28, 28, 64), F16, "max", 3, 2, 1), False),
        ("avgpool fp32", pool.specialization((2, 28, 28, 64), F32, "avg", 3, 2, 1), False),
        ("global_avgpool fp16", pool.specialization((2, 7, 7, 512), F16, "global_avg"), False),
        ("global_maxpool fp16", pool.specialization((2, 7, 7, 512), F16, "global_max"), False),
        ("adaptive_avgpool bf16", adaptive_pool.specialization((2, 14, 14, 512), BF16, (5, 5)), False),
        ("adaptive_avgpool fp32 int64", int64(adaptive_pool.specialization((2, 9, 61, 13), F32, (4, 3))), False),
        ("upsample nearest fp16", upsample.specialization(x, F16, (56, 56), "nearest"), False),
        ("upsample bilinear bf16", upsample.specialization((2, 9, 7, 13), torch.bfloat16, (20, 15), "bilinear",
                                                           scale_factor=(2.3, 2.2)), False),
        ("upsample bilinear-align fp32 int64", int64(upsample.specialization(
            x, F32, (56, 56), "bilinear", align_corners=True)), False),
        ("bmm fp16 default", bmm.specialization((8, 128, 64), F16, 128, EP((8, 128, 128), F16), transpose_b=True),
         True),
        ("bmm bf16 transposed broadcast", bmm.specialization((8, 128, 64), BF16, 96, EP((8, 128, 96), BF16),
                                                             transpose_a=True, b_batch=1), True),
        ("bmm fp32", bmm.specialization((8, 77, 64), F32, 96, EP((8, 77, 96), F32)), False),
        # attention's default config per head-dim tier: every E, fp16 / bf16 / fp32, masks and causal
        ("attention fp16 E=64", attention.specialization((2, 8, 1024, 64), F16), True),
        ("attention bf16 E=32 causal key-padding", attention.specialization(
            (2, 8, 1024, 32), BF16, causal=True, mask_shape=(2, 1, 1, 1024)), True),
        ("attention fp16 E=80 [L,S] mask", attention.specialization(
            (2, 8, 1000, 80), F16, mask_shape=(1000, 1000), mask_dtype=F16), True),
        ("attention bf16 E=128 causal", attention.specialization((2, 8, 1024, 128), BF16, causal=True), True),
        ("attention fp32 E=64 causal", attention.specialization((2, 8, 1024, 64), F32, causal=True), False),
        ("attention fp32-tf32 E=128", attention.specialization((2, 8, 1024, 128), F32, allow_tf32=True), True),
        ("embedding fp16", embedding.specialization((4, 128), torch.int64, 32000, 4096, F16), False),
        ("softmax fp16", softmax.specialization((64, 1000), F16), False),
        ("log_softmax fp32 chunked", softmax.specialization((64, 50000), F32, log=True), False),
    ]


@pytest.fixture(scope="module")
def built():
    table = specs()
    reports = aot.build_many(aot.jobs([s for _, s, _ in table], ccs=(80, 90)), max_workers=2)
    return [(label, needs_mma, reports[2 * i], reports[2 * i + 1]) for i, (label, _, needs_mma) in enumerate(table)]


def test_every_kernel_builds_without_spills(built):
    problems = []
    for label, needs_mma, *reports in built:
        for r in reports:
            if r.spills or r.registers > aot.MAX_REGISTERS or not r.fits_shared:
                problems.append(f"{label} sm_{r.cc}: regs={r.registers} spills={r.spills} smem={r.shared_bytes}")
            if needs_mma and not r.uses_mma:
                problems.append(f"{label} sm_{r.cc}: no tensor-core instructions")
            if needs_mma:
                # sm_90's wgmma (HGMMA) needs 64-row tiles: attention's narrow fp32 tiles use HMMA there
                expected = ("HMMA",) if r.cc == 80 else ("HGMMA",)
                if r.cc == 90 and label.startswith("attention"):
                    expected = ("HGMMA", "HMMA")
                assert r.mma in expected, (label, r.cc, r.mma)
    assert not problems, "\n".join(problems)
    print("\n" + aot.format_reports([r for _, _, *rs in built for r in rs]))


def test_reports_describe_the_build(built):
    label, _, r80, r90 = built[0]
    assert (r80.cc, r90.cc) == (80, 90)
    assert r80.name == "conv2d_kernel" and r80.module.endswith("kernels.conv")
    assert r80.ptx_lines > 0 and r80.sass_lines > 0 and r80.registers > 0
    assert r80.constexprs["BLOCK_M"] == conv.CONFIGS[0].kwargs["BLOCK_M"]


def test_second_build_comes_from_the_cache(built):
    spec = specs()[0][1]
    again = aot.build_many(aot.jobs(spec, ccs=(80,)))
    assert again[0].cached and again[0].registers == built[0][2].registers


def test_build_refuses_an_interpreted_kernel():
    with pytest.raises(RuntimeError, match="build_many"):
        aot.build(conv.conv2d_kernel, {}, {}, 80)


def test_the_tma_linear_loads_through_tensor_descriptors_on_sm90():
    """``linear(tma=True)`` builds for sm_90 with TMA loads (UTMALDG), wgmma and no spills; the pointer
    kernel of the same shape has no TMA loads (the report's field can tell them apart)."""
    shape, ep = (256, 512), Epilogue.planned((256, 768), F16)
    tma = matmul.specialization(shape, F16, 768, ep, cc=90, tma=True)
    plain = matmul.specialization(shape, F16, 768, ep)
    r_tma, r_plain = aot.build_many(aot.jobs(tma, ccs=(90,)) + aot.jobs(plain, ccs=(90,)), max_workers=2)
    assert r_tma.tma and r_tma.mma == "HGMMA" and r_tma.spills == 0, r_tma
    assert not r_plain.tma
