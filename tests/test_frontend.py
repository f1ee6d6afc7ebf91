"""The language works: blocks (defaults, parameters computed from earlier ones, nesting), repetition and
labelled groups with hierarchical names, concat, several and named outputs, symbolic dimensions in
canonical form, comments, aliases, arithmetic, and the choice of initialisation."""

from __future__ import annotations

import numpy as np
import pytest

import netdsl
from netdsl import NetDSLError
from netdsl.ir.dims import SymDim
from netdsl.ops.verify import verify
from netdsl.params import init_param


def load(source: str, **kw):
    return verify(netdsl.load_source(source, "t.net", **kw))


def node(graph, name):
    (n,) = [n for n in graph.nodes if n.name == name]
    return n


def shape(graph, name):
    return node(graph, name).output.type.shape


RESNET = """
# two residual blocks, as in ResNet-18
block basic(c) {
    input x
    y = x -> conv1: conv2d(c, 3, padding=1, bias=false) -> bn1: batchnorm -> relu
          -> conv2: conv2d(c, 3, padding=1, bias=false) -> bn2: batchnorm
    output relu(y + x)
}

block basic_down(c) {
    input x
    y    = x -> conv1: conv2d(c, 3, stride=2, padding=1, bias=false) -> bn1: batchnorm -> relu
             -> conv2: conv2d(c, 3, padding=1, bias=false) -> bn2: batchnorm
    skip = x -> downsample: (conv2d(c, 1, stride=2, bias=false) -> batchnorm)
    output relu(y + skip)
}

network tiny_resnet {
    input image: f32[N, 3, H, W]
    logits = image
        -> conv1: conv2d(8, 3, padding=1, bias=false) -> bn1: batchnorm -> relu
        -> layer1: basic(8) * 2
        -> layer2: (basic_down(16) -> basic(16))
        -> global_avgpool -> flatten -> fc: linear(10)
    output logits
}
"""


def test_repetition_and_labelled_groups_give_pytorch_style_names():
    g = load(RESNET)
    names = set(g.params)
    for expected in ["conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.bias",
                     "layer2.0.conv1.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
                     "layer2.1.conv2.weight", "fc.weight", "fc.bias"]:
        assert expected in names, expected
    assert "layer1.0.conv1.bias" not in names  # bias=false
    assert g.params["layer2.0.conv1.weight"].shape == (16, 8, 3, 3)
    assert g.params["layer2.0.downsample.0.weight"].shape == (16, 8, 1, 1)
    assert g.params["fc.weight"].shape == (10, 16)


def test_pytorch_state_dict_names_of_a_resnet_like_model():
    pytest.importorskip("torch")
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, cin, c, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)
            if stride != 1:
                self.downsample = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.layer1 = nn.Sequential(Basic(8, 8, 1), Basic(8, 8, 1))
            self.layer2 = nn.Sequential(Basic(8, 16, 2), Basic(16, 16, 1))
            self.fc = nn.Linear(16, 10)

    state = {k: tuple(v.shape) for k, v in Net().state_dict().items() if not k.endswith("num_batches_tracked")}
    g = load(RESNET)
    assert {k: tuple(s.shape) for k, s in g.params.items()} == state


def test_two_branches_of_a_stride_2_block_have_equal_symbolic_shapes():
    g = load(RESNET)
    main, skip = shape(g, "layer2.0.bn2"), shape(g, "layer2.0.downsample.1")
    assert main == skip  # (H + 2 - 3)//2 + 1 and (H - 1)//2 + 1 are one canonical expression
    h = main[2]
    assert isinstance(h, SymDim)
    for size in range(1, 40):
        assert h.evaluate({"H": size}) == (size - 1) // 2 + 1
    assert shape(g, "fc") == (SymDim.symbol("N"), 10)


def test_equal_sizes_reached_by_different_paths_have_one_canonical_form():
    src = """
network n {
    input x: f32[N, 4, H, W]
    a = x -> conv2d(4, 3, stride=2, padding=1) -> conv2d(4, 3, stride=2, padding=1)  # ((H + 1)//2 + 1)//2
    b = x -> conv2d(4, 1, stride=4)                               # (H - 1)//4 + 1
    c = x -> conv2d(4, 3, stride=2, padding=1) -> avgpool(3, stride=2, padding=1)
    output a + b, c
}
"""
    g = load(src)
    h = g.outputs[0].type.shape[2]
    assert str(h) == "(H + 3)//4" and g.outputs[1].type.shape[2:] == g.outputs[0].type.shape[2:]


