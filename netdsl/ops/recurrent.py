"""Recurrent layers, as PyTorch's ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` with ``batch_first=True``:
``rnn``, ``lstm`` and ``gru``.

Each op reads a sequence ``x [N, T, I]`` (``I`` static) and, optionally, its initial state
(``h0 [layers * directions, N, H]``; an LSTM takes ``h0`` and ``c0``, both or neither), and has
several results: the output sequence ``[N, T, directions * H]`` (the last layer's hidden state at
every step; a bidirectional layer concatenates the forward and the backward state along features)
and the final state ``h_n [layers * directions, N, H]`` (and ``c_n`` for an LSTM). At each step,
with ``x_t`` the layer's input and ``h`` its previous state (torch's equations):

    rnn:  h' = act(W_ih x_t + b_ih + W_hh h + b_hh)                          act: tanh or relu
    lstm: i, f, g, o = split4(W_ih x_t + b_ih + W_hh h + b_hh)
          c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')
    gru:  r, z = sigmoid(split2(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h + b_h{r,z}))
          n = tanh(W_in x_t + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h

Parameters carry torch's names and shapes, so an ``nn.LSTM`` state_dict loads unchanged: per layer
``k`` and direction (``_reverse`` for the backward one) ``weight_ih_l{k}`` ``[G, I_k]``,
``weight_hh_l{k}`` ``[G, H]``, ``bias_ih_l{k}`` and ``bias_hh_l{k}`` ``[G]``, with the gates stacked
along G (rnn: G = H; lstm: i, f, g, o, G = 4H; gru: r, z, n, G = 3H) and ``I_k`` = I for the first
layer, ``directions * H`` after. Each is initialised as torch does, uniform in
``[-1/sqrt(H), 1/sqrt(H)]``. Dropout between layers acts only in training: it is not an attribute.

The NumPy references loop over time (a recurrence cannot be vectorised along it) but project every
step's input at once, ``x [N*T, I] @ W_ih^T``, as the Triton lowering does.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..ir.dims import SymDim
from ..ir.graph import ParamSpec
from ..ir.types import TensorType
from .registry import Attr, OpDef, OpKind, ShapeError, register

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# elementwise FLOPs of one cell per hidden unit after the two products (sigmoid and tanh count 4, as
# the activations do): rnn the activation; lstm 3 sigmoids, 2 tanh, c' (3) and h' (1); gru 2 sigmoids,
# a tanh, r * (.) + (.) (2) and h' (3)
CELL_FLOPS = {"rnn": 4, "lstm": 24, "gru": 17}
STATE_HINT = "the initial state is [num_layers * directions, N, hidden_size] (directions: 2 if bidirectional)"


def directions(attrs: Mapping[str, Any]) -> int:
    return 2 if attrs["bidirectional"] else 1


def param_roles(cell: str, attrs: Mapping[str, Any]) -> list[str]:
    """The roles of a recurrent layer's parameters, in torch's state_dict order."""
    roles = []
    for k in range(attrs["num_layers"]):
        for sfx in ("", "_reverse")[:directions(attrs)]:
            roles += [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}"]
            if attrs["bias"]:
                roles += [f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"]
    return roles


def _check_sizes(op: str, attrs: Mapping[str, Any]) -> None:
    for name, what in (("hidden_size", "the size of the state h"), ("num_layers", "how many layers are stacked")):
        if attrs[name] <= 0:
            raise ShapeError(f"`{op}` {name}={attrs[name]} must be at least 1", hint=f"{name} is {what}", arg=name)
    if not 0.0 <= attrs["dropout"] <= 1.0:
        raise ShapeError(f"`{op}` dropout={attrs['dropout']} is not a probability", arg="dropout",
                         hint="0 <= dropout <= 1 (between layers in training; the identity at inference)")


def _input_size(op: str, x: TensorType) -> int:
    if x.rank != 3:
        raise ShapeError(f"`{op}` expects a sequence [N, T, features] (batch first), got {x}",
                         hint="the input is [batch, time, features]; reshape or unsqueeze it to rank 3")
    size = x.shape[2]
    if isinstance(size, SymDim):
        raise ShapeError(f"`{op}` needs a static input size (the last dim of {x}), but it is `{size}`",
                         hint="give the feature dimension a fixed size in the network's input type")
    return size


def _infer(op: str):
    states = 2 if op == "lstm" else 1
    names = ("h0", "c0")[:states]

    def infer(types: Sequence[TensorType], attrs: Mapping[str, Any]):
        _check_sizes(op, attrs)
        if len(types) not in (1, 1 + states):
            given = " and ".join(names)
            raise ShapeError(f"`{op}` takes a sequence and optionally {given}: 1 or {1 + states} tensors, "
                             f"got {len(types)}",
                             hint=f"write `x -> {op}(...)` or `{op}(x, {', '.join(names)}, ...)`")
        x = types[0]
        _input_size(op, x)
        h, d, layers = attrs["hidden_size"], directions(attrs), attrs["num_layers"]
        n, t = x.shape[0], x.shape[1]
        state = TensorType((layers * d, n, h), x.dtype)
        for name, s in zip(names, types[1:]):
            if s != state:
                raise ShapeError(f"`{op}` initial state {name} is {s}, expected {state}", hint=STATE_HINT)
        return (TensorType((n, t, d * h), x.dtype),) + (state,) * states

    return infer


def _params(op: str):
    gates = GATES[op]

    def params(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> dict[str, ParamSpec]:
        _check_sizes(op, attrs)
        size, h = _input_size(op, types[0]), attrs["hidden_size"]
        bound = 1.0 / math.sqrt(h)  # torch's reset_parameters: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))
        out = {}
        for role in param_roles(op, attrs):
            k = int(role.split("_l")[1].split("_")[0])
            fan_in = (size if k == 0 else directions(attrs) * h) if role.startswith("weight_ih") else h
            shape = (gates * h, fan_in) if role.startswith("weight") else (gates * h,)
            out[role] = ParamSpec(shape, "uniform", fan_in, gates * h, value=bound)
        return out

    return params


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy import special  # here, not at import: scipy costs a third of a second of start-up

    return special.expit(x)  # stable for large |x|, keeps the dtype


def _step(op: str, xw: np.ndarray, hw: np.ndarray, h: np.ndarray, c, nonlinearity: str):
    """One cell: ``xw`` = W_ih x_t + b_ih, ``hw`` = W_hh h + b_hh, both [N, G]; returns (h', c')."""
    if op == "rnn":
        a = xw + hw
        return (np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)), None
    if op == "lstm":
        i, f, g, o = np.split(xw + hw, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return _sigmoid(o) * np.tanh(c), c
    xr, xz, xn = np.split(xw, 3, axis=-1)
    hr, hz, hn = np.split(hw, 3, axis=-1)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    return (1 - z) * n + z * h, None


def recurrent_reference(op: str, x: np.ndarray, params: Mapping[str, np.ndarray], attrs: Mapping[str, Any],
                        h0: np.ndarray | None = None, c0: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """torch's nn.RNN / nn.LSTM / nn.GRU (batch_first) on x [N, T, I]: (output, h_n) or (output, h_n, c_n),
    in x's dtype; ``params`` by role (``weight_ih_l0``, ...)."""
    n, t, _ = x.shape
    h_size, d, layers = attrs["hidden_size"], directions(attrs), attrs["num_layers"]
    dt = x.dtype
    zeros = np.zeros((layers * d, n, h_size), dt)
    h0 = zeros if h0 is None else h0
    c0 = zeros if c0 is None else c0
    h_n, c_n = np.empty_like(zeros), np.empty_like(zeros)
    layer_in = x
    for k in range(layers):
        out = np.empty((n, t, d * h_size), dt)
        for j, sfx in enumerate(("", "_reverse")[:d]):
            w_ih, w_hh = params[f"weight_ih_l{k}{sfx}"], params[f"weight_hh_l{k}{sfx}"]
            xw = layer_in.reshape(n * t, -1) @ w_ih.T  # every step's input projection at once
            hb = np.zeros(w_hh.shape[0], dt)
            if attrs["bias"]:
                xw += params[f"bias_ih_l{k}{sfx}"]
                hb = params[f"bias_hh_l{k}{sfx}"]
            xw = xw.reshape(n, t, -1)
            h, c = h0[k * d + j], c0[k * d + j]
            for s in range(t):
                step = s if j == 0 else t - 1 - s
                h, c = _step(op, xw[:, step], h @ w_hh.T + hb, h, c, attrs.get("nonlinearity", "tanh"))
                out[:, step, j * h_size:(j + 1) * h_size] = h
            h_n[k * d + j] = h
            if c is not None:
                c_n[k * d + j] = c
        layer_in = out
    return (layer_in, h_n, c_n) if op == "lstm" else (layer_in, h_n)


