"""`netdsl import` of global max pooling (GlobalMaxPool, ReduceMax over H and W), Split with several outputs
and Pad folded into the conv or average pool it feeds: the written files, run on the reference backend,
give onnxruntime's outputs; what cannot be expressed is listed with its reason."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from netdsl.errors import NetDSLError  # noqa: E402
from netdsl.interop.onnx_import import import_onnx  # noqa: E402
from test_onnx_import import batch, import_and_compare, save, single_node, w  # noqa: E402


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


# --- global max pooling ---------------------------------------------------------------------------------

@pytest.mark.parametrize("op, consts, attrs, opset, written", [
    ("GlobalMaxPool", {}, {}, 17, "-> global_maxpool\n"),
    ("ReduceMax", {}, dict(axes=[2, 3]), 17, "-> global_maxpool\n"),
    ("ReduceMax", {"axes": i64(-1, -2)}, dict(keepdims=0), 18, "-> global_maxpool -> flatten"),
    ("ReduceMean", {"axes": i64(2, 3)}, {}, 18, "-> global_avgpool\n"),
])
def test_global_max_and_mean(tmp_path, op, consts, attrs, opset, written):
    model = single_node(tmp_path, op, (2, 3, 5, 4), consts, attrs, opset=opset)
    assert written in import_and_compare(tmp_path, model, [batch(2, 3, 5, 4)])


def test_reduce_max_over_other_axes_is_unsupported(tmp_path):
    model = single_node(tmp_path, "ReduceMax", (2, 3, 5, 4), {}, dict(axes=[1]), opset=17)
    with pytest.raises(NetDSLError, match=r"ReduceMax node `the_reducemax`: axes=\[1\].*max over H and W"):
        import_onnx(model)


# --- split -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, consts, attrs, outputs, opset, written", [
    ((2, 6, 5), {"split": i64(2, 4)}, dict(axis=1), 2, 17, "= x -> split((2, 4), dim=1)"),
    ((2, 6, 5), {"split": i64(1, 3, 1)}, dict(axis=-1), 3, 17, "= x -> split((1, 3, 1), dim=-1)"),
    ((2, 3, 4, 6), {}, dict(axis=3), 3, 17, "= x -> split(2, dim=3)"),
    ((2, 3, 4, 7), {}, dict(axis=3, num_outputs=3), 3, 18, "= x -> split(3, dim=3)"),  # 3, 3, 1
    ((2, 4, 3), {}, dict(split=[1, 3], axis=1), 2, 11, "= x -> split((1, 3), dim=1)"),  # an attribute
])
def test_split_binds_several_results(tmp_path, shape, consts, attrs, outputs, opset, written):
    model = single_node(tmp_path, "Split", shape, consts, attrs, opset=opset, outputs=outputs)
    text = import_and_compare(tmp_path, model, [batch(*shape)])
    assert written in text and ", ".join(f"y{i}" for i in range(outputs)) + " = " in text


def test_split_pieces_feed_layers_and_an_unused_piece_is_dropped(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])
    nodes = [helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=1),
             helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Sigmoid", ["c"], ["sc"]),
             helper.make_node("Mul", ["ra", "sc"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(i64(1, 2, 1), "sizes")])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "s.onnx")
    text = import_and_compare(tmp_path, path, [batch(2, 4, 6, 6)])
    assert ", _, " in text and "split((1, 2, 1), dim=1)" in text


def test_split_of_a_dynamic_dim_into_equal_pieces_is_unsupported(tmp_path):
    model = single_node(tmp_path, "Split", (2, 6), {}, dict(axis=0), outputs=2)
    with pytest.raises(NetDSLError, match="equal pieces of axis 0, whose size is not static"):
        import_onnx(model)


# --- Pad folded into the conv or average pool it feeds ---------------------------------------------------

def pad_then(tmp_path, reader: str, pads: list, reader_attrs: dict, consts: dict | None = None, opset: int = 17,
             value: float | None = None, mode: str = "constant", shape=(2, 3, 7, 8), axes: list | None = None):
    """x -> Pad(pads) -> reader (a Conv with weight W, an AveragePool, ...) -> y."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape[1:]])
    consts = dict(consts or {})
    pad_inputs = ["x"]
    pad_attrs = {"mode": mode}
    if opset < 11:
        pad_attrs.update(pads=pads, value=value or 0.0)
    else:
        consts["pads"] = np.array(pads, np.int64)
        pad_inputs.append("pads")
        if value is not None:
            consts["value"] = np.array(value, np.float32)
        if value is not None or axes is not None:
            pad_inputs.append("value" if value is not None else "")
        if axes is not None:
            consts["axes"] = np.array(axes, np.int64)
            pad_inputs.append("axes")
    weights = [k for k in consts if k not in ("pads", "value", "axes")]
    nodes = [helper.make_node("Pad", pad_inputs, ["p"], name="the_pad", **pad_attrs),
             helper.make_node(reader, ["p", *weights], ["y"], name="the_reader", **reader_attrs)]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    graph = helper.make_graph(nodes, "pad", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), tmp_path / "model.onnx")


