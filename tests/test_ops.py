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
    "hardsigmoid": lambda x, a, s: F.hardsigmoid(x),
    "mish": lambda x, a, s: F.mish(x),
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
    y = F.layer_norm(x, x.shape[-1:], p.get("weight"), p.get("bias"), a["eps"])
    return _epilogue(y, xs, p, a, channel_axis=-1)


def _fused_groupnorm(xs, p, a):
    y = F.group_norm(xs[0], a["groups"], p["weight"], p["bias"], a["eps"])
    return _epilogue(y, xs, p, a)


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
    "batchnorm": lambda xs, p, a: _bn(xs[0], p["running_mean"], p["running_var"], p["weight"], p["bias"], a["eps"]),
    "layernorm": lambda xs, p, a: F.layer_norm(xs[0], xs[0].shape[-1:], p.get("weight"), p.get("bias"), a["eps"]),
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
}

CASES: dict[str, list[tuple[list[tuple[int, ...]], dict]]] = {
    name: [([s], {}) for s in ACT_SHAPES] + [([s], a) for a in ACT_ATTRS.get(name, []) for s in ACT_SHAPES[:3]]
    for name in ACTIVATION_ORACLES
}
CASES.update({
    "conv2d": [
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
    "batchnorm": [([(2, 3, 4, 5)], {}), ([(4, 3)], {"eps": 1e-3}), ([(1, 1, 1, 1)], {}), ([(2, 5, 7)], {"eps": 0.1})],
    "layernorm": [([(2, 3, 6)], {}), ([(4, 5)], {"eps": 1e-3}), ([(3, 7)], {"affine": False}), ([(1, 2)], {})],
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
    "fused_layernorm": [
        ([(2, 3, 6)], {"act1": "gelu", "act1_attrs": {"approximate": "none"}}),
        ([(2, 3, 6), (2, 3, 6)], {"add_before": True}),
        ([(2, 5), (2, 5), (2, 5)], {"add_before": True, "affine": False, "residual": True, "act2": "relu"}),
        ([(3, 4), (3, 4)], {"eps": 0.1, "residual": True, "act2": "gelu", "act2_attrs": {"approximate": "tanh"}}),
    ],
    "fused_groupnorm": [
        ([(2, 6, 3, 5)], {"groups": 3, "act1": "silu"}),
        ([(2, 6, 3, 5), (2, 6, 3, 5)], {"groups": 2, "eps": 1e-3, "residual": True, "act2": "mish"}),
        ([(2, 4, 3, 3), (2, 4, 3, 3)], {"groups": 2, "act1": "leaky_relu", "act1_attrs": {"alpha": 0.1},
                                        "residual": True, "act2": "prelu", "act2_attrs": {"shared": False}}),
    ],
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
    y = ORACLES[name]([torch.from_numpy(np.asarray(x, np.float64)) for x in xs], t, attrs)
    return y.numpy()


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


def one_node_program(name, shapes, attrs, dtype) -> str:
    decls = ", ".join(f"x{i}: {dtype}[{', '.join(map(str, s))}]" for i, s in enumerate(shapes))
    args = [f"x{i}" for i in range(len(shapes))] + [f"{k}={net_literal(v)}" for k, v in attrs.items()]
    return f"# one {name}\nnetwork one {{\n    input {decls}\n    output y = {name}({', '.join(args)})\n}}\n"


def check_case(name, shapes, kwargs, dtype, seed=0):
    op = REGISTRY[name]
    np_dtype = DTYPES[dtype]
    rng = np.random.default_rng(seed)
    attrs = bind_attrs(op, [], kwargs)
    types = [TensorType(s, dtype) for s in shapes]
    out_type = op.infer(types, attrs)
    xs = [_random_input(rng, s, np_dtype) for s in shapes]
    params = _random_params(rng, op.params(types, attrs), np_dtype)
    expected = oracle(name, xs, params, attrs)
    what = f"{name}{shapes} {kwargs} {dtype}"

    # 1. the registry reference, called directly
    got = op.reference(xs, params, attrs)
    assert got.dtype == np_dtype, f"{what}: reference computed in {got.dtype}"
    assert got.shape == tuple(out_type.shape), f"{what}: reference shape {got.shape}, inferred {out_type}"
    assert_close(got, expected, dtype, what)

    # 2. a one-node .net program (fused ops are not part of the language: attributes such as
    #    act1_attrs cannot be written there)
    if op.kind is OpKind.FUSED:
        return
    graph = netdsl.load_source(one_node_program(name, shapes, kwargs, dtype), "one.net")
    (node,) = graph.nodes
    assert node.op == name and dict(node.attrs) == attrs, what
    weights = {graph_name: params[role] for role, graph_name in node.params.items()}
    out = netdsl.reference.run(graph, {f"x{i}": x for i, x in enumerate(xs)}, weights, dtype=dtype)["y"]
    assert out.dtype == np_dtype
    assert_close(out, expected, dtype, what + " (through a .net program)")


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