def _reference(op: str):
    def reference(xs, params, attrs):
        return recurrent_reference(op, xs[0], params, attrs, *xs[1:])

    return reference


def _flops(op: str):
    gates, cell = GATES[op], CELL_FLOPS[op]

    def flops(ins, out, attrs):
        # per layer and direction and step: the input projection (2 I_k G), the recurrent product (2 H G),
        # the biases (2 G) and the cell (per hidden unit)
        n, t = out[0], out[1]
        h, d = attrs["hidden_size"], directions(attrs)
        total = 0
        for k in range(attrs["num_layers"]):
            size = ins[0][2] if k == 0 else d * h
            total += d * n * t * (2 * size * gates * h + 2 * h * gates * h + 2 * gates * h * attrs["bias"] + cell * h)
        return total

    return flops


def launches(attrs: Mapping[str, Any]) -> int:
    """Per layer: one GEMM projecting every step's input for both directions, one persistent recurrence
    kernel (both directions in one grid) that loops over time."""
    return 2 * attrs["num_layers"]


def _attrs(op: str) -> tuple[Attr, ...]:
    act = (Attr("nonlinearity", "str", "tanh", choices=("tanh", "relu"), doc="the cell's activation"),)
    return (Attr("hidden_size", "int", doc="the size H of the state h"),
            *(act if op == "rnn" else ()),
            Attr("num_layers", "int", 1, doc="layers stacked: each reads the previous layer's output sequence"),
            Attr("bias", "bool", True, doc="b_ih and b_hh"),
            Attr("bidirectional", "bool", False, doc="a second direction reads the sequence backwards"),
            Attr("dropout", "float", 0.0, doc="dropout between layers (training only: the identity at inference)"))


DOCS = {
    "rnn": "nn.RNN (batch_first): x [N, T, I] (, h0) -> (output [N, T, D*H], h_n [L*D, N, H]), "
           "h' = act(W_ih x + b_ih + W_hh h + b_hh)",
    "lstm": "nn.LSTM (batch_first): x [N, T, I] (, h0, c0) -> (output [N, T, D*H], h_n, c_n [L*D, N, H])",
    "gru": "nn.GRU (batch_first): x [N, T, I] (, h0) -> (output [N, T, D*H], h_n [L*D, N, H])",
}

for _op in ("rnn", "lstm", "gru"):
    register(OpDef(_op, OpKind.REDUCE, _infer(_op), _reference(_op), _flops(_op), _attrs(_op), arity=None,
                   params=_params(_op), doc=DOCS[_op], axis=-1, launches=launches,
                   results=lambda attrs, op=_op: ("output", "h_n", "c_n") if op == "lstm" else ("output", "h_n")))
