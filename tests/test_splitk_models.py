"""Split-K in compiled models: a module made for an SM count splits the K loop of a conv or linear whose
tile grid is too short (``netdsl.kernels.splitk``), and its plans still tell the truth: it equals the
reference backend, makes the launches the cost report counts for the same SM count, allocates what its
memory plan says (the fp32 workspace included), and repeats the plan on the next call. Without an SM
count (the CPU's default) nothing changes. Kernels run in Triton's interpreter here."""

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("NETDSL_QUIET_INTERPRETER", "1")  # kernels run in the interpreter on purpose

import netdsl  # noqa: E402
from netdsl.backends import reference  # noqa: E402
from netdsl.backends.triton import TritonModule  # noqa: E402
from netdsl.kernels._host import recording  # noqa: E402
from netdsl.passes import run_pipeline  # noqa: E402
from netdsl.passes.cost import node_costs, total  # noqa: E402
from netdsl.tolerances import TOLERANCES  # noqa: E402

H100_SMS = 132

# batch 1: a 1x1 conv over 1024 channels (M = 4 pixels) and a linear over K = 1024 (M = 1 row), both
# with 64 outputs: a few output tiles and a long K loop, so both split for 132 SMs
SOURCE = """
network short_grids {
    input x: f32[N, 1024, 2, 2]
    input y: f32[N, 1024]
    a = x -> c: conv2d(64, 1) -> relu
    b = y -> fc: linear(64) -> relu
    output a, b
}
"""
DIMS = {"N": 1}
GEMMS = 2  # nodes that split


def _model():
    graph = netdsl.load_source(SOURCE, "<short_grids>")
    fused = run_pipeline(graph, "O1", dims=DIMS)
    weights = netdsl.random_weights(graph, seed=0)
    inputs = netdsl.params.random_inputs(graph, DIMS, seed=0)
    return graph, fused, weights, inputs


def _rounded(arrays: dict, dtype: str) -> dict:
    """The arrays as the kernels see them in ``dtype`` (so the reference reads the same values)."""
    t = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
    return {k: torch.from_numpy(np.asarray(a, np.float32)).to(t).float().numpy() for k, a in arrays.items()}


def _run(module: TritonModule, inputs: dict) -> dict:
    return {k: v.float().numpy() for k, v in module.run({k: torch.from_numpy(x) for k, x in inputs.items()}).items()}


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_split_model_matches_reference_and_its_plans(dtype):
    graph, fused, weights, inputs = _model()
    weights, inputs = _rounded(weights, dtype), _rounded(inputs, dtype)
    module = TritonModule(fused, weights, dtype=dtype, device="cpu", sm_count=H100_SMS)
    plan = module.plan_for(DIMS)
    assert len(plan.splits) == GEMMS and all(s > 1 for s in plan.splits.values())
    assert plan.workspace > 0

    got = _run(module, inputs)
    want = reference.run(fused, inputs, weights, dtype="f32")
    for name, ref in want.items():
        abs_err, _, ok = TOLERANCES[dtype].error(got[name], ref)
        assert ok, f"{name}: {abs_err}"
    assert module.allocated_bytes == plan.peak  # the arena, the output storages and the workspace

    # a second call repeats the prepared plan (the same launch plan, no new one) with the same result
    assert len(module.launch_plans) == 1
    again = _run(module, inputs)
    assert len(module.launch_plans) == 1
    for name in want:
        np.testing.assert_array_equal(again[name], got[name])  # split-K sums in a fixed order
    assert module.allocated_bytes == plan.peak


def test_split_model_launches_what_the_cost_report_counts():
    _, fused, weights, inputs = _model()
    itemsize = {"fp32": 4, "fp16": 2}
    for dtype in ("fp32", "fp16"):
        module = TritonModule(fused, weights, dtype=dtype, device="meta", sm_count=H100_SMS)
        with recording() as launches:
            module.run({k: torch.empty(x.shape, device="meta") for k, x in inputs.items()})
        plain = total(node_costs(fused, DIMS, itemsize[dtype]))
        split = total(node_costs(fused, DIMS, itemsize[dtype], sm_count=H100_SMS))
        assert len(launches) == module.launches == split.launches == plain.launches + GEMMS
        kernels = [launch.kernel.fn.__name__ for launch in launches]
        assert kernels.count("splitk_reduce_kernel") == GEMMS
        assert split.bytes > plain.bytes  # the workspace: written by the partial sums, read by the reduction
        assert module.allocated_bytes == module.plan_for(DIMS).peak


def test_split_launches_use_the_planned_workspace():
    """The prepared split-K launches read and write the plan's workspace, not scratch of the first call."""
    _, fused, weights, inputs = _model()
    module = TritonModule(fused, weights, dtype="fp32", device="cpu", sm_count=H100_SMS)
    _run(module, inputs)
    plan = next(iter(module.launch_plans.values()))
    with recording() as launches:  # a prepared call records its launch instead of running it
        for call in plan.calls[False]:
            call()
    workspaces = [launch.args["ws_ptr"] for launch in launches if "ws_ptr" in launch.args]
    assert len(workspaces) == 2 * GEMMS
    base = plan.workspace.untyped_storage().data_ptr()
    assert all(ws.untyped_storage().data_ptr() == base for ws in workspaces)


def test_without_sm_count_nothing_splits():
    graph, fused, weights, inputs = _model()
    module = TritonModule(fused, weights, dtype="fp32", device="meta")
    assert module.sm_count is None
    plan = module.plan_for(DIMS)
    assert plan.splits == {} and plan.workspace == 0
    assert plan == fused.annotations["memory"]  # the pipeline's plan
    with recording() as launches:
        module.run({k: torch.empty(x.shape, device="meta") for k, x in inputs.items()})
    assert len(launches) == module.launches == total(node_costs(fused, DIMS)).launches == GEMMS
    assert module.allocated_bytes == plan.peak


def test_watched_and_traced_split_steps():
    """Wrappers of a step's run (``check.watch_steps``, as ``netdsl check`` runs) and a traced call keep
    the split: every node's value, including the split ones, as an untraced call gives."""
    from netdsl.backends.triton.check import watch_steps

    _, fused, weights, inputs = _model()
    module = TritonModule(fused, weights, dtype="fp32", device="cpu", sm_count=H100_SMS)
    seen = []
    watch_steps(module, lambda i, node, finished: seen.append((node.op, finished)))
    traced = module.run({k: torch.from_numpy(x) for k, x in inputs.items()}, trace=True)
    assert len(seen) == 2 * len(fused.nodes)
    plain = _run(module, inputs)
    for out, v in zip(fused.output_names, fused.outputs):
        np.testing.assert_array_equal(traced[v.name].numpy(), plain[out])