def test_symbolic_dims_evaluate_like_the_arithmetic_they_stand_for():
    src = """
network n {
    input x: f32[N, 3, H, W=17]
    y = x -> conv2d(4, (5, 3), stride=(3, 2), padding=(2, 0), dilation=(1, 2)) -> maxpool(3, stride=2, ceil_mode=true)
    output y
}
"""
    g = load(src)
    _, _, h, w = g.outputs[0].type.shape
    assert g.dim_defaults == {"W": 17}
    for size in range(6, 30):
        assert h.evaluate({"H": size}) == pool_out(conv_out(size, 5, 3, 2, 1), 3, 2, 0, ceil=True), size
        assert w.evaluate({"W": size}) == pool_out(conv_out(size, 3, 2, 0, 2), 3, 2, 0, ceil=True), size


def conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def pool_out(size, k, s, p, ceil):
    """PyTorch's rule: with ceil_mode the last window must start inside the input or left padding."""
    out = -(-(size + 2 * p - k) // s) + 1 if ceil else (size + 2 * p - k) // s + 1
    return out - 1 if ceil and (out - 1) * s >= size + p else out


def test_block_defaults_and_parameters_computed_from_earlier_parameters():
    src = """
block bottleneck(c, expansion=4, out=c * expansion, stride=1) {
    input x
    y = x -> a: conv2d(c, 1) -> relu -> b: conv2d(c, 3, stride=stride, padding=1) -> relu -> c3: conv2d(out, 1)
    output y
}
network n {
    input x: f32[2, 16, 8, 8]
    p = x -> first: bottleneck(4)
    q = x -> second: bottleneck(4, 2, stride=2)
    r = x -> third: bottleneck(c=2, out=7)
    output p, q, r
}
"""
    g = load(src)
    assert g.params["first.c3.weight"].shape == (16, 4, 1, 1)
    assert g.params["second.c3.weight"].shape == (8, 4, 1, 1)
    assert shape(g, "second.c3") == (2, 8, 4, 4)
    assert g.params["third.c3.weight"].shape == (7, 2, 1, 1)


def test_arithmetic_on_parameters():
    src = """
block b(c, k) {
    input x
    output x -> conv2d(c * 4 - c / 2 + (c - 1) * 0, k, padding=(k - 1) / 2, groups=c / c) -> dropout(1 / 4)
}
network n {
    input x: f32[1, 3, 9, 9]
    output x -> b(2, 5)
}
"""
    g = load(src)
    conv = g.nodes[0]
    assert conv.attrs["out_channels"] == 7 and conv.attrs["padding"] == (2, 2)
    assert isinstance(conv.attrs["out_channels"], int)
    assert g.nodes[1].attrs["p"] == 0.25
    assert shape(g, conv.name) == (1, 7, 9, 9)


def test_negative_numbers_and_tuples():
    g = load("network n {\n    input x: f32[1, 4, 5, 6]\n    output x -> softmax(dim=-3) -> concat(dim=-1)\n}\n")
    assert g.nodes[0].attrs["dim"] == -3 and g.nodes[1].attrs["dim"] == -1


def test_nested_blocks_are_named_by_their_scopes():
    src = """
block unit(c) {
    input x
    output x -> conv: conv2d(c, 3, padding=1) -> relu
}
block pair(c) {
    input x
    output x -> first: unit(c) -> unit(c)
}
network n {
    input x: f32[1, 2, 5, 5]
    output x -> stage: pair(3) * 2 -> pair(4)
}
"""
    g = load(src)
    convs = [n.params["weight"] for n in g.nodes if n.op == "conv2d"]
    assert convs == ["stage.0.first.conv.weight", "stage.0.unit_0.conv.weight", "stage.1.first.conv.weight",
                     "stage.1.unit_0.conv.weight", "pair_0.first.conv.weight", "pair_0.unit_0.conv.weight"]


def test_unlabelled_layers_are_numbered_per_op():
    g = load("network n {\n    input x: f32[2, 5]\n    output x -> linear(4) -> relu -> linear(3) -> relu\n}\n")
    assert [n.name for n in g.nodes] == ["linear_0", "relu_0", "linear_1", "relu_1"]
    assert list(g.params) == ["linear_0.weight", "linear_0.bias", "linear_1.weight", "linear_1.bias"]


def test_concat_inception_style():
    src = """
block inception(c1, c3r, c3, pool_proj) {
    input x
    b1 = x -> branch1: conv2d(c1, 1)
    b2 = x -> branch2: (conv2d(c3r, 1) -> relu -> conv2d(c3, 3, padding=1))
    b3 = x -> branch3: (maxpool(3, stride=1, padding=1, ceil_mode=true) -> conv2d(pool_proj, 1))
    output concat(b1, b2, b3)
}
network n {
    input x: f32[N, 8, H, W]
    output x -> a: inception(4, 2, 6, 3) -> relu
}
"""
    g = load(src)
    assert g.outputs[0].type.shape[1] == 13
    assert "a.branch2.2.weight" in g.params and "a.branch3.1.bias" in g.params
    weights = netdsl.random_weights(g)
    out = netdsl.reference.run(g, np.random.default_rng(0).standard_normal((2, 8, 7, 5)), weights)
    assert out["output0"].shape == (2, 13, 7, 5) and (out["output0"] >= 0).all()


def test_several_outputs_named_and_unnamed():
    src = """
network heads {
    input x: f32[N, 6]
    h = x -> trunk: linear(8) -> relu
    output h, scores = h -> cls: linear(3), probs = h -> cls2: linear(3) -> softmax
    output h -> reg: linear(1)
}
"""
    g = load(src)
    assert g.output_names == ("h", "scores", "probs", "output3")
    assert [v.type.shape[1] for v in g.outputs] == [8, 3, 3, 1]
    out = netdsl.reference.run(g, {"x": np.ones((2, 6), np.float32)}, netdsl.random_weights(g))
    assert list(out) == ["h", "scores", "probs", "output3"]
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1, rtol=1e-6)


