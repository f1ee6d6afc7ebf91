"""The passes on small graphs: golden IR before/after each pass, the cases where a pass must not fire,
fused == unfused on random chains (hypothesis), the memory plan, the pass manager and the CLI.

Golden files live in tests/golden_passes/; after an intended change, regenerate them with
NETDSL_UPDATE_GOLDEN=1 and read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netdsl
from netdsl.backends import reference
from netdsl.errors import NetDSLError
from netdsl.ir.graph import Graph, Value
from netdsl.ir.verify import IRError
from netdsl.ops.verify import verify
from netdsl.ops import REGISTRY, OpKind
from netdsl.ops.activations import ACTIVATIONS
from netdsl.ops.fused import FUSED_OPS, batchnorm_affine, fold_batchnorm
from netdsl.passes import PASSES, PIPELINES, Pass, format_annotated, run_pipeline
from netdsl.passes.cost import ideal_cost, node_costs, summarize, total
from netdsl.passes.rewrite import GraphIndex

GOLDEN = Path(__file__).parent / "golden_passes"


def load(src: str) -> Graph:
    return netdsl.load_source(src, "<test>")


def run(graph: Graph, passes) -> Graph:
    return run_pipeline(graph, passes, verify="full")


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def outputs(graph: Graph, x: np.ndarray, weights, dtype="f64"):
    return reference.run(graph, {graph.inputs[0].name: x}, weights, dtype=dtype)


def assert_same(unfused: Graph, fused: Graph, shape=None, seed=0, dtype="f64"):
    """fused == unfused on random inputs: one input of ``shape``, or every input at N=2 (shape None)."""
    w = netdsl.random_weights(unfused, seed)
    if shape is None:
        xs = netdsl.params.random_inputs(unfused, {**unfused.dim_defaults, "N": 2}, seed)
        a = reference.run(unfused, xs, w, dtype=dtype)
        b = reference.run(fused, xs, w, dtype=dtype)
    else:
        x = np.random.default_rng(seed).standard_normal(shape)
        a, b = outputs(unfused, x, w, dtype), outputs(fused, x, w, dtype)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == "f64" else dict(rtol=1e-4, atol=1e-4)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], **tol)


# ---------------------------------------------------------------------------------------------
# golden IR before / after one pass
# ---------------------------------------------------------------------------------------------

RESNET_BLOCK = """
block basic(c) {
    input x
    y = x -> conv1: conv2d(c, 3, padding=1, bias=false) -> bn1: batchnorm -> relu
          -> conv2: conv2d(c, 3, padding=1, bias=false) -> bn2: batchnorm
    output relu(y + x)
}
network resblock {
    input x: f32[N, 4, 8, 8]
    output x -> stem: conv2d(4, 1) -> b: basic(4)
}
"""

GOLDEN_CASES = {
    # name: (passes to run first, the pass under test, source)
    "fold_batchnorm": ((), "fold_batchnorm", """
network t {
    input x: f32[N, 3, 8, 8]
    a = x -> c1: conv2d(4, 3, padding=1, bias=false) -> bn1: batchnorm -> relu
    b = a -> flatten -> fc: linear(5) -> bn2: batchnorm(eps=0.001)
    output b
}"""),
    "fuse_conv_epilogue": (("fold_batchnorm",), "fuse_conv_epilogue", RESNET_BLOCK),
    "fuse_conv_epilogue_acts": ((), "fuse_conv_epilogue", """
network t {
    input x: f32[N, 3, 8, 8]
    a = x -> c1: conv2d(4, 3, padding=1) -> leaky_relu(alpha=0.2)
    b = a -> c2: conv2d(4, 1) -> p1: prelu
    c = b -> c3: conv2d(4, 1) -> elu(alpha=0.5) -> p2: prelu(shared=true) -> tanh
    output c
}"""),
    "fuse_norm_activation": ((), "fuse_norm_activation", """
network t {
    input x: f32[N, 4, 6, 6]
    a = x -> bn: batchnorm -> relu6
    g = a -> gn: groupnorm(2) -> silu
    f = g -> flatten -> fc: linear(8)
    h = f + f -> ln: layernorm -> gelu(approximate="tanh")
    output h
}"""),
    "fuse_pointwise": ((), "fuse_pointwise", """
