"""``slice``, ``select`` (netdsl/ops/slicing.py) and ``adaptive_avgpool2d`` beyond the per-op cases of
test_ops.py: symbolic bounds and sizes against Python's slicing for every size, the compiler facts and
FLOPs, the user's mistakes as located NetDSLErrors (at compile time, and when sizes are bound), and how
the Triton backend runs them (an NHWC map sliced as it is stored, strided views and writes, the pool
kernel when the output size divides the input's, one launch for an adaptive pool and none for a copy)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_errors_tensor import check_at, program  # the located-error checks of every error test

os.environ.setdefault("NETDSL_QUIET_INTERPRETER", "1")  # this file runs kernels in the interpreter on purpose

import netdsl  # noqa: E402
from netdsl import NetDSLError  # noqa: E402
from netdsl.backends import reference  # noqa: E402
from netdsl.backends.triton import TritonModule  # noqa: E402
from netdsl.backends.triton.check import check, format_checks  # noqa: E402
from netdsl.ir.dims import SymDim, evaluate  # noqa: E402
from netdsl.ir.types import TensorType  # noqa: E402
from netdsl.kernels._host import recording  # noqa: E402
from netdsl.ops import REGISTRY, OpKind  # noqa: E402
from netdsl.ops.registry import bind_attrs  # noqa: E402
from netdsl.passes import run_pipeline  # noqa: E402
from netdsl.passes.layout import plan_layout  # noqa: E402

T, N = SymDim.symbol("T"), SymDim.symbol("N")


def _slice(x, dim, start=0, end=None, step=1):
    """torch's own x[..., start:end:step] along ``dim``."""
    return x[(slice(None),) * (dim % x.dim()) + (slice(start, end, step),)]


# ---------------------------------------------------------------------------------------------
# symbolic bounds and sizes
# ---------------------------------------------------------------------------------------------

