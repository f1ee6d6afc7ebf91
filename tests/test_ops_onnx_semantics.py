"""Ops whose parameters follow ONNX as well as PyTorch: parameterised hard activations, asymmetric and
SAME padding of convs and pools, and ONNX's Flatten at any axis.

Each meaning is checked against an independent oracle: torch.nn.functional in float64 (``F.pad`` then
the conv or pool for asymmetric padding), or the float64 formula where torch has no such parameter
(``hardsigmoid`` with another slope); the Triton kernels, under the interpreter, against the same float64
formula; and onnxruntime for what the importer and exporter write.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import netdsl
from netdsl.backends import reference
from netdsl.ir.types import TensorType
from netdsl.ops import REGISTRY
from netdsl.ops.registry import bind_attrs

RNG = np.random.default_rng(7)
# |ours - oracle| <= atol + rtol * |oracle| (as tests/test_ops.py)
TOLERANCE = {np.float32: {"rtol": 2e-5, "atol": 2e-5}, np.float64: {"rtol": 1e-10, "atol": 1e-10}}


def run_one(op: str, x: np.ndarray, **attrs) -> np.ndarray:
    """The registry reference of ``op`` on ``x`` (no parameters), attributes bound as the language binds them."""
    opdef = REGISTRY[op]
    return opdef.reference([x], {}, bind_attrs(opdef, [], attrs))


def net_output(text: str, x: np.ndarray) -> np.ndarray:
    graph = netdsl.load_source(text)
    return next(iter(reference.run(graph, {"x": x}, {}, "f64" if x.dtype == np.float64 else "f32").values()))


def assert_close(got: np.ndarray, want, dtype) -> None:
    want = want.numpy() if isinstance(want, torch.Tensor) else want
    assert got.dtype == dtype and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    np.testing.assert_allclose(got, want, **TOLERANCE[dtype])


# ---------------------------------------------------------------------------------------------
# hardsigmoid(alpha, beta) and hardtanh(min_val, max_val)
# ---------------------------------------------------------------------------------------------

def hardsigmoid64(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return np.maximum(0.0, np.minimum(1.0, alpha * x.astype(np.float64) + beta))


ACT_CASES = [  # (op, attrs, float64 oracle on a torch tensor)
    ("hardsigmoid", {}, lambda t: F.hardsigmoid(t)),
    ("hardsigmoid", {"alpha": 0.2, "beta": 0.5}, lambda t: torch.from_numpy(hardsigmoid64(t.numpy(), 0.2, 0.5))),
    ("hardsigmoid", {"alpha": -0.75, "beta": 0.25}, lambda t: torch.from_numpy(hardsigmoid64(t.numpy(), -0.75, 0.25))),
    ("hardsigmoid", {"alpha": 0.0, "beta": 1.5}, lambda t: torch.ones_like(t)),
    ("hardtanh", {}, lambda t: F.hardtanh(t)),
    ("hardtanh", {"min_val": -2.5, "max_val": 0.75}, lambda t: F.hardtanh(t, -2.5, 0.75)),
    ("hardtanh", {"min_val": 0.5, "max_val": 0.5}, lambda t: F.hardtanh(t, 0.5, 0.5)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op, attrs, oracle", ACT_CASES, ids=[f"{o}{a}" for o, a, _ in ACT_CASES])
def test_hard_activations_match_torch(op, attrs, oracle, dtype):
    x = (RNG.standard_normal((2, 3, 5, 7)) * 4).astype(dtype)
    x.flat[:5] = [-3.0, 3.0, -2.5, 0.75, -1.0]  # the kinks
    want = oracle(torch.from_numpy(x.astype(np.float64)))
    assert_close(run_one(op, x, **attrs), want, dtype)
    args = ", ".join(f"{k}={v!r}" for k, v in attrs.items())
    text = f"network t {{\n    input x: f{8 * x.itemsize}[N, 3, 5, 7]\n    output x -> {op}({args})\n}}\n"
    assert_close(net_output(text, x), want, dtype)


def test_hardsigmoid_keeps_relative_accuracy_near_its_zero():
    """Just above x = -3 torch's (x + 3) / 6 is tiny and exact to an ulp; so is ours in float32."""
    x = np.nextafter(np.float32(-3.0), np.float32(0.0)) + np.arange(64, dtype=np.float32) * np.float32(2.0 ** -22)
    got = run_one("hardsigmoid", x.astype(np.float32))
    want = (x.astype(np.float64) + 3.0) / 6.0
    np.testing.assert_allclose(got, want, rtol=4 * 2.0 ** -24, atol=0)


