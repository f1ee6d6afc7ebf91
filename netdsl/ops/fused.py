"""Fused ops: what the fusion passes (netdsl.passes.fusion) produce; each is one kernel launch.

Every fused op is an ordinary registry entry (kind FUSED) whose reference composes the parts, so the
verifier and the reference backend run fused graphs unchanged and fused == unfused is testable.

The epilogue
------------
Every fused op ends in the same epilogue, the one the Triton kernels implement
(``kernels/epilogue.py``)::

    acc (+ bias[c]) -> act1 -> (+ residual) -> act2

It is given by five attributes that all fused ops share:

    act1        "none" or the name of an activation of netdsl.ops.activations, e.g. "leaky_relu"
    act1_attrs  that activation's attributes exactly as its node had them, e.g. {"alpha": 0.2}
                ({} for relu); the Triton lowering reads REGISTRY[act1].kernel_act(act1_attrs)
                -> (kernel activation name, alpha, beta) (rrelu becomes leaky_relu there)
    residual    true: the node's LAST input (same type as the output, no broadcasting) is added
    act2        the activation after the residual add ("none" or a name), act2_attrs its attributes

A learned prelu slope is a parameter under role ``slope1`` / ``slope2`` ([C] per channel or [1]
shared; it is the original prelu node's parameter). ``c`` is the channel axis: dim 1 for
fused_conv2d / fused_pointwise / fused_groupnorm, the last dim for fused_linear and
fused_layernorm (the passes only fuse a per-channel prelu where these agree). With act1 = "none"
and residual = false the epilogue is just the bias.

The ops (inputs; attributes besides the epilogue's; parameter roles)
-------------------------------------------------------------------
fused_conv2d     (x, [residual]); conv2d's attributes + bn, bn_eps;
                 weight, bias (iff bias), bn_weight, bn_bias, bn_mean, bn_var (iff bn), slope1, slope2
fused_linear     (x, [residual]); linear's attributes + bn, bn_eps; same roles as fused_conv2d
fused_pointwise  (x, [residual]); bn, bn_eps; bn_weight, bn_bias, bn_mean, bn_var (iff bn), slopes:
                 acc = x (* scale[c] + shift[c] of the inference batchnorm, iff bn)
fused_layernorm  (x, [addend], [residual]); eps, affine, add_before; weight, bias (iff affine), slopes:
                 acc = layernorm(x (+ addend iff add_before))  -- "add & norm"
fused_groupnorm  (x, [residual]); groups, eps; weight, bias, slopes: acc = groupnorm(x)

Parameter roles always name the ORIGINAL graph parameters (``layer1.0.bn1.running_var``), so a
PyTorch-named state_dict loads into a fused graph as it is; passes never touch weight values. A
batchnorm after a conv/linear (bn = true) is folded into its weight and bias by ``fold_batchnorm``
below, the one place of that arithmetic: the references here call it, and the Triton backend calls
it when it packs weights once at compile time.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..ir.graph import ParamSpec
from ..ir.types import TensorType, numel
from . import activations
from .activations import ACTIVATION_BY_NAME
from .nn import CONV_ATTRS, conv2d_reference, conv_padding, groupnorm_reference, layernorm_reference
from .registry import REGISTRY, Attr, OpDef, OpKind, ShapeError, register

FUSED_OPS = ("fused_conv2d", "fused_linear", "fused_pointwise", "fused_layernorm", "fused_groupnorm")

# ---------------------------------------------------------------------------------------------
# batchnorm folding: the one place of this arithmetic (NumPy arrays or torch tensors alike)
# ---------------------------------------------------------------------------------------------


def batchnorm_affine(bn_weight, bn_bias, bn_mean, bn_var, eps: float):
    """Inference batchnorm as a per-channel affine: y = x * scale + shift."""
    scale = bn_weight / (bn_var + eps) ** 0.5
    return scale, bn_bias - bn_mean * scale


def fold_batchnorm(weight, bias, bn_weight, bn_bias, bn_mean, bn_var, eps: float):
    """Fold an inference batchnorm into the preceding conv/linear: returns (weight', bias').

    ``weight`` is [OC, ...] (conv OIHW or linear [out, in]), ``bias`` [OC] or None;
    bn(conv(x, w, b)) == conv(x, w * scale[oc], (b - mean) * scale + beta).
    """
    scale, shift = batchnorm_affine(bn_weight, bn_bias, bn_mean, bn_var, eps)
    w = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    b = shift if bias is None else bias * scale + shift
    return w, b


# ---------------------------------------------------------------------------------------------
# the epilogue: attributes, checks, NumPy meaning, FLOPs, parameters
# ---------------------------------------------------------------------------------------------

EPILOGUE_ATTRS = (
    Attr("act1", "str", "none", doc="activation after the bias (a name from netdsl.ops.activations)"),
    Attr("act1_attrs", "any", {}, doc="act1's attributes, e.g. {alpha=0.2}"),
    Attr("residual", "bool", False, doc="add the last input (same type as the output)"),
    Attr("act2", "str", "none", doc="activation after the residual add"),
    Attr("act2_attrs", "any", {}, doc="act2's attributes"),
)

BN_ATTRS = (
    Attr("bn", "bool", False, doc="a batchnorm follows (folded / applied as a per-channel affine)"),
    Attr("bn_eps", "float", 1e-5, positive=True),
)

BN_ROLES = ("bn_weight", "bn_bias", "bn_mean", "bn_var")


def _check_epilogue(types: Sequence[TensorType], out: TensorType, attrs: Mapping[str, Any], n_main: int) -> None:
    for which in ("act1", "act2"):
        name = attrs[which]
        if name != "none" and name not in ACTIVATION_BY_NAME:
            raise ShapeError(f"{which}={name!r} is not an activation")
    expected = n_main + (1 if attrs["residual"] else 0)
    if len(types) != expected:
        raise ShapeError(f"{len(types)} inputs, expected {expected}")
    if attrs["residual"] and types[-1] != out:
        raise ShapeError(f"residual {types[-1]} must have the output's type {out}")


def apply_epilogue(acc: np.ndarray, attrs: Mapping[str, Any], bias=None, residual=None, slope1=None, slope2=None,
                   channel_axis: int = 1) -> np.ndarray:
    """acc (+ bias[c]) -> act1 -> (+ residual) -> act2: the NumPy meaning of every fused epilogue."""
    y = acc
    if bias is not None:
        shape = [1] * y.ndim
        shape[channel_axis] = -1
        y = y + bias.reshape(shape)
    if attrs["act1"] != "none":
        y = activations.apply(attrs["act1"], y, attrs["act1_attrs"], slope1)
    if attrs["residual"]:
        y = y + residual
    if attrs["act2"] != "none":
        y = activations.apply(attrs["act2"], y, attrs["act2_attrs"], slope2)
    return y


def epilogue_flops(out: tuple[int, ...], attrs: Mapping[str, Any], has_bias: bool) -> int:
    per = int(has_bias) + int(attrs["residual"])
    for which in ("act1", "act2"):
        if attrs[which] != "none":
            per += ACTIVATION_BY_NAME[attrs[which]].flops
    return per * numel(out)


def _slope_specs(out: TensorType, attrs: Mapping[str, Any]) -> dict[str, ParamSpec]:
    """prelu slopes of the epilogue, shaped as the original prelu's parameter."""
    specs = {}
    for i in ("1", "2"):
        if attrs["act" + i] == "prelu":
            specs["slope" + i] = REGISTRY["prelu"].params([out], attrs["act" + i + "_attrs"])["weight"]
    return specs