network t {
    input x: f32[N, 4, 6, 6]
    a = x -> maxpool(2) -> relu -> sigmoid -> tanh
    b = a -> avgpool(1)
    output relu(a + b) -> hardswish
}"""),
    "fuse_attention": ((), "fuse_attention", """
network t {
    input q: f32[N, 2, 5, 8], k: f32[N, 2, 7, 8], v: f32[N, 2, 7, 4]
    output matmul((matmul(q, k -> transpose(-2, -1)) * 0.35) -> softmax, v)
}"""),
    "remove_dropout": ((), "remove_dropout", """
network t {
    input x: f32[N, 16]
    output x -> fc1: linear(8) -> relu -> dropout(0.5) -> fc2: linear(4) -> dropout(0.1)
}"""),
    "cse": ((), "cse", """
network t {
    input x: f32[N, 4, 6, 6]
    a = x -> relu
    b = x -> relu
    c = x -> maxpool(2)
    d = x -> maxpool(2)
    output a + b, d + c
}"""),
    "dce": ((), "dce", """
network t {
    input x: f32[N, 4, 6, 6]
    unused = x -> c1: conv2d(4, 3) -> relu
    output x -> sigmoid
}"""),
    "analyses": (("fold_batchnorm", "fuse_conv_epilogue"), ("mark_layout", "plan_memory"), """
block branch(c) {
    input x
    output x -> conv: conv2d(c, 1, bias=false) -> bn: batchnorm -> relu
}
network t {
    input x: f32[N=2, 3, 8, 8]
    a = x -> stem: conv2d(8, 3, padding=1) -> relu
    y = concat(a -> b1: branch(4), a -> b2: branch(4), a -> maxpool(3, stride=1, padding=1))
    z = y -> c2: conv2d(16, 1) -> bn2: batchnorm
    output relu(z + y) -> global_avgpool -> flatten -> fc: linear(10)
}"""),
}


def _golden_text(case: str) -> str:
    first, under_test, src = GOLDEN_CASES[case]
    under_test = (under_test,) if isinstance(under_test, str) else under_test
    graph = run(load(src), first)
    log: list[str] = []
    after = run_pipeline(graph, under_test, log=log.append, verify="full")
    return "\n".join([f"# source{' (after ' + ', '.join(first) + ')' if first else ''}:", src.strip(), "",
                      "# before:", format_annotated(graph), "", "# " + "; ".join(log), format_annotated(after), ""])


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden(case):
    text = _golden_text(case)
    path = GOLDEN / f"{case}.txt"
    if os.environ.get("NETDSL_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with NETDSL_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_cases_compute_the_same(case):
    first, under_test, src = GOLDEN_CASES[case]
    graph = load(src)
    fused = run(graph, first + ((under_test,) if isinstance(under_test, str) else under_test))
    assert_same(graph, fused)


# ---------------------------------------------------------------------------------------------
# where a pass must not fire
# ---------------------------------------------------------------------------------------------

def test_conv_output_with_two_users_is_not_folded():
    g = load("""
network t {
    input x: f32[N, 3, 8, 8]
    c = x -> c1: conv2d(4, 3, padding=1, bias=false)
    output (c -> bn: batchnorm -> relu) + c
}""")
    f = run(g, "O1")
    assert not any(n.attrs.get("bn") and n.op == "fused_conv2d" for n in f.nodes)
    assert "conv2d" in ops(f)
    # the batchnorm becomes an affine pointwise node with the relu and the residual add
    (pw,) = [n for n in f.nodes if n.op == "fused_pointwise"]
    assert pw.attrs["bn"] and pw.attrs["act1"] == "relu" and pw.attrs["residual"]
    assert_same(g, f, (2, 3, 8, 8))


def test_conv_output_that_is_a_graph_output_is_not_folded():
    g = load("""
network t {
    input x: f32[N, 3, 8, 8]
    c = x -> c1: conv2d(4, 3, bias=false)
    output raw=c, normed=c -> bn: batchnorm
}""")
    f = run(g, "fold_batchnorm,fuse_conv_epilogue")
    assert ops(f) == ["conv2d", "batchnorm"]


def test_residual_that_would_create_a_cycle_is_not_fused():
    # y feeds c2 *and* the add; c1 must not absorb the add (its other operand z is computed from y),
    # but c2 may: its epilogue adds y, which is its own input, written by c1 before.
    g = load("""
