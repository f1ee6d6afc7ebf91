"""The ONNX meaning of every registry op: one exporter per op, ``fn(builder, node, inputs) -> outputs``.

``inputs`` are the ONNX names of the node's inputs; an exporter returns the ONNX name of each result
(``netdsl.interop.onnx_export`` then renames them after the netdsl values). Exporters follow the NumPy
references of ``netdsl.ops`` exactly, including where ONNX's defaults differ from PyTorch's: recurrent
gate orders (ONNX LSTM is i, o, f, c; torch i, f, g, o; ONNX GRU z, r, h with ``linear_before_reset``),
nearest resizing (torch floors ``dst / scale``: ``asymmetric`` + ``floor``), and attention whose every
key is masked (torch's safe softmax gives zeros, ONNX's Softmax NaN). Fused ops are decomposed into these
entries by ``netdsl.interop.onnx_export``; ``UNSUPPORTED`` lists the ops that cannot be exported, each with
its reason.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..ir.graph import Node
from ..ops import REGISTRY
from ..ops.activations import SELU_ALPHA, SELU_SCALE
from ..ops.convolution import window_pads
from ..ops.recurrent import GATES, directions
from ..ops.resample import upsample_scales
from ..ops.structure import split_sizes

Exporter = Callable[..., object]
INT64_MAX = 2**63 - 1
# ONNX's gate order, as indices into torch's stacked gates
ONNX_GATE_ORDER = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}

# Ops that cannot be written as ONNX, with the reason (none today: every registry op exports).
UNSUPPORTED: dict[str, str] = {}


def _rank(node: Node, i: int = 0) -> int:
    return node.inputs[i].type.rank


def _channel(b, vector: str, rank: int, axis: int = 1) -> str:
    """A [C] vector shaped to broadcast along dim ``axis`` of a rank-``rank`` tensor."""
    trailing = rank - 1 - axis % rank
    return b.op("Reshape", [vector, b.ints([-1] + [1] * trailing)]) if trailing else vector


def _f(b, value: float) -> str:
    return b.const(value, np.float32)


# ---------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------

def _softplus(b, x: str, beta: float, threshold: float) -> str:
    xb = b.op("Mul", [x, _f(b, beta)]) if beta != 1 else x
    soft = b.op("Softplus", [xb])
    soft = b.op("Div", [soft, _f(b, beta)]) if beta != 1 else soft
    return b.op("Where", [b.op("Greater", [xb, _f(b, threshold)]), x, soft])


def _gelu(b, x: str, approximate: str) -> str:
    if b.opset >= 20:
        return b.op("Gelu", [x], approximate=approximate)
    if approximate == "tanh":
        inner = b.op("Mul", [b.op("Add", [x, b.op("Mul", [_f(b, 0.044715), b.op("Mul", [x, b.op("Mul", [x, x])])])]),
                             _f(b, math.sqrt(2 / math.pi))])
        gate = b.op("Tanh", [inner])
    else:
        gate = b.op("Erf", [b.op("Div", [x, _f(b, math.sqrt(2))])])
    return b.op("Mul", [b.op("Mul", [x, _f(b, 0.5)]), b.op("Add", [gate, _f(b, 1.0)])])


def _prelu(b, n, xs):
    slope = n.params["weight"]
    rank = _rank(n)
    if rank >= 2 and not n.attrs["shared"]:
        slope = _channel(b, slope, rank)
    return b.op("PRelu", [xs[0], slope])


def _affine(b, n, xs):
    y = xs[0]
    if n.attrs["scale"] != 1:
        y = b.op("Mul", [y, _f(b, n.attrs["scale"])])
    if n.attrs["shift"] != 0:
        y = b.op("Add", [y, _f(b, n.attrs["shift"])])
    return y if y != xs[0] else b.op("Identity", [y])


ACTIVATIONS: dict[str, Exporter] = {
    "relu": lambda b, n, xs: b.op("Relu", xs),
    "relu6": lambda b, n, xs: b.op("Clip", [xs[0], _f(b, 0.0), _f(b, 6.0)]),
    "leaky_relu": lambda b, n, xs: b.op("LeakyRelu", xs, alpha=n.attrs["alpha"]),
    "prelu": _prelu,
    "rrelu": lambda b, n, xs: b.op("LeakyRelu", xs, alpha=(n.attrs["lower"] + n.attrs["upper"]) / 2),
    "elu": lambda b, n, xs: b.op("Elu", xs, alpha=n.attrs["alpha"]),
    "selu": lambda b, n, xs: b.op("Selu", xs, alpha=SELU_ALPHA, gamma=SELU_SCALE),
    "sigmoid": lambda b, n, xs: b.op("Sigmoid", xs),
    "tanh": lambda b, n, xs: b.op("Tanh", xs),
    "softsign": lambda b, n, xs: b.op("Softsign", xs),
    "softplus": lambda b, n, xs: _softplus(b, xs[0], n.attrs["beta"], n.attrs["threshold"]),
    "gelu": lambda b, n, xs: _gelu(b, xs[0], n.attrs["approximate"]),
    "silu": lambda b, n, xs: b.op("Mul", [xs[0], b.op("Sigmoid", xs)]),
    "hardswish": lambda b, n, xs: b.op("HardSwish", xs),
    "hardsigmoid": lambda b, n, xs: b.op("HardSigmoid", xs, alpha=n.attrs["alpha"], beta=n.attrs["beta"]),
    "hardtanh": lambda b, n, xs: b.op("Clip", [xs[0], _f(b, n.attrs["min_val"]), _f(b, n.attrs["max_val"])]),
    "mish": lambda b, n, xs: b.op("Mul", [xs[0], b.op("Tanh", [_softplus(b, xs[0], 1.0, 20.0)])]),
    "affine": _affine,
}


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------

def _bias(n) -> list[str]:
    return [n.params["bias"]] if n.attrs["bias"] else []


def _padding(n, kernel, stride, dilation) -> dict:
    """ONNX's attributes for a conv or pool's padding: explicit pads [top, left, bottom, right] where the sizes
    give them; netdsl's "same" with a stride on a symbolic size is SAME_UPPER, which pads as that size needs
    (onnxruntime runs it without dilation only)."""
    padding, hw = n.attrs["padding"], n.inputs[0].type.shape[2:]
    if padding == "same" and any(s > 1 and not isinstance(size, int) for s, size in zip(stride, hw)):
        return {"auto_pad": "SAME_UPPER"}
    return {"pads": list(window_pads(padding, hw, kernel, stride, dilation))}


def _conv(b, n, xs):
    a = n.attrs
    return b.op("Conv", [xs[0], n.params["weight"], *_bias(n)], kernel_shape=list(a["kernel_size"]),
                strides=list(a["stride"]), dilations=list(a["dilation"]), group=a["groups"],
                **_padding(n, a["kernel_size"], a["stride"], a["dilation"]))


def _conv_transpose(b, n, xs):
    a = n.attrs
    ph, pw = a["padding"]
    return b.op("ConvTranspose", [xs[0], n.params["weight"], *_bias(n)], kernel_shape=list(a["kernel_size"]),
                strides=list(a["stride"]), pads=[ph, pw, ph, pw], output_padding=list(a["output_padding"]),
                dilations=list(a["dilation"]), group=a["groups"])


def _linear(b, n, xs):
    y = b.op("MatMul", [xs[0], b.op("Transpose", [n.params["weight"]], perm=[1, 0])])
    return b.op("Add", [y, n.params["bias"]]) if n.attrs["bias"] else y


def _pool_args(n) -> dict:
    a = n.attrs
    k = a["kernel_size"]
    s = a["stride"] if a["stride"] is not None else k
    s = (s, s) if isinstance(s, int) else s
    return {"kernel_shape": list(k), "strides": list(s), "ceil_mode": int(a["ceil_mode"]),
            **_padding(n, k, s, a.get("dilation", (1, 1)))}


def _crop(b, n, y: str) -> str:
    """Drop the last window of a ceil_mode pooling where torch does: one that would start in the end
    padding (only possible at static sizes; ONNX's shape rule keeps it)."""
    a, args = n.attrs, _pool_args(n)
    if not a["ceil_mode"] or "pads" not in args:
        return y
    k, s, p, d = args["kernel_shape"], args["strides"], args["pads"], a.get("dilation", (1, 1))
    out = n.outputs[0].type.shape[2:]
    onnx_out = [(i + p[j] + p[j + 2] - d[j] * (k[j] - 1) - 1 + s[j] - 1) // s[j] + 1 if isinstance(i, int) else want
                for j, (i, want) in enumerate(zip(n.inputs[0].type.shape[2:], out))]
    if onnx_out == list(out):
        return y
    return b.op("Slice", [y, b.ints([0, 0]), b.shape(out), b.ints([2, 3])])


def _maxpool(b, n, xs):
    return _crop(b, n, b.op("MaxPool", xs, dilations=list(n.attrs["dilation"]), **_pool_args(n)))


def _avgpool(b, n, xs):
    y = b.op("AveragePool", xs, count_include_pad=int(n.attrs["count_include_pad"]), **_pool_args(n))
    return _crop(b, n, y)


def _bin_matrix(b, x: str, axis: int, out: int) -> str:
    """torch's adaptive bins along ``axis`` as an [out, size] matrix of 1/count (computed at run time, so any
    size works): row i averages inputs floor(i * size / out) to ceil((i + 1) * size / out)."""
    size = b.scalar_dim(x, axis)
    i = b.ints(list(range(out)))
    start = b.op("Div", [b.op("Mul", [i, size]), b.ints([out])])
    end = b.op("Div", [b.op("Add", [b.op("Mul", [b.ints(list(range(1, out + 1))), size]), b.ints([out - 1])]),
                       b.ints([out])])
    j = b.op("Unsqueeze", [b.op("Range", [b.const(0, np.int64), size, b.const(1, np.int64)]), b.ints([0])])
    inside = b.op("And", [b.op("GreaterOrEqual", [j, b.op("Unsqueeze", [start, b.ints([1])])]),
                          b.op("Less", [j, b.op("Unsqueeze", [end, b.ints([1])])])])
    ones = b.op("Cast", [inside], to=1)  # FLOAT
    return b.op("Div", [ones, b.op("ReduceSum", [ones, b.ints([1])], keepdims=1)])


def _adaptive_avgpool(b, n, xs):
    oh, ow = n.attrs["output_size"]
    _, _, h, w = n.inputs[0].type.shape
    if (oh, ow) == (1, 1):
        return b.op("GlobalAveragePool", xs)
    if isinstance(h, int) and isinstance(w, int) and h % oh == 0 and w % ow == 0:
        k = [h // oh, w // ow]
        return b.op("AveragePool", xs, kernel_shape=k, strides=k)
    rows, cols = _bin_matrix(b, xs[0], 2, oh), _bin_matrix(b, xs[0], 3, ow)
    return b.op("MatMul", [b.op("MatMul", [rows, xs[0]]), b.op("Transpose", [cols], perm=[1, 0])])


def batchnorm(b, x: str, params: tuple[str, str, str, str], eps: float, rank: int, axis: int = 1) -> str:
    """Inference batchnorm (running statistics) along ``axis``: ONNX's op on channels, an affine elsewhere."""
    weight, bias, mean, var = params
    if axis % rank == 1:
        return b.op("BatchNormalization", [x, weight, bias, mean, var], epsilon=eps)
    scale = b.op("Div", [weight, b.op("Sqrt", [b.op("Add", [var, _f(b, eps)])])])
    shift = b.op("Sub", [bias, b.op("Mul", [mean, scale])])
    return b.op("Add", [b.op("Mul", [x, _channel(b, scale, rank, axis)]), _channel(b, shift, rank, axis)])


def _batchnorm(b, n, xs):
    p = n.params
    return batchnorm(b, xs[0], (p["weight"], p["bias"], p["running_mean"], p["running_var"]), n.attrs["eps"],
                     _rank(n))


def _layernorm(b, n, xs):
    a = n.attrs
    shape = tuple(n.inputs[0].type.shape[-a["dims"]:])
    if a["affine"]:
        scale, bias = n.params["weight"], [n.params["bias"]]
    else:
        scale, bias = b.const(np.ones(shape, np.float32)), []
    return b.op("LayerNormalization", [xs[0], scale, *bias], axis=-a["dims"], epsilon=a["eps"])


def _groupnorm(b, n, xs):
    a, rank = n.attrs, _rank(n)
    g = b.op("Reshape", [xs[0], b.ints([0, a["groups"], -1])])
    axes = b.ints([2])
    centred = b.op("Sub", [g, b.op("ReduceMean", [g, axes], keepdims=1)])
    var = b.op("ReduceMean", [b.op("Mul", [centred, centred]), axes], keepdims=1)
    y = b.op("Div", [centred, b.op("Sqrt", [b.op("Add", [var, _f(b, a["eps"])])])])
    y = b.op("Reshape", [y, b.op("Shape", [xs[0]])])
    y = b.op("Mul", [y, _channel(b, n.params["weight"], rank)])
    return b.op("Add", [y, _channel(b, n.params["bias"], rank)])


def _softmax(op_type: str) -> Exporter:
    return lambda b, n, xs: b.op(op_type, xs, axis=n.attrs["dim"])


def _flatten(b, n, xs):
    return b.op("Reshape", [xs[0], b.ints([0] * n.attrs["start_dim"] + [-1])])


def _to_shape(b, n, xs):
    """Reshape to the node's output type (its symbolic dims computed from the inputs' shapes)."""
    return b.op("Reshape", [xs[0], b.shape(n.outputs[0].type.shape)])


def _upsample(b, n, xs):
    a = n.attrs
    scales = upsample_scales(a)
    if a["mode"] == "nearest":
        style = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    else:
        style = {"mode": "linear",
                 "coordinate_transformation_mode": "align_corners" if a["align_corners"] else "half_pixel"}
    if scales is not None:
        return b.op("Resize", [xs[0], "", b.const(list(scales), np.float32)], axes=[2, 3], **style)
    return b.op("Resize", [xs[0], "", "", b.ints(list(a["size"]))], axes=[2, 3], **style)


def _positional_encoding(b, n, xs):
    d = n.inputs[0].type.shape[-1]
    length = b.scalar_dim(xs[0], -2)
    pos = b.op("Cast", [b.op("Range", [b.const(0, np.int64), length, b.const(1, np.int64)])], to=11)  # DOUBLE
    freq = np.exp(np.arange(0, d, 2, dtype=np.float64) * (-math.log(10000.0) / d))
    angle = b.op("Mul", [b.op("Unsqueeze", [pos, b.ints([1])]), b.const(freq, np.float64)])
    pair = [b.op("Unsqueeze", [b.op(f, [angle]), b.ints([2])]) for f in ("Sin", "Cos")]
    table = b.op("Reshape", [b.op("Concat", pair, axis=2), b.ints([-1, d])])
    return b.op("Add", [xs[0], b.op("Cast", [table], to=1)])


def _safe_softmax(b, scores: str) -> str:
    """Softmax over the last dim with torch's rule for a row whose every score is -inf: zeros, not NaN."""
    last = b.ints([-1])
    top = b.op("ReduceMax", [scores, last], keepdims=1)
    top = b.op("Where", [b.op("IsInf", [top], detect_positive=0), _f(b, 0.0), top])
    p = b.op("Exp", [b.op("Sub", [scores, top])])
    total = b.op("ReduceSum", [p, last], keepdims=1)
    total = b.op("Where", [b.op("Equal", [total, _f(b, 0.0)]), _f(b, 1.0), total])
    return b.op("Div", [p, total])


def _sdpa(b, n, xs):
    q, k, v = xs[:3]
    rank_k = _rank(n, 1)
    perm = list(range(rank_k))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=perm)])
    e = n.inputs[0].type.shape[-1]
    if n.attrs["scale"] is not None or isinstance(e, int):
        scale = _f(b, n.attrs["scale"] if n.attrs["scale"] is not None else 1.0 / math.sqrt(e))
    else:
        size = b.op("Cast", [b.op("Shape", [q], start=-1)], to=1)
        scale = b.op("Reciprocal", [b.op("Sqrt", [size])])
    scores = b.op("Mul", [scores, scale])
    if n.attrs["causal"]:
        zero, one = b.const(0, np.int64), b.const(1, np.int64)
        rows = b.op("Range", [zero, b.scalar_dim(q, -2), one])
        cols = b.op("Range", [zero, b.scalar_dim(k, -2), one])
        keep = b.op("GreaterOrEqual", [b.op("Unsqueeze", [rows, b.ints([1])]), cols])  # key j <= query i
        p = b.op("Softmax", [b.op("Where", [keep, scores, _f(b, -np.inf)])], axis=-1)
    elif len(xs) == 4:
        if n.inputs[3].type.dtype == "bool":
            scores = b.op("Where", [xs[3], scores, _f(b, -np.inf)])
        else:
            scores = b.op("Add", [scores, xs[3]])
        p = _safe_softmax(b, scores)
    else:
        p = b.op("Softmax", [scores], axis=-1)
    return b.op("MatMul", [p, v])