def test_output_of_an_input_and_the_same_value_twice():
    g = load("network n {\n    input x: f32[3]\n    output x, y = x, z = x -> relu\n}\n")
    assert g.output_names == ("x", "y", "z")
    assert g.outputs[0] is g.outputs[1] or g.outputs[0].name == g.outputs[1].name


def test_several_inputs_and_functional_calls():
    src = """
network two {
    input a: f32[N, 4, 6, 6], b: f32[N, 4, 6, 6]
    input c: f32[N, 4, 1, 1]
    s = add(a, b) -> relu
    t = mul(s, c) + relu(a) * b
    output concat(s, t, dim=1)
}
"""
    g = load(src)
    assert [v.name for v in g.inputs] == ["a", "b", "c"]
    assert g.outputs[0].type.shape[1] == 8
    rng = np.random.default_rng(1)
    a, b, c = rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((2, 4, 1, 1))
    out = netdsl.reference.run(g, {"a": a, "b": b, "c": c}, {}, dtype="f64")["output0"]
    s = np.maximum(a + b, 0)
    np.testing.assert_allclose(out, np.concatenate([s, s * c + np.maximum(a, 0) * b], axis=1))


def test_comments_and_layout():
    src = """# leading comment
network  n{# after the brace
    input x :f32 [ 2 ,3 ]   # spaces anywhere
    # a comment line
    y = x
        -> linear(4)     # a comment inside a chain
        # and a comment line inside a chain
        -> relu
    output y#no space
}
# trailing comment"""
    g = load(src)
    assert [n.op for n in g.nodes] == ["linear", "relu"]


def test_aliases():
    src = ("network n {\n    input x: f32[1, 2, 4, 4]\n"
           "    output x -> swish -> maxpool(2) -> avgpool(2) -> batchnorm2d\n}\n")
    g = load(src)
    assert [n.op for n in g.nodes] == ["silu", "maxpool2d", "avgpool2d", "batchnorm"]
    x = np.linspace(-4, 4, 32).reshape(1, 2, 4, 4)
    swish = netdsl.reference.run(load("network n {\n    input x: f32[1, 2, 4, 4]\n    output x -> swish\n}\n"), x, {},
                                 dtype="f64")["output0"]
    np.testing.assert_allclose(swish, x / (1 + np.exp(-x)))


def test_a_block_may_shadow_an_op_name():
    src = ("block relu(k) {\n    input x\n    output x -> conv2d(2, k)\n}\n"
           "network n {\n    input x: f32[1, 2, 4, 4]\n    output x -> relu(3)\n}\n")
    assert [n.op for n in load(src).nodes] == ["conv2d"]