# (input shape, slice attributes, the sizes of T for which the bounds fall inside the dim)
SYMBOLIC_SLICES = [
    ((64, 8), {"dim": 0, "end": T}, range(0, 65)),  # pos[:T] of a table of 64 rows
    ((64, 8), {"dim": 0, "start": T}, range(0, 65)),  # the rows after T
    ((64, 8), {"dim": 0, "start": T, "end": T * 2, "step": 3}, range(0, 33)),
    ((N, T, 4), {"dim": 1, "start": 1}, range(1, 40)),
    ((N, T, 4), {"dim": 1, "end": -1, "step": 2}, range(1, 40)),
    ((N, T, 4), {"dim": 1, "start": 2, "end": T, "step": 3}, range(2, 40)),
    ((N, T, 4), {"dim": -2, "start": -T}, range(1, 40)),
    ((N, T, 4), {"dim": 1, "start": -3}, range(3, 40)),  # the last 3
    ((N, T, 4), {"dim": 1, "end": 5}, range(5, 40)),  # the first 5
    ((N, T, 4), {"dim": 1, "start": T - 1}, range(1, 40)),
    ((N, T, 4), {"dim": 0, "start": 1, "end": N}, range(1, 40)),  # another dim's bound: N >= 1 for any T
    ((N, (T - 1) // 2 + 1, 4), {"dim": 1, "start": 1, "end": -1}, range(3, 40)),  # a dim of size 2 or more
]


@pytest.mark.parametrize("shape, kwargs, valid", SYMBOLIC_SLICES, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_symbolic_slices_agree_with_python(shape, kwargs, valid):
    """The symbolic output size, evaluated, is the length Python (and torch) give, for every size at which
    the bounds fall inside the dim; the reference backend slices like torch."""
    op = REGISTRY["slice"]
    attrs = bind_attrs(op, [], kwargs)
    sym = op.infer([TensorType(shape)], attrs).shape
    for t in valid:
        env = {"T": t, "N": 3}
        concrete = tuple(evaluate(d, env) for d in shape)
        bound = {k: evaluate(v, env) if isinstance(v, SymDim) else v for k, v in attrs.items()}
        x = torch.arange(int(np.prod(concrete)), dtype=torch.float64).reshape(concrete)
        expected = _slice(x, bound["dim"], bound["start"], bound["end"], bound["step"])
        assert tuple(evaluate(d, env) for d in sym) == tuple(expected.shape), (shape, kwargs, t)
        assert op.infer([TensorType(concrete)], bound).shape == tuple(expected.shape)
        np.testing.assert_array_equal(op.reference([x.numpy()], {}, bound), expected.numpy())


def test_symbolic_select_keeps_the_other_dims():
    op = REGISTRY["select"]
    for kwargs, want in [({"dim": 1, "index": T - 1}, (N, 4)), ({"dim": 1, "index": -T}, (N, 4)),
                         ({"dim": 0, "index": 0}, (T, 4)), ({"dim": -1, "index": -1}, (N, T))]:
        assert op.infer([TensorType((N, T, 4))], bind_attrs(op, [], kwargs)).shape == want
    x = np.arange(2 * 5 * 4.0).reshape(2, 5, 4)
    np.testing.assert_array_equal(op.reference([x], {}, {"dim": 1, "index": 4}), torch.from_numpy(x)[:, 4].numpy())


def test_adaptive_avgpool_of_symbolic_sizes_agrees_with_torch():
    """Symbolic H and W are fine: the output is [N, C, oh, ow] whatever they are; the bins follow the input."""
    H, W = SymDim.symbol("H"), SymDim.symbol("W")
    op = REGISTRY["adaptive_avgpool2d"]
    attrs = bind_attrs(op, [(3, 2)], {})
    assert op.infer([TensorType((N, 5, H, W))], attrs).shape == (N, 5, 3, 2)
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (3, 2), (7, 5), (9, 4), (12, 13)]:
        x = rng.standard_normal((2, 3, h, w))
        np.testing.assert_allclose(op.reference([x], {}, attrs), F.adaptive_avg_pool2d(torch.from_numpy(x), (3, 2)),
                                   rtol=1e-12, atol=1e-12)


def test_pos_sliced_to_the_sequence_length_in_a_program():
    """`pos -> slice(0, end=T)`: a [16, 6] table cut to the sequence's length; the reference binds T."""
    source = program("x: f32[N, T, 6], pos: f32[16, 6]",
                     "output y = x + (pos -> slice(0, end=T)) + (x -> select(1, T - 1) -> unsqueeze(1))")
    graph = netdsl.load_source(source, "m.net")
    assert str(graph.outputs[0].type) == "f32[N, T, 6]"
    rng = np.random.default_rng(1)
    pos = rng.standard_normal((16, 6)).astype(np.float32)
    for t in (1, 5, 16):
        x = rng.standard_normal((2, t, 6)).astype(np.float32)
        y = reference.run(graph, {"x": x, "pos": pos}, {})["y"]
        tx, tp = torch.from_numpy(x), torch.from_numpy(pos)
        np.testing.assert_allclose(y, tx + tp[:t] + tx[:, t - 1:t], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# facts and FLOPs
# ---------------------------------------------------------------------------------------------

def test_facts():
    """Data movement by torch copies, counted as the permute's (no Triton launch), in any layout; the adaptive
    pool is a reduction per channel (NHWC), one launch."""
    for name in ("slice", "select"):
        op = REGISTRY[name]
        assert (op.kind, op.axis, op.view, op.launches, op.is_pointwise) == (OpKind.INJECTIVE, None, False, 0, False)
        assert op.strided_inputs and op.strided_output and op.arity == 1
    op = REGISTRY["adaptive_avgpool2d"]
    assert (op.kind, op.axis, op.view, op.launches, op.is_pointwise) == (OpKind.REDUCE, 1, False, 1, False)
    assert netdsl.ops.lookup("adaptive_avgpool") is op


def test_flops():
    op = REGISTRY["adaptive_avgpool2d"]
    # H 7 -> 3 bins [0, 3), [2, 5), [4, 7): 9 rows read; W 5 -> 2 bins [0, 3), [2, 5): 6 columns read
    attrs = bind_attrs(op, [(3, 2)], {})
    assert op.flops([(2, 3, 7, 5)], (2, 3, 3, 2), attrs) == 2 * 3 * 9 * 6 + 2 * 3 * 3 * 2
    attrs = bind_attrs(op, [1], {})
    assert op.flops([(2, 3, 4, 6)], (2, 3, 1, 1), attrs) == 2 * 3 * 4 * 6 + 2 * 3  # global_avgpool's + a divide
    for name, kwargs in [("slice", {"dim": 1, "start": 1}), ("select", {"dim": 0, "index": 1})]:
        assert REGISTRY[name].flops([(2, 3)], (2, 2), bind_attrs(REGISTRY[name], [], kwargs)) == 0


# ---------------------------------------------------------------------------------------------
# mistakes: located NetDSLErrors with a hint
# ---------------------------------------------------------------------------------------------

def test_slice_and_select_of_a_dim_that_is_not_there():
    check_at(program("x: f32[N, 5, 7]", "output x -> slice(3, 1)"), "slice(",
             "`slice` dim=3 is out of range for f32[N, 5, 7] (dims -3..2)", "a negative dim counts from the end")
    check_at(program("x: f32[N, 5, 7]", "output x -> select(-4, 0)"), "select(",
             "`select` dim=-4 is out of range for f32[N, 5, 7] (dims -3..2)", "dims count from 0")


def test_slice_with_a_step_below_1():
    check_at(program("x: f32[N, 5, 7]", "output x -> slice(1, step=0)"), "slice(",
             "`slice` step=0: the step must be at least 1", "positive steps only")
    check_at(program("x: f32[N, 5, 7]", "output x -> slice(1, 4, 0, step=-1)"), "slice(",
             "step=-1: the step must be at least 1", "a negative step is an error there too")


def test_select_index_out_of_range():
    check_at(program("x: f32[N, 5, 7]", "output x -> select(1, 5)"), "select(",
             "`select` index 5 is out of range for dim 1 of f32[N, 5, 7], of size 5", "0 to 4")
    check_at(program("x: f32[N, 5, 7]", "output x -> select(-1, -8)"), "select(",
             "index -8 is out of range for dim 2 of f32[N, 5, 7], of size 7", "-1 is the last")


def test_bounds_that_are_not_integers_or_dims():
    check_at(program("x: f32[N, 5, 7]", "output x -> slice(1, start=1.5)"), "slice(",
             "`slice` start must be an integer or a dim of the input (e.g. `T`), got 1.5")
    check_at(program("x: f32[N, 5, 7]", 'output x -> select(1, "last")'), "select(",
             '`select` index must be an integer or a dim of the input (e.g. `T`), got "last"')


def test_symbolic_bound_whose_sign_depends_on_the_size():
    check_at(program("x: f32[N, T, 7]", "output x -> slice(1, T - 5)"), "slice(",
             "`slice` start=T - 5: whether it counts from the start or from the end", "give the dim a fixed size")
    check_at(program("x: f32[N, T, 7]", "output x -> select(1, 2 - T)"), "select(",
             "`select` index=-T + 2: whether it counts from the start or from the end", "give the dim a fixed size")


def test_adaptive_avgpool_of_output_size_0_or_a_matrix():
    source = program("x: f32[N, 3, 8, 8]", "output x -> adaptive_avgpool2d((2, 0))")
    check_at(source, "(2, 0)", "attribute `output_size` must be positive, got (2, 0)")
    check_at(program("x: f32[N, 3, 8, 8]", "output x -> adaptive_avgpool2d(0)"), "0)",
             "attribute `output_size` must be positive")
    check_at(program("x: f32[N, 8, 8]", "output x -> adaptive_avgpool2d(2)"), "adaptive_avgpool2d(",
             "`adaptive_avgpool2d` expects a rank-4 input [N, C, H, W], got f32[N, 8, 8]")


def test_select_out_of_range_once_sizes_are_bound():
    """A symbolic index (or a symbolic dim) is checked when the network runs, by both backends."""
    source = program("x: f32[N, T, 6]", "output y = x -> select(1, T - 1) -> select(0, 2)")
    graph = netdsl.load_source(source, "m.net")
    x = np.zeros((2, 4, 6), np.float32)
    with pytest.raises(NetDSLError, match="`select` index 2 is out of range for a dim of size 2"):
        reference.run(graph, {"x": x}, {})
    with pytest.raises(NetDSLError, match="`select` index 2 is out of range for dim 0 of size 2") as info:
        TritonModule(graph, {}).run({"x": torch.from_numpy(x)})
    assert (info.value.loc.line, info.value.loc.col) == (3, source.splitlines()[2].index("select(0") + 1)
    assert reference.run(graph, {"x": np.zeros((3, 4, 6), np.float32)}, {})["y"].shape == (6,)


def test_slice_that_would_clamp_once_sizes_are_bound():
    """pos[:T] of a 16-row table is [T, 6] for T <= 16; for T = 20 the Triton backend says so at the call
    (the output size assumes the bound falls inside the dim)."""
    source = program("x: f32[N, T, 6], pos: f32[16, 6]", "output y = (pos -> slice(0, end=T)) + x")
    graph = netdsl.load_source(source, "m.net")
    module = TritonModule(graph, {})
    pos = torch.randn(16, 6)
    x = torch.randn(1, 16, 6)
    torch.testing.assert_close(module.run({"x": x, "pos": pos})["y"], pos + x)
    with pytest.raises(NetDSLError, match=r"`slice` \[0:20:1\] of dim 0 of size 16 has 16 elements, but f32\[T, 6\] "
                                          r"has 20") as info:
        module.run({"x": torch.randn(1, 20, 6), "pos": pos})
    assert info.value.loc.line == 3 and "fall inside the dim" in info.value.hint


def test_a_bound_the_triton_backend_cannot_size():
    """A symbolic bound is evaluated from the sizes of the node's own shapes: one they do not name is a
    located error when the module is built."""
    source = program("x: f32[N, T, 6], pos: f32[16, 6]",
                     "output y = (pos -> slice(0, T - 1, T)) + (x -> select(1, 0) -> slice(0, 0, 1))")
    graph = netdsl.load_source(source, "m.net")
    with pytest.raises(NetDSLError, match="the Triton backend reads the sizes of T from this node's shapes") as info:
        TritonModule(graph, {})
    assert info.value.loc.line == 3


# ---------------------------------------------------------------------------------------------
# the Triton backend: layouts, views, kernels, launches
# ---------------------------------------------------------------------------------------------

def _run_checked(source: str, dims: dict, dtypes=("fp32",)):
    graph = netdsl.load_source(source, "<test>")
    fused = run_pipeline(graph, "O0", log=lambda _: None)
    weights = netdsl.random_weights(graph, seed=1)
    inputs = netdsl.params.random_inputs(graph, dims, 0)
    for dtype in dtypes:
        checks = check(fused, weights, inputs, dtype)
        assert all(c.ok for c in checks), "\n" + format_checks(checks, dtype)
    return fused


def test_nhwc_maps_are_sliced_as_stored():
    """After a conv (NHWC), slice and select read the map as it is stored: no converted copy."""
    fused = _run_checked(program("x: f32[N, 5, 7, 9]", "a = x -> conv2d(4, 3, padding=1)",
                                 "output a -> slice(2, -3, step=2), a -> select(3, 4), a -> slice(1, 1, 3)"),
                         {"N": 2}, ("fp32", "fp16", "bf16"))
    plan = plan_layout(fused)
    conv = fused.nodes[0].output.name
    assert plan[conv] == "NHWC" and conv not in plan.converted
    assert [plan.reads_in(n) for n in fused.nodes[1:]] == ["NHWC"] * 3


def test_strided_views_and_writes():
    """A transpose read only by a slice is a strided view (no copy); a slice whose only reader is a
    transpose writes straight into the transposed storage."""
    fused = _run_checked(program("x: f32[N, 4, 6, 8]",
                                 "output x -> transpose(1, 2) -> slice(1, 1, 5) -> select(2, -2) -> transpose(0, 1)"),
                         {"N": 2})
    plan = plan_layout(fused)
    transpose, sliced, selected = (n.output.name for n in fused.nodes[:3])
    assert transpose in plan.strided_views
    assert plan.permuted_writes.get(selected, (None,))[0] == fused.nodes[3].output.name
    assert sliced not in plan.strided_views


@pytest.mark.parametrize("shape, size, kernel", [
    ((2, 3, 7, 5), (3, 2), "adaptive_avgpool2d_kernel"),  # bins overlap
    ((2, 3, 8, 6), (4, 3), "pool2d_kernel"),  # divides: kernel = stride = (2, 2)
    ((2, 3, 5, 7), (1, 1), "global_avgpool_kernel"),
    ((1, 2, 3, 4), (5, 7), "adaptive_avgpool2d_kernel"),  # bigger than the input
])
def test_adaptive_avgpool_kernels(shape, size, kernel):
    """One launch: the pool kernels when the output size divides the input's, the adaptive one otherwise; H
    and W symbolic, chosen per call."""
    source = program("x: f32[N, C, H, W]", f"output x -> adaptive_avgpool2d({size}) -> relu")
    graph = netdsl.load_source(source.replace("C, H, W", f"{shape[1]}, H, W"), "<test>")
    module = TritonModule(run_pipeline(graph, "O0", log=lambda _: None), {})
    x = torch.randn(shape)
    torch.testing.assert_close(module.run({"x": x})["output0"], F.relu(F.adaptive_avg_pool2d(x, size)),
                               rtol=1e-5, atol=1e-5)
    meta = TritonModule(module.graph, {}, device="meta")
    with recording() as launches:
        meta.run({"x": torch.empty(shape, device="meta")})
    assert [launch.kernel.fn.__name__ for launch in launches] == [kernel, "pointwise_kernel"]
    assert module.launches == 2


def test_slice_and_select_launch_no_kernel():
    graph = netdsl.load_source(program("x: f32[N, 5, 7, 9]", "output x -> slice(1, 1, 4) -> select(2, 0) -> relu"),
                               "<test>")
    meta = TritonModule(graph, {}, device="meta")
    with recording() as launches:
        meta.run({"x": torch.empty((2, 5, 7, 9), device="meta")})
    assert [launch.kernel.fn.__name__ for launch in launches] == ["pointwise_kernel"] and meta.launches == 1
