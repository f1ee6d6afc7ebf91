"""Activations: one table entry each.

An entry gives the NumPy meaning (``fn``), its attributes, FLOPs per element, the Triton epilogue's
name and scalars for it (``kernel``: attrs -> (name, alpha, beta); see ``netdsl.kernels.activations``),
and which initialisation a conv/linear feeding it gets (He for the ReLU family, Glorot for the
saturating ones). The reference backend, the fusion passes and the Triton lowering all read this table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..ir.graph import ParamSpec
from .registry import Attr, OpDef, OpKind, ShapeError, no_params, register


@dataclass(frozen=True)
class Activation:
    name: str
    fn: Callable[..., np.ndarray]  # fn(x, attrs, slope) -> y; slope only for prelu
    kernel: Callable[[Mapping[str, Any]], tuple[str, float, float]]
    attrs: tuple[Attr, ...] = ()
    flops: int = 1
    init: str = "kaiming"
    aliases: tuple[str, ...] = ()
    params: Callable = no_params  # learned parameters (prelu's slope), as OpDef.params
    axis: Any = None  # as OpDef.axis: the dim its parameters run along (None: any layout)
    check: Callable[[Mapping[str, Any]], None] | None = None  # rules between attributes; raises ShapeError


def _gelu(x, a, _):
    # Python floats (not np.sqrt's float64 scalars), so that float32 stays float32
    if a["approximate"] == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))))
    from scipy import special  # here, not at import: scipy costs a third of a second of start-up

    return 0.5 * x * (1 + special.erf(x / math.sqrt(2)))


def _softplus(x, a, _):
    beta, threshold = a["beta"], a["threshold"]
    return np.where(x * beta > threshold, x, np.log1p(np.exp(np.minimum(x * beta, threshold))) / beta)


def _sigmoid(x):
    from scipy import special  # here, not at import: scipy costs a third of a second of start-up

    return special.expit(x)


def _prelu_params(types, attrs):
    """One learned slope per channel (dim 1), or one shared; 0.25 as torch's PReLU."""
    t = types[0]
    if attrs["shared"] or t.rank < 2:
        return {"weight": ParamSpec((1,), "const", value=0.25)}
    c = t.shape[1]
    if not isinstance(c, int):
        raise ShapeError("prelu needs a static channel dimension (dim 1)")
    return {"weight": ParamSpec((c,), "const", value=0.25)}


def _prelu_axis(attrs):
    return None if attrs["shared"] else 1


def _prelu(x, a, slope):
    # slope: [C] per channel (dim 1 of x) or [1] shared
    shape = [1] * x.ndim
    if x.ndim >= 2:
        shape[1] = slope.shape[0]
    s = slope.reshape(shape) if slope.shape[0] != 1 else slope.reshape(())
    return np.where(x >= 0, x, s * x)


def _hardsigmoid(x, a, _):
    """max(0, min(1, alpha * x + beta)), computed as alpha * (x + beta / alpha): the sum is exact near the
    zero at x = -beta / alpha (torch's x + 3 for alpha = 1/6, beta = 1/2), so small results keep their
    relative accuracy in float32, as the kernel's (see ``_hardsigmoid_kernel``)."""
    alpha, beta = a["alpha"], a["beta"]
    if alpha == 0:
        return np.full_like(x, min(max(beta, 0.0), 1.0))
    return np.clip((x + beta / alpha) * alpha, 0, 1)


def _hardsigmoid_kernel(a) -> tuple[str, float, float]:
    """The kernel takes (alpha, beta / alpha), the offset whose sum with x is exact near the zero (3.0 for
    torch's defaults, 2.5 for ONNX's); a zero slope is a constant, an ``affine`` with scale 0."""
    alpha, beta = a["alpha"], a["beta"]
    if alpha == 0:
        return ("affine", 0.0, min(max(beta, 0.0), 1.0))
    return ("hardsigmoid", alpha, beta / alpha)


def _hardtanh_check(a) -> None:
    if a["min_val"] > a["max_val"]:
        raise ShapeError(f"hardtanh min_val={a['min_val']} is greater than max_val={a['max_val']}",
                         hint="the output is clamped to [min_val, max_val]: give min_val <= max_val", arg="max_val")


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