def _slice(b, n, xs):
    a = n.attrs
    end = b.ints([INT64_MAX]) if a["end"] is None else b.dim(a["end"])
    return b.op("Slice", [xs[0], b.dim(a["start"]), end, b.ints([a["dim"]]), b.ints([a["step"]])])


def _select(b, n, xs):
    d = n.attrs["dim"] % _rank(n)
    return b.op("Squeeze", [b.op("Gather", [xs[0], b.dim(n.attrs["index"])], axis=d), b.ints([d])])


def _permute(b, n, xs):
    """transpose and permute: the registry's own permutation of the dims."""
    return b.op("Transpose", xs, perm=list(REGISTRY[n.op].permutation(n.attrs, _rank(n))))


def _split(op: str) -> Exporter:
    def export(b, n, xs):
        sizes = split_sizes(n.inputs[0].type, n.attrs, op)
        if len(sizes) == 1:
            return [b.op("Identity", xs)]
        return b.op("Split", [xs[0], b.ints(sizes)], outputs=len(sizes), axis=n.attrs["dim"])
    return export


def _expand(b, n, xs):
    sizes = [1 if isinstance(s, int) and s == -1 else s for s in n.attrs["sizes"]]
    return b.op("Expand", [xs[0], b.shape(sizes)])


# ---------------------------------------------------------------------------------------------
# recurrent layers: ONNX RNN / LSTM / GRU, one per layer, sequence-first inside
# ---------------------------------------------------------------------------------------------