def _bn_specs(channels: int) -> dict[str, ParamSpec]:
    return {"bn_weight": ParamSpec((channels,), "ones"), "bn_bias": ParamSpec((channels,), "zeros"),
            "bn_mean": ParamSpec((channels,), "zeros"), "bn_var": ParamSpec((channels,), "ones")}


def _residual(xs, attrs):
    return xs[-1] if attrs["residual"] else None


def _folded(params, attrs):
    """(weight, bias) the kernel multiplies with: the batchnorm folded in when there is one."""
    w, b = params["weight"], params.get("bias")
    if attrs["bn"]:
        w, b = fold_batchnorm(w, b, params["bn_weight"], params["bn_bias"], params["bn_mean"], params["bn_var"],
                              attrs["bn_eps"])
    return w, b


# ---------------------------------------------------------------------------------------------
# fused_conv2d: conv (+ folded batchnorm) + epilogue
# ---------------------------------------------------------------------------------------------

def _infer_with_epilogue(base: str):
    """The shape rule of ``base`` applied to the first input, then the epilogue's checks."""
    def infer(types, attrs):
        out = REGISTRY[base].infer(types[:1], attrs)
        _check_epilogue(types, out, attrs, 1)
        return out
    return infer


_conv_infer = _infer_with_epilogue("conv2d")