network t {
    input x: f32[N, 4, 8, 8]
    y = x -> c1: conv2d(4, 3, padding=1) -> relu
    z = y -> c2: conv2d(4, 3, padding=1)
    output y + z
}""")
    f = run(g, "O1")
    c1, c2 = f.nodes
    assert c1.op == "fused_conv2d" and not c1.attrs["residual"] and c1.attrs["act1"] == "relu"
    assert c2.op == "fused_conv2d" and c2.attrs["residual"] and c2.inputs[1].name == c1.output.name
    assert_same(g, f, (2, 4, 8, 8))


def test_depends_on_sees_through_paths():
    g = load("""
network t {
    input x: f32[N, 4, 8, 8]
    y = x -> c1: conv2d(4, 3, padding=1)
    z = y -> relu -> c2: conv2d(4, 1)
    w = x -> c3: conv2d(4, 1)
    output y + z + w
}""")
    index = GraphIndex(g)
    c1 = index.producer["c1"]
    assert index.depends_on(index.producer["c2"].output, [c1])
    assert not index.depends_on(index.producer["c3"].output, [c1])
    assert not index.depends_on(g.inputs[0], [c1])


def test_broadcast_add_is_not_an_epilogue_residual():
    g = load("""
network t {
    input x: f32[N, 4, 8, 8]
    y = x -> c1: conv2d(4, 3, padding=1)
    s = x -> global_avgpool
    output y + s
}""")
    f = run(g, "O1")
    assert "add" in ops(f) and not any(n.attrs.get("residual") for n in f.nodes)


def test_template_holds_at_most_act_add_act():
    g = load("""
network t {
    input x: f32[N, 4, 8, 8]
    y = x -> c1: conv2d(4, 3, padding=1) -> relu
    output (y + x) -> relu -> sigmoid -> tanh
}""")
    f = run(g, "O1")
    assert ops(f) == ["fused_conv2d", "fused_pointwise"]
    conv, pw = f.nodes
    assert (conv.attrs["act1"], conv.attrs["residual"], conv.attrs["act2"]) == ("relu", True, "relu")
    assert (pw.attrs["act1"], pw.attrs["act2"]) == ("sigmoid", "tanh")
    assert_same(g, f, (2, 4, 8, 8))


def test_rank_3_keeps_its_batchnorm_prelu_and_pointwise_ops():
    # batchnorm and prelu run along dim 1, the linear's features are dim 2; the pointwise kernels
    # take [N, C] and NHWC tensors only
    g = load("""
network t {
    input x: f32[N, 5, 6]
    output x -> fc: linear(6) -> bn: batchnorm -> p: prelu -> relu -> sigmoid
}""")
    f = run(g, "O1")
    assert ops(f) == ["linear", "batchnorm", "prelu", "relu", "sigmoid"]
    g = load("""
network t {
    input x: f32[N, 5, 6]
    output x -> fc: linear(6) -> relu -> p: prelu(shared=true)
}""")
    assert ops(run(g, "O1")) == ["fused_linear"]


def test_intermediate_read_twice_stops_the_chain():
    g = load("""
