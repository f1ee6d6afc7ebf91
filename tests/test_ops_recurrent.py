"""The recurrent layers (netdsl/ops/recurrent.py): rnn, lstm and gru against torch.nn.RNN / LSTM / GRU
with the same state_dict, in float32 and float64, on awkward shapes (one step, batch 1, hidden sizes
that are not multiples of 16, two layers, both directions, an initial state); their parameters, FLOPs
and launches; the user's mistakes as located errors; and a .net program through the Triton backend."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from test_errors import check, error_of  # the located-error checks of every error test

import netdsl
from netdsl.ir.types import TensorType
from netdsl.ops import REGISTRY
from netdsl.ops.registry import bind_attrs
from netdsl.params import check_weights, init_weights, parameter_count

TOLERANCE = {"f32": {"rtol": 2e-5, "atol": 2e-5}, "f64": {"rtol": 1e-10, "atol": 1e-10}}
NP_DTYPES = {"f32": np.float32, "f64": np.float64}


def torch_module(cell, input_size, hidden, layers=1, bidirectional=False, bias=True, act="tanh"):
    kw = {"nonlinearity": act} if cell == "rnn" else {}
    return getattr(torch.nn, cell.upper())(input_size, hidden, layers, bias=bias, batch_first=True,
                                           bidirectional=bidirectional, dtype=torch.float64, **kw)


def torch_run(cell, module, x, h0=None, c0=None):
    state = None if h0 is None else ((h0, c0) if cell == "lstm" else h0)
    with torch.no_grad():
        y, h = module(torch.from_numpy(np.asarray(x, np.float64)),
                      None if state is None else (tuple(torch.from_numpy(np.asarray(s, np.float64)) for s in state)
                                                  if cell == "lstm" else torch.from_numpy(np.asarray(h0, np.float64))))
    return [t.numpy() for t in ((y, *h) if cell == "lstm" else (y, h))]


# (N, T, I, H, layers, bidirectional, initial state)
SHAPES = [
    (5, 7, 3, 5, 1, False, False),
    (1, 1, 20, 16, 1, True, True),
    (5, 7, 20, 33, 2, True, True),
    (1, 7, 3, 33, 2, False, True),
    (5, 1, 20, 16, 2, True, False),
]


@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-T{}-I{}-H{}-L{}{}{}".format(
    *s[:5], "-bi" if s[5] else "", "-h0" if s[6] else ""))
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_reference_matches_torch(cell, shape, dtype):
    N, T, I, H, layers, bidirectional, initial = shape
    torch.manual_seed(0)
    module = torch_module(cell, I, H, layers, bidirectional)
    rng = np.random.default_rng(1)
    D = 2 if bidirectional else 1
    npt = NP_DTYPES[dtype]
    x = rng.standard_normal((N, T, I)).astype(npt)
    states = [rng.standard_normal((layers * D, N, H)).astype(npt) for _ in range(2 if cell == "lstm" else 1)]
    states = states if initial else []
    op = REGISTRY[cell]
    attrs = bind_attrs(op, [H], {"num_layers": layers, "bidirectional": bidirectional})
    params = {k: v.numpy().astype(npt) for k, v in module.state_dict().items()}
    got = op.reference([x, *states], params, attrs)
    types = op.result_types([TensorType(s.shape, dtype) for s in [x, *states]], attrs)
    expected = torch_run(cell, module, x, *states)
    assert len(got) == len(expected) == len(types)
    for g, e, t in zip(got, expected, types):
        assert g.dtype == npt and g.shape == tuple(t.shape)
        np.testing.assert_allclose(g, e, **TOLERANCE[dtype])


def test_rnn_relu_and_no_bias_match_torch():
    torch.manual_seed(0)
    for kw in ({"nonlinearity": "relu"}, {"bias": False}, {"nonlinearity": "relu", "bias": False,
                                                           "bidirectional": True}):
        module = torch_module("rnn", 4, 6, 2, kw.get("bidirectional", False), kw.get("bias", True),
                              kw.get("nonlinearity", "tanh"))
        x = np.random.default_rng(0).standard_normal((3, 5, 4))
        attrs = bind_attrs(REGISTRY["rnn"], [6], {"num_layers": 2, **kw})
        got = REGISTRY["rnn"].reference([x], {k: v.numpy() for k, v in module.state_dict().items()}, attrs)
        for g, e in zip(got, torch_run("rnn", module, x)):
            np.testing.assert_allclose(g, e, **TOLERANCE["f64"])


def test_reference_is_stable_for_large_inputs():
    """Saturating sigmoids and tanh: no overflow warning, no NaN, the same as torch."""
    for cell in ("lstm", "gru"):
        module = torch_module(cell, 3, 4)
        x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32) * 1e4
        attrs = bind_attrs(REGISTRY[cell], [4], {})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = REGISTRY[cell].reference([x], {k: v.numpy().astype(np.float32)
                                                 for k, v in module.state_dict().items()}, attrs)
        for g, e in zip(got, torch_run(cell, module, x)):
            assert np.isfinite(g).all()
            np.testing.assert_allclose(g, e, **TOLERANCE["f32"])


# ---------------------------------------------------------------------------------------------
# parameters, results, FLOPs, launches
# ---------------------------------------------------------------------------------------------

PROGRAM = """network seq {
    input x: f32[N, T, 20], h0: f32[4, N, 33]
    out, h, c = x -> enc: lstm(33, num_layers=2, bidirectional=true)
    y, g = gru(out, h0, 33, num_layers=2, bidirectional=true)
    output y, g, h, c
}
"""


def test_parameters_are_torchs_and_a_state_dict_loads_unchanged():
    graph = netdsl.load_source(PROGRAM, "seq.net")
    enc = torch_module("lstm", 20, 33, 2, True)
    dec = torch_module("gru", 66, 33, 2, True)
    for m in (enc, dec):  # weights are float32 (check_weights): round the twin's too
        m.load_state_dict({k: v.float().double() for k, v in m.state_dict().items()})
    state = {**{f"enc.{k}": v.float().numpy() for k, v in enc.state_dict().items()},
             **{f"gru_0.{k}": v.float().numpy() for k, v in dec.state_dict().items()}}
    assert list(graph.params) == list(state)  # names and torch's order
    weights = check_weights(graph, state)  # strict: names and shapes
    assert parameter_count(graph) == sum(p.numel() for m in (enc, dec) for p in m.parameters())
    rng = np.random.default_rng(0)
    x, h0 = rng.standard_normal((3, 4, 20)), rng.standard_normal((4, 3, 33))
    out = netdsl.reference.run(graph, {"x": x, "h0": h0}, weights, dtype="f64")
    seq, (h, c) = enc(torch.from_numpy(x))
    y, g = dec(seq, torch.from_numpy(h0))
    for name, t in (("y", y), ("g", g), ("h", h), ("c", c)):
        np.testing.assert_allclose(out[name], t.detach().numpy(), **TOLERANCE["f64"])


def test_default_initialisation_is_torchs_uniform():
    graph = netdsl.load_source("network r {\n    input x: f32[N, T, 256]\n    y, h = x -> rnn(128)\n    output y\n}\n",
                               "r.net")
    assert parameter_count(graph) == 49_408  # the seed's RNN: 256-dim inputs, a 128-dim state
    weights = init_weights(graph)
    bound = 1 / math.sqrt(128)
    for name, w in weights.items():
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound, name
        assert abs(float(w.mean())) < 0.1 * bound, name


def test_flops_and_launches():
    op = REGISTRY["lstm"]
    attrs = bind_attrs(op, [33], {"num_layers": 2, "bidirectional": True})
    n, t, i, h, g = 3, 4, 20, 33, 4 * 33
    # per layer, direction and step: input projection, recurrent product, two biases, the cell
    per = [2 * i * g + 2 * h * g + 2 * g + 24 * h, 2 * 2 * h * g + 2 * h * g + 2 * g + 24 * h]
    assert op.flops([(n, t, i)], (n, t, 2 * h), attrs) == sum(2 * n * t * p for p in per)
    # per layer: the projection GEMM (both directions) and one persistent recurrence kernel
    assert op.launches_of(attrs) == 4
    assert REGISTRY["rnn"].launches_of(bind_attrs(REGISTRY["rnn"], [8], {})) == 2
    assert REGISTRY["gru"].result_names(attrs) == ("output", "h_n")
    assert op.result_names(attrs) == ("output", "h_n", "c_n")


# ---------------------------------------------------------------------------------------------
# mistakes: one located NetDSLError each, with a hint
# ---------------------------------------------------------------------------------------------

def program(inputs: str, line: str) -> str:
    """``line`` (binding results y, ...) on line 3; the output y on line 4."""
    return f"network n {{\n    input {inputs}\n    {line}\n    output y\n}}\n"


def check_at(source: str, call: str, message: str, hint: str) -> None:
    line = source.splitlines()[2]
    check(error_of(source), message, 3, line.index(call) + 1, hint)


def test_input_not_a_sequence():
    check_at(program("x: f32[N, 20]", "y, h = x -> rnn(8)"), "rnn(",
             "`rnn` expects a sequence [N, T, features] (batch first), got f32[N, 20]", "[batch, time, features]")


def test_input_size_symbolic():
    check_at(program("x: f32[N, T, D]", "y, h, c = x -> lstm(8)"), "lstm(",
             "`lstm` needs a static input size (the last dim of f32[N, T, D]), but it is `D`", "fixed size")


def test_initial_state_of_the_wrong_shape():
    check_at(program("x: f32[N, T, 20], h0: f32[1, N, 8]", "y, h = gru(x, h0, 8, num_layers=2)"), "gru(",
             "`gru` initial state h0 is f32[1, N, 8], expected f32[2, N, 8]", "[num_layers * directions, N, hidden_size]")
    check_at(program("x: f32[N, T, 20], h0: f32[2, N, 8], c0: f32[2, N, 7]",
                     "y, h, c = lstm(x, h0, c0, 8, bidirectional=true)"), "lstm(",
             "`lstm` initial state c0 is f32[2, N, 7], expected f32[2, N, 8]", "directions: 2 if bidirectional")


def test_lstm_takes_both_states_or_neither():
    check_at(program("x: f32[N, T, 20], h0: f32[1, N, 8]", "y, h, c = lstm(x, h0, 8)"), "lstm(",
             "`lstm` takes a sequence and optionally h0 and c0: 1 or 3 tensors, got 2", "lstm(x, h0, c0, ...)")


@pytest.mark.parametrize("attr", ["hidden_size", "num_layers"])
def test_sizes_must_be_positive(attr):
    call = "rnn(0)" if attr == "hidden_size" else "rnn(8, num_layers=0)"
    source = program("x: f32[N, T, 20]", f"y, h = x -> {call}")
    err = error_of(source)
    assert f"`rnn` {attr}=0 must be at least 1" in err.message and err.hint and attr in err.hint
    assert err.loc is not None and err.loc.line == 3


# ---------------------------------------------------------------------------------------------
# the Triton backend (kernels under the interpreter): a .net program, its launches
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_a_net_program_through_the_triton_backend(dtype):
    from netdsl.backends.triton.check import check as check_triton, format_checks
    from netdsl.backends.triton.module import TritonModule
    from netdsl.passes import run_pipeline

    graph = netdsl.load_source(PROGRAM, "seq.net")
    fused = run_pipeline(graph, "O1", log=lambda _: None)
    weights = netdsl.random_weights(graph, seed=0)
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 3, 20)).astype(np.float32),
              "h0": rng.standard_normal((4, 2, 33)).astype(np.float32)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no GPU: the interpreter
        checks = check_triton(fused, weights, inputs, dtype)
        assert all(c.ok for c in checks), format_checks(checks, dtype)
        assert TritonModule(fused, weights, dtype=dtype, device="cpu").launches == 8  # 2 layers x 2, twice