def test_typed_block_inputs_are_checked_and_symbolic_block_types_accepted():
    src = ("block b(c) {\n    input x: f32[N, 3, H, W]\n    output x -> conv2d(c, 1)\n}\n"
           "network n {\n    input x: f32[N, 3, 8, 8]\n    output x -> b(2)\n}\n")
    assert load(src).outputs[0].type.shape[1] == 2


def test_choose_a_network_by_name():
    src = ("network a {\n    input x: f32[3]\n    output x -> relu\n}\n"
           "network b {\n    input x: f32[3]\n    output x\n}\n")
    assert load(src, network="a").name == "a"
    assert load(src, network="b").nodes == ()


def test_node_locations_point_at_the_source():
    g = load(RESNET)
    conv = node(g, "layer1.0.conv1")
    assert conv.loc.file == "t.net" and RESNET.splitlines()[conv.loc.line - 1].lstrip().startswith("y = x -> conv1:")


# ---------------------------------------------------------------------------------------------
# initialisation
# ---------------------------------------------------------------------------------------------

INIT = """
network n {
    input x: f32[N, 3, 8, 8]
    a = x -> ca: conv2d(4, 3) -> relu
    b = x -> cb: conv2d(4, 3) -> bn: batchnorm -> tanh
    c = x -> cc: conv2d(4, 3) -> sigmoid
    d = x -> cd: conv2d(4, 3) -> softsign
    e = x -> ce: conv2d(4, 3) -> leaky_relu(0.1)
    f = x -> cf: conv2d(4, 3) -> dropout -> gelu
    g = x -> cg: conv2d(4, 3)
    h = x -> flatten -> fh: linear(5) -> tanh
    i = x -> flatten -> fi: linear(5) -> prelu
    output a, b, c, d, e, f, g, h, i
}
"""


def test_he_for_relu_fed_and_glorot_for_tanh_sigmoid_softsign_fed_weights():
    g = load(INIT)
    inits = {k.split(".")[0]: s.init for k, s in g.params.items() if k.endswith("weight") and k[0] in "cf"}
    assert inits == {"ca": "kaiming", "cb": "xavier", "cc": "xavier", "cd": "xavier", "ce": "kaiming",
                     "cf": "kaiming", "cg": "kaiming", "fh": "xavier", "fi": "kaiming"}
    assert g.params["ca.bias"].init == "zeros" and g.params["bn.running_var"].init == "ones"


def test_initial_values_have_the_right_scale():
    g = load(INIT.replace("conv2d(4, 3)", "conv2d(64, 3)"))
    w = netdsl.init_weights(g)
    he, glorot = w["ca.weight"], w["cb.weight"]
    assert he.dtype == np.float32
    assert abs(he.std() - np.sqrt(2 / 27)) < 0.02  # He normal: std sqrt(2 / fan_in)
    bound = np.sqrt(6 / (27 + 64 * 9))  # Glorot uniform: U(-b, b), b = sqrt(6 / (fan_in + fan_out))
    assert np.abs(glorot).max() <= bound and np.abs(glorot).max() > 0.9 * bound
    np.testing.assert_array_equal(w["prelu_0.weight"], 0.25)  # prelu slopes start at 0.25, as in PyTorch


def test_initialisation_is_deterministic_by_seed_and_independent_per_name():
    g = load(INIT)
    w0, w0_again, w1 = netdsl.init_weights(g), netdsl.init_weights(g), netdsl.init_weights(g, seed=1)
    for k in w0:
        np.testing.assert_array_equal(w0[k], w0_again[k])
    assert not np.array_equal(w0["ca.weight"], w1["ca.weight"])
    assert not np.array_equal(w0["ca.weight"], w0["ce.weight"])  # same shape and init, different names
    # adding a layer does not change the others' initial values
    bigger = load(INIT.replace("    output a,", "    extra = x -> cx: conv2d(4, 3) -> relu\n    output extra, a,"))
    wb = netdsl.init_weights(bigger)
    for k in w0:
        np.testing.assert_array_equal(w0[k], wb[k])
    spec = g.params["ca.weight"]
    np.testing.assert_array_equal(init_param("ca.weight", spec), w0["ca.weight"])


def test_errors_do_not_leak_state_between_loads():
    with pytest.raises(NetDSLError):
        netdsl.load_source("network n {\n    input x: f32[3]\n    output x -> rleu\n}\n")
    assert load("network n {\n    input x: f32[3]\n    output x -> relu\n}\n").nodes[0].name == "relu_0"
