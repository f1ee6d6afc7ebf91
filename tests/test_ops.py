"""Every op of the registry against PyTorch (torch.nn.functional on CPU, computed in float64: the
independent oracle), in float32 and float64, on awkward shapes (size-1 dims, sizes that are not
powers of two) and non-default attributes.

Each case runs twice: the op's registry reference called directly (attributes bound with
``bind_attrs``), and a one-node .net program elaborated with ``netdsl.load_source`` and run on the
reference backend (so the language's attribute binding is covered too). ``ORACLES`` is keyed by op
name and must cover the registry exactly: a new op without an oracle and cases fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netdsl
from netdsl.ir.types import TensorType
from netdsl.ops import REGISTRY, OpKind
from netdsl.ops.registry import bind_attrs

DTYPES = {"f32": np.float32, "f64": np.float64}
# |ours - torch| <= atol + rtol * |torch|, once per dtype (torch computes in float64)
TOLERANCE = {"f32": {"rtol": 2e-5, "atol": 2e-5}, "f64": {"rtol": 1e-10, "atol": 1e-10}}
HYPOTHESIS = settings(max_examples=100, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# the oracles: op name -> fn(inputs, params, attrs) on float64 torch tensors
# ---------------------------------------------------------------------------------------------

def _conv(x, p, a):
    pad = a["padding"] if isinstance(a["padding"], str) else tuple(a["padding"])
    return F.conv2d(x, p["weight"], p.get("bias"), a["stride"], pad, a["dilation"], a["groups"])


def _conv_transpose(x, p, a):
    return F.conv_transpose2d(x, p["weight"], p.get("bias"), a["stride"], a["padding"], a["output_padding"],
                              a["groups"], a["dilation"])


def _upsample(x, a):
    return F.interpolate(x, size=a["size"], scale_factor=a["scale_factor"], mode=a["mode"],
                         align_corners=a["align_corners"])


def _pool_stride(a):
    return a["stride"] if a["stride"] is not None else a["kernel_size"]


def _bn(x, mean, var, weight, bias, eps):
    return F.batch_norm(x, mean, var, weight, bias, training=False, eps=eps)


ACTIVATION_ORACLES = {
    "relu": lambda x, a, s: F.relu(x),
    "relu6": lambda x, a, s: F.relu6(x),
    "leaky_relu": lambda x, a, s: F.leaky_relu(x, a["alpha"]),
    "prelu": lambda x, a, s: F.prelu(x, s),
    "rrelu": lambda x, a, s: F.rrelu(x, a["lower"], a["upper"], training=False),
    "elu": lambda x, a, s: F.elu(x, a["alpha"]),
    "selu": lambda x, a, s: F.selu(x),
    "sigmoid": lambda x, a, s: torch.sigmoid(x),
    "tanh": lambda x, a, s: torch.tanh(x),
    "softsign": lambda x, a, s: F.softsign(x),
    "softplus": lambda x, a, s: F.softplus(x, a["beta"], a["threshold"]),
    "gelu": lambda x, a, s: F.gelu(x, approximate=a["approximate"]),
    "silu": lambda x, a, s: F.silu(x),
    "hardswish": lambda x, a, s: F.hardswish(x),
    "hardsigmoid": lambda x, a, s: F.hardsigmoid(x) if (a["alpha"], a["beta"]) == (1 / 6, 0.5)
    else torch.clamp(a["alpha"] * x + a["beta"], 0, 1),  # ONNX's HardSigmoid (torch's is alpha 1/6)
    "hardtanh": lambda x, a, s: F.hardtanh(x, a["min_val"], a["max_val"]),
    "mish": lambda x, a, s: F.mish(x),
    "affine": lambda x, a, s: a["scale"] * x + a["shift"],  # what `x * 0.125`, `1 - x`, `-x` ... elaborate to
}


def _epilogue(y, xs, p, a, channel_axis=1):
    """The fused epilogue after the bias, from torch parts: act1 -> (+ residual) -> act2."""
    if a["act1"] != "none":
        y = _act_along(a["act1"], y, a["act1_attrs"], p.get("slope1"), channel_axis)
    if a["residual"]:
        y = y + xs[-1]
    if a["act2"] != "none":
        y = _act_along(a["act2"], y, a["act2_attrs"], p.get("slope2"), channel_axis)
    return y


def _act_along(name, y, attrs, slope, channel_axis):
    if name == "prelu" and channel_axis != 1 and slope.numel() > 1:  # per-feature slope on the last dim
        return torch.where(y >= 0, y, slope * y)
    return ACTIVATION_ORACLES[name](y, attrs, slope)


def _activation_oracle(fn):
    return lambda xs, p, a: fn(xs[0], a, p.get("weight"))


def _bn_params(p):
    return p["bn_mean"], p["bn_var"], p["bn_weight"], p["bn_bias"]


def _fused_conv(xs, p, a):
    y = _conv(xs[0], {"weight": p["weight"]}, a)
    if a["bias"]:
        y = y + p["bias"].reshape(1, -1, 1, 1)
    if a["bn"]:
        y = _bn(y, *_bn_params(p), a["bn_eps"])
    return _epilogue(y, xs, p, a)


def _fused_conv_transpose(xs, p, a):
    return _epilogue(_conv_transpose(xs[0], p, a), xs, p, a)


def _fused_linear(xs, p, a):
    y = F.linear(xs[0], p["weight"], p.get("bias"))
    if a["bn"]:  # a batchnorm over the features of a [N, F] linear output
        y = _bn(y, *_bn_params(p), a["bn_eps"])
    return _epilogue(y, xs, p, a, channel_axis=-1)


def _fused_pointwise(xs, p, a):
    y = _bn(xs[0], *_bn_params(p), a["bn_eps"]) if a["bn"] else xs[0]
    return _epilogue(y, xs, p, a)


def _fused_layernorm(xs, p, a):
    x = xs[0] + xs[1] if a["add_before"] else xs[0]
    y = F.layer_norm(x, x.shape[-a["dims"]:], p.get("weight"), p.get("bias"), a["eps"])
    return _epilogue(y, xs, p, a, channel_axis=-1)


def _fused_groupnorm(xs, p, a):
    y = F.group_norm(xs[0], a["groups"], p["weight"], p["bias"], a["eps"])
    return _epilogue(y, xs, p, a)


def _sdpa(xs, p, a):
    mask = xs[3] if len(xs) == 4 else None
    return F.scaled_dot_product_attention(xs[0], xs[1], xs[2], attn_mask=mask, is_causal=a["causal"], scale=a["scale"])


def _positional_encoding(x, a):
    """x + the sinusoidal table, built from torch ops in float64 (as the PyTorch tutorial's module, batch first)."""
    t, d = x.shape[-2:]
    position = torch.arange(t, dtype=torch.float64)[:, None]
    freq = torch.pow(torch.tensor(10000.0, dtype=torch.float64), torch.arange(0, d, 2, dtype=torch.float64) / d)
    pe = torch.zeros(t, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position / freq)
    pe[:, 1::2] = torch.cos(position / freq)
    return F.dropout(x + pe, a["dropout"], training=False)


def _dims(v):
    return v if isinstance(v, tuple) else (v,)


TENSOR_ORACLES = {  # netdsl/ops/tensor.py
    "matmul": lambda xs, p, a: torch.matmul(xs[0], xs[1]),
    "reshape": lambda xs, p, a: xs[0].reshape(_dims(a["shape"])),
    "transpose": lambda xs, p, a: torch.transpose(xs[0], a["dim0"], a["dim1"]),
    "permute": lambda xs, p, a: xs[0].permute(_dims(a["dims"])),
    "unsqueeze": lambda xs, p, a: torch.unsqueeze(xs[0], a["dim"]),
    "squeeze": lambda xs, p, a: torch.squeeze(xs[0], a["dim"]),
    "embedding": lambda xs, p, a: F.embedding(xs[0], p["weight"], a["padding_idx"]),
    "positional_encoding": lambda xs, p, a: _positional_encoding(xs[0], a),
    "scaled_dot_product_attention": _sdpa,
}


SLICING_ORACLES = {  # netdsl/ops/slicing.py: torch's own indexing (negative and clamped bounds) and Tensor.select
    "slice": lambda xs, p, a: xs[0][(slice(None),) * (a["dim"] % xs[0].dim()) + (slice(a["start"], a["end"], a["step"]),)],
    "select": lambda xs, p, a: xs[0].select(a["dim"], a["index"]),
}


def _pieces(pieces):
    """torch's pieces; one piece is one result."""
    return pieces if len(pieces) > 1 else pieces[0]


SPLIT_ORACLES = {  # netdsl/ops/split.py: several results; a parameter read as a value
    "split": lambda xs, p, a: _pieces(torch.split(xs[0], list(_dims(a["split_size_or_sections"]))
                                                  if isinstance(a["split_size_or_sections"], tuple)
                                                  else a["split_size_or_sections"], a["dim"])),
    "chunk": lambda xs, p, a: _pieces(torch.chunk(xs[0], a["chunks"], a["dim"])),
    "parameter": lambda xs, p, a: p["value"],
    "unflatten": lambda xs, p, a: torch.unflatten(xs[0], a["dim"], _dims(a["sizes"])),
    "expand": lambda xs, p, a: xs[0].expand(*_dims(a["sizes"])),
}


ORACLES = {
    **{name: _activation_oracle(fn) for name, fn in ACTIVATION_ORACLES.items()},
    "conv2d": lambda xs, p, a: _conv(xs[0], p, a),
    "linear": lambda xs, p, a: F.linear(xs[0], p["weight"], p.get("bias")),
    "conv_transpose2d": lambda xs, p, a: _conv_transpose(xs[0], p, a),
    "upsample": lambda xs, p, a: _upsample(xs[0], a),
    "maxpool2d": lambda xs, p, a: F.max_pool2d(xs[0], a["kernel_size"], _pool_stride(a), a["padding"], a["dilation"],
                                               a["ceil_mode"]),
    "avgpool2d": lambda xs, p, a: F.avg_pool2d(xs[0], a["kernel_size"], _pool_stride(a), a["padding"], a["ceil_mode"],
                                               a["count_include_pad"]),
    "global_avgpool": lambda xs, p, a: F.adaptive_avg_pool2d(xs[0], 1),
    "global_maxpool": lambda xs, p, a: F.adaptive_max_pool2d(xs[0], 1),
    "adaptive_avgpool2d": lambda xs, p, a: F.adaptive_avg_pool2d(xs[0], a["output_size"]),
    "batchnorm": lambda xs, p, a: _bn(xs[0], p["running_mean"], p["running_var"], p["weight"], p["bias"], a["eps"]),
    "layernorm": lambda xs, p, a: F.layer_norm(xs[0], xs[0].shape[-a["dims"]:], p.get("weight"), p.get("bias"),
                                               a["eps"]),
    "groupnorm": lambda xs, p, a: F.group_norm(xs[0], a["groups"], p["weight"], p["bias"], a["eps"]),
    "dropout": lambda xs, p, a: F.dropout(xs[0], a["p"], training=False),
    "flatten": lambda xs, p, a: torch.flatten(xs[0], a["start_dim"]),
    "softmax": lambda xs, p, a: F.softmax(xs[0], a["dim"]),
    "log_softmax": lambda xs, p, a: F.log_softmax(xs[0], a["dim"]),
    "add": lambda xs, p, a: xs[0] + xs[1],
    "mul": lambda xs, p, a: xs[0] * xs[1],
    "concat": lambda xs, p, a: torch.cat(xs, a["dim"]),
    "fused_conv2d": _fused_conv,
    "fused_conv_transpose2d": _fused_conv_transpose,
    "fused_linear": _fused_linear,
    "fused_pointwise": _fused_pointwise,
    "fused_layernorm": _fused_layernorm,
    "fused_groupnorm": _fused_groupnorm,
    **TENSOR_ORACLES,
    **SLICING_ORACLES,
    **SPLIT_ORACLES,
}


# ---------------------------------------------------------------------------------------------
# the cases: op name -> [(input shapes, attributes as keyword arguments)]
# ---------------------------------------------------------------------------------------------

ACT_SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (6,), (3, 10)]
ACT_ATTRS = {  # non-default attributes of each activation that has any
    "leaky_relu": [{"alpha": 0.2}, {"alpha": 1.5}],
    "prelu": [{"shared": True}],
    "rrelu": [{"lower": 0.1, "upper": 0.3}],
    "elu": [{"alpha": 0.5}],
    "softplus": [{"beta": 2.0, "threshold": 5.0}, {"beta": 0.5, "threshold": 1}],
    "gelu": [{"approximate": "tanh"}],
    "affine": [{"scale": 0.125, "shift": -1.5}, {"scale": -1.0}],
    "hardsigmoid": [{"alpha": 0.2, "beta": 0.5}, {"alpha": -0.75, "beta": 0.25}],
    "hardtanh": [{"min_val": -2.5, "max_val": 0.75}, {"min_val": 0.5, "max_val": 0.5}],
}

