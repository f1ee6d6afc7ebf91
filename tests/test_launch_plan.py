"""Launch plans: a compiled module decides everything a call needs once per input shape, then repeats it.

The first call for a shape runs every step and prepares its launches; later calls for that shape copy
their inputs in and repeat the prepared calls (on a CUDA device, as one CUDA graph). Every check here
compares with the reference backend, for two shapes and for repeated calls with new data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import netdsl
from netdsl import reference
from netdsl.backends.triton import TritonModule
from netdsl.backends.triton.graphs import graphs_wanted
from netdsl.errors import NetDSLError
from netdsl.kernels import _host, conv
from netdsl.passes import run_pipeline
from netdsl.tolerances import TOLERANCES

ROOT = Path(__file__).resolve().parent.parent


def net(body: str, inputs: str) -> str:
    return f"network t {{\n    input {inputs}\n{textwrap.indent(textwrap.dedent(body).strip(), '    ')}\n}}\n"


# a residual block (the add rides in place in the conv's epilogue), a global pool, a flatten and a head,
# with two outputs: one of them an NHWC map returned as an NCHW view
RESNETISH = net("""
    y = x -> conv2d(6, 3, padding=1, bias=false) -> batchnorm -> relu
    z = y -> conv2d(6, 3, padding=1, bias=false) -> batchnorm
    r = relu(z + y)
    output feat = r, logits = r -> global_avgpool -> flatten -> linear(4)
    """, "x: f32[N, 5, 7, 9]")
# a softmax along H of an NHWC map: its operand is copied by torch (a layout fix-up) on every call
FIXUP = net("output x -> conv2d(4, 1) -> softmax(dim=2)", "x: f32[N, 5, 7, 9]")
# a concat along a dim that is not stored last: a copy by torch (torch.cat) on every call
CAT = net("output concat(x, x -> relu, dim=1)", "x: f32[N, T, 6]")
# a positional encoding builds its table (by torch) on the first call of a shape, and keeps it
POSITIONS = net("output x -> positional_encoding -> relu", "x: f32[N, T, 6]")
# an embedding counts the ids outside its table into a counter read after the call
TOKENS = net("output ids -> embedding(50, 12, padding_idx=0) -> layernorm", "ids: i64[N, T]")


def compiled(src: str, dtype: str = "fp32", **kwargs):
    graph = netdsl.load_source(src, "<test>")
    fused = run_pipeline(graph, "O1", log=lambda _: None)
    weights = netdsl.random_weights(graph, seed=1)
    return fused, weights, TritonModule(fused, weights, dtype=dtype, **kwargs)


def inputs_for(fused, dims: dict, seed: int) -> dict[str, np.ndarray]:
    return netdsl.params.random_inputs(fused, {**fused.dim_defaults, **dims}, seed)


def assert_matches(fused, weights, module, inputs, dtype="fp32", got=None):
    got = module.run({k: torch.from_numpy(x) for k, x in inputs.items()}) if got is None else got
    ref = reference.run(fused, inputs, weights)
    assert list(got) == list(ref)
    for k, r in ref.items():
        assert tuple(got[k].shape) == r.shape, k
        _, rel, ok = TOLERANCES[dtype].error(got[k].to(torch.float32).cpu().numpy(), r)
        assert ok, (k, rel)
    return got


def test_the_plan_is_built_once_per_shape():
    fused, weights, m = compiled(RESNETISH)
    assert_matches(fused, weights, m, inputs_for(fused, {"N": 2}, 0))
    (plan,) = m.launch_plans.values()
    calls = plan.calls[False]
    assert len(calls) >= m.launches and plan.run_as_is[False] == []  # every step is its launches
    assert_matches(fused, weights, m, inputs_for(fused, {"N": 2}, 1))  # new data, same shape
    assert list(m.launch_plans.values()) == [plan] and plan.calls[False] is calls
    assert_matches(fused, weights, m, inputs_for(fused, {"N": 3}, 2))  # a new shape: a second plan
    assert len(m.launch_plans) == 2
    assert_matches(fused, weights, m, inputs_for(fused, {"N": 2}, 3))  # back to the first
    assert m.launch_plans[(("N", 2),)] is plan and plan.calls[False] is calls


def test_a_known_shape_plans_no_launch(monkeypatch):
    """A second call of a shape repeats the prepared launches: the kernel wrappers (their checks, grids,
    configs) are not called again; a new shape calls them."""
    fused, weights, m = compiled(RESNETISH)
    assert_matches(fused, weights, m, inputs_for(fused, {"N": 2}, 0))

    def refuse(*args, **kwargs):
        raise _host.KernelError("planned again")

    monkeypatch.setattr(conv, "conv2d", refuse)
    assert_matches(fused, weights, m, inputs_for(fused, {"N": 2}, 1))
    with pytest.raises(NetDSLError, match="planned again"):
        m.run(inputs_for(fused, {"N": 1}, 2))


def test_outputs_stay_valid_after_the_next_call():
    fused, weights, m = compiled(RESNETISH)
    first = inputs_for(fused, {"N": 2}, 0)
    got = m.run({k: torch.from_numpy(x) for k, x in first.items()})
    for seed in (1, 2):  # the arena and the output storages are written again
        m.run(inputs_for(fused, {"N": 2}, seed))
    assert_matches(fused, weights, m, first, got=got)
    again = m.run({k: torch.from_numpy(x) for k, x in first.items()})
    assert all(again[k].data_ptr() != got[k].data_ptr() for k in got)  # fresh tensors


def test_mis_shaped_inputs_are_netdsl_errors_after_plans_exist():
    fused, weights, m = compiled(RESNETISH)
    m(torch.randn(2, 5, 7, 9))
    for bad in (torch.randn(2, 5, 7, 8), torch.randn(5, 7, 9), torch.randn(2, 4, 7, 9)):
        with pytest.raises(NetDSLError, match="expects"):
            m(bad)
    with pytest.raises(NetDSLError, match="input"):
        m(torch.randn(2, 5, 7, 9), torch.randn(2, 5, 7, 9))
    with pytest.raises(NetDSLError, match="no value given"):
        m.run({"y": torch.randn(2, 5, 7, 9)})
    assert len(m.launch_plans) == 1


@pytest.mark.parametrize("src, dims, as_is", [(FIXUP, {"N": 2}, 1), (CAT, {"N": 2, "T": 5}, 1),
                                               (POSITIONS, {"N": 2, "T": 5}, 0)])
def test_steps_with_torch_work_run_as_they_are(src, dims, as_is):
    """A step that does torch work besides its launches (a layout fix-up's copies, a torch.cat) is called
    again on every call; one whose torch work is a table it keeps (positional encoding) is its launch.
    Either stays right with new data and a new shape."""
    fused, weights, m = compiled(src)
    assert_matches(fused, weights, m, inputs_for(fused, dims, 0))
    (plan,) = m.launch_plans.values()
    assert len(plan.run_as_is[False]) == as_is
    assert_matches(fused, weights, m, inputs_for(fused, dims, 1))
    assert_matches(fused, weights, m, inputs_for(fused, {**dims, "N": 3}, 2))


def test_ids_outside_the_table_are_errors_on_prepared_calls():
    """The embedding's count of bad ids is read after each call, prepared or not: a call with a bad id
    is a located NetDSLError, and the next good call runs (the count starts again)."""
    fused, weights, m = compiled(TOKENS)
    good = inputs_for(fused, {"N": 2, "T": 5}, 0)
    assert_matches(fused, weights, m, good)
    (plan,) = m.launch_plans.values()
    assert plan.run_as_is[False] == []  # the embedding is its launch: no sync inside the call
    for bad in (50, -1):
        ids = good["ids"].copy()
        ids[1, 2] = bad
        with pytest.raises(NetDSLError, match=r"`embedding` cannot run on these inputs: embedding: 1 id\(s\) "
                                              r"outside \[0, 50\)"):
            m.run({"ids": torch.from_numpy(ids)})
        assert_matches(fused, weights, m, inputs_for(fused, {"N": 2, "T": 5}, 1))
    assert len(m.launch_plans) == 1


def test_fp16_module_stages_fp32_inputs():
    fused, weights, m = compiled(RESNETISH, dtype="fp16")
    for seed in (0, 1):
        got = assert_matches(fused, weights, m, inputs_for(fused, {"N": 2}, seed), dtype="fp16")
        assert got["logits"].dtype == torch.float16


def test_traced_call_after_prepared_calls():
    fused, weights, m = compiled(RESNETISH)
    inputs = {k: torch.from_numpy(x) for k, x in inputs_for(fused, {"N": 2}, 0).items()}
    m.run(inputs)
    (plan,) = m.launch_plans.values()
    calls = plan.calls[False]
    traced = m.run(inputs, trace=True)
    ref = reference.run(fused, {k: x.numpy() for k, x in inputs.items()}, weights, trace=True)
    for node in fused.nodes:
        for v in node.outputs:
            assert TOLERANCES["fp32"].error(traced[v.name].numpy(), ref[v.name])[2], v.name
    assert plan.calls[False] is calls
    assert_matches(fused, weights, m, inputs_for(fused, {"N": 2}, 1))


def test_recorded_calls_repeat_the_same_launches():
    """Recording (launches listed, nothing run: how AOT builds and the host-overhead benchmark see a
    model) holds for prepared calls too: a second call records the launches of the first."""
    graph = netdsl.load_source(RESNETISH, "<test>")
    fused = run_pipeline(graph, "O1", log=lambda _: None)
    weights = {name: np.zeros(spec.shape, np.float32) for name, spec in graph.used_params().items()}
    m = TritonModule(fused, weights, dtype="fp16", device="meta")
    x = {"x": torch.empty((2, 5, 7, 9), device="meta")}
    with _host.recording() as first:
        m.run(x)
    with _host.recording() as second:
        m.run(x)
    assert [launch.kernel for launch in second] == [launch.kernel for launch in first]
    assert len(first) == m.launches
    (plan,) = m.launch_plans.values()
    assert list(plan.calls) == [True]  # prepared for the recording mode only


def test_a_prepared_launch_repeats_the_kernel_on_new_data():
    """The seam in netdsl.kernels._host: a captured launch, prepared, runs the kernel again on whatever
    its tensors hold now (checked against torch)."""
    from netdsl.kernels import pointwise
    from netdsl.kernels.epilogue import Epilogue

    x, out = torch.randn(3, 37), torch.empty(3, 37)
    with _host.capturing() as launches:
        pointwise.pointwise(x, epilogue=Epilogue(act1="relu"), out=out)
    ((launch, config, tuned),) = launches
    assert not tuned  # the interpreter runs the fixed config
    call = _host.prepare(launch, config, tuned)
    x.copy_(torch.randn(3, 37))
    out.fill_(float("nan"))
    call()
    torch.testing.assert_close(out, torch.relu(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# CUDA graphs: the decision (here), the replay (on a GPU)
# ---------------------------------------------------------------------------------------------

def test_cuda_graphs_decision():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert graphs_wanted(True, cuda, mode="cuda", env={})
    assert graphs_wanted(True, cuda, mode="cuda", env={"NETDSL_CUDA_GRAPHS": "1"})
    assert not graphs_wanted(False, cuda, mode="cuda", env={})
    for off in ("0", "false", "off"):
        assert not graphs_wanted(True, cuda, mode="cuda", env={"NETDSL_CUDA_GRAPHS": off})
    assert not graphs_wanted(True, cuda, mode="interpret", env={})
    assert not graphs_wanted(True, cpu, mode="cuda", env={})
    assert not graphs_wanted(True, torch.device("meta"), mode="cuda", env={})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_cuda_graphs_are_off_without_a_gpu(tmp_path):
    path = tmp_path / "m.net"
    path.write_text(RESNETISH)
    assert not netdsl.compile(path).cuda_graphs
    assert not netdsl.compile(path, cuda_graphs=False).cuda_graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replay_matches_eager_and_reference():
    fused, weights, graphed = compiled(RESNETISH, device="cuda")
    _, _, eager = compiled(RESNETISH, device="cuda", cuda_graphs=False)
    assert graphed.cuda_graphs and not eager.cuda_graphs
    for n in (2, 3):
        for seed in range(3):  # warm-up, capture + replay, replay
            inputs = inputs_for(fused, {"N": n}, seed)
            got = assert_matches(fused, weights, graphed, inputs)
            want = eager.run({k: torch.from_numpy(x) for k, x in inputs.items()})
            for k in want:
                torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
        plan = graphed.launch_plans[(("N", n),)]
        assert isinstance(plan.graph, torch.cuda.CUDAGraph)
        assert eager.launch_plans[(("N", n),)].graph is None


# ---------------------------------------------------------------------------------------------
# the GPU test mode of tests/conftest.py
# ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_gpu_test_mode_without_a_gpu_is_an_error():
    env = {**os.environ, "NETDSL_TEST_DEVICE": "cuda"}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--co",
                           "tests/test_launch_plan.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode != 0
    assert "NETDSL_TEST_DEVICE=cuda" in done.stdout + done.stderr and "no CUDA GPU" in done.stdout + done.stderr