def test_hardtanh_bounds_must_be_ordered():
    with pytest.raises(netdsl.NetDSLError, match="min_val=2.0 is greater than max_val=1.0") as info:
        netdsl.load_source("network t {\n    input x: f32[N, 4]\n    output x -> hardtanh(min_val=2, max_val=1)\n}\n")
    assert info.value.hint


def test_hard_activation_facts():
    """FLOPs per element and the initialisation of a conv feeding them (hardtanh saturates, as tanh)."""
    assert REGISTRY["hardtanh"].flops([(2, 3)], (2, 3), bind_attrs(REGISTRY["hardtanh"], [], {})) == 12
    assert REGISTRY["hardsigmoid"].flops([(2, 3)], (2, 3), bind_attrs(REGISTRY["hardsigmoid"], [], {})) == 18
    assert REGISTRY["hardtanh"].init_for_producer == "xavier"
    assert REGISTRY["hardsigmoid"].init_for_producer == "kaiming"


# the kernels, under Triton's interpreter, against the float64 formula with the fp32 parameters they get

KERNEL_CASES = [("hardsigmoid", {}), ("hardsigmoid", {"alpha": 0.2, "beta": 0.5}),
                ("hardsigmoid", {"alpha": -0.75, "beta": 0.25}), ("hardsigmoid", {"alpha": 0.0, "beta": -2.0}),
                ("hardtanh", {}), ("hardtanh", {"min_val": -2.5, "max_val": 0.75})]


def kernel_sweep() -> torch.Tensor:
    mags = torch.cat([torch.logspace(-7, math.log10(40.0), 600, dtype=torch.float64),
                      torch.tensor([0.0, 0.75, 1.0, 2.5, 3.0, 1 / 3, 5.0], dtype=torch.float64)])
    near = torch.tensor([-3.0, -2.5, 1 / 3], dtype=torch.float64)[:, None] + torch.linspace(-1e-5, 1e-5, 41)
    return torch.unique(torch.cat([mags, -mags, near.reshape(-1)]).to(torch.float32))


@pytest.mark.parametrize("op, attrs", KERNEL_CASES, ids=[f"{o}{a}" for o, a in KERNEL_CASES])
def test_kernel_epilogue_matches_the_formula(op, attrs):
    from netdsl.kernels.epilogue import Epilogue
    from netdsl.kernels.pointwise import pointwise

    bound = bind_attrs(REGISTRY[op], [], attrs)
    name, alpha, beta = REGISTRY[op].kernel_act(bound)
    x = kernel_sweep()
    pad = (-x.numel()) % 16
    xs = torch.cat([x, torch.zeros(pad)]).reshape(-1, 16)
    y = pointwise(xs, epilogue=Epilogue(act1=name, alpha1=alpha, beta1=beta)).reshape(-1)[: x.numel()].double()
    xd = x.double().numpy()
    if op == "hardtanh":
        want = np.clip(xd, float(np.float32(bound["min_val"])), float(np.float32(bound["max_val"])))
    else:  # the real alpha and beta: exact when beta / alpha is an fp32 number (3, 2.5, -1/3 is not)
        want = hardsigmoid64(xd, bound["alpha"], bound["beta"])
    err = np.abs(y.numpy() - want)
    limit = 4 * 2.0 ** -24 * np.abs(want)  # a few ulps of the result, even next to hardsigmoid's zero ...
    if op == "hardsigmoid" and bound["alpha"] and float(np.float32(bound["beta"] / bound["alpha"])) != \
            bound["beta"] / bound["alpha"]:
        limit += 2.0 ** -24 * abs(bound["beta"])  # ... unless its offset beta / alpha is rounded to fp32
    worst = int(np.argmax(err - limit))
    assert err[worst] <= limit[worst], (op, attrs, xd[worst], y[worst].item(), want[worst])