HW_ONLY = [0, 0, 1, 2, 0, 0, 2, 0]  # top 1, left 2, bottom 2, right 0


@pytest.mark.parametrize("reader, pads, attrs, consts, opset, written", [
    ("Conv", HW_ONLY, {}, {"W": w(4, 3, 3, 3), "B": w(4)}, 17, "conv2d(4, 3, padding=(1, 2, 2, 0))"),
    ("Conv", [0, 0, 1, 1, 0, 0, 1, 1], dict(pads=[1, 0, 0, 1], strides=[2, 2]), {"W": w(5, 3, 2, 3)}, 17,
     "padding=(2, 1, 1, 2)"),
    ("Conv", [0, 0, 0, 1, 0, 0, 1, 0], dict(auto_pad="SAME_UPPER"), {"W": w(4, 3, 3, 3)}, 17,
     "padding=(1, 2, 2, 1)"),
    ("Conv", [0, 0, 2, 1, 0, 0, 0, 1], {}, {"W": w(2, 3, 3, 3)}, 10, "padding=(2, 1, 0, 1)"),  # attributes
    ("AveragePool", HW_ONLY, dict(kernel_shape=[3, 3], strides=[2, 2]), {}, 17,
     "avgpool2d(3, stride=2, padding=(1, 2, 2, 0))"),  # the Pad's zeros count: count_include_pad (default)
    ("AveragePool", [0, 0, 1, 0, 0, 0, 0, 0], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1,
                                                   ceil_mode=1, strides=[2, 2]), {}, 17,
     "padding=(2, 1, 1, 1), ceil_mode=true"),
])
def test_pad_folds_into_the_conv_or_avgpool_it_feeds(tmp_path, reader, pads, attrs, consts, opset, written):
    model = pad_then(tmp_path, reader, pads, attrs, consts, opset=opset)
    text = import_and_compare(tmp_path, model, [batch(2, 3, 7, 8)])
    assert written in text and "pad" not in text.replace("padding", "")


@pytest.mark.parametrize("axes", [[2, 3], [-1, -2]])
def test_pad_of_named_axes_folds(tmp_path, axes):  # opset 18: pads [begin..., end...] of the axes given
    pads = [1, 2, 0, 1] if axes == [2, 3] else [2, 1, 1, 0]
    model = pad_then(tmp_path, "Conv", pads, {}, {"W": w(4, 3, 3, 3)}, opset=18, axes=axes)
    assert "conv2d(4, 3, padding=(1, 2, 0, 1), bias=false)" in import_and_compare(tmp_path, model, [batch(2, 3, 7, 8)])


def test_pad_by_nothing_is_the_input(tmp_path):
    model = pad_then(tmp_path, "MaxPool", [0] * 8, dict(kernel_shape=[2, 2]))
    assert "y = x -> maxpool2d(2, stride=1)\n" in import_and_compare(tmp_path, model, [batch(2, 3, 7, 8)])