def _conv_out_hint(types, attrs) -> TensorType:
    """A type with the conv output's rank and channels (all that slope and bias shapes need)."""
    return TensorType((1, attrs["out_channels"], 1, 1), types[0].dtype)


def _conv_params(types, attrs):
    specs = REGISTRY["conv2d"].params(types[:1], attrs)
    if attrs["bn"]:
        specs.update(_bn_specs(attrs["out_channels"]))
    specs.update(_slope_specs(_conv_out_hint(types, attrs), attrs))
    return specs


def _conv_ref(xs, params, attrs):
    w, b = _folded(params, attrs)
    acc = conv2d_reference(xs[0], w, None, attrs["stride"], conv_padding(attrs), attrs["dilation"], attrs["groups"])
    return apply_epilogue(acc, attrs, b, _residual(xs, attrs), params.get("slope1"), params.get("slope2"))


def _conv_flops(ins, out, attrs):
    base = REGISTRY["conv2d"].flops(ins[:1], out, {**attrs, "bias": False})
    return base + epilogue_flops(out, attrs, attrs["bias"] or attrs["bn"])


register(OpDef("fused_conv2d", OpKind.FUSED, _conv_infer, _conv_ref, _conv_flops,
               CONV_ATTRS + BN_ATTRS + EPILOGUE_ATTRS, arity=None, params=_conv_params,
               doc="conv2d (+ folded batchnorm) + epilogue: acc (+ bias) -> act1 -> (+ residual) -> act2"))


# ---------------------------------------------------------------------------------------------
# fused_linear
# ---------------------------------------------------------------------------------------------

_linear_infer = _infer_with_epilogue("linear")


def _linear_params(types, attrs):
    specs = REGISTRY["linear"].params(types[:1], attrs)
    out = types[0].with_shape(types[0].shape[:-1] + (attrs["out_features"],))
    if attrs["bn"]:
        specs.update(_bn_specs(attrs["out_features"]))
    specs.update(_slope_specs(out, attrs))
    return specs


def _linear_ref(xs, params, attrs):
    w, b = _folded(params, attrs)
    return apply_epilogue(xs[0] @ w.T, attrs, b, _residual(xs, attrs), params.get("slope1"), params.get("slope2"),
                          channel_axis=-1)


def _linear_flops(ins, out, attrs):
    return 2 * numel(out) * ins[0][-1] + epilogue_flops(out, attrs, attrs["bias"] or attrs["bn"])


LINEAR_ATTRS = (Attr("out_features", "int", positive=True), Attr("bias", "bool", True))

register(OpDef("fused_linear", OpKind.FUSED, _linear_infer, _linear_ref, _linear_flops,
               LINEAR_ATTRS + BN_ATTRS + EPILOGUE_ATTRS, arity=None, params=_linear_params,
               doc="linear (+ folded batchnorm) + epilogue"))


# ---------------------------------------------------------------------------------------------
# fused_pointwise: (batchnorm as a per-channel affine) + epilogue
# ---------------------------------------------------------------------------------------------

