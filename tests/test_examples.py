"""The example models: each parses, verifies, has torchvision's parameter count and names, runs on the
reference backend and matches an independent PyTorch twin (tests/twins.py) given the same weights.
Also: weights round-trip through .safetensors / .npz, loading rejects a wrong file, and the state_dict of
an nn.Module U-Net loads into examples/unet.net unchanged."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

import netdsl
from netdsl import NetDSLError
from netdsl.ops.verify import verify
from netdsl.params import check_weights
from twins import run_twin

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Learned parameters (batchnorm running statistics excluded, as in PyTorch's parameters()):
# torchvision's numbers for the torchvision models, the layer arithmetic for the others.
PARAMETERS = {
    "lenet5": 61_706,
    "mlp": 235_146,  # 784*256+256 + 256*128+128 + 128*10+10
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,  # vgg11 (no batchnorm); vgg11_bn would be 132,868,840
    "googlenet": 6_624_904,  # aux_logits=False
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_small": 2_542_856,  # torchvision's mobilenet_v3_small
    # 482,754: 3x3 convs (no bias) + batchnorm weight/bias, 2x2 up-convs with bias, a 1x1 head —
    # inc 2,800 + down1 13,952 + down2 55,552 + down3 221,696 + up1 143,680 + up2 36,000 + up3 9,040
    # + outc 34; equal to the nn.Module twin's sum(p.numel()) (test_unet_state_dict_of_a_torch_module_loads)
    "unet": 482_754,
    # embedding 64,000 + 2 layers x (4 projections 16,640 + 2 norms 256 + FFN 16,576) + lm_head 65,000
    "transformer_encoder": 195_944,
    # wte 38,597,376 + wpe 786,432 + 12 x 7,087,872 + ln_f 1,536 (Hugging Face's count for gpt2)
    "gpt2": 124_439_808,
    "vit_b16": 86_567_656,  # torchvision's vit_b_16
    # nn.Transformer 44,140,544 + two 10,000 x 512 embeddings + the 512 -> 10,000 generator
    "transformer": 59_510_544,
    "rnn": 50_698,  # nn.RNN(256, 128): 256*128 + 128*128 + 2*128 = 49,408; the head 1,290
    # embedding 128,000 + LSTM layer 0 395,264 + layer 1 526,336 + decoder 257,000
    "lstm_lm": 1_306_600,
    "seq2seq": 405_992,  # two embeddings 128,000 + two GRUs 2 x 74,496 + the head 129,000
}

# (batch, height = width) of the twin comparison: small where the architecture allows; AlexNet and
# VGG end in fully connected layers sized for 224 x 224.
SIZES = {
    "lenet5": (2, 32),
    "mlp": (2, 28),
    "alexnet": (1, 224),
    "vgg11": (1, 224),
    "googlenet": (2, 64),
    "resnet18": (2, 64),
    "resnet50": (2, 64),
    "mobilenet_v2": (2, 64),
    "mobilenet_v3_small": (2, 64),
    "unet": (2, 64),  # the U-Net's input is fixed at 64 x 64
    "transformer_encoder": (2, None),  # T = 16, the file's default
    "gpt2": (1, None),  # T = 8 (DIMS)
    "vit_b16": (1, None),  # 224 x 224 is fixed (the position embedding has 197 rows)
    "transformer": (2, None),  # S = 9, T = 7 (DIMS)
    "rnn": (2, None),  # T = 9 (DIMS)
    "lstm_lm": (2, None),  # T = 9
    "seq2seq": (2, None),  # S = 7, T = 5
}
DIMS = {"gpt2": {"T": 8}, "transformer": {"S": 9, "T": 7}, "rnn": {"T": 9}, "lstm_lm": {"T": 9},
        "seq2seq": {"S": 7, "T": 5}}  # sequence lengths of the twin comparison

# Output shape without the batch dim, where it is not ImageNet's 1000 logits.
OUTPUT_SHAPES = {"lenet5": (10,), "mlp": (10,), "unet": (2, 64, 64), "transformer_encoder": ("T", 1000),
                 "gpt2": ("T", 50257), "transformer": ("T", 10000), "rnn": ("T", 10), "lstm_lm": ("T", 1000),
                 "seq2seq": ("T", 1000)}

# One tolerance per dtype: |ours - twin| <= rtol * |twin| + atol * max|twin|  (atol is relative to the
# output's scale, which random batchnorm statistics make vary from model to model).
TOLERANCE = {"f32": {"rtol": 1e-4, "atol": 2e-5}, "f64": {"rtol": 1e-9, "atol": 1e-11}}
TORCH_DTYPES = {"f32": torch.float32, "f64": torch.float64}

# VGG-11's 133M weights in float64 (1 GB per copy) would dominate the run time; its layers are
# covered in float64 by the other models.
F64_SKIP = {"vgg11", "gpt2", "vit_b16"}


@functools.lru_cache(maxsize=None)
def example(name: str):
    """(graph, random weights) of an example, built once per session."""
    graph = netdsl.load(EXAMPLES / f"{name}.net")
    return graph, netdsl.random_weights(graph, seed=0)


def example_inputs(graph, name: str) -> dict[str, np.ndarray]:
    batch, hw = SIZES[name]
    env = {**graph.dim_defaults, "N": batch, **({"H": hw, "W": hw} if hw else {}), **DIMS.get(name, {})}
    return netdsl.params.random_inputs(graph, env, seed=1)


def example_input(graph, name: str) -> np.ndarray:
    (x,) = example_inputs(graph, name).values()
    return x


def assert_close(ours: np.ndarray, twin: np.ndarray, dtype: str) -> None:
    tol = TOLERANCE[dtype]
    assert ours.shape == twin.shape
    scale = float(np.abs(twin).max())
    np.testing.assert_allclose(ours, twin, rtol=tol["rtol"], atol=tol["atol"] * scale)


def test_every_example_is_tested():
    assert sorted(p.stem for p in EXAMPLES.glob("*.net")) == sorted(PARAMETERS) == sorted(SIZES)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_example_parses_verifies_and_counts(name):
    graph, _ = example(name)
    verify(graph)
    assert netdsl.parameter_count(graph) == PARAMETERS[name]
    (out,) = graph.outputs
    assert tuple(str(d) for d in out.type.shape[1:]) == tuple(str(d) for d in OUTPUT_SHAPES.get(name, (1000,)))


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_example_matches_torch_twin(name, dtype):
    if dtype == "f64" and name in F64_SKIP:
        pytest.skip("float64 VGG-11 is slow and adds no op the other models lack")
    graph, weights = example(name)
    inputs = example_inputs(graph, name)
    outputs = netdsl.reference.run(graph, inputs, weights, dtype=dtype)
    (ours,) = outputs.values()
    x = tuple(inputs[v.name] for v in graph.inputs) if len(graph.inputs) > 1 else inputs[graph.inputs[0].name]
    assert ours.dtype == np.dtype("float32" if dtype == "f32" else "float64")
    assert np.isfinite(ours).all()
    # the twin reads every parameter by its torchvision name, so this also checks the names
    twin = run_twin(name, weights, x, TORCH_DTYPES[dtype], check_all_used=True)
    assert_close(ours, twin, dtype)


@pytest.mark.parametrize("name, hw", [("googlenet", 75), ("resnet18", 57), ("mobilenet_v2", 49),
                                         ("mobilenet_v3_small", 49)])
def test_example_matches_torch_twin_at_odd_size(name, hw):
    """Odd sizes exercise ceil_mode pooling (GoogLeNet) and the rounding of strided convs and pools."""
    graph, weights = example(name)
    x = np.random.default_rng(2).standard_normal((1, 3, hw, hw))
    (ours,) = netdsl.reference.run(graph, [x], weights, dtype="f64").values()
    assert_close(ours, run_twin(name, weights, x, torch.float64), "f64")


def test_torchvision_parameter_names():
    names = set(example("resnet18")[0].used_params())
    for expected in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.bias",
                     "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "layer4.1.conv2.weight",
                     "fc.weight", "fc.bias"):
        assert expected in names
    assert not any(n.startswith("layer1.0.downsample") for n in names)
    names = set(example("resnet50")[0].used_params())
    assert {"layer1.0.downsample.0.weight", "layer3.5.bn3.weight", "layer4.2.conv3.weight"} <= names
    names = set(example("mobilenet_v2")[0].used_params())
    assert {"features.0.0.weight", "features.1.conv.0.0.weight", "features.1.conv.1.weight",
            "features.2.conv.1.0.weight", "features.18.1.running_var", "classifier.1.weight"} <= names
    names = set(example("googlenet")[0].used_params())
    assert {"conv1.conv.weight", "conv3.bn.weight", "inception4e.branch4.1.conv.weight", "fc.bias"} <= names
    names = set(example("alexnet")[0].used_params())
    assert {"features.10.weight", "classifier.6.bias"} <= names
    names = set(example("vgg11")[0].used_params())
    assert {"features.18.weight", "classifier.6.bias"} <= names


def test_show_reports_resnet50_parameters(capsys):
    from netdsl.cli import main

    assert main(["show", str(EXAMPLES / "resnet50.net")]) == 0
    assert "25,557,032" in capsys.readouterr().out


# --- weights files ------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_weights_round_trip(tmp_path, suffix):
    graph, weights = example("resnet18")
    path = tmp_path / f"resnet18{suffix}"
    netdsl.save_weights(path, weights)
    loaded = netdsl.load_weights(path, graph)
    assert loaded.keys() == weights.keys()
    for k, v in weights.items():
        assert loaded[k].dtype == np.float32
        np.testing.assert_array_equal(loaded[k], v)
    x = example_input(graph, "resnet18")
    a = netdsl.reference.run(graph, [x], weights)["logits"]
    b = netdsl.reference.run(graph, [x], loaded)["logits"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_load_weights_rejects_missing_extra_and_misshapen(tmp_path, suffix):
    graph, weights = example("lenet5")

    def load(ws):
        path = tmp_path / f"w{suffix}"
        netdsl.save_weights(path, ws)
        return netdsl.load_weights(path, graph)

    missing = {k: v for k, v in weights.items() if k != "c3.bias"}
    with pytest.raises(NetDSLError, match=r"missing tensor `c3\.bias`"):
        load(missing)
    with pytest.raises(NetDSLError, match=r"unexpected tensor `f9\.weight`"):
        load({**weights, "f9.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(NetDSLError, match=r"`f6\.weight` has shape \(84, 121\)"):
        load({**weights, "f6.weight": np.zeros((84, 121), np.float32)})
    assert load(weights).keys() == weights.keys()


# --- a real torch.nn module's state_dict --------------------------------------------------------

class _ConvBNReLU(torch.nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, c, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(c)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def _double_conv(cin, c):
    return torch.nn.Sequential(_ConvBNReLU(cin, c), _ConvBNReLU(c, c))


class _Down(torch.nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.pool = torch.nn.MaxPool2d(2)
        self.conv = _double_conv(cin, c)

    def forward(self, x):
        return self.conv(self.pool(x))


class _Up(torch.nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.up = torch.nn.ConvTranspose2d(cin, c, 2, stride=2)
        self.conv = _double_conv(2 * c, c)

    def forward(self, x, skip):
        return self.conv(torch.cat([skip, self.up(x)], 1))


class UNet(torch.nn.Module):
    """examples/unet.net as an ordinary PyTorch module (nn.ConvTranspose2d, nn.BatchNorm2d, ...)."""

    def __init__(self, in_channels=3, classes=2, base=16):
        super().__init__()
        c1, c2, c3, c4 = base, 2 * base, 4 * base, 8 * base
        self.inc = _double_conv(in_channels, c1)
        self.down1, self.down2, self.down3 = _Down(c1, c2), _Down(c2, c3), _Down(c3, c4)
        self.up1, self.up2, self.up3 = _Up(c4, c3), _Up(c3, c2), _Up(c2, c1)
        self.outc = torch.nn.Conv2d(c1, classes, 1)

    def forward(self, x):
        e1 = self.inc(x)
        e2 = self.down1(e1)
        e3 = self.down2(e2)
        b = self.down3(e3)
        return self.outc(self.up3(self.up2(self.up1(b, e3), e2), e1))


def test_unet_state_dict_of_a_torch_module_loads():
    """A trained-looking nn.Module U-Net's state_dict loads into examples/unet.net unchanged (strict names
    and shapes, nn.ConvTranspose2d's [C_in, C_out, KH, KW] weights) and gives the module's output."""
    torch.manual_seed(0)
    module = UNet()
    with torch.no_grad():  # non-trivial batchnorm statistics and biases
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
    module.eval()
    graph, _ = example("unet")
    assert sum(p.numel() for p in module.parameters()) == netdsl.parameter_count(graph) == PARAMETERS["unet"]
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    weights = check_weights(graph, state, origin="state_dict")  # raises on any missing/extra/misshapen tensor
    assert state["up1.up.weight"].shape == (128, 64, 2, 2)
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64))
    (ours,) = netdsl.reference.run(graph, [x], weights, dtype="f64").values()
    with torch.no_grad():
        theirs = module.double()(torch.from_numpy(x)).numpy()
    assert_close(ours, theirs, "f64")