@pytest.mark.parametrize("reader, pads, attrs, kwargs, reason", [
    ("MaxPool", HW_ONLY, dict(kernel_shape=[3, 3]), {}, "its result feeds MaxPool, not one Conv or AveragePool"),
    ("Conv", HW_ONLY, {}, dict(consts={"W": w(4, 3, 3, 3)}, mode="reflect"), "mode=reflect"),
    ("Conv", HW_ONLY, {}, dict(consts={"W": w(4, 3, 3, 3)}, value=1.5), "constant value 1.5"),
    ("Conv", [0, 1, 0, 0, 0, 0, 0, 0], {}, dict(consts={"W": w(4, 4, 3, 3)}), "reach N or C"),
    ("Conv", [0, 0, -1, 0, 0, 0, 0, 0], {}, dict(consts={"W": w(4, 3, 3, 3)}), "negative pads"),
    ("AveragePool", HW_ONLY, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), {}, "leaves its own padding out"),
    ("AveragePool", HW_ONLY, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), {}, "ceil_mode=1"),
    ("AveragePool", HW_ONLY, dict(kernel_shape=[2, 2]), {}, "reach the pool's kernel [2, 2]"),
])
def test_pad_that_does_not_fold_is_listed_with_its_reason(tmp_path, reader, pads, attrs, kwargs, reason):
    model = pad_then(tmp_path, reader, pads, attrs, **kwargs)
    with pytest.raises(NetDSLError) as e:
        import_onnx(model)
    assert "Pad node `the_pad`" in e.value.message and reason in e.value.message
    assert "Pad" in e.value.hint  # the supported ops


def test_pad_read_twice_does_not_fold(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], name="the_pad"),
             helper.make_node("Conv", ["p", "W"], ["y"]), helper.make_node("Relu", ["p"], ["z"])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")]
    graph = helper.make_graph(nodes, "g", [x], outs, [numpy_helper.from_array(i64(0, 0, 1, 1, 0, 0, 1, 1), "pads"),
                                                      numpy_helper.from_array(w(2, 3, 3, 3), "W")])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "twice.onnx")
    with pytest.raises(NetDSLError, match="its result feeds Conv, Relu, not one Conv or AveragePool"):
        import_onnx(path)


# --- the same, as PyTorch's exporter writes them ----------------------------------------------------------

def test_pytorch_pad_split_and_amax(tmp_path):
    from test_onnx_import import export, randomize

    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)

        def forward(self, x):
            y = self.conv(F.pad(x, (1, 0, 2, 1)))  # left, right, top, bottom
            a, b = y.split([2, 4], dim=1)
            c = F.avg_pool2d(F.pad(b, (0, 0, 1, 0)), 2)
            return a.amax((2, 3), keepdim=True), c.amax((2, 3)), torch.chunk(c, 2, dim=1)[1]

    path = export(randomize(Model()), [(2, 3, 11, 10)], tmp_path / "m.onnx")
    text = import_and_compare(tmp_path, path, [batch(2, 3, 11, 10)])
    assert "conv2d(6, 3, stride=2, padding=(2, 1, 1, 0))" in text and "split((2, 4), dim=1)" in text
    assert "avgpool2d(2, padding=(1, 0, 0, 0))" in text and text.count("global_maxpool") == 2


def test_split_chunk_and_global_maxpool_round_trip_through_export(tmp_path):
    """netdsl -> ONNX (netdsl export) -> netdsl (import): the same outputs as the source on the reference backend."""
    import netdsl
    from netdsl.backends import reference
    from netdsl.interop.onnx_export import export_onnx
    from netdsl.params import random_weights
    from netdsl.tolerances import TOLERANCES

    source = netdsl.load_source("network t {\n    input x: f32[N, 6, 5, 7]\n"
                                "    a, b = x -> split((2, 4), dim=1)\n"
                                "    c, d, e = x -> chunk(3, dim=-1)\n"
                                "    output p = a -> global_maxpool, q = b -> conv2d(3, 3, padding=(1, 0, 2, 1)), "
                                "c, d, "
                                "r = e -> global_maxpool -> flatten\n}\n")
    weights = random_weights(source, 4)
    onnx.save(export_onnx(source, weights), str(tmp_path / "t.onnx"))
    text, imported_weights = import_onnx(tmp_path / "t.onnx")
    assert "= x -> split((2, 4), dim=1)" in text and "c, d, chunk_0_2 = x -> split(3, dim=-1)" in text
    assert text.count("global_maxpool") == 2 and "padding=(1, 0, 2, 1)" in text
    imported = netdsl.load_source(text)
    x = batch(2, 6, 5, 7)
    want, got = reference.run(source, [x], weights), reference.run(imported, [x], imported_weights)
    for w_, g in zip(want.values(), got.values(), strict=True):
        assert TOLERANCES["f32"].error(g, w_)[2]