def _pointwise_infer(types, attrs):
    out = types[0]
    if attrs["bn"] and (out.rank < 2 or not isinstance(out.shape[1], int)):
        raise ShapeError("a batchnorm affine needs a static channel dimension (dim 1)")
    _check_epilogue(types, out, attrs, 1)
    return out


def _pointwise_params(types, attrs):
    specs = _bn_specs(types[0].shape[1]) if attrs["bn"] else {}
    specs.update(_slope_specs(types[0], attrs))
    return specs


def _pointwise_ref(xs, params, attrs):
    x = xs[0]
    if attrs["bn"]:
        scale, shift = batchnorm_affine(params["bn_weight"], params["bn_bias"], params["bn_mean"], params["bn_var"],
                                        attrs["bn_eps"])
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x = x * scale.reshape(shape) + shift.reshape(shape)
    return apply_epilogue(x, attrs, None, _residual(xs, attrs), params.get("slope1"), params.get("slope2"))


register(OpDef("fused_pointwise", OpKind.FUSED, _pointwise_infer, _pointwise_ref,
               lambda ins, out, a: 2 * numel(out) * a["bn"] + epilogue_flops(out, a, False),
               BN_ATTRS + EPILOGUE_ATTRS, arity=None, params=_pointwise_params,
               doc="x (* scale + shift of a batchnorm) -> act1 -> (+ residual) -> act2"))


# ---------------------------------------------------------------------------------------------
# fused_layernorm ("add & norm") and fused_groupnorm
# ---------------------------------------------------------------------------------------------

def _ln_infer(types, attrs):
    out = REGISTRY["layernorm"].infer(types[:1], attrs)
    if attrs["add_before"] and (len(types) < 2 or types[1] != out):
        raise ShapeError("add_before needs a second input of the same type as the first")
    _check_epilogue(types, out, attrs, 2 if attrs["add_before"] else 1)
    return out


def _ln_params(types, attrs):
    specs = REGISTRY["layernorm"].params(types[:1], attrs)
    specs.update(_slope_specs(types[0], attrs))
    return specs


def _ln_ref(xs, params, attrs):
    x = xs[0] + xs[1] if attrs["add_before"] else xs[0]
    acc = layernorm_reference(x, params.get("weight"), params.get("bias"), attrs["eps"])
    return apply_epilogue(acc, attrs, None, _residual(xs, attrs), params.get("slope1"), params.get("slope2"),
                          channel_axis=-1)


LN_ATTRS = (Attr("eps", "float", 1e-5, positive=True), Attr("affine", "bool", True),
            Attr("add_before", "bool", False, doc="normalise x + addend (the second input)"))

register(OpDef("fused_layernorm", OpKind.FUSED, _ln_infer, _ln_ref,
               lambda ins, out, a: (7 + a["add_before"]) * numel(out) + epilogue_flops(out, a, False),
               LN_ATTRS + EPILOGUE_ATTRS, arity=None, params=_ln_params,
               doc="layernorm(x (+ addend)) -> act1 -> (+ residual) -> act2"))


_gn_infer = _infer_with_epilogue("groupnorm")


def _gn_params(types, attrs):
    specs = REGISTRY["groupnorm"].params(types[:1], attrs)
    specs.update(_slope_specs(types[0], attrs))
    return specs


def _gn_ref(xs, params, attrs):
    acc = groupnorm_reference(xs[0], params["weight"], params["bias"], attrs["groups"], attrs["eps"])
    return apply_epilogue(acc, attrs, None, _residual(xs, attrs), params.get("slope1"), params.get("slope2"))


register(OpDef("fused_groupnorm", OpKind.FUSED, _gn_infer, _gn_ref,
               lambda ins, out, a: 7 * numel(out) + epilogue_flops(out, a, False),
               (Attr("groups", "int", positive=True), Attr("eps", "float", 1e-5, positive=True)) + EPILOGUE_ATTRS,
               arity=None, params=_gn_params, doc="groupnorm(x) -> act1 -> (+ residual) -> act2"))
