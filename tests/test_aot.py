"""Ahead-of-time builds of every kernel specialization the example models launch, for sm_80 and sm_90,
without a GPU: each builds, spills nothing, fits shared memory, and every convolution / linear layer
uses tensor cores (HMMA on sm_80; HGMMA (wgmma) or HMMA on sm_90) in fp16 and bf16.

The specializations come from running each fused model once on "meta" tensors while the kernel
wrappers record their launches (``netdsl.backends.triton.aot.model_specializations``), exactly as
``netdsl compile`` does; the builds run in compile-mode worker processes
(``netdsl.kernels.aot.build_many``) and are cached by source and specialization, so only a first run
(or a kernel change) pays the compile time (about a second per build and worker). Every autotuning
config of every kernel is swept by tests/kernels/aot_sweep.py; here it is the configs a GPU launches
first, on the models' own shapes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("NETDSL_QUIET_INTERPRETER", "1")

from netdsl import cli  # noqa: E402
from netdsl.backends.triton.aot import model_specializations  # noqa: E402
from netdsl.frontend import load  # noqa: E402
from netdsl.ir.sizes import concrete_dims  # noqa: E402
from netdsl.kernels import aot  # noqa: E402
from netdsl.passes import run_pipeline  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.net"))
CCS = (80, 90)
GEMMS = ("conv2d_kernel", "linear_kernel")


def specializations(name: str, dtype: str, allow_tf32: bool = False, batch: int = 2) -> list[dict]:
    """The kernel specializations of one forward call of an example at batch 2 and its file's sizes."""
    graph = load(EXAMPLES / f"{name}.net")
    fused = run_pipeline(graph, "O1", log=lambda _: None)
    dims = concrete_dims(graph, {"N": batch})
    return model_specializations(fused, None, dims, dtype, allow_tf32=allow_tf32)


def unique(specs: list[dict]) -> list[dict]:
    seen, out = set(), []
    for spec in specs:
        key = json.dumps(spec, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(spec)
    return out


def build(specs: list[dict]) -> list[aot.KernelReport]:
    reports = aot.build_many(aot.jobs(specs, CCS), max_workers=2)
    assert len(reports) == len(specs) * len(CCS)
    return reports


def problems(reports, tensor_cores: bool) -> list[str]:
    """What is wrong with these builds (empty when all is well)."""
    bad = []
    for r in reports:
        what = f"{r.name} sm_{r.cc} {r.num_warps}w/{r.num_stages}s {r.constexprs}"
        if r.spills:
            bad.append(f"{what}: {r.spills} spill instructions ({r.registers} registers)")
        if r.registers > aot.MAX_REGISTERS:
            bad.append(f"{what}: {r.registers} registers")
        if not r.fits_shared:
            bad.append(f"{what}: {r.shared_bytes} bytes of shared memory (limit {aot.SHARED_LIMIT[r.cc]})")
        if tensor_cores and r.name in GEMMS and r.mma not in (("HMMA",) if r.cc == 80 else ("HGMMA", "HMMA")):
            bad.append(f"{what}: no tensor-core MMA (got {r.mma or 'none'})")
    return bad


def test_every_example_kernel_builds_for_sm80_and_sm90_fp16():
    own = {name: specializations(name, "fp16") for name in NAMES}
    specs = unique([s for name in NAMES for s in own[name]])
    assert all(own.values())
    assert len(specs) >= 40  # about 54: the examples share many (kernel, shape class, epilogue) builds
    reports = build(specs)
    assert not problems(reports, tensor_cores=True), "\n" + "\n".join(problems(reports, tensor_cores=True))
    assert {r.name for r in reports} >= {"conv2d_kernel", "depthwise_conv2d_kernel", "linear_kernel",
                                          "pool2d_kernel", "global_avgpool_kernel"}
    assert all(r.mma == "HMMA" for r in reports if r.name in GEMMS and r.cc == 80)


@pytest.mark.parametrize("dtype, tf32", [("bf16", False), ("fp32", False), ("fp32", True)])
def test_resnet18_builds_in_other_dtypes(dtype, tf32):
    specs = specializations("resnet18", dtype, allow_tf32=tf32)
    reports = build(specs)
    tensor_cores = dtype != "fp32" or tf32
    assert not problems(reports, tensor_cores), "\n" + "\n".join(problems(reports, tensor_cores))
    if dtype == "fp32" and not tf32:  # exact IEEE fp32: FMA, no tensor cores
        assert not any(r.uses_mma for r in reports)


def test_lenet5_first_conv_is_an_implicit_gemm():
    """LeNet's first conv (1 input channel, groups=1) runs the implicit GEMM on tensor cores, not the
    depthwise direct kernel (which once spilled there on sm_90 with the tanh epilogue)."""
    specs = specializations("lenet5", "fp16", batch=8)
    first = specs[0]
    assert first["kernel"] == "conv2d_kernel" and first["constexprs"]["ACT1"] == "tanh"
    reports = build(specs)
    assert not problems(reports, tensor_cores=True)


def test_netdsl_compile_resnet50_sm90(capsys):
    assert cli.main(["compile", str(EXAMPLES / "resnet50.net"), "--target", "sm_90"]) == 0
    out = capsys.readouterr().out
    assert " 0 spills" in out and "FAIL" not in out