network t {
    input x: f32[N, 4, 8, 8]
    a = x -> c1: conv2d(4, 3, padding=1) -> relu
    output a -> sigmoid, a -> tanh
}""")
    f = run(g, "O1")
    assert ops(f) == ["fused_conv2d", "sigmoid", "tanh"]


# ---------------------------------------------------------------------------------------------
# fused ops: the fold arithmetic, the registry, parameter names
# ---------------------------------------------------------------------------------------------

def test_fold_batchnorm_arithmetic():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    g, beta, mean, var = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    x = rng.standard_normal((2, 3, 5, 5))
    from netdsl.ops.nn import conv2d_reference

    conv = conv2d_reference(x, w, b, (1, 1), (1, 1), (1, 1), 1)
    scale, shift = batchnorm_affine(g, beta, mean, var, 1e-5)
    expected = conv * scale[:, None, None] + shift[:, None, None]
    fw, fb = fold_batchnorm(w, b, g, beta, mean, var, 1e-5)
    np.testing.assert_allclose(conv2d_reference(x, fw, fb, (1, 1), (1, 1), (1, 1), 1), expected, rtol=1e-12)
    fw, fb = fold_batchnorm(w, None, g, beta, mean, var, 1e-5)
    nob = conv2d_reference(x, w, None, (1, 1), (1, 1), (1, 1), 1) * scale[:, None, None] + shift[:, None, None]
    np.testing.assert_allclose(conv2d_reference(x, fw, fb, (1, 1), (1, 1), (1, 1), 1), nob, rtol=1e-12)


def test_fused_ops_are_registry_ops():
    for name in FUSED_OPS:
        op = REGISTRY[name]
        assert op.kind is OpKind.FUSED
        assert {"act1", "act1_attrs", "residual", "act2", "act2_attrs"} <= {a.name for a in op.attrs}


def test_fused_graph_keeps_the_original_parameter_names():
    g = load(RESNET_BLOCK)
    f = run(g, "O1")
    assert set(f.used_params()) == set(g.used_params())
    w = netdsl.init_weights(g)
    from netdsl.params import check_weights

    check_weights(f, w)  # a state_dict for the unfused graph loads into the fused one
    conv2 = next(n for n in f.nodes if n.name == "b.conv2")
    assert conv2.params == {"weight": "b.conv2.weight", "bn_weight": "b.bn2.weight", "bn_bias": "b.bn2.bias",
                            "bn_mean": "b.bn2.running_mean", "bn_var": "b.bn2.running_var"}


def test_pipeline_is_idempotent():
    g = load(RESNET_BLOCK)
    once = run(g, "O1")
    twice = run(once, "O1")
    assert format_annotated(twice) == format_annotated(once)


# ---------------------------------------------------------------------------------------------
# fused == unfused on random chains
# ---------------------------------------------------------------------------------------------

ACT_CALLS = [a.name for a in ACTIVATIONS] + ["leaky_relu(alpha=0.2)", "prelu(shared=true)", "elu(alpha=0.3)",
                                             "gelu(approximate=\"tanh\")", "softplus(beta=2.0)"]


@st.composite
def chains(draw):
    """A random network of conv/linear/norm/activation/add/dropout steps, as .net text.

    Values keep their spatial size so that residual adds of earlier values often type-check; some
    values are read twice or are extra outputs, which is where fusion must stop."""
    channels = [4]
    lines, values = [], [("x", 4)]
    n_steps = draw(st.integers(2, 9))
    label = 0
    for i in range(n_steps):
        name = f"v{i}"
        src, c = values[-1] if draw(st.booleans()) or len(values) == 1 else draw(st.sampled_from(values))
        kind = draw(st.sampled_from(["conv", "conv", "bn", "act", "act", "add", "gn", "dropout", "ln"]))
        label += 1
        if kind == "conv":
            c = draw(st.sampled_from([4, 6]))
            k = draw(st.sampled_from([1, 3]))
            bias = draw(st.booleans())
            expr = f"{src} -> l{label}: conv2d({c}, {k}, padding={k // 2}, bias={'true' if bias else 'false'})"
        elif kind == "bn":
            expr = f"{src} -> l{label}: batchnorm"
        elif kind == "act":
            expr = f"{src} -> l{label}: {draw(st.sampled_from(ACT_CALLS))}"
        elif kind == "gn":
            expr = f"{src} -> l{label}: groupnorm(2)"
        elif kind == "ln":
            expr = f"{src} -> l{label}: layernorm"
        elif kind == "dropout":
            expr = f"{src} -> dropout(0.3)"
        else:
            same = [v for v, cc in values if cc == c]
            other = draw(st.sampled_from(same))
            expr = f"{other} + {src}" if draw(st.booleans()) else f"{src} + {other}"
        lines.append(f"    {name} = {expr}")
        values.append((name, c))
        channels.append(c)
    last, c = values[-1]
    tail = draw(st.sampled_from(["", "linear", "linear_bn"]))
    if tail:
        bn = " -> hbn: batchnorm -> relu" if tail == "linear_bn" else ""
        lines.append(f"    h = {last} -> flatten -> head: linear(5){bn}")
        last = "h"
    outs = [f"out={last}"]
    if draw(st.booleans()) and len(values) > 2:
        extra = draw(st.sampled_from(values[1:-1]))[0]
        outs.append(f"mid={extra}")
    src = "network r {\n    input x: f32[N, 4, 5, 5]\n" + "\n".join(lines) + f"\n    output {', '.join(outs)}\n}}\n"
    return src


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains(), st.integers(0, 2**16))
def test_random_chains_fused_equals_unfused(src, seed):
    g = load(src)
    f = run(g, "O1")
    assert len(f.nodes) <= len(g.nodes)
    assert set(f.used_params()) == set(run(g, "dce").used_params())  # only dead code loses parameters
    assert_same(g, f, (2, 4, 5, 5), seed)
    assert_same(g, f, (2, 4, 5, 5), seed, dtype="f32")
    s = summarize(g, f, {"N": 2})
    assert s.fused.bytes <= s.unfused.bytes and s.fused.launches <= s.unfused.launches
    assert s.ideal.bytes <= s.fused.bytes


# ---------------------------------------------------------------------------------------------
# the memory plan
# ---------------------------------------------------------------------------------------------

def _check_plan(graph: Graph):
    """No two storages that are live at the same time share a buffer (re-derived from the plan)."""
    plan = graph.annotations["memory"]
    root = {}

    def storage(name):
        while True:
            if name in plan.views:
                name = plan.views[name]
            elif name in plan.concat_slices:
                name = plan.concat_slices[name][0]
            elif name in plan.in_place:
                name = plan.in_place[name]
            else:
                return name

    first, last = {}, {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last[storage(v.name)] = i
        r = storage(node.output.name)
        first.setdefault(r, i)
        last.setdefault(r, i)
        root[node.output.name] = r
    for v in graph.outputs:
        last[storage(v.name)] = len(graph.nodes)
    roots = sorted(set(root.values()))
    for a in roots:
        for b in roots:
            if a < b and a in plan.buffer_of and b in plan.buffer_of and plan.buffer_of[a] == plan.buffer_of[b]:
                assert last[a] < first[b] or last[b] < first[a], (a, b)
    assert plan.max_live <= plan.peak <= plan.no_reuse


def test_memory_plan_concat_slices_and_in_place():
    src = GOLDEN_CASES["analyses"][2]
    f = run(load(src), "O1")
    plan = f.annotations["memory"]
    assert len(plan.concat_slices) == 3  # both branches and the pool write into the concat's buffer
    # c2 adds y (its residual) but also convolves y: it must not write over it
    assert not plan.in_place
    _check_plan(f)
    costs = node_costs(f, {"N": 2})
    concat = next(n for n in f.nodes if n.op == "concat")
    assert costs[concat.output.name].launches == 0 and costs[concat.output.name].bytes == 0


def test_memory_plan_residual_in_place():
    f = run(load(RESNET_BLOCK), "O1")
    plan = f.annotations["memory"]
    # the block's second conv adds the stem's output, read for the last time, and writes over it
    assert plan.in_place == {"b.relu_1": "stem"}
    assert plan.storage["b.relu_1"] == plan.storage["stem"] == "stem"
    assert plan.outputs == {"stem": plan.peak - plan.arena_bytes}  # the graph output: its own storage
    _check_plan(f)


@pytest.mark.parametrize("src", [RESNET_BLOCK] + [case[2] for case in GOLDEN_CASES.values()])
def test_memory_plans_are_valid(src):
    _check_plan(run(load(src.replace("N, ", "N=2, ")), "O1"))


def test_layout_plan_is_what_runs():
    """4-D values around convs are NHWC (the kernels' layout); the input is NCHW and converted once
    for the conv reading it; a flatten of a [N, C, 1, 1] map is a free view; nothing needs a fix-up."""
    f = run(load(GOLDEN_CASES["analyses"][2]), "O1")
    layout = f.annotations["layout"]
    assert layout["x"] == "NCHW" and layout.converted == {"x": "NHWC"}
    assert f.annotations["memory"].converted == {"x@NHWC": "x"}
    gap = next(n for n in f.nodes if n.op == "global_avgpool")
    assert layout[gap.output.name] == "NHWC"
    assert not layout.fixups and not layout.hwc_flatten
    assert all(layout[n.output.name] == "NHWC" for n in f.nodes if n.op in ("fused_conv2d", "concat"))


def test_layout_fixups_conversions_and_hwc_flattens():
    g = load("""
network t {
    input x: f32[N, 3, 6, 5]
    a = x -> c: conv2d(4, 3, padding=1)
    s = a -> softmax(dim=2)
    l = a -> layernorm
    f = a -> flatten -> fc: linear(7)
    output s, l, f, a -> flatten(start_dim=2), x -> layernorm
}""")
    plan = run(g, "O1").annotations["layout"]
    # the conv's output is NHWC; the layernorm over W and the [N, C, H*W] flatten read it in the IR's
    # order (one converted copy, shared); the softmax over H is last in neither: a fix-up
    assert plan["conv2d_0" if "conv2d_0" in plan.layout else "c"] == "NHWC"
    assert plan.converted == {"x": "NHWC", "c": "NCHW"}
    assert plan.fixups == {"softmax_0": 2}
    assert plan.reads["layernorm_0"] == "NCHW" and plan.reads["layernorm_1"] == "NCHW"
    assert plan.hwc_flatten == {"flatten_0": (4, 6, 5)}  # read only by a linear: a view, columns permuted


# ---------------------------------------------------------------------------------------------
# the pass manager and the CLI
# ---------------------------------------------------------------------------------------------

def test_pipelines_name_existing_passes():
    assert PIPELINES["O0"] == ()
    assert all(p in PASSES for p in PIPELINES["O1"])


def test_each_pass_logs_a_summary_and_dumps():
    log: list[str] = []
    run_pipeline(load(RESNET_BLOCK), "O1", log=log.append, dump_after="fold_batchnorm")
    names = [line.split(":")[0] for line in log if not line.startswith("//")]
    assert names == list(PIPELINES["O1"])
    assert "fold_batchnorm: 2 folded" in log
    dump = next(line for line in log if line.startswith("// IR after fold_batchnorm"))
    assert "fused_conv2d" in dump and "relu" in dump


def test_dump_after_env_var(monkeypatch, capsys):
    monkeypatch.setenv("NETDSL_DUMP_AFTER", "fuse_conv_epilogue")
    run_pipeline(load(RESNET_BLOCK), "O1")
    err = capsys.readouterr().err
    assert err.startswith("// IR after fuse_conv_epilogue")


def test_unknown_pass_is_a_user_error():
    with pytest.raises(NetDSLError, match="did you mean `fold_batchnorm`"):
        run_pipeline(load(RESNET_BLOCK), "fold_batchnom")


def test_verifier_runs_after_each_pass():
    def broken(graph):
        node = graph.nodes[0]
        bad = node.replace(outputs=(Value(node.output.name, node.output.type.with_shape((1, 2, 3, 4))),))
        return graph.replace(nodes=(bad,) + graph.nodes[1:]), "broke it"

    for mode in ("changed", "full"):
        with pytest.raises(IRError, match="after pass broken"):
            run_pipeline(load(RESNET_BLOCK), [Pass("broken", broken)], verify=mode)


def test_cli_show_pipeline_cost(capsys):
    from netdsl.cli import main

    path = Path(__file__).parent.parent / "examples" / "resnet18.net"
    assert main(["show", str(path), "--pipeline", "O1", "--cost", "--dump-after", "fold_batchnorm"]) == 0
    out = capsys.readouterr().out
    assert "fold_batchnorm: 20 folded" in out and "// IR after fold_batchnorm" in out
    assert "# NHWC" in out and "// memory:" in out and "fused/unfused bytes" in out
    assert main(["show", str(path), "--dump-after", "fold_bn"]) == 2
    assert main(["run", str(path), "--pipeline", "O1", "--dims", "N=1,H=32,W=32"]) == 0


def test_ideal_never_exceeds_unfused():
    g = load(RESNET_BLOCK)
    env = {"N": 2}
    assert ideal_cost(g, env).bytes <= total(node_costs(g, env)).bytes


def test_verify_accepts_every_fused_graph():
    verify(run(load(RESNET_BLOCK), "O1"))


def test_attention_spelled_out_is_one_node():
    """matmul -> scale -> softmax -> matmul becomes one scaled_dot_product_attention; without the scale
    too (scale 1); not when the scores are read elsewhere, or the softmax is over another dim."""
    src = GOLDEN_CASES["fuse_attention"][2]
    g = load(src)
    f = run(g, "O1")
    assert ops(f) == ["scaled_dot_product_attention"] and f.nodes[0].attrs["scale"] == 0.35
    rng = np.random.default_rng(0)
    x = {v.name: rng.standard_normal(v.type.concrete({"N": 2})) for v in g.inputs}
    w = {}
    np.testing.assert_allclose(reference.run(f, x, w, dtype="f64")["output0"],
                               reference.run(g, x, w, dtype="f64")["output0"], rtol=1e-12, atol=1e-12)
    unscaled = load(src.replace("(matmul(q, k -> transpose(-2, -1)) * 0.35)", "matmul(q, k -> transpose(-2, -1))"))
    (node,) = run(unscaled, "O1").nodes
    assert node.op == "scaled_dot_product_attention" and node.attrs["scale"] == 1.0
    shared = load(src.replace("output matmul(", "s = matmul(q, k -> transpose(-2, -1))\n    output s, matmul(")
                  .replace("(matmul(q, k -> transpose(-2, -1)) * 0.35)", "(s * 0.35)"))
    assert "scaled_dot_product_attention" not in ops(run(shared, "O1"))
    other_dim = load(src.replace("-> softmax", "-> softmax(dim=2)"))
    assert "scaled_dot_product_attention" not in ops(run(other_dim, "O1"))


def test_head_split_and_merge_transposes_move_nothing():
    """A transpose read only by kernels taking strided operands (attention, matmul) is a view: no copy,
    no storage; one after a kernel that writes any strides (attention) is written in place by it; one
    moving the last dim copies."""
    g = load("""
network t {
    input x: f32[N, 6, 16]
    q = x -> reshape(N, 6, 2, 8) -> transpose(1, 2)
    kt = x -> transpose(1, 2)
    s = matmul(x, kt)
    a = sdpa(q, q, q) -> transpose(1, 2) -> reshape(N, 6, 16)
    output a, s
}""")
    f = run(g, "O1")
    layout, plan = f.annotations["layout"], f.annotations["memory"]
    assert layout.strided_views == {"transpose_0": (0, 2, 1, 3)}  # kt (transpose_1) moves the last dim: copied
    assert plan.views["transpose_0"] == "reshape_0" and "transpose_1" not in plan.views
    costs = node_costs(f, {"N": 2})
    assert costs["transpose_0"].bytes == 0 and costs["transpose_1"].bytes > 0
    # the head merge: attention writes straight into the merged storage through a permuted view
    assert layout.permuted_writes == {"scaled_dot_product_attention_0": ("transpose_2", (0, 2, 1, 3))}
    assert plan.storage["scaled_dot_product_attention_0"] == plan.storage["transpose_2"] == "transpose_2"
    assert costs["transpose_2"].bytes == 0
    _check_plan(f)


def test_fold_parameter_linear():
    """matmul by a transposed parameter (+ a parameter bias) is a linear reading those parameters; a parameter
    read elsewhere too, or a W not transposed, stays as written."""
    src = """network t {
    input x: f32[N, 4, 9]
    param w: [6, 9] = normal
    param b: [6] = normal
    param u: [9, 5] = normal
    param v: [3, 9] = normal
    a = gelu(matmul(x, w -> transpose(0, 1)) + b)
    c = matmul(x, u)
    d = matmul(x, v -> transpose(0, 1)) + (v -> select(1, 0))
    output a, c, d, e = v -> relu
}
"""
    graph = netdsl.load_source(src, "t.net")
    fused = run_pipeline(graph, "O1", log=lambda _: None)
    (first,) = [n for n in fused.nodes if n.op == "fused_linear"]
    assert first.op == "fused_linear" and dict(first.params) == {"weight": "w", "bias": "b"}
    assert first.attrs["act1"] == "gelu" and first.attrs["out_features"] == 6
    assert [n.op for n in fused.nodes].count("matmul") == 2  # u is not transposed; v is read elsewhere too
    weights = netdsl.random_weights(graph, seed=0)
    inputs = {"x": np.random.default_rng(0).standard_normal((2, 4, 9)).astype(np.float32)}
    want, got = netdsl.reference.run(graph, inputs, weights), netdsl.reference.run(fused, inputs, weights)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