ACTIVATIONS: tuple[Activation, ...] = (
    Activation("relu", lambda x, a, _: np.maximum(x, 0), lambda a: ("relu", 0.0, 0.0)),
    Activation("relu6", lambda x, a, _: np.clip(x, 0, 6), lambda a: ("relu6", 0.0, 0.0), flops=2),
    Activation(
        "leaky_relu",
        lambda x, a, _: np.where(x >= 0, x, a["alpha"] * x),
        lambda a: ("leaky_relu", a["alpha"], 0.0),
        attrs=(Attr("alpha", "float", 0.01, doc="negative slope"),),
        flops=2,
    ),
    Activation("prelu", _prelu, lambda a: ("prelu", 0.0, 0.0),
               attrs=(Attr("shared", "bool", False, doc="one learned slope for all channels"),), flops=2,
               params=_prelu_params, axis=_prelu_axis),
    Activation(
        "rrelu",  # at inference a leaky ReLU with the mean slope
        lambda x, a, _: np.where(x >= 0, x, (a["lower"] + a["upper"]) / 2 * x),
        lambda a: ("leaky_relu", (a["lower"] + a["upper"]) / 2, 0.0),
        attrs=(Attr("lower", "float", 1 / 8), Attr("upper", "float", 1 / 3)),
        flops=2,
    ),
    Activation(
        "elu",
        lambda x, a, _: np.where(x > 0, x, a["alpha"] * np.expm1(np.minimum(x, 0))),
        lambda a: ("elu", a["alpha"], 0.0),
        attrs=(Attr("alpha", "float", 1.0),),
        flops=4,
    ),
    Activation(
        "selu",
        lambda x, a, _: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))),
        lambda a: ("selu", 0.0, 0.0),
        flops=5,
        init="xavier",
    ),
    Activation("sigmoid", lambda x, a, _: _sigmoid(x), lambda a: ("sigmoid", 0.0, 0.0), flops=4, init="xavier"),
    Activation("tanh", lambda x, a, _: np.tanh(x), lambda a: ("tanh", 0.0, 0.0), flops=4, init="xavier"),
    Activation("softsign", lambda x, a, _: x / (1 + np.abs(x)), lambda a: ("softsign", 0.0, 0.0), flops=3,
               init="xavier"),
    Activation(
        "softplus",
        _softplus,
        lambda a: ("softplus", a["beta"], a["threshold"]),
        attrs=(Attr("beta", "float", 1.0, positive=True), Attr("threshold", "float", 20.0)),
        flops=5,
    ),
    Activation(
        "gelu",
        _gelu,
        lambda a: ("gelu_tanh" if a["approximate"] == "tanh" else "gelu", 0.0, 0.0),
        attrs=(Attr("approximate", "str", "none", choices=("none", "tanh")),),
        flops=8,
    ),
    Activation("silu", lambda x, a, _: x * _sigmoid(x), lambda a: ("silu", 0.0, 0.0), flops=5, aliases=("swish",)),
    Activation("hardswish", lambda x, a, _: x * np.clip(x + 3, 0, 6) / 6, lambda a: ("hardswish", 0.0, 0.0), flops=4),
    Activation(
        "hardsigmoid",  # torch's defaults (ONNX's HardSigmoid defaults to alpha=0.2)
        _hardsigmoid,
        _hardsigmoid_kernel,
        attrs=(Attr("alpha", "float", 1 / 6, doc="y = max(0, min(1, alpha * x + beta))"),
               Attr("beta", "float", 0.5, doc="y = max(0, min(1, alpha * x + beta))")),
        flops=3,
    ),
    Activation(
        "hardtanh",
        lambda x, a, _: np.clip(x, a["min_val"], a["max_val"]),
        lambda a: ("hardtanh", a["min_val"], a["max_val"]),
        attrs=(Attr("min_val", "float", -1.0, doc="y = min(max(x, min_val), max_val)"),
               Attr("max_val", "float", 1.0, doc="y = min(max(x, min_val), max_val)")),
        flops=2,
        init="xavier",
        check=_hardtanh_check,
    ),
    Activation(
        "mish",
        lambda x, a, _: x * np.tanh(_softplus(x, {"beta": 1.0, "threshold": 20.0}, None)),
        lambda a: ("mish", 0.0, 0.0),
        flops=8,
    ),
    Activation(  # y = scale * x + shift: what the language makes of `x * 0.125`, `x / 8`, `1 - x`, `-x`, ...
        "affine",
        lambda x, a, _: a["scale"] * x + a["shift"],
        lambda a: ("affine", a["scale"], a["shift"]),
        attrs=(Attr("scale", "float", 1.0, doc="y = scale * x + shift"),
               Attr("shift", "float", 0.0, doc="y = scale * x + shift")),
        flops=2,
        init="kaiming",
    ),
)


def _same_type(types, attrs):
    return types[0]


def _checked_same_type(check: Callable[[Mapping[str, Any]], None]):
    def infer(types, attrs):
        check(attrs)
        return types[0]
    return infer


def register_activation(act: Activation) -> OpDef:
    """Make ``act`` an op: the reference backend, the fusion passes (as an epilogue activation) and the
    Triton backend (through ``act.kernel``) all take it from this one entry."""
    def reference(xs, params, attrs, _act=act):
        return _act.fn(xs[0], attrs, params.get("weight"))

    return register(
        OpDef(
            name=act.name,
            kind=OpKind.ELEMENTWISE,
            infer=_same_type if act.check is None else _checked_same_type(act.check),
            reference=reference,
            flops=lambda ins, out, attrs, _f=act.flops: _f * int(np.prod(out)),
            attrs=act.attrs,
            params=act.params,
            kernel_act=act.kernel,
            init_for_producer=act.init,
            axis=act.axis,
            doc=f"activation `{act.name}`",
        ),
        aliases=act.aliases,
    )


for _act in ACTIVATIONS:
    register_activation(_act)