def _gates(b, cell: str, tensor: str) -> str:
    """A torch weight or bias [G*H, ...] with its gates in ONNX's order."""
    if cell == "rnn":
        return tensor
    pieces = b.op("Split", [tensor], outputs=GATES[cell], axis=0, num_outputs=GATES[cell])
    return b.op("Concat", [pieces[i] for i in ONNX_GATE_ORDER[cell]], axis=0)


def _stack(b, tensors: list[str]) -> str:
    """[1, ...] per direction, concatenated along the new direction dim."""
    parts = [b.op("Unsqueeze", [t, b.ints([0])]) for t in tensors]
    return parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=0)


def _recurrent(cell: str) -> Exporter:
    op_type = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]

    def export(b, n, xs):
        a, p = n.attrs, n.params
        h, d = a["hidden_size"], directions(a)
        extra = {"linear_before_reset": 1} if cell == "gru" else {}
        if cell == "rnn":
            extra["activations"] = ["Tanh" if a["nonlinearity"] == "tanh" else "Relu"] * d
        seq = b.op("Transpose", [xs[0]], perm=[1, 0, 2])  # [T, N, I]
        finals: list[list[str]] = [[], []]
        for k in range(a["num_layers"]):
            sfx = ("", "_reverse")[:d]
            w = _stack(b, [_gates(b, cell, p[f"weight_ih_l{k}{s}"]) for s in sfx])
            r = _stack(b, [_gates(b, cell, p[f"weight_hh_l{k}{s}"]) for s in sfx])
            bias = _stack(b, [b.op("Concat", [_gates(b, cell, p[f"bias_ih_l{k}{s}"]),
                                              _gates(b, cell, p[f"bias_hh_l{k}{s}"])], axis=0) for s in sfx]) \
                if a["bias"] else ""
            states = [b.op("Slice", [s, b.ints([k * d]), b.ints([(k + 1) * d]), b.ints([0])]) for s in xs[1:]]
            outs = b.op(op_type, [seq, w, r, bias, "", *states], outputs=3 if cell == "lstm" else 2,
                        hidden_size=h, direction="bidirectional" if d == 2 else "forward", **extra)
            y = b.op("Transpose", [outs[0]], perm=[0, 2, 1, 3])  # [T, D, N, H] -> [T, N, D, H]
            seq = b.op("Reshape", [y, b.ints([0, 0, -1])])
            for i, final in enumerate(outs[1:]):
                finals[i].append(final)
        result = [b.op("Transpose", [seq], perm=[1, 0, 2])]
        for states in finals[:2 if cell == "lstm" else 1]:
            result.append(states[0] if len(states) == 1 else b.op("Concat", states, axis=0))
        return result

    return export


