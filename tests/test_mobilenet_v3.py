"""examples/mobilenet_v3_small.net against an nn.Module twin of torchvision's mobilenet_v3_small
(tests/twins.py: MobileNetV3Small, with torchvision's state_dict names): the parameter count is
torchvision's published one, the twin's state_dict loads strictly, the reference backend gives the
twin's logits in float32 and float64, and the O1-fused graph gives the unfused one's."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import pytest
import torch

import netdsl
from netdsl.params import check_weights
from netdsl.passes import run_pipeline
from netdsl.tolerances import TOLERANCES
from twins import MobileNetV3Small, SqueezeExcitation

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mobilenet_v3_small.net"

# torchvision's published number of parameters of mobilenet_v3_small (weights' meta "num_params")
PARAMETERS = 2_542_856
DTYPES = {"f32": torch.float32, "f64": torch.float64}


@functools.cache
def graph():
    return netdsl.load(EXAMPLE)


@functools.cache
def twin() -> MobileNetV3Small:
    """The twin with trained-looking weights: batchnorm affine terms away from identity and running
    statistics measured on random images (as training leaves them, so activations keep a unit scale
    through all 13 stages instead of growing), squeeze-and-excitation gates that saturate on some
    channels and a head whose hardswish sees values beyond +-3."""
    torch.manual_seed(0)
    module = MobileNetV3Small()
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.normal_(1, 0.3)
            m.bias.normal_(0, 0.3)
            m.momentum = None  # a cumulative average over the calibration batch
        for m in module.modules():
            if isinstance(m, SqueezeExcitation):
                m.fc2.bias.uniform_(-4, 4)
        module.classifier[0].weight.mul_(10)
        module.train()(torch.randn(16, 3, 64, 64))
    for m in norms:
        m.momentum = 0.01
    return module.eval()


@functools.cache
def weights() -> dict[str, np.ndarray]:
    state = {k: v.numpy() for k, v in twin().state_dict().items()}
    return check_weights(graph(), state, origin="state_dict")  # strict: any missing/extra/misshapen raises


def image(n: int = 2, hw: int = 64) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((n, 3, hw, hw))


def run_twin(x: np.ndarray, dtype: str) -> np.ndarray:
    module = copy.deepcopy(twin()).to(DTYPES[dtype])  # a copy: the shared twin keeps its float32 weights
    with torch.no_grad():
        return module(torch.from_numpy(x).to(DTYPES[dtype])).numpy()


def assert_within(got: np.ndarray, want: np.ndarray, dtype: str) -> None:
    assert got.shape == want.shape
    abs_err, rel_err, ok = TOLERANCES[dtype].error(got, want)
    assert ok, f"{dtype}: max abs error {abs_err:.3g} ({rel_err:.3g} of max |ref|)"


def test_parameter_count_is_torchvisions():
    assert sum(p.numel() for p in twin().parameters()) == PARAMETERS
    assert netdsl.parameter_count(graph()) == PARAMETERS


def test_state_dict_names_are_torchvisions():
    names = set(weights())
    state = {k for k in twin().state_dict() if not k.endswith("num_batches_tracked")}
    assert names == state
    assert {"features.0.0.weight", "features.1.block.0.0.weight", "features.1.block.1.fc1.weight",
            "features.4.block.0.1.running_var", "features.4.block.2.fc2.bias", "features.11.block.3.0.weight",
            "features.12.1.running_mean", "classifier.0.weight", "classifier.3.bias"} <= names
    # block 1 has no expansion conv (3 stages); blocks 2-3 no squeeze-and-excitation
    assert not any(n.startswith(("features.1.block.3", "features.2.block.3", "features.3.block.3")) for n in names)
    # _make_divisible(c // 4, 8): 16 -> 8, 96 -> 24, 240 -> 64, 120 -> 32, 144 -> 40, 288 -> 72, 576 -> 144
    squeeze = {k: weights()[f"features.{k}.block.{1 if k == 1 else 2}.fc1.weight"].shape[0]
               for k in (1, 4, 5, 7, 8, 9, 10)}
    assert squeeze == {1: 8, 4: 24, 5: 64, 7: 32, 8: 40, 9: 72, 10: 144}


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_reference_matches_the_twin(dtype):
    x = image()
    (ours,) = netdsl.reference.run(graph(), [x], weights(), dtype=dtype).values()
    assert ours.dtype == np.dtype("float32" if dtype == "f32" else "float64")
    assert ours.shape == (2, 1000) and np.isfinite(ours).all()
    assert_within(ours, run_twin(x, dtype), dtype)


def test_reference_matches_the_twin_at_an_odd_size():
    """49 x 49: the rounding of the strided 3x3 and 5x5 depthwise convs (25, 13, 7, 4, 2)."""
    x = image(1, 49)
    (ours,) = netdsl.reference.run(graph(), [x], weights(), dtype="f64").values()
    assert_within(ours, run_twin(x, "f64"), "f64")


def test_batchnorm_eps_is_torchvisions():
    """torchvision's MobileNetV3 uses eps 0.001: the same file with batchnorm's default eps (1e-5) is
    outside the float64 tolerance of the twin, so the comparison above checks the eps."""
    source = EXAMPLE.read_text()
    assert source.count("batchnorm") == source.count("batchnorm(eps=0.001)") > 0  # every one says it
    wrong = netdsl.load_source(source.replace("batchnorm(eps=0.001)", "batchnorm"), str(EXAMPLE))
    x = image(1, 32)
    (ours,) = netdsl.reference.run(wrong, [x], weights(), dtype="f64").values()
    assert not TOLERANCES["f64"].error(ours, run_twin(x, "f64"))[2]


def test_twin_exercises_every_piece_of_the_activations():
    """hardswish and hardsigmoid are piecewise: the twin's inputs to them reach all three pieces
    (below -3, between, above 3), so a wrong piece in netdsl would show in the comparison."""
    seen: dict[type, list[torch.Tensor]] = {torch.nn.Hardswish: [], torch.nn.Hardsigmoid: []}
    hooks = [m.register_forward_hook(lambda m, args, out: seen[type(m)].append(args[0].detach().flatten()))
             for m in twin().modules() if type(m) in seen]
    try:
        run_twin(image(), "f64")
    finally:
        for h in hooks:
            h.remove()
    for kind, values in seen.items():
        v = torch.cat(values)
        assert (v < -3).any() and ((v > -3) & (v < 3)).any() and (v > 3).any(), kind.__name__


def test_o1_fused_equals_unfused():
    fused = run_pipeline(graph(), "O1", verify="full")
    ops = [n.op for n in fused.nodes]
    # so that the comparison covers the fused epilogues: every batchnorm is folded into its conv and every
    # activation and residual add fused into one, and there are as many convolutions as the twin has
    # (stem 1, block 1: 4, blocks 2-3: 3 each, blocks 4-11: 5 each, last 1)
    assert not {"batchnorm", "relu", "hardswish", "hardsigmoid", "add"} & set(ops)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in twin().modules())
    assert convs == 1 + 4 + 2 * 3 + 8 * 5 + 1 and sum(op == "fused_conv2d" for op in ops) == convs
    x = image()
    for dtype in ("f64", "f32"):
        (want,) = netdsl.reference.run(graph(), [x], weights(), dtype=dtype).values()
        (got,) = netdsl.reference.run(fused, [x], weights(), dtype=dtype).values()
        assert_within(got, want, dtype)
