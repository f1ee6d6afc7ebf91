"""Keywords as names (torchvision names modules `block`); the parser cache is tested in test_parser_cache.py."""

from __future__ import annotations

import numpy as np
import pytest

import netdsl
from netdsl import NetDSLError
from netdsl.frontend import ast, parser
from netdsl.params import init_weights, load_weights, save_weights

# ---- keywords as names ----------------------------------------------------------------------------

# torchvision's MobileNetV3 / EfficientNet shape: `features` is a Sequential whose stages hold a module
# named `block`; a state_dict key reads `features.1.block.0.weight`.
MOBILE = """
block inverted(c) {
    input x
    y = x -> block: (conv2d(c, 1, bias=false) -> batchnorm -> relu
                     -> conv2d(c, 3, padding=1, groups=c, bias=false) -> batchnorm)
    output y + x
}

network tiny_mobile {
    input image: f32[N, 3, 8, 8]
    param features.1.block.scale: [4] = ones
    y = image -> features: (conv2d(4, 3, padding=1, bias=false) -> inverted(4))
    output y * 2, s = features.1.block.scale
}
"""


def _torch_twin_keys() -> dict[str, tuple]:
    """The state_dict of the same network built with torch.nn: the names netdsl must give."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Inverted(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.block = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                       nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c))
            self.block.register_parameter("scale", nn.Parameter(torch.ones(c)))  # netdsl's `param`

    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), Inverted(4))
    keys = {f"features.{k}": tuple(v.shape) for k, v in features.state_dict().items()}
    return {k: v for k, v in keys.items() if not k.endswith("num_batches_tracked")}


def test_a_block_label_names_parameters_as_torchvision_does():
    graph = netdsl.load_source(MOBILE, "m.net")
    mine = {name: tuple(int(d) for d in spec.shape) for name, spec in graph.used_params().items()}
    assert any(".block." in name for name in mine)
    assert mine == _torch_twin_keys()


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_weights_under_block_names_load_back(tmp_path, suffix):
    graph = netdsl.load_source(MOBILE, "m.net")
    weights = init_weights(graph, seed=3)
    path = tmp_path / f"w{suffix}"
    save_weights(path, weights)
    back = load_weights(path, graph)
    assert sorted(back) == sorted(weights) and "features.1.block.0.weight" in back
    for name in weights:
        np.testing.assert_array_equal(back[name], weights[name])
    # and the names are what load checks: the same file under another label does not load
    renamed = {k.replace(".block.", ".blk."): v for k, v in weights.items()}
    save_weights(path, renamed)
    with pytest.raises(NetDSLError, match="features.1.block"):
        load_weights(path, graph)


def test_keywords_as_parts_of_names_and_as_keyword_arguments():
    module = parser.parse("""
network n {
    input x: f32[N, 4]
    param input.true.param: [4]
    y = x -> output: linear(4) -> import: linear(4)
    z = matmul(y, output.weight -> transpose(0, 1)) + input.true.param
    output z -> network: linear(2, bias=false), w = import.bias
}
""")
    (net,) = module.networks.values()
    assert isinstance(net.body[1], ast.ParamStmt) and net.body[1].name == "input.true.param"
    chain = net.body[2].value
    assert [s.label for s in chain.stages] == ["output", "import"]
    z = net.body[3].value
    assert isinstance(z.left.args[1].source, ast.Qualified) and z.left.args[1].source.id == "output.weight"
    assert z.right.id == "input.true.param"
    call = parser.parse("network n { input x: f32[1] output f(x, block=1, true=false) }")
    args = next(iter(call.networks.values())).body[1].items[0].value
    assert [(k.name, k.value.value) for k in args.kwargs] == [("block", 1), ("true", False)]


def test_keyword_labels_compile_and_run():
    src = """
network n {
    input x: f32[N, 4]
    y = x -> block: linear(3) -> output: linear(2)
    output y, w = block.weight
}
"""
    graph = netdsl.load_source(src, "m.net")
    assert sorted(graph.used_params()) == ["block.bias", "block.weight", "output.bias", "output.weight"]
    weights = init_weights(graph)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = netdsl.reference.run(graph, {"x": x}, weights)
    expect = (x @ weights["block.weight"].T + weights["block.bias"]) @ weights["output.weight"].T + weights["output.bias"]
    np.testing.assert_allclose(out["y"], expect, rtol=1e-5)
    np.testing.assert_array_equal(out["w"], weights["block.weight"])


def _error(body: str) -> NetDSLError:
    with pytest.raises(NetDSLError) as info:
        netdsl.load_source("network n {\n    input x: f32[N, 4]\n" + body + "\n}\n", "m.net")
    return info.value


@pytest.mark.parametrize("line, word", [
    ("    y = x -> block", "block"),                  # a keyword as a layer: not a label
    ("    y = x -> input(3)", "input"),
    ("    y = block", "block"),                        # as a value
    ("    y = x + output", "output"),
    ("    y = linear(x, 3, param)", "param"),          # as a positional argument
    ("    output x -> true", "true"),
    ("    y = x -> relu -> (import -> relu)", "import"),
])
def test_a_keyword_where_a_name_cannot_be_is_still_an_error_about_it(line, word):
    col = line.index(word) + 1
    err = _error(line)
    assert err.message == f"unexpected `{word}`" and (err.loc.line, err.loc.col, err.loc.width) == (3, col, len(word))
    assert f"`{word}` is a keyword" in err.hint
    assert "^" * len(word) in str(err) and "Traceback" not in str(err)


def test_an_unclosed_call_before_a_keyword_is_still_named():
    err = _error("    y = linear(x, 3, output")
    assert err.message == "unexpected `output`" and any("not closed" in n for n, _ in err.notes)


def test_expected_lists_do_not_offer_keywords_as_names():
    err = _error("    y = x ->")
    assert "a name" in err.hint and "`block`" not in err.hint and "`network`" not in err.hint


def test_a_keyword_at_the_end_of_the_file_is_blamed_not_the_end():
    with pytest.raises(NetDSLError) as info:
        netdsl.load_source("network n {\n    input x: f32[1]\n    output x -> block", "m.net")
    err = info.value
    assert err.message == "unexpected `block`" and (err.loc.line, err.loc.col) == (3, 17)
    assert "`block` is a keyword" in err.hint


@pytest.mark.parametrize("line, message, col", [
    ("    param block x", "unexpected `x`", 17),     # after `param` a keyword is a name: the `x` is wrong
    ("    y = a.block x", "unexpected `x`", 17),     # ... and after a `.`
])
def test_a_keyword_that_is_a_name_is_not_blamed_for_what_follows(line, message, col):
    err = _error(line)
    assert err.message == message and (err.loc.line, err.loc.col) == (3, col)
    assert "is a keyword" not in (err.hint or "")