EXPORTERS: dict[str, Exporter] = {
    **ACTIVATIONS,
    "conv2d": _conv,
    "linear": _linear,
    "maxpool2d": _maxpool,
    "avgpool2d": _avgpool,
    "global_avgpool": lambda b, n, xs: b.op("GlobalAveragePool", xs),
    "global_maxpool": lambda b, n, xs: b.op("GlobalMaxPool", xs),
    "adaptive_avgpool2d": _adaptive_avgpool,
    "batchnorm": _batchnorm,
    "layernorm": _layernorm,
    "groupnorm": _groupnorm,
    "dropout": lambda b, n, xs: b.op("Identity", xs),
    "flatten": _flatten,
    "softmax": _softmax("Softmax"),
    "log_softmax": _softmax("LogSoftmax"),
    "add": lambda b, n, xs: b.op("Add", xs),
    "mul": lambda b, n, xs: b.op("Mul", xs),
    "concat": lambda b, n, xs: b.op("Concat", xs, axis=n.attrs["dim"]),
    "conv_transpose2d": _conv_transpose,
    "upsample": _upsample,
    "matmul": lambda b, n, xs: b.op("MatMul", xs),
    "reshape": _to_shape,
    "transpose": _permute,
    "permute": _permute,
    "unsqueeze": lambda b, n, xs: b.op("Unsqueeze", [xs[0], b.ints([n.attrs["dim"] % (_rank(n) + 1)])]),
    "squeeze": lambda b, n, xs: b.op("Squeeze", [xs[0], b.ints([n.attrs["dim"] % _rank(n)])]),
    "embedding": lambda b, n, xs: b.op("Gather", [n.params["weight"], xs[0]], axis=0),
    "positional_encoding": _positional_encoding,
    "scaled_dot_product_attention": _sdpa,
    "slice": _slice,
    "select": _select,
    "split": _split("split"),
    "chunk": _split("chunk"),
    "parameter": lambda b, n, xs: n.params["value"],
    "unflatten": _to_shape,
    "expand": _expand,
    **{cell: _recurrent(cell) for cell in GATES},
}