# ---------------------------------------------------------------------------------------------
# padding: (top, left, bottom, right), and "same" as ONNX's SAME_UPPER
# ---------------------------------------------------------------------------------------------

def tf_same(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow's SAME along one axis, written out independently: (begin, end), the odd one at the end."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def explicit_pads(padding, hw, k, s, d) -> tuple[int, int, int, int]:
    if padding == "same":
        (t, b), (l, r) = tf_same(hw[0], k[0], s[0], d[0]), tf_same(hw[1], k[1], s[1], d[1])
        return t, l, b, r
    return padding if len(padding) == 4 else (*padding, *padding)


def pair_of(v):
    return (v, v) if isinstance(v, int) else tuple(v)


CONV_CASES = [  # input shape, attributes
    ((2, 4, 9, 7), dict(out_channels=6, kernel_size=3, padding=(1, 0, 2, 3))),
    ((1, 4, 10, 11), dict(out_channels=5, kernel_size=(3, 2), stride=(2, 1), dilation=(1, 2), padding=(0, 2, 1, 0))),
    ((2, 6, 8, 9), dict(out_channels=6, kernel_size=3, stride=2, groups=6, padding=(2, 1, 0, 2))),  # depthwise
    ((2, 4, 7, 7), dict(out_channels=8, kernel_size=3, groups=2, padding=(1, 1, 1, 1))),  # symmetric: a pair
    ((1, 3, 6, 5), dict(out_channels=4, kernel_size=1, padding=(1, 0, 0, 2), bias=False)),
    ((2, 3, 7, 9), dict(out_channels=4, kernel_size=4, padding="same")),  # even kernel: the extra at the end
    ((2, 3, 7, 9), dict(out_channels=4, kernel_size=3, stride=2, padding="same")),
    ((2, 3, 8, 10), dict(out_channels=4, kernel_size=(4, 3), stride=(3, 2), dilation=(1, 2), padding="same")),
    ((1, 3, 11, 6), dict(out_channels=3, kernel_size=2, stride=2, groups=3, padding="same")),
    ((1, 3, 5, 5), dict(out_channels=2, kernel_size=1, stride=3, padding="same")),  # SAME's total clamped at 0
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, attrs", CONV_CASES, ids=[str(a["padding"]) for _, a in CONV_CASES])
def test_conv2d_padding_matches_torch_on_a_padded_input(shape, attrs, dtype):
    opdef = REGISTRY["conv2d"]
    bound = bind_attrs(opdef, [], attrs)
    k, s, d = bound["kernel_size"], bound["stride"], bound["dilation"]
    x = RNG.standard_normal(shape).astype(dtype)
    w = RNG.standard_normal((bound["out_channels"], shape[1] // bound["groups"], *k)).astype(dtype)
    b = RNG.standard_normal(bound["out_channels"]).astype(dtype) if bound["bias"] else None
    top, left, bottom, right = explicit_pads(pair_of(attrs["padding"]) if attrs["padding"] != "same" else "same",
                                             shape[2:], k, s, d)
    t = torch.from_numpy(x.astype(np.float64))
    want = F.conv2d(F.pad(t, (left, right, top, bottom)), torch.from_numpy(w.astype(np.float64)),
                    None if b is None else torch.from_numpy(b.astype(np.float64)), s, 0, d, bound["groups"])
    got = opdef.reference([x], {"weight": w} | ({} if b is None else {"bias": b}), bound)
    assert_close(got, want, dtype)
    assert opdef.infer([TensorType(shape)], bound).shape == tuple(want.shape)


def test_symmetric_four_tuples_are_pairs_in_the_ir():
    """Nothing downstream sees a symmetric 4-tuple: it is the pair it means."""
    graph = netdsl.load_source("network t {\n    input x: f32[N, 4, 8, 8]\n"
                               "    output x -> conv2d(4, 3, padding=(1, 2, 1, 2)) -> maxpool(3, padding=(1, 1, 1, 1))"
                               " -> avgpool(2, padding=(0, 1, 1, 0))\n}\n")
    assert [n.attrs["padding"] for n in graph.nodes] == [(1, 2), (1, 1), (0, 1, 1, 0)]


def test_same_with_stride_on_symbolic_sizes():
    """``"same"`` gives ceil(H / s) for every size; the reference pads each run as its size needs."""
    graph = netdsl.load_source("network t {\n    input x: f32[N, 3, H, W]\n"
                               "    output x -> conv2d(2, 4, stride=3, padding=\"same\", bias=false)"
                               " -> maxpool(2, stride=2, padding=\"same\")\n}\n")
    assert str(graph.outputs[0].type) == "f32[N, 2, (H + 5)//6, (W + 5)//6]"  # ceil(ceil(H / 3) / 2)
    from netdsl.params import random_weights
    weights = random_weights(graph, 1)
    w = torch.from_numpy(next(iter(weights.values())).astype(np.float64))
    for h, wd in ((7, 8), (9, 10), (5, 13)):
        x = RNG.standard_normal((1, 3, h, wd)).astype(np.float32)
        got = next(iter(reference.run(graph, {"x": x}, weights).values()))
        t, l, b, r = explicit_pads("same", (h, wd), (4, 4), (3, 3), (1, 1))
        y = F.conv2d(F.pad(torch.from_numpy(x.astype(np.float64)), (l, r, t, b)), w, stride=3)
        t, l, b, r = explicit_pads("same", tuple(y.shape[2:]), (2, 2), (2, 2), (1, 1))
        want = F.max_pool2d(F.pad(y, (l, r, t, b), value=-math.inf), 2, 2)
        assert got.shape == (1, 2, math.ceil(math.ceil(h / 3) / 2), math.ceil(math.ceil(wd / 3) / 2))
        np.testing.assert_allclose(got, want.numpy(), rtol=2e-5, atol=2e-5)


POOL_CASES = [  # op, input shape, attributes (ceil_mode off: torch's ceil_mode on a pre-padded input differs)
    ("maxpool2d", (2, 3, 9, 8), dict(kernel_size=3, stride=2, padding=(2, 0, 1, 2))),
    ("maxpool2d", (1, 2, 6, 7), dict(kernel_size=3, stride=1, padding=(2, 2, 2, 2))),  # beyond torch's half
    ("maxpool2d", (1, 2, 7, 9), dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1), padding=(1, 2, 0, 1))),
    ("maxpool2d", (2, 3, 7, 10), dict(kernel_size=2, stride=2, padding="same")),
    ("maxpool2d", (2, 3, 7, 10), dict(kernel_size=3, stride=1, padding="same")),
    ("avgpool2d", (2, 3, 9, 8), dict(kernel_size=3, stride=2, padding=(0, 1, 2, 2))),
    ("avgpool2d", (2, 3, 9, 8), dict(kernel_size=3, stride=2, padding=(0, 1, 2, 2), count_include_pad=False)),
    ("avgpool2d", (1, 2, 5, 6), dict(kernel_size=(3, 4), stride=1, padding=(2, 3, 1, 0), count_include_pad=False)),
    ("avgpool2d", (2, 3, 7, 10), dict(kernel_size=4, stride=3, padding="same", count_include_pad=False)),
    ("avgpool2d", (2, 3, 7, 10), dict(kernel_size=2, stride=2, padding="same")),
]


def torch_pool(op, t, bound, pads):
    """The pool on the input padded by ``F.pad`` (-inf for max; for an average excluding the padding, the
    sum divided by the count of real pixels: the same pool of ones)."""
    top, left, bottom, right = pads
    k = bound["kernel_size"]
    s = bound["stride"] or k
    if op == "maxpool2d":
        return F.max_pool2d(F.pad(t, (left, right, top, bottom), value=-math.inf), k, s, 0, bound["dilation"])
    total = F.avg_pool2d(F.pad(t, (left, right, top, bottom)), k, s, divisor_override=1)
    if bound["count_include_pad"]:
        return total / (k[0] * k[1])
    ones = F.pad(torch.ones_like(t), (left, right, top, bottom))
    return total / F.avg_pool2d(ones, k, s, divisor_override=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op, shape, attrs", POOL_CASES, ids=[f"{o}{a['padding']}" for o, _, a in POOL_CASES])
def test_pool_padding_matches_torch_on_a_padded_input(op, shape, attrs, dtype):
    opdef = REGISTRY[op]
    bound = bind_attrs(opdef, [], attrs)
    k = bound["kernel_size"]
    s = pair_of(bound["stride"] or k)
    pads = explicit_pads(pair_of(attrs["padding"]) if attrs["padding"] != "same" else "same", shape[2:], k, s,
                         bound.get("dilation", (1, 1)))
    x = RNG.standard_normal(shape).astype(dtype)
    want = torch_pool(op, torch.from_numpy(x.astype(np.float64)), bound, pads)
    assert_close(opdef.reference([x], {}, bound), want, dtype)
    assert opdef.infer([TensorType(shape)], bound).shape == tuple(want.shape)


def test_a_max_window_wholly_in_the_padding_is_the_lowest_number_as_onnxruntime():
    x = np.arange(1, 4, dtype=np.float32).reshape(1, 1, 1, 3)
    y = run_one("maxpool2d", x, kernel_size=(2, 1), stride=1, dilation=(2, 1), padding=(1, 0, 1, 0))
    assert y.shape == (1, 1, 1, 3) and (y == np.finfo(np.float32).min).all()


@pytest.mark.parametrize("op, padding, message", [
    ("maxpool2d", "(3, 0, 0, 0)", "smaller than the kernel size"),
    ("avgpool2d", "(0, 0, 0, 3)", "smaller than the kernel size"),
    ("conv2d", "(1, 2, 3)", "padding"),
    ("conv2d", "(1, -1, 0, 0)", "negative"),
])
def test_bad_padding_is_a_located_error(op, padding, message):
    args = "4, 3" if op == "conv2d" else "3"
    with pytest.raises(netdsl.NetDSLError, match=message) as info:
        netdsl.load_source(f"network t {{\n    input x: f32[N, 4, 8, 8]\n    output x -> {op}({args}, "
                           f"padding={padding})\n}}\n")
    assert f"padding={padding}" in str(info.value) and "^^^" in str(info.value)  # the source line, a caret


# the pooling kernels (NHWC, under Triton's interpreter) against the reference backend
KERNEL_POOL_CASES = [
    ("maxpool2d", (2, 3, 9, 8), dict(kernel_size=3, stride=2, padding=(2, 0, 1, 2), ceil_mode=True)),
    ("maxpool2d", (1, 2, 1, 3), dict(kernel_size=(2, 1), stride=1, dilation=(2, 1), padding=(1, 0, 1, 0))),
    ("avgpool2d", (2, 3, 9, 8), dict(kernel_size=3, stride=2, padding=(0, 1, 2, 2), ceil_mode=True)),
    ("avgpool2d", (1, 5, 5, 6), dict(kernel_size=(3, 4), stride=1, padding=(2, 3, 1, 0), count_include_pad=False)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("op, shape, attrs", KERNEL_POOL_CASES, ids=[f"{o}{a['padding']}" for o, _, a in
                                                                      KERNEL_POOL_CASES])
def test_pool_kernels_take_four_sided_padding(op, shape, attrs, dtype):
    from netdsl.kernels import pool

    bound = bind_attrs(REGISTRY[op], [], attrs)
    x = torch.from_numpy(RNG.standard_normal(shape).astype(np.float32)).to(dtype)
    want = REGISTRY[op].reference([x.float().numpy()], {}, bound)
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    if op == "maxpool2d":
        y = pool.maxpool2d(nhwc, bound["kernel_size"], bound["stride"], bound["padding"], bound["dilation"],
                           bound["ceil_mode"])
    else:
        y = pool.avgpool2d(nhwc, bound["kernel_size"], bound["stride"], bound["padding"], bound["ceil_mode"],
                           bound["count_include_pad"])
    got = y.permute(0, 3, 1, 2).float().numpy()
    lowest = want == np.finfo(np.float32).min  # a window wholly in the padding: the I/O dtype's lowest
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[lowest], torch.finfo(dtype).min)
    tol = 1e-6 if dtype == torch.float32 else 1e-3
    np.testing.assert_allclose(got[~lowest], want[~lowest], rtol=tol, atol=tol)