CASES: dict[str, list[tuple[list[tuple[int, ...]], dict]]] = {
    name: [([s], {}) for s in ACT_SHAPES] + [([s], a) for a in ACT_ATTRS.get(name, []) for s in ACT_SHAPES[:3]]
    for name in ACTIVATION_ORACLES
}
CASES.update({
    "conv2d": [
        ([(1, 3, 7, 6)], {"out_channels": 2, "kernel_size": (4, 3), "padding": "same"}),  # even kernel: asymmetric
        ([(2, 3, 9, 11)], {"out_channels": 4, "kernel_size": 3}),
        ([(2, 3, 9, 11)], {"out_channels": 5, "kernel_size": 3, "stride": 2, "padding": 1}),
        ([(1, 3, 7, 6)], {"out_channels": 2, "kernel_size": 5, "padding": "same"}),
        ([(1, 2, 9, 9)], {"out_channels": 3, "kernel_size": 3, "dilation": 2, "padding": "same"}),
        ([(1, 3, 7, 6)], {"out_channels": 2, "kernel_size": 3, "padding": "valid"}),
        ([(2, 2, 10, 9)], {"out_channels": 3, "kernel_size": (3, 2), "dilation": (2, 3), "padding": (2, 1)}),
        ([(2, 4, 6, 7)], {"out_channels": 6, "kernel_size": 3, "groups": 2, "padding": 1}),
        ([(3, 3, 8, 5)], {"out_channels": 3, "kernel_size": 3, "groups": 3, "padding": 1}),  # depthwise
        ([(2, 3, 8, 8)], {"out_channels": 3, "kernel_size": 3, "groups": 3, "stride": 2, "bias": False}),
        ([(2, 3, 5, 5)], {"out_channels": 6, "kernel_size": 3, "groups": 3}),  # depth multiplier 2
        ([(2, 3, 6, 7)], {"out_channels": 4, "kernel_size": 3, "bias": False}),
        ([(3, 5, 4, 6)], {"out_channels": 7, "kernel_size": 1}),
        ([(1, 5, 4, 6)], {"out_channels": 7, "kernel_size": 1, "bias": False}),
        ([(2, 5, 7, 6)], {"out_channels": 3, "kernel_size": 1, "stride": 2}),
        ([(2, 2, 9, 12)], {"out_channels": 3, "kernel_size": (3, 5), "stride": (2, 1), "padding": (1, 2)}),
        ([(1, 1, 1, 1)], {"out_channels": 1, "kernel_size": 1}),
        ([(1, 2, 1, 5)], {"out_channels": 3, "kernel_size": (1, 3)}),
        ([(5, 2, 3, 3)], {"out_channels": 2, "kernel_size": 3, "padding": 1}),  # several images per GEMM
        ([(2, 1, 67, 65)], {"out_channels": 2, "kernel_size": 3, "stride": 1, "padding": 1}),  # one image per GEMM
    ],
    "conv_transpose2d": [
        ([(2, 3, 5, 7)], {"out_channels": 4, "kernel_size": 3}),
        ([(1, 4, 4, 5)], {"out_channels": 2, "kernel_size": 2, "stride": 2}),  # U-Net's up-convolution
        ([(2, 3, 5, 6)], {"out_channels": 5, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1}),
        ([(2, 2, 6, 5)], {"out_channels": 3, "kernel_size": (3, 2), "stride": (2, 3), "padding": (1, 0),
                          "output_padding": (0, 2)}),
        ([(1, 2, 5, 4)], {"out_channels": 3, "kernel_size": 3, "dilation": 2, "padding": 2}),
        # output_padding 2 >= stride 2 is allowed along H because it is < dilation 3 (torch's rule)
        ([(2, 2, 4, 5)], {"out_channels": 2, "kernel_size": 3, "stride": 2, "dilation": (3, 1),
                          "output_padding": (2, 1)}),
        ([(2, 4, 5, 6)], {"out_channels": 6, "kernel_size": 3, "groups": 2, "stride": 2, "padding": 1}),
        ([(3, 3, 4, 4)], {"out_channels": 3, "kernel_size": 3, "groups": 3, "padding": 1}),  # depthwise
        ([(2, 3, 3, 5)], {"out_channels": 6, "kernel_size": 2, "groups": 3, "bias": False}),
        ([(1, 5, 4, 6)], {"out_channels": 7, "kernel_size": 1, "bias": False}),
        ([(1, 1, 1, 1)], {"out_channels": 1, "kernel_size": 1}),
        ([(2, 3, 1, 1)], {"out_channels": 4, "kernel_size": 4, "stride": 2, "padding": 1}),
        ([(1, 2, 3, 3)], {"out_channels": 2, "kernel_size": 3, "padding": 2}),  # the padding crops to 1 x 1
        ([(3, 2, 9, 7)], {"out_channels": 3, "kernel_size": (1, 3), "stride": 3, "padding": (0, 1),
                          "output_padding": 2}),
    ],
    "upsample": [
        ([(2, 3, 4, 5)], {"scale_factor": 2}),
        ([(2, 3, 5, 7)], {"scale_factor": 1.5}),
        ([(1, 2, 7, 9)], {"scale_factor": 0.5}),
        ([(1, 2, 10, 13)], {"scale_factor": 0.7}),
        ([(2, 1, 3, 8)], {"scale_factor": (3, 0.5), "mode": "nearest"}),
        ([(2, 3, 5, 7)], {"size": (8, 3)}),  # torch: src = floor(dst * in / out)
        ([(1, 2, 3, 4)], {"size": 7}),
        ([(1, 1, 1, 1)], {"scale_factor": 3}),
        ([(2, 3, 5, 7)], {"scale_factor": 2, "mode": "bilinear"}),  # align_corners defaults to false
        ([(2, 3, 5, 7)], {"scale_factor": 1.5, "mode": "bilinear", "align_corners": False}),
        ([(2, 3, 5, 7)], {"scale_factor": 1.5, "mode": "bilinear", "align_corners": True}),
        ([(1, 2, 9, 8)], {"scale_factor": 0.5, "mode": "bilinear"}),
        ([(1, 2, 9, 8)], {"scale_factor": 0.5, "mode": "bilinear", "align_corners": True}),
        ([(2, 2, 4, 6)], {"scale_factor": (1.5, 2.5), "mode": "bilinear"}),
        ([(1, 2, 10, 13)], {"scale_factor": 0.7, "mode": "bilinear"}),
        ([(2, 2, 5, 3)], {"size": (11, 4), "mode": "bilinear"}),
        ([(2, 2, 5, 3)], {"size": (11, 4), "mode": "bilinear", "align_corners": True}),
        ([(1, 3, 4, 5)], {"size": 1, "mode": "bilinear", "align_corners": True}),
        ([(2, 2, 1, 1)], {"scale_factor": 3, "mode": "bilinear"}),
        ([(1, 1, 2, 3)], {"scale_factor": 1.2, "mode": "bilinear"}),  # floor(2 * 1.2) == 2: a copy, as in torch
    ],
    "linear": [
        ([(5, 7)], {"out_features": 3}),
        ([(2, 3, 4)], {"out_features": 6}),
        ([(1, 1)], {"out_features": 1}),
        ([(6,)], {"out_features": 5, "bias": False}),
        ([(4, 9)], {"out_features": 2, "bias": False}),
    ],
    "maxpool2d": [
        ([(2, 3, 8, 8)], {"kernel_size": 2}),
        ([(2, 3, 9, 7)], {"kernel_size": 3, "stride": 2, "padding": 1}),
        ([(1, 2, 7, 7)], {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
        ([(1, 2, 8, 6)], {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
        ([(1, 2, 7, 7)], {"kernel_size": 2, "stride": 3, "ceil_mode": True}),
        ([(1, 2, 9, 8)], {"kernel_size": 3, "dilation": 2, "stride": 1}),
        ([(2, 1, 5, 9)], {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1)}),
        ([(1, 1, 1, 1)], {"kernel_size": 1}),
    ],
    "avgpool2d": [
        ([(2, 3, 8, 8)], {"kernel_size": 2}),
        ([(2, 3, 9, 7)], {"kernel_size": 3, "stride": 2, "padding": 1}),
        ([(2, 3, 9, 7)], {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}),
        ([(1, 2, 7, 7)], {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
        ([(1, 2, 5, 6)], {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
        ([(1, 2, 5, 6)], {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}),
        ([(2, 1, 5, 9)], {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1)}),
        ([(1, 1, 1, 1)], {"kernel_size": 1}),
    ],
    "global_avgpool": [([(2, 3, 5, 7)], {}), ([(1, 1, 1, 1)], {}), ([(1, 4, 1, 9)], {})],
    "global_maxpool": [([(2, 3, 5, 7)], {}), ([(1, 1, 1, 1)], {}), ([(3, 4, 6, 1)], {})],
    "adaptive_avgpool2d": [
        ([(2, 3, 8, 6)], {"output_size": (4, 3)}),  # divides: avgpool2d's windows
        ([(2, 3, 7, 5)], {"output_size": (3, 2)}),  # does not divide: bins of 3 rows that overlap
        ([(1, 2, 10, 13)], {"output_size": (4, 6)}),
        ([(1, 2, 9, 6)], {"output_size": 1}),
        ([(2, 2, 3, 4)], {"output_size": (5, 7)}),  # bigger than the input: rows and columns repeat
        ([(2, 1, 6, 1)], {"output_size": (4, 1)}),  # non-square, a size-1 dim
        ([(1, 1, 1, 1)], {"output_size": (1, 1)}),
    ],
    "batchnorm": [([(2, 3, 4, 5)], {}), ([(4, 3)], {"eps": 1e-3}), ([(1, 1, 1, 1)], {}), ([(2, 5, 7)], {"eps": 0.1})],
    "layernorm": [([(2, 3, 6)], {}), ([(4, 5)], {"eps": 1e-3}), ([(3, 7)], {"affine": False}), ([(1, 2)], {}),
                  ([(2, 3, 4, 5)], {"dims": 2}), ([(2, 3, 4, 5)], {"dims": 3, "affine": False}), ([(3, 4)], {"dims": 2})],
    "groupnorm": [
        ([(2, 6, 3, 5)], {"groups": 3}),
        ([(2, 6, 3, 5)], {"groups": 1}),
        ([(1, 6, 2, 2)], {"groups": 6, "eps": 1e-3}),
        ([(3, 4, 5)], {"groups": 2}),
    ],
    "dropout": [([(2, 3, 4)], {}), ([(5,)], {"p": 0.1})],
    "flatten": [([(2, 3, 4, 5)], {}), ([(2, 3, 4, 5)], {"start_dim": 0}), ([(2, 3, 4, 5)], {"start_dim": 2}),
                ([(1, 1, 1, 1)], {})],
    "softmax": [([(2, 3, 5)], {}), ([(2, 3, 5)], {"dim": 0}), ([(2, 3, 5)], {"dim": 1}), ([(4, 1)], {"dim": -1}),
                ([(3, 7)], {"dim": -2})],
    "log_softmax": [([(2, 3, 5)], {}), ([(2, 3, 5)], {"dim": 0}), ([(2, 3, 5)], {"dim": 1}), ([(1, 1)], {})],
    "add": [
        ([(2, 3, 4, 5), (2, 3, 4, 5)], {}),
        ([(2, 3, 4, 5), (1, 3, 1, 1)], {}),
        ([(1, 3, 1, 5), (2, 1, 4, 1)], {}),
        ([(2, 3), (2, 1)], {}),
        ([(1,), (7,)], {}),
    ],
    "mul": [([(2, 3, 4, 5), (2, 3, 4, 5)], {}), ([(2, 3, 4, 5), (2, 3, 1, 1)], {}), ([(1, 6), (5, 1)], {})],
    "concat": [
        ([(2, 3, 4, 5), (2, 2, 4, 5)], {}),
        ([(2, 3, 4), (2, 1, 4), (2, 5, 4)], {"dim": 1}),
        ([(2, 3), (5, 3)], {"dim": 0}),
        ([(2, 3, 1), (2, 3, 4)], {"dim": -1}),
        ([(1, 2)], {}),
    ],
    "fused_conv2d": [
        ([(2, 3, 7, 6)], {"out_channels": 4, "kernel_size": 3, "padding": 1, "act1": "relu"}),
        ([(2, 3, 7, 6), (2, 4, 7, 6)], {"out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False, "bn": True,
                                        "act1": "leaky_relu", "act1_attrs": {"alpha": 0.2}, "residual": True,
                                        "act2": "relu"}),
        ([(1, 4, 5, 5), (1, 4, 3, 3)], {"out_channels": 4, "kernel_size": 3, "groups": 4, "bn": True, "residual": True,
                                        "act2": "prelu", "act2_attrs": {"shared": False}}),
        ([(2, 2, 6, 6)], {"out_channels": 3, "kernel_size": 2, "stride": 2, "act1": "gelu",
                          "act1_attrs": {"approximate": "tanh"}}),
        ([(1, 2, 9, 8)], {"out_channels": 3, "kernel_size": 3, "dilation": (2, 1), "bn": True, "bn_eps": 0.1,
                          "act1": "sigmoid"}),
    ],
    "fused_conv_transpose2d": [
        ([(2, 3, 4, 5)], {"out_channels": 4, "kernel_size": 2, "stride": 2, "dilation": (1, 2), "act1": "relu"}),
        ([(2, 4, 3, 5), (2, 6, 5, 9)], {"out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1,
                                         "output_padding": 0, "groups": 2, "act1": "leaky_relu",
                                         "act1_attrs": {"alpha": 0.2}, "residual": True, "act2": "prelu",
                                         "act2_attrs": {"shared": False}}),
        ([(1, 2, 3, 3), (1, 3, 6, 6)], {"out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1,
                                        "output_padding": 1, "bias": False, "residual": True, "act2": "tanh"}),
    ],
    "fused_linear": [
        ([(3, 5)], {"out_features": 4, "act1": "tanh"}),
        ([(3, 5), (3, 4)], {"out_features": 4, "bias": False, "bn": True, "act1": "elu", "act1_attrs": {"alpha": 0.5},
                            "residual": True, "act2": "silu"}),
        ([(2, 6)], {"out_features": 3, "act1": "prelu", "act1_attrs": {"shared": False}}),
        ([(2, 6), (2, 3)], {"out_features": 3, "bn": True, "bn_eps": 0.1, "residual": True, "act2": "leaky_relu",
                            "act2_attrs": {"alpha": 0.3}}),
    ],
    "fused_pointwise": [
        ([(2, 3, 4, 5)], {"bn": True, "act1": "relu6"}),
        ([(2, 3, 4, 5), (2, 3, 4, 5)], {"act1": "softplus", "act1_attrs": {"beta": 2.0, "threshold": 3.0},
                                        "residual": True, "act2": "relu"}),
        ([(2, 3, 4, 5)], {"bn": True, "bn_eps": 0.01, "act1": "prelu", "act1_attrs": {"shared": True}}),
        ([(2, 3, 4, 5), (2, 3, 4, 5)], {"residual": True, "act2": "elu", "act2_attrs": {"alpha": 0.7}}),
    ],
    # netdsl/ops/tensor.py: T = 1 and T = 127, one head, dims not multiples of 16, batch 1
    "matmul": [
        ([(5, 7), (7, 3)], {}),
        ([(2, 5, 7), (7, 3)], {}),
        ([(2, 3, 5, 7), (2, 3, 7, 4)], {}),
        ([(2, 1, 5, 7), (3, 7, 4)], {}),  # batch dims broadcast
        ([(3, 7, 4), (2, 1, 4, 5)], {}),
        ([(7,), (7,)], {}),  # a dot product: rank 0
        ([(7,), (2, 7, 3)], {}),
        ([(2, 5, 7), (7,)], {}),
        ([(1, 1), (1, 1)], {}),
        ([(1, 127, 24), (1, 24, 127)], {}),
        ([(1, 2, 1, 19), (19, 17)], {}),
    ],
    "reshape": [
        ([(2, 3, 4)], {"shape": (6, 4)}),
        ([(2, 3, 4)], {"shape": (2, -1)}),
        ([(2, 3, 4)], {"shape": -1}),
        ([(2, 5, 12)], {"shape": (2, 5, 3, -1)}),
        ([(1, 127, 20)], {"shape": (1, 127, 4, 5)}),
        ([(4, 1, 6)], {"shape": (-1, 2)}),
        ([(1,)], {"shape": (1, 1, 1)}),
    ],
    "transpose": [
        ([(2, 3, 4)], {"dim0": 0, "dim1": 2}),
        ([(2, 3, 4, 5)], {"dim0": -1, "dim1": -2}),
        ([(1, 127, 3)], {"dim0": 1, "dim1": 2}),
        ([(5,)], {"dim0": 0, "dim1": -1}),
    ],
    "permute": [
        ([(2, 3, 4)], {"dims": (2, 0, 1)}),
        ([(2, 3, 4, 5)], {"dims": (0, 2, 1, 3)}),
        ([(2, 3, 4, 5)], {"dims": (-1, 0, -2, 1)}),
        ([(1, 1)], {"dims": (1, 0)}),
        ([(6,)], {"dims": 0}),
    ],
    "unsqueeze": [([(2, 3)], {"dim": 0}), ([(2, 3)], {"dim": -1}), ([(2, 3)], {"dim": 1}), ([(5,)], {"dim": -2})],
    "squeeze": [([(2, 1, 3)], {"dim": 1}), ([(1, 1)], {"dim": -1}), ([(2, 3, 1)], {"dim": -1}), ([(1, 4)], {"dim": 0})],
    "embedding": [
        ([(2, 5)], {"num_embeddings": 10, "embedding_dim": 7}),
        ([(1, 1)], {"num_embeddings": 1, "embedding_dim": 1}),
        ([(3, 127)], {"num_embeddings": 33, "embedding_dim": 20, "padding_idx": 0}),
        ([(4,)], {"num_embeddings": 5, "embedding_dim": 3, "padding_idx": -1}),
        ([(2, 3, 4)], {"num_embeddings": 6, "embedding_dim": 9}),
    ],
    "positional_encoding": [
        ([(2, 5, 8)], {}),
        ([(1, 1, 2)], {}),
        ([(1, 127, 20)], {"max_len": 127}),
        ([(3, 6)], {"dropout": 0.1}),
        ([(2, 9, 6)], {"max_len": 100, "dropout": 0.5}),
    ],
    "scaled_dot_product_attention": [
        ([(2, 4, 5, 8), (2, 4, 7, 8), (2, 4, 7, 6)], {}),
        ([(1, 1, 1, 8), (1, 1, 1, 8), (1, 1, 1, 8)], {}),  # T = 1, one head
        ([(2, 3, 6, 5), (2, 3, 6, 5), (2, 3, 6, 5)], {"causal": True}),
        ([(1, 2, 127, 12), (1, 2, 127, 12), (1, 2, 127, 12)], {"causal": True}),
        ([(1, 1, 3, 4), (1, 1, 6, 4), (1, 1, 6, 5)], {"causal": True}),  # L < S: top-left aligned
        ([(1, 1, 6, 4), (1, 1, 3, 4), (1, 1, 3, 4)], {"causal": True}),  # L > S
        ([(3, 5, 6), (3, 4, 6), (3, 4, 7)], {"scale": 0.3}),
        ([(5, 9), (7, 9), (7, 3)], {}),
        ([(2, 1, 5, 8), (1, 3, 7, 8), (2, 3, 7, 8)], {}),  # batch dims broadcast
        ([(2, 2, 5, 8), (2, 2, 6, 8), (2, 2, 6, 8), (5, 6)], {}),  # an additive mask
        ([(2, 2, 5, 8), (2, 2, 6, 8), (2, 2, 6, 3), (2, 1, 5, 6)], {"scale": 1.0}),
    ],
    "split": [
        ([(2, 9)], {"split_size_or_sections": 4, "dim": 1}),  # 4, 4, 1
        ([(6, 2, 5)], {"split_size_or_sections": (1, 3, 2)}),  # dim 0, torch's default
        ([(2, 3, 12)], {"split_size_or_sections": (4, 0, 8), "dim": -1}),  # an empty piece
        ([(2, 3, 4, 5)], {"split_size_or_sections": 2, "dim": 1}),
    ],
    "chunk": [
        ([(2, 5, 12)], {"chunks": 3, "dim": -1}),  # q, k, v
        ([(5, 3)], {"chunks": 4}),  # torch gives 3 pieces of 2, 2, 1
        ([(1, 6, 2, 2)], {"chunks": 2, "dim": 1}),
        ([(7,)], {"chunks": 1}),
    ],
    "parameter": [([], {"shape": (1, 1, 4)}), ([], {"shape": (5,)}), ([], {"shape": (2, 3, 2, 2)})],
    "unflatten": [
        ([(2, 3, 12)], {"dim": -1, "sizes": (4, -1)}),  # the heads of attention
        ([(6, 5)], {"dim": 0, "sizes": (2, 3)}),
        ([(2, 8, 3)], {"dim": 1, "sizes": (2, 2, -1)}),
        ([(4, 1)], {"dim": 1, "sizes": (1, 1)}),
    ],
    "expand": [
        ([(1, 1, 6)], {"sizes": (3, -1, -1)}),  # ViT's class token for every sample
        ([(3, 1)], {"sizes": (2, 3, 4)}),  # a new leading dim and a stretched one
        ([(2, 3)], {"sizes": (-1, 3)}),  # nothing moves
        ([(1, 4, 1, 1)], {"sizes": (2, 4, 3, 5)}),
    ],
    # netdsl/ops/slicing.py: negative and clamped bounds, steps 2 and 3, size-1 dims, empty slices, rank 0
    "slice": [
        ([(2, 7, 5)], {"dim": 1, "start": 1, "end": 5}),
        ([(2, 7, 5)], {"dim": -1, "start": -3}),
        ([(2, 7, 5)], {"dim": 1, "start": -100, "end": 100}),  # both ends clamp
        ([(2, 7, 5)], {"dim": 1, "start": 1, "step": 2}),
        ([(3, 10)], {"dim": 1, "start": 2, "end": -1, "step": 3}),
        ([(6,)], {"dim": 0, "start": -5, "end": -1, "step": 2}),
        ([(2, 3, 4, 5)], {"dim": 2, "end": -2}),
        ([(2, 1, 4)], {"dim": 1, "end": 1}),  # a size-1 dim kept whole
        ([(4, 6)], {"dim": 0, "start": 5, "end": 9}),  # clamps to nothing
        ([(4, 6)], {"dim": 1, "start": 4, "end": 2}),  # ends before it starts: empty
    ],
    "select": [
        ([(2, 7, 5)], {"dim": 1, "index": 3}),
        ([(2, 7, 5)], {"dim": -1, "index": -1}),
        ([(2, 7, 5)], {"dim": 0, "index": -2}),
        ([(1, 4)], {"dim": 0, "index": 0}),  # a size-1 dim
        ([(2, 3, 4, 5)], {"dim": 2, "index": 3}),
        ([(6,)], {"dim": 0, "index": 5}),  # rank 0
    ],
    "fused_layernorm": [
        ([(2, 3, 6)], {"act1": "gelu", "act1_attrs": {"approximate": "none"}}),
        ([(2, 3, 6), (2, 3, 6)], {"add_before": True}),
        ([(2, 5), (2, 5), (2, 5)], {"add_before": True, "affine": False, "residual": True, "act2": "relu"}),
        ([(3, 4), (3, 4)], {"eps": 0.1, "residual": True, "act2": "gelu", "act2_attrs": {"approximate": "tanh"}}),
        ([(2, 3, 4, 5), (2, 3, 4, 5)], {"dims": 2, "add_before": True, "act1": "relu"}),
    ],
    "fused_groupnorm": [
        ([(2, 6, 3, 5)], {"groups": 3, "act1": "silu"}),
        ([(2, 6, 3, 5), (2, 6, 3, 5)], {"groups": 2, "eps": 1e-3, "residual": True, "act2": "mish"}),
        ([(2, 4, 3, 3), (2, 4, 3, 3)], {"groups": 2, "act1": "leaky_relu", "act1_attrs": {"alpha": 0.1},
                                        "residual": True, "act2": "prelu", "act2_attrs": {"shared": False}}),
    ],
})


# netdsl/ops/recurrent.py: torch's nn.RNN / nn.LSTM / nn.GRU (batch first) in float64 with the case's
# parameters as their state_dict; the initial state (h0, or h0 and c0) as optional inputs
def _recurrent(cell):
    def run(xs, p, a):
        kw = {"nonlinearity": a["nonlinearity"]} if cell == "rnn" else {}
        module = getattr(torch.nn, cell.upper())(xs[0].shape[-1], a["hidden_size"], a["num_layers"], bias=a["bias"],
                                                 batch_first=True, bidirectional=a["bidirectional"],
                                                 dropout=a["dropout"], dtype=torch.float64, **kw).eval()
        module.load_state_dict(p)
        state = (tuple(xs[1:]) if cell == "lstm" else xs[1]) if len(xs) > 1 else None
        with torch.no_grad():
            y, h = module(xs[0], state)
        return (y, *h) if cell == "lstm" else (y, h)
    return run


ORACLES.update({cell: _recurrent(cell) for cell in ("rnn", "lstm", "gru")})
CASES.update({
    "rnn": [([(2, 5, 3)], {"hidden_size": 4}),
            ([(1, 1, 6), (2, 1, 5)], {"hidden_size": 5, "nonlinearity": "relu", "bidirectional": True}),
            ([(3, 4, 2), (2, 3, 3)], {"hidden_size": 3, "num_layers": 2, "bias": False, "dropout": 0.1})],
    "lstm": [([(2, 5, 3)], {"hidden_size": 4}),
             ([(3, 4, 2), (4, 3, 5), (4, 3, 5)], {"hidden_size": 5, "num_layers": 2, "bidirectional": True}),
             ([(1, 1, 3)], {"hidden_size": 2, "bias": False, "dropout": 0.5})],
    "gru": [([(2, 5, 3)], {"hidden_size": 4}),
            ([(3, 4, 2), (4, 3, 5)], {"hidden_size": 5, "num_layers": 2, "bidirectional": True}),
            ([(1, 1, 3), (1, 1, 7)], {"hidden_size": 7, "bias": False, "dropout": 0.2})],
})


def test_oracles_and_cases_cover_the_registry():
    missing = sorted(set(REGISTRY) - set(ORACLES))
    assert not missing, f"ops without a torch oracle in tests/test_ops.py: {missing}"
    assert not sorted(set(ORACLES) - set(REGISTRY)), "oracles for ops that are not in the registry"
    assert set(CASES) == set(REGISTRY), f"ops without cases: {sorted(set(REGISTRY) - set(CASES))}"


def test_every_attribute_is_exercised_with_a_non_default_value():
    untested = []
    for name, op in REGISTRY.items():
        for attr in op.attrs:
            default = None if attr.required else attr.default
            given = [a[attr.name] for _, a in CASES[name] if attr.name in a]
            if not any(v != default and v != (default, default) for v in given):
                untested.append(f"{name}.{attr.name}")
    assert not untested, f"attributes never given a non-default value in CASES: {untested}"


# ---------------------------------------------------------------------------------------------
# running a case
# ---------------------------------------------------------------------------------------------

def _random_input(rng, shape, dtype):
    x = rng.standard_normal(shape) * 3  # wide enough to cross softplus' threshold and relu6's 6
    return x.astype(dtype)


def _random_params(rng, specs, dtype):
    out = {}
    for role, spec in specs.items():
        if role.endswith("var"):
            out[role] = rng.uniform(0.5, 1.5, spec.shape)
        elif role.startswith("slope") or spec.init == "const":
            out[role] = rng.uniform(-0.5, 0.5, spec.shape)
        else:
            out[role] = rng.standard_normal(spec.shape) * 0.5 + (1.0 if spec.init == "ones" else 0.0)
    return {k: v.astype(dtype) for k, v in out.items()}


def oracle(name, xs, params, attrs) -> np.ndarray:
    t = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in params.items()}
    y = ORACLES[name]([torch.from_numpy(x if x.dtype.kind in "biu" else np.asarray(x, np.float64)) for x in xs], t,
                      attrs)  # float inputs in float64; integer ids and boolean masks as they are
    return tuple(r.numpy() for r in y) if isinstance(y, (tuple, list)) else y.numpy()


def assert_close(actual, expected, dtype, what=""):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, torch {expected.shape}"
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype], err_msg=what)


def net_literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        return "(" + ", ".join(net_literal(x) for x in v) + ")"
    return repr(v)


# ops with integer inputs (token ids, ``OpDef.int_inputs``): op name -> attrs -> the ids' exclusive upper bound
ID_BOUNDS = {"embedding": lambda a: a["num_embeddings"]}


def input_dtype(name, i, dtype) -> str:
    return "i64" if i in REGISTRY[name].int_inputs else dtype


def case_input(rng, name, i, shape, dtype, attrs) -> np.ndarray:
    if i in REGISTRY[name].int_inputs:
        return rng.integers(0, ID_BOUNDS[name](attrs), shape)
    return _random_input(rng, shape, DTYPES[dtype])


def one_node_program(name, shapes, attrs, dtype, results: int = 1) -> str:
    """A network of one call of ``name``; its results are outputs y (one) or y0, y1, ... (several)."""
    if REGISTRY[name].constant:  # a parameter read as a value: declared with `param`
        dims = ", ".join(map(str, attrs["shape"]))
        return f"# one {name}\nnetwork one {{\n    param value: [{dims}] = normal\n    output y = value\n}}\n"
    decls = ", ".join(f"x{i}: {input_dtype(name, i, dtype)}[{', '.join(map(str, s))}]" for i, s in enumerate(shapes))
    args = [f"x{i}" for i in range(len(shapes))] + [f"{k}={net_literal(v)}" for k, v in attrs.items()]
    call = f"{name}({', '.join(args)})"
    if results == 1:
        body = f"    output y = {call}"
    else:
        names = ", ".join(f"y{i}" for i in range(results))
        body = f"    {names} = {call}\n    output {names}"
    return f"# one {name}\nnetwork one {{\n    input {decls}\n{body}\n}}\n"


def check_case(name, shapes, kwargs, dtype, seed=0):
    op = REGISTRY[name]
    np_dtype = DTYPES[dtype]
    rng = np.random.default_rng(seed)
    attrs = bind_attrs(op, [], kwargs)
    types = [TensorType(s, input_dtype(name, i, dtype)) for i, s in enumerate(shapes)]
    out_types = op.result_types(types, attrs)
    several = len(out_types) > 1
    xs = [case_input(rng, name, i, s, dtype, attrs) for i, s in enumerate(shapes)]
    params = _random_params(rng, op.params(types, attrs), np_dtype)
    expected = oracle(name, xs, params, attrs)
    expected = expected if several else (expected,)
    what = f"{name}{shapes} {kwargs} {dtype}"

    # 1. the registry reference, called directly
    got = op.reference(xs, params, attrs)
    got = got if several else (got,)
    assert len(got) == len(expected) == len(out_types), f"{what}: {len(got)} results, torch {len(expected)}"
    for g, e, t in zip(got, expected, out_types):
        assert g.dtype == np_dtype, f"{what}: reference computed in {g.dtype}"
        assert g.shape == tuple(t.shape), f"{what}: reference shape {g.shape}, inferred {t}"
        assert_close(g, e, dtype, what)

    # 2. a one-node .net program (fused ops are not part of the language: attributes such as
    #    act1_attrs cannot be written there)
    if op.kind is OpKind.FUSED:
        return
    graph = netdsl.load_source(one_node_program(name, shapes, kwargs, dtype, len(out_types)), "one.net")
    (node,) = graph.nodes
    assert node.op == name and dict(node.attrs) == attrs, what
    weights = {graph_name: params[role] for role, graph_name in node.params.items()}
    outs = netdsl.reference.run(graph, {f"x{i}": x for i, x in enumerate(xs)}, weights, dtype=dtype)
    for i, e in enumerate(expected):
        out = outs[f"y{i}" if several else "y"]
        assert out.dtype == np_dtype
        assert_close(out, e, dtype, what + " (through a .net program)")


CASE_IDS = [(name, i) for name in sorted(CASES) for i in range(len(CASES[name]))]


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name,index", CASE_IDS, ids=[f"{n}-{i}" for n, i in CASE_IDS])
def test_op_matches_torch(name, index, dtype):
    shapes, kwargs = CASES[name][index]
    check_case(name, shapes, kwargs, dtype, seed=index)


def test_rrelu_is_leaky_relu_with_the_mean_slope():
    x = np.linspace(-3, 3, 13)
    rrelu = REGISTRY["rrelu"].reference([x], {}, {"lower": 0.1, "upper": 0.5})
    leaky = REGISTRY["leaky_relu"].reference([x], {}, {"alpha": 0.3})
    np.testing.assert_allclose(rrelu, leaky)
    assert REGISTRY["rrelu"].kernel_act({"lower": 0.1, "upper": 0.5}) == ("leaky_relu", 0.3, 0.0)


def test_prelu_slope_is_per_channel_or_shared():
    types = [TensorType((2, 5, 3, 3))]
    assert REGISTRY["prelu"].params(types, {"shared": False})["weight"].shape == (5,)
    assert REGISTRY["prelu"].params(types, {"shared": True})["weight"].shape == (1,)


def test_softmax_is_stable_for_large_logits():
    x = np.array([[1000.0, 999.0, -1000.0], [-1e4, -1e4, -1e4]], np.float32)
    for name in ("softmax", "log_softmax"):
        got = REGISTRY[name].reference([x], {}, {"dim": -1})
        assert np.isfinite(got).all(), name
        assert_close(got, oracle(name, [x], {}, {"dim": -1}), "f32", name)


# ---------------------------------------------------------------------------------------------
# random shapes (hypothesis)
# ---------------------------------------------------------------------------------------------

dims = st.integers(1, 7)
dtypes = st.sampled_from(sorted(DTYPES))


@HYPOTHESIS
@given(name=st.sampled_from(sorted(ACTIVATION_ORACLES)), shape=st.lists(dims, min_size=1, max_size=4).map(tuple),
       dtype=dtypes, seed=st.integers(0, 2**16), choice=st.integers(0, 3))
def test_activations_on_random_shapes(name, shape, dtype, seed, choice):
    options = [{}] + ACT_ATTRS.get(name, [])
    check_case(name, [shape], options[choice % len(options)], dtype, seed)


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c = groups * draw(st.integers(1, 3))
    oc = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 12))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 12))
    attrs = {"out_channels": oc, "kernel_size": (kh, kw), "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
             "padding": (ph, pw), "dilation": (dh, dw), "groups": groups, "bias": draw(st.booleans())}
    return [(draw(st.integers(1, 3)), c, h, w)], attrs


