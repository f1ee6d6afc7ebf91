"""`netdsl export`: every example and every tricky op semantics, written as ONNX, checked by onnx.checker
and run by onnxruntime (CPU) against netdsl's reference backend, at the sizes of the export and at other
sizes of the symbolic dims (they must be dynamic axes); plus the op table's coverage and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netdsl
from netdsl import NetDSLError
from netdsl.backends import reference
from netdsl.cli import main
from netdsl.ir.dims import SymDim
from netdsl.ir.sizes import concrete_dims
from netdsl.ops import REGISTRY
from netdsl.params import parameter_count, random_inputs, random_weights
from netdsl.tolerances import TOLERANCES

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from netdsl.interop import onnx_export  # noqa: E402
from netdsl.interop.onnx_export import export_onnx  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOL = TOLERANCES["f32"]
# Sizes of the symbolic dims: at export (those of tests/test_examples.py) and a second set that differs
# in every dim the model lets vary.
SIZES = {
    "lenet5": [{"N": 2}, {"N": 3}],
    "mlp": [{"N": 2}, {"N": 1}],
    "alexnet": [{"N": 1}, {"N": 2}],
    "vgg11": [{"N": 1}, {"N": 2}],
    "googlenet": [{"N": 2, "H": 64, "W": 64}, {"N": 1, "H": 48, "W": 80}],
    "resnet18": [{"N": 2, "H": 64, "W": 64}, {"N": 3, "H": 40, "W": 56}],
    "resnet50": [{"N": 2, "H": 64, "W": 64}, {"N": 1, "H": 48, "W": 32}],
    "mobilenet_v2": [{"N": 2, "H": 64, "W": 64}, {"N": 1, "H": 40, "W": 72}],
    "mobilenet_v3_small": [{"N": 2, "H": 64, "W": 64}, {"N": 1, "H": 40, "W": 72}],
    "unet": [{"N": 2}, {"N": 1}],
    "transformer_encoder": [{"N": 2, "T": 6}, {"N": 3, "T": 4}],
    "gpt2": [{"N": 1, "T": 8}, {"N": 2, "T": 5}],
    "vit_b16": [{"N": 1}, {"N": 2}],
    "transformer": [{"N": 2, "S": 9, "T": 7}, {"N": 1, "S": 4, "T": 6}],
    "rnn": [{"N": 2, "T": 9}, {"N": 3, "T": 4}],
    "lstm_lm": [{"N": 2, "T": 9}, {"N": 1, "T": 3}],
    "seq2seq": [{"N": 2, "S": 7, "T": 5}, {"N": 3, "S": 3, "T": 6}],
}
# Examples of more than 20M parameters (AlexNet, VGG-11, GPT-2, ViT-B/16, the Transformer) are exported as the
# graph alone (parameters as graph inputs, fed the weights at run time) and run at their first sizes only:
# serialising and re-parsing 0.2-0.5 GB of initializers costs 5-25 s each, and the reference run of each size
# seconds more, proving nothing the small examples (initializers, second sizes) do not.
BIG = 20_000_000


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def compare(graph, sess, weights, dims, feed_weights=False, seed=1, inputs=None, oracle=None):
    """Run the ONNX model and the reference (of ``oracle``, default ``graph``) on the same inputs."""
    inputs = inputs if inputs is not None else random_inputs(graph, concrete_dims(graph, dims), seed)
    got = sess.run(None, {**inputs, **(weights if feed_weights else {})})
    want = reference.run(oracle or graph, inputs, weights)
    assert [o.name for o in sess.get_outputs()] == list(graph.output_names)
    for name, g in zip(graph.output_names, got):
        err, rel, ok = TOL.error(g, want[name])
        assert ok, f"{graph.name}.{name} at {dims}: max abs error {err:.3g} ({rel:.3g} of the output's scale)"


def check_interface(graph, model, weights_inside: bool = True):
    """Inputs, outputs and initializers named as the .net file and its parameters; symbolic dims dynamic."""
    inits = {t.name for t in model.graph.initializer}
    assert inits == (set(graph.used_params()) if weights_inside else set())
    declared = {i.name: i for i in model.graph.input}
    for v in graph.inputs:
        dims = declared[v.name].type.tensor_type.shape.dim
        for d, proto in zip(v.type.shape, dims, strict=True):
            if isinstance(d, SymDim):
                assert proto.dim_param == str(d) and not proto.HasField("dim_value")
            else:
                assert proto.dim_value == d
    assert [o.name for o in model.graph.output] == list(graph.output_names)
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    dead = [n.name for n in model.graph.node if not read & set(n.output)]
    assert not dead, f"nodes whose results nothing reads: {dead[:5]}"


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.net")))
def test_example_round_trip(name):
    graph = netdsl.load(EXAMPLES / f"{name}.net")
    weights = random_weights(graph, 0)
    big = parameter_count(graph) > BIG
    model = export_onnx(graph, None if big else weights)  # onnx.checker (full_check) runs inside
    check_interface(graph, model, weights_inside=not big)
    sess = session(model)
    for dims in SIZES[name][:1] if big else SIZES[name]:
        compare(graph, sess, weights, dims, feed_weights=big)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "transformer_encoder", "unet"])
def test_fused_graph_decomposes(name):
    """A graph after the passes (O1) exports with its fused nodes decomposed; the oracle is the UNFUSED graph."""
    from netdsl.passes import run_pipeline

    graph = netdsl.load(EXAMPLES / f"{name}.net")
    fused = run_pipeline(graph, "O1")
    assert any(n.op.startswith("fused_") for n in fused.nodes)
    weights = random_weights(graph, 2)
    sess = session(export_onnx(fused, weights))
    for dims in SIZES[name]:
        compare(graph, sess, weights, dims, oracle=graph)


def test_every_op_exports_or_is_listed_unsupported():
    exported, unsupported = set(onnx_export.EXPORTERS), set(onnx_export.UNSUPPORTED)
    assert not exported & unsupported
    assert exported | unsupported == set(REGISTRY), sorted(set(REGISTRY) ^ (exported | unsupported))


# ---------------------------------------------------------------------------------------------
# per op: tiny networks for the semantics ONNX spells differently
# ---------------------------------------------------------------------------------------------

def net(inputs: str, body: str) -> str:
    return f"network t {{\n    input {inputs}\n    {body}\n}}\n"


IMAGE = "x: f32[N, 4, H, W]"
SEQ = "x: f32[N, T, 6]"
HW = [{"N": 2, "H": 9, "W": 7}, {"N": 1, "H": 12, "W": 10}]
NT = [{"N": 2, "T": 5}, {"N": 3, "T": 2}]

CASES = {
    "conv_groups_dilation": (IMAGE, "output x -> conv2d(6, 3, stride=2, padding=2, dilation=2, groups=2)", HW),
    "conv_same_depthwise": (IMAGE, "output x -> conv2d(4, (3, 5), padding=\"same\", groups=4, bias=false)", HW),
    "conv_transpose": (IMAGE, "output x -> conv_transpose2d(6, 3, stride=2, padding=1, output_padding=1, "
                              "dilation=1, groups=2)", HW),
    "conv_transpose_dilated": (IMAGE, "output x -> conv_transpose2d(3, (2, 3), stride=(1, 2), padding=(0, 1), "
                                      "dilation=2, bias=false)", HW),
    "maxpool_ceil": (IMAGE, "output x -> maxpool(3, stride=2, padding=1, ceil_mode=true)", HW),
    "maxpool_dilated": (IMAGE, "output x -> maxpool(2, stride=1, dilation=2)", HW),
    "avgpool_ceil_include_pad": (IMAGE, "output x -> avgpool(3, stride=2, padding=1, ceil_mode=true)", HW),
    "avgpool_exclude_pad": (IMAGE, "output x -> avgpool((3, 2), stride=(2, 1), padding=1, "
                                   "count_include_pad=false)", HW),
    # static sizes: torch drops a last window that would start in the right padding
    "avgpool_ceil_last_window": ("x: f32[N, 4, 9, 8]", "output a = x -> avgpool(2, stride=2, padding=1, "
                                 "ceil_mode=true, count_include_pad=false), b = x -> avgpool(2, stride=2, padding=1, "
                                 "ceil_mode=true), c = x -> maxpool(2, stride=2, padding=1, ceil_mode=true)",
                                 [{"N": 2}]),
    "conv_asymmetric": (IMAGE, "output a = x -> conv2d(6, 3, stride=2, padding=(1, 0, 2, 1)), "
                               "b = x -> conv2d(4, 3, groups=4, padding=(0, 2, 1, 0), bias=false)", HW),
    "conv_same_strided": (IMAGE, "output a = x -> conv2d(5, 4, stride=(2, 3), padding=\"same\"), "
                                 "b = x -> conv2d(4, 2, padding=\"same\")", HW),
    "conv_same_dilated_static": ("x: f32[N, 4, 9, 8]", "output x -> conv2d(5, 3, stride=2, dilation=2, "
                                 "padding=\"same\")", [{"N": 2}]),
    "pools_asymmetric": (IMAGE, "output a = x -> maxpool(3, stride=2, padding=(2, 0, 1, 2)), "
                                "b = x -> avgpool(3, stride=2, padding=(0, 1, 2, 2), count_include_pad=false), "
                                "c = x -> avgpool(3, stride=2, padding=(0, 1, 2, 2))", HW),
    "pools_same": (IMAGE, "output a = x -> maxpool(2, stride=2, padding=\"same\"), "
                          "b = x -> avgpool(3, stride=2, padding=\"same\", count_include_pad=false), "
                          "c = x -> avgpool((4, 3), stride=(3, 2), padding=\"same\")", HW),
    "pools_ceil_asymmetric": ("x: f32[N, 4, 9, 8]", "output a = x -> maxpool(2, stride=2, padding=(0, 1, 1, 1), "
                              "ceil_mode=true), b = x -> avgpool(3, stride=2, padding=(0, 1, 2, 0), ceil_mode=true)",
                              [{"N": 2}]),
    "adaptive_avgpool_bins": (IMAGE, "output x -> adaptive_avgpool((4, 3))", HW),
    "adaptive_avgpool_divides": ("x: f32[N, 4, 8, 6]", "output x -> adaptive_avgpool((4, 3))", [{"N": 2}]),
    "global_avgpool_flatten": (IMAGE, "output x -> global_avgpool -> flatten", HW),
    "global_maxpool": (IMAGE, "output a = x -> global_maxpool, b = x -> global_maxpool -> flatten", HW),
    "batchnorm_2d_and_4d": ("x: f32[N, 4, 3, 2]", "output x -> batchnorm -> flatten -> linear(5) -> batchnorm",
                            [{"N": 2}, {"N": 1}]),
    "layernorm_dims": ("x: f32[N, T, 3, 6]", "output a = x -> layernorm(dims=2), b = x -> layernorm(affine=false, "
                                             "eps=0.1)", NT),
    "groupnorm": (IMAGE, "output x -> groupnorm(2, eps=0.01)", HW),
    "softmax_axes": (IMAGE, "output a = x -> softmax(dim=1), b = x -> log_softmax(dim=-2)", HW),
    "flatten_start": ("x: f32[N, 4, 3, 5]", "output x -> flatten(2) -> transpose(1, 2)", [{"N": 2}, {"N": 1}]),
    "upsample_nearest_2": (IMAGE, "output x -> upsample(2)", HW),
    "upsample_nearest_scales": (IMAGE, "output x -> upsample((1.5, 0.5))", [{"N": 1, "H": 8, "W": 6}]),
    "upsample_nearest_size": (IMAGE, "output x -> upsample(size=(13, 5))", HW),
    "upsample_bilinear": (IMAGE, "output x -> upsample(2, mode=\"bilinear\")", HW),
    "upsample_bilinear_size": (IMAGE, "output x -> upsample(size=(5, 11), mode=\"bilinear\")", HW),
    "upsample_bilinear_corners": (IMAGE, "output x -> upsample(size=(11, 4), mode=\"bilinear\", "
                                         "align_corners=true)", HW),
    "slice_select": (SEQ, "output a = x[:, 1:-1:2], b = x -> slice(1, start=-T, end=T - 1), c = x[:, T - 1], "
                          "d = x -> select(1, -2), e = x -> slice(2, 1, 5, 3)",
                     [{"N": 2, "T": 5}, {"N": 1, "T": 7}]),
    "split_chunk": (SEQ, "a, b = x -> split((2, 4), dim=-1)\n    c, d, e = x -> chunk(3, dim=2)\n"
                         "    p, q, r = x -> chunk(4, dim=-1)\n    output a, b, c, d, e, p, q, r", NT),
    "reshape_unflatten": (SEQ, "output a = x -> reshape(N, T * 2, 3), b = x -> reshape(N, -1), "
                               "c = x -> unflatten(-1, (3, -1)) -> permute(2, 0, 3, 1)", NT),
    "squeeze_expand": ("x: f32[N, T, 6], c: f32[1, 1, 6]",
                       "output a = x -> unsqueeze(-1) -> squeeze(3), b = c -> expand(N, T, -1) -> mul(x), "
                       "e = c -> expand(2, N, -1, 6)", NT),
    "matmul_ranks": ("a: f32[N, T, 6], v: f32[6], m: f32[2, 1, 6, T]",
                     "output p = matmul(a, v), q = matmul(v, m), r = matmul(a, m)", NT),
    "concat_broadcast": ("x: f32[N, T, 6], b: f32[6], g: f32[T, 1]",
                         "output concat((x + b) * g, x, dim=1)", NT),
    "embedding_positions": ("ids: i64[N, T]", "output ids -> emb: embedding(11, 8, padding_idx=0) -> "
                                              "positional_encoding(max_len=20)", NT),
    "embedding_i32": ("ids: i32[N, T]", "output ids -> embedding(5, 4)", NT),
    "input_as_output": (SEQ, "output x, a = x -> dropout(0.1), b = x -> relu", NT),
    "parameter_output": (SEQ, "param table: [8, 6] = normal(std=1)\n    output t = table[:T], y = x + table[:T]", NT),
    "sdpa_plain_scale": ("q: f32[N, 2, T, 4], k: f32[N, 2, S, 4], v: f32[N, 2, S, 3]",
                         "output a = sdpa(q, k, v), b = sdpa(q, k, v, scale=0.3)",
                         [{"N": 2, "T": 3, "S": 5}, {"N": 1, "T": 6, "S": 2}]),
    "sdpa_causal_rectangular": ("q: f32[N, 2, T, 4], k: f32[N, 2, S, 4], v: f32[N, 2, S, 3]",
                                "output sdpa(q, k, v, causal=true)", [{"N": 2, "T": 3, "S": 5},
                                                                      {"N": 1, "T": 4, "S": 4}]),
    "sdpa_float_mask": ("q: f32[N, 2, T, 4], k: f32[N, 2, S, 4], v: f32[N, 2, S, 3], m: f32[T, S]",
                        "output sdpa(q, k, v, m)", [{"N": 2, "T": 3, "S": 5}]),
    "recurrent_stacks": ("x: f32[N, T, 5], h0: f32[4, N, 7], c0: f32[4, N, 7]",
                         "y1, h1 = x -> rnn(7, nonlinearity=\"relu\", num_layers=2, bidirectional=true)\n"
                         "    y2, h2, c2 = x -> lstm(h0, c0, 7, num_layers=2, bidirectional=true)\n"
                         "    y3, h3 = x -> gru(7, num_layers=2, bias=false)\n"
                         "    y4, h4 = x -> gru(h0[:2], 7, bidirectional=true)\n"
                         "    output y1, h1, y2, h2, c2, y3, h3, y4, h4", NT),
}


@pytest.mark.parametrize("case", CASES)
def test_op(case):
    inputs, body, sizes = CASES[case]
    graph = netdsl.load_source(net(inputs, body))
    weights = random_weights(graph, 3)
    sess = session(export_onnx(graph, weights))
    for dims in sizes:
        compare(graph, sess, weights, dims)


@pytest.mark.parametrize("act", sorted(n for n, op in REGISTRY.items() if op.is_activation))
def test_activation(act):
    """Each activation over a wide range (softplus past its threshold, elu/selu far negative)."""
    extra = {"softplus": "(beta=2, threshold=5)", "leaky_relu": "(alpha=0.2)", "elu": "(alpha=0.7)",
             "gelu": "(approximate=\"tanh\")", "affine": "(scale=-2, shift=0.5)", "rrelu": "(lower=0.1, upper=0.3)",
             "hardsigmoid": "(alpha=0.2, beta=0.4)", "hardtanh": "(min_val=-2.5, max_val=0.75)"}
    graph = netdsl.load_source(net(IMAGE, f"output a = x * 6.0 -> {act}{extra.get(act, '')}, b = x * 6.0 -> {act}"))
    weights = random_weights(graph, 4)
    for opset in (18, 20, 21):  # gelu: spelled with Erf/Tanh before opset 20, its own op from 20
        compare(graph, session(export_onnx(graph, weights, opset=opset)), weights, HW[0])


def test_prelu_shared_and_fused_epilogues():
    """Fused conv/linear/norm nodes with prelu slopes, residuals and a second activation, decomposed."""
    from netdsl.passes import run_pipeline

    source = net(IMAGE, "y = x -> conv2d(4, 3, padding=1) -> batchnorm -> prelu -> add(x) -> leaky_relu(alpha=0.3)\n"
                        "    z = y -> batchnorm -> prelu(shared=true) -> groupnorm(2) -> silu\n"
                        "    output z, f = z -> global_avgpool -> flatten -> linear(6) -> batchnorm -> hardswish")
    graph = netdsl.load_source(source)
    fused = run_pipeline(graph, "O1")
    assert {"fused_conv2d", "fused_linear"} <= {n.op for n in fused.nodes}
    weights = random_weights(graph, 5)
    for g in (graph, fused):
        compare(graph, session(export_onnx(g, weights)), weights, HW[1], oracle=graph)


def test_attention_fully_masked_row_gives_zeros():
    """torch's safe softmax: a query whose every key is masked out gives zeros (ONNX's Softmax gives NaN)."""
    graph = netdsl.load_source(net("q: f32[N, 2, T, 4], k: f32[N, 2, T, 4], v: f32[N, 2, T, 3], m: bool[N, 1, T, T]",
                                   "output sdpa(q, k, v, m)"))
    inputs = random_inputs(graph, {"N": 2, "T": 4}, 6)
    inputs["m"][0, 0, 1, :] = False  # query 1 of sample 0 may attend nothing
    out = session(export_onnx(graph, {})).run(None, inputs)[0]
    assert np.all(out[0, :, 1] == 0) and np.isfinite(out).all()
    compare(graph, session(export_onnx(graph, {})), {}, {"N": 2, "T": 4}, inputs=inputs)


def test_unsupported_op_is_an_error_naming_op_and_node(monkeypatch):
    monkeypatch.setitem(onnx_export.UNSUPPORTED, "tanh", "for this test")
    graph = netdsl.load_source(net(SEQ, "output x -> act: tanh"))
    with pytest.raises(NetDSLError, match=r"cannot export `tanh` \(node `act`\).*for this test"):
        export_onnx(graph, {})


def test_float64_input_is_rejected():
    graph = netdsl.load_source(net("x: f64[N, 3]", "output x -> relu"))
    with pytest.raises(NetDSLError, match="f32"):
        export_onnx(graph, {})


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------

def test_cli_writes_a_model_that_runs(tmp_path, capsys):
    out = tmp_path / "lenet5.onnx"
    assert main(["export", str(EXAMPLES / "lenet5.net"), "-o", str(out), "--seed", "7"]) == 0
    line = capsys.readouterr().out
    assert "initializers" in line and "opset 20" in line and str(out) in line
    model = onnx.load(str(out))
    graph = netdsl.load(EXAMPLES / "lenet5.net")
    check_interface(graph, model)
    from netdsl.params import init_weights

    compare(graph, session(model), init_weights(graph, 7), {"N": 3})  # the seeded default weights


def test_cli_weights_and_pipeline(tmp_path):
    src, w, out = EXAMPLES / "resnet18.net", tmp_path / "w.npz", tmp_path / "r.onnx"
    graph = netdsl.load(src)
    weights = random_weights(graph, 8)
    np.savez(w, **weights)
    assert main(["export", str(src), "-o", str(out), "--weights", str(w), "--pipeline", "O1", "--opset", "18"]) == 0
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18
    compare(graph, session(model), weights, {"N": 1, "H": 32, "W": 32})


@pytest.mark.parametrize("args, message", [
    (["-o", "{tmp}/missing/m.onnx"], "no directory"),
    (["-o", "{tmp}"], "directory"),
    (["-o", "{tmp}/m.onnx", "--opset", "12"], "opset"),
    (["-o", "{tmp}/m.onnx", "--opset", "twenty"], "opset"),
    (["-o", "{tmp}/m.onnx", "--seed", "-1"], "seed"),
    (["-o", "{tmp}/m.onnx", "--weights", "{tmp}/none.npz"], "none.npz"),
    (["-o", "{tmp}/m.onnx", "--pipeline", "O7"], "O7"),
])
def test_cli_errors_exit_2_without_output(tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["export", str(EXAMPLES / "mlp.net"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.glob("**/*.onnx")) and not list(tmp_path.glob("**/.*.tmp"))


def test_cli_unsupported_op_exits_2_without_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(onnx_export.UNSUPPORTED, "relu", "for this test")
    out = tmp_path / "m.onnx"
    assert main(["export", str(EXAMPLES / "mlp.net"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot export `relu`" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.iterdir())