@HYPOTHESIS
@given(case=conv_cases(), dtype=dtypes)
def test_conv2d_on_random_geometry(case, dtype):
    check_case("conv2d", *case, dtype)


@st.composite
def conv_transpose_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c = groups * draw(st.integers(1, 3))
    oc = groups * draw(st.integers(1, 3))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    op = tuple(draw(st.integers(0, max(s[i], d[i]) - 1)) for i in range(2))  # < stride or < dilation
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    full = ((h - 1) * s[0] + d[0] * (k[0] - 1) + op[0], (w - 1) * s[1] + d[1] * (k[1] - 1) + op[1])
    p = (draw(st.integers(0, min(2, full[0] // 2))), draw(st.integers(0, min(2, full[1] // 2))))  # output >= 1
    attrs = {"out_channels": oc, "kernel_size": k, "stride": s, "padding": p, "output_padding": op, "dilation": d,
             "groups": groups, "bias": draw(st.booleans())}
    return [(draw(st.integers(1, 3)), c, h, w)], attrs


@HYPOTHESIS
@given(case=conv_transpose_cases(), dtype=dtypes)
def test_conv_transpose2d_on_random_geometry(case, dtype):
    check_case("conv_transpose2d", *case, dtype)


@st.composite
def upsample_cases(draw):
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    attrs: dict = {"mode": mode}
    if mode == "bilinear":
        ac = draw(st.sampled_from([None, False, True]))
        if ac is not None:
            attrs["align_corners"] = ac
    if draw(st.booleans()):
        scales = st.sampled_from([0.5, 0.7, 1, 1.25, 1.5, 2, 2.5, 3, 1 / 3])
        sh, sw = draw(scales), draw(scales)
        sh, sw = (sh if h * sh >= 1 else 1), (sw if w * sw >= 1 else 1)  # at least one output row and column
        attrs["scale_factor"] = sh if draw(st.booleans()) and sh == sw else (sh, sw)
    else:
        attrs["size"] = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    return [(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)], attrs


@HYPOTHESIS
@given(case=upsample_cases(), dtype=dtypes)
def test_upsample_on_random_geometry(case, dtype):
    check_case("upsample", *case, dtype)


def test_conv_transpose2d_parameters_follow_torch():
    """Weight layout [C_in, C_out/groups, KH, KW] and fan_in as torch's ConvTranspose2d computes it."""
    op = REGISTRY["conv_transpose2d"]
    for c, oc, k, g in [(4, 6, 3, 1), (6, 4, (2, 3), 2), (3, 3, 1, 3)]:
        attrs = bind_attrs(op, [oc, k], {"groups": g})
        specs = op.params([TensorType((1, c, 5, 5))], attrs)
        module = torch.nn.ConvTranspose2d(c, oc, k, groups=g)
        assert specs["weight"].shape == tuple(module.weight.shape)
        assert specs["bias"].shape == tuple(module.bias.shape)
        assert specs["weight"].fan_in == torch.nn.init._calculate_fan_in_and_fan_out(module.weight)[0]
        assert specs["weight"].init == "kaiming"
    assert set(op.params([TensorType((1, 2, 3, 3))], bind_attrs(op, [2, 3], {"bias": False}))) == {"weight"}


def test_conv_transpose2d_and_upsample_flops():
    ct = REGISTRY["conv_transpose2d"]
    attrs = bind_attrs(ct, [8, 3], {"stride": 2, "groups": 2})
    out = ct.infer([TensorType((2, 4, 5, 6))], attrs).shape
    assert out == (2, 8, 11, 13)
    assert ct.flops([(2, 4, 5, 6)], out, attrs) == 2 * 2 * 4 * 5 * 6 * (8 // 2) * 3 * 3 + 2 * 8 * 11 * 13
    up = REGISTRY["upsample"]
    assert up.flops([(2, 3, 4, 4)], (2, 3, 8, 8), bind_attrs(up, [], {"scale_factor": 2})) == 0
    assert up.flops([(2, 3, 4, 4)], (2, 3, 8, 8), bind_attrs(up, [], {"scale_factor": 2, "mode": "bilinear"})) == \
        7 * 2 * 3 * 8 * 8


def test_conv_transpose2d_and_upsample_symbolic_sizes_agree_with_torch():
    """conv_transpose2d and upsample by a binary-fraction scale keep symbolic H; each size evaluates to
    the size torch gives."""
    from netdsl.ir.dims import SymDim, evaluate

    H = SymDim.symbol("H")
    cases = [("conv_transpose2d", {"out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1,
                                   "output_padding": 1}),
             ("upsample", {"scale_factor": 1.5}), ("upsample", {"scale_factor": 0.25, "mode": "bilinear"}),
             ("upsample", {"scale_factor": (2, 2.5)})]
    for name, kwargs in cases:
        op = REGISTRY[name]
        attrs = bind_attrs(op, [], kwargs)
        sym = op.infer([TensorType((1, 2, H, H))], attrs).shape
        for h in range(4, 40):
            static = op.infer([TensorType((1, 2, h, h))], attrs).shape
            assert tuple(evaluate(d, {"H": h}) for d in sym) == static, (name, kwargs, h)
            x = torch.zeros(1, 2, h, h)
            ref = (_conv_transpose(x, {"weight": torch.zeros(2, 2, 3, 3)}, attrs) if name == "conv_transpose2d"
                   else _upsample(x, attrs))
            assert tuple(ref.shape) == static, (name, kwargs, h)


@st.composite
def pool_cases(draw):
    kind = draw(st.sampled_from(["maxpool2d", "avgpool2d"]))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if kind == "maxpool2d" else (1, 1)
    span = [d[i] * (k[i] - 1) + 1 for i in range(2)]
    h = draw(st.integers(max(1, span[0] - 2 * p[0]), 11))
    w = draw(st.integers(max(1, span[1] - 2 * p[1]), 11))
    attrs = {"kernel_size": k, "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))), "padding": p,
             "ceil_mode": draw(st.booleans())}
    if kind == "maxpool2d":
        attrs["dilation"] = d
    else:
        attrs["count_include_pad"] = draw(st.booleans())
    return kind, [(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)], attrs


@HYPOTHESIS
@given(case=pool_cases(), dtype=dtypes)
def test_pools_on_random_geometry(case, dtype):
    check_case(*case, dtype)


@HYPOTHESIS
@given(shape=st.lists(dims, min_size=1, max_size=4).map(tuple), data=st.data(), dtype=dtypes)
def test_softmax_and_broadcasting_on_random_shapes(shape, data, dtype):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    check_case(data.draw(st.sampled_from(["softmax", "log_softmax"])), [shape], {"dim": dim}, dtype)
    other = tuple(data.draw(st.sampled_from([s, 1])) for s in shape)  # some dims broadcast
    pair = [shape, other] if data.draw(st.booleans()) else [other, shape]
    check_case(data.draw(st.sampled_from(["add", "mul"])), pair, {}, dtype)


# ---------------------------------------------------------------------------------------------
# tensor ops (netdsl/ops/tensor.py): masks the language cannot write, symbolic reshapes, parameters,
# FLOPs, the compiler facts, random shapes
# ---------------------------------------------------------------------------------------------

SDPA = "scaled_dot_product_attention"


def check_sdpa_direct(q, k, v, mask, kwargs, dtype):
    """The registry reference alone against torch, with a boolean mask (no .net program: the language has
    no boolean inputs)."""
    op = REGISTRY[SDPA]
    attrs = bind_attrs(op, [], kwargs)
    types = [TensorType(x.shape, dtype) for x in (q, k, v)] + [TensorType(mask.shape, "bool")]
    out_type = op.infer(types, attrs)
    got = op.reference([q, k, v, mask], {}, attrs)
    assert got.dtype == DTYPES[dtype] and got.shape == out_type.shape
    assert_close(got, oracle(SDPA, [q, k, v, mask], {}, attrs), dtype, f"sdpa mask {mask.shape} {kwargs}")
    return got


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_sdpa_boolean_and_infinite_masks_as_torch(dtype):
    """True = may attend; a row with nothing to attend gives zeros (torch's safe softmax), for a boolean
    mask and for an additive -inf mask alike."""
    rng = np.random.default_rng(0)
    q, k, v = (_random_input(rng, s, DTYPES[dtype]) for s in [(2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 6)])
    keep = rng.random((2, 1, 5, 7)) < 0.6
    keep[:, :, 2] = False
    for mask in (keep, keep[0, 0]):  # [N, 1, L, S] and [L, S]
        assert not check_sdpa_direct(q, k, v, mask, {}, dtype)[:, :, 2].any()
    check_sdpa_direct(q, k, v, keep[1, 0, :1], {}, dtype)  # [1, S]
    check_sdpa_direct(q, k, v, keep[1, :, :, :1], {}, dtype)  # [1, L, 1]
    check_sdpa_direct(q, k, v, keep, {"scale": 0.5}, dtype)
    op = REGISTRY[SDPA]
    additive = np.where(keep, 0.0, -np.inf).astype(DTYPES[dtype])
    got = op.reference([q, k, v, additive], {}, bind_attrs(op, [], {}))
    assert_close(got, oracle(SDPA, [q, k, v, additive], {}, bind_attrs(op, [], {})), dtype)
    assert not got[:, :, 2].any()


def test_sdpa_softmax_is_stable_for_large_scores():
    q = np.full((1, 3, 4), 300.0, np.float32)
    k = np.stack([np.full((3, 4), 300.0), -np.full((3, 4), 300.0)], axis=1).reshape(1, 6, 4).astype(np.float32)
    v = np.arange(6 * 2, dtype=np.float32).reshape(1, 6, 2)
    op = REGISTRY[SDPA]
    attrs = bind_attrs(op, [], {})
    got = op.reference([q, k, v], {}, attrs)
    assert np.isfinite(got).all()
    assert_close(got, oracle(SDPA, [q, k, v], {}, attrs), "f32")


def test_reshape_with_symbolic_dims_agrees_with_torch():
    """The inferred shape of a reshape of a symbolic shape evaluates, for every size, to torch's; element
    counts compare as products of dims (2*N + 2 == 2 * (N + 1))."""
    from netdsl.ir.dims import SymDim, evaluate
    from netdsl.ops.tensor import reshape_reference

    N, T = SymDim.symbol("N"), SymDim.symbol("T")
    op = REGISTRY["reshape"]
    cases = [((N, T, 64), (N, T, 8, -1)), ((N, 6), (-1, 3)), ((N, 6), (N, 2, 3)), ((2 * N + 2, 3), (N + 1, 6)),
             ((N, T, 12), (N, -1, 4)), ((N, 4, 4), (-1, 16)), ((N, T), (T, N)), ((N, 3, T), (N, T, 3)),
             (((N - 1) // 2 + 1, 4), (-1, 2, 2))]
    for shape, target in cases:
        sym = op.infer([TensorType(shape)], bind_attrs(op, [], {"shape": target})).shape
        for n, t in [(1, 1), (2, 5), (3, 127)]:
            env = {"N": n, "T": t}
            concrete = tuple(evaluate(d, env) for d in shape)
            bound = tuple(evaluate(d, env) for d in target)
            x = np.arange(int(np.prod(concrete))).reshape(concrete)
            expected = torch.from_numpy(x).reshape(bound).numpy()
            assert tuple(evaluate(d, env) for d in sym) == expected.shape, (shape, target, env)
            np.testing.assert_array_equal(reshape_reference(x, target, env), expected)


def test_reshape_with_symbolic_dims_in_a_net_program():
    """`reshape(N, T, 8, -1)` names the input's dims; the reference backend binds them when it runs."""
    source = ("network n {\n    input x: f32[N, T, 24]\n"
              "    output y = x -> reshape(N, T, 4, -1) -> transpose(1, 2) -> reshape(N, 4, -1)\n}\n")
    graph = netdsl.load_source(source, "m.net")
    assert str(graph.outputs[0].type) == "f32[N, 4, 6*T]"
    for n, t in [(1, 1), (2, 127)]:
        x = np.random.default_rng(t).standard_normal((n, t, 24)).astype(np.float32)
        y = netdsl.reference.run(graph, {"x": x}, {})["y"]
        np.testing.assert_array_equal(y, torch.from_numpy(x).reshape(n, t, 4, 6).transpose(1, 2).reshape(n, 4, -1))


def test_embedding_parameters_and_type_follow_torch():
    op = REGISTRY["embedding"]
    for num, dim, pad in [(10, 7, None), (5, 3, -1), (4, 2, 0)]:
        attrs = bind_attrs(op, [num, dim], {} if pad is None else {"padding_idx": pad})
        specs = op.params([TensorType((2, 3), "i64")], attrs)
        module = torch.nn.Embedding(num, dim, padding_idx=pad)
        assert set(specs) == set(module.state_dict())
        assert specs["weight"].shape == tuple(module.weight.shape)
        assert specs["weight"].init == "normal"  # N(0, 1), as nn.Embedding (the padding row: see params.py)
        fans = torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
        assert (specs["weight"].fan_in, specs["weight"].fan_out) == fans
        for ids in ("i64", "i32"):
            assert op.infer([TensorType((2, 3), ids)], attrs) == TensorType((2, 3, dim), "f32")


def test_tensor_op_facts():
    """How the compiler treats each tensor op (kind, the dim its kernel needs last, view, launches,
    pointwise): see docs/architecture.md, "One place per fact"."""
    from netdsl.ops.registry import ORDERED

    facts = {name: (REGISTRY[name].kind, REGISTRY[name].axis, REGISTRY[name].view, REGISTRY[name].launches,
                    REGISTRY[name].is_pointwise) for name in TENSOR_ORACLES}
    assert facts == {
        "matmul": (OpKind.OUT_FUSABLE, -1, False, 1, False),
        "reshape": (OpKind.INJECTIVE, ORDERED, True, 0, False),
        "transpose": (OpKind.INJECTIVE, ORDERED, False, 0, False),
        "permute": (OpKind.INJECTIVE, ORDERED, False, 0, False),
        "unsqueeze": (OpKind.INJECTIVE, ORDERED, True, 0, False),
        "squeeze": (OpKind.INJECTIVE, ORDERED, True, 0, False),
        "embedding": (OpKind.INJECTIVE, None, False, 1, False),
        "positional_encoding": (OpKind.INJECTIVE, None, False, 1, True),
        SDPA: (OpKind.REDUCE, -1, False, 1, False),
    }
    assert REGISTRY["matmul"].fused_form is None
    assert {name: REGISTRY[name].int_inputs for name in TENSOR_ORACLES if REGISTRY[name].int_inputs} == \
        {"embedding": (0,)}  # token ids; every other input is floating point
    assert netdsl.ops.lookup("sdpa") is REGISTRY[SDPA]
    assert REGISTRY[SDPA].arity is None and REGISTRY["matmul"].arity == 2


def test_tensor_op_flops():
    mm = REGISTRY["matmul"]
    assert mm.flops([(2, 5, 7), (7, 3)], (2, 5, 3), {}) == 2 * 2 * 5 * 3 * 7
    assert mm.flops([(7,), (7,)], (), {}) == 2 * 7
    sdpa = REGISTRY[SDPA]
    attrs = bind_attrs(sdpa, [], {})
    out = sdpa.infer([TensorType(s) for s in [(2, 4, 5, 8), (2, 4, 7, 8), (2, 4, 7, 6)]], attrs).shape
    assert sdpa.flops([(2, 4, 5, 8), (2, 4, 7, 8), (2, 4, 7, 6)], out, attrs) == \
        2 * 4 * (2 * 5 * 7 * 8 + 5 * 5 * 7 + 2 * 5 * 7 * 6)
    pe = REGISTRY["positional_encoding"]
    assert pe.flops([(2, 5, 8)], (2, 5, 8), bind_attrs(pe, [], {})) == 2 * 5 * 8
    for name in ("reshape", "transpose", "permute", "unsqueeze", "squeeze", "embedding"):
        assert REGISTRY[name].flops([(2, 3)], (3, 2), {}) == 0


def test_positional_encoding_table_is_the_papers():
    from netdsl.ops.sequence import sinusoidal_table

    table = sinusoidal_table(50, 6)
    for t in (0, 1, 7, 49):
        for i in range(3):
            angle = t / 10000 ** (2 * i / 6)
            assert table[t, 2 * i] == pytest.approx(np.sin(angle), abs=1e-12)
            assert table[t, 2 * i + 1] == pytest.approx(np.cos(angle), abs=1e-12)


TENSOR_HYPOTHESIS = settings(HYPOTHESIS, max_examples=40)


@st.composite
def matmul_cases(draw):
    ra, rb = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    n, k, m = draw(dims), draw(dims), draw(dims)
    batch = tuple(draw(st.integers(1, 3)) for _ in range(max(ra, rb, 2) - 2))

    def some(length):  # the last ``length`` batch dims, some broadcast from 1
        return tuple(d if draw(st.booleans()) else 1 for d in batch[len(batch) - length:])

    a = some(ra - 2) + (n, k) if ra >= 2 else (k,)
    b = some(rb - 2) + (k, m) if rb >= 2 else (k,)
    return [a, b]


@TENSOR_HYPOTHESIS
@given(shapes=matmul_cases(), dtype=dtypes, seed=st.integers(0, 2**16))
def test_matmul_on_random_shapes(shapes, dtype, seed):
    check_case("matmul", shapes, {}, dtype, seed)


@st.composite
def sdpa_cases(draw):
    batch = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
    length, s, e, ev = draw(dims), draw(dims), draw(st.integers(1, 9)), draw(st.integers(1, 9))

    def some(tail):  # a suffix of the batch dims, some broadcast from 1, then ``tail``
        kept = batch[draw(st.integers(0, len(batch))):]
        return tuple(d if draw(st.booleans()) else 1 for d in kept) + tail

    shapes = [some((length, e)), some((s, e)), some((s, ev))]
    mask = draw(st.sampled_from(["none", "float", "bool"]))
    kwargs: dict = {}
    if mask == "none" and draw(st.booleans()):
        kwargs["causal"] = True
    if draw(st.booleans()):
        kwargs["scale"] = draw(st.sampled_from([0.1, 0.5, 1.0, 2.0]))
    if mask != "none":  # broadcastable to the attention weights q k^T [..., L, S]
        weights = np.broadcast_shapes(shapes[0][:-2], shapes[1][:-2]) + (length, s)
        shapes.append(tuple(d if draw(st.booleans()) else 1 for d in weights[draw(st.integers(0, len(weights) - 2)):]))
    return shapes, kwargs, mask == "bool"


@TENSOR_HYPOTHESIS
@given(case=sdpa_cases(), dtype=dtypes, seed=st.integers(0, 2**16))
def test_sdpa_on_random_shapes(case, dtype, seed):
    shapes, kwargs, boolean = case
    if not boolean:
        check_case(SDPA, shapes, kwargs, dtype, seed)
        return
    rng = np.random.default_rng(seed)
    q, k, v = (_random_input(rng, s, DTYPES[dtype]) for s in shapes[:3])
    check_sdpa_direct(q, k, v, rng.random(shapes[3]) < 0.7, kwargs, dtype)


def test_global_maxpool_propagates_nan_and_inf_as_torch():
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 5))
    x[0, 1, 2, 3], x[1, 2, 0, 0], x[1, 0] = np.nan, np.inf, -np.inf
    got = REGISTRY["global_maxpool"].reference([x], {}, {})
    want = F.adaptive_max_pool2d(torch.from_numpy(x), 1).numpy()
    np.testing.assert_array_equal(got, want)  # exact: a max rounds nothing; NaN where torch has NaN
    assert np.isnan(got[0, 1, 0, 0]) and got[1, 2, 0, 0] == np.inf and got[1, 0, 0, 0] == -np.inf
