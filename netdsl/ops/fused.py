"""Fused ops: what the fusion passes (netdsl.passes.fusion) produce; each is one kernel launch.

Every fused op is an ordinary registry entry (kind FUSED) whose reference composes the parts, so the
verifier and the reference backend run fused graphs unchanged and fused == unfused is testable. Each
ends in the one epilogue of ``netdsl.ops.epilogue`` (``acc (+ bias[c]) -> act1 -> (+ residual) ->
act2``), and each is DERIVED from the op it is named after (its ``fused_form``), so a new op with an
epilogue is one registry entry:

- ``fused_<op>`` for an OUT_FUSABLE op (conv2d, linear, ...): the op without its bias, then the
  epilogue with the bias. An op whose weight is [out, ...] (``folds_batchnorm``) also gets
  ``bn``/``bn_eps``: a following batchnorm folded into weight and bias (``fold_batchnorm`` in nn.py,
  the one place of that arithmetic, also called by the Triton backend when it packs weights).
  Inputs (x, [residual]); parameter roles: the op's, bn_weight, bn_bias, bn_mean, bn_var (iff bn),
  slope1, slope2.
- ``fused_<norm>`` for a NORM op (layernorm, groupnorm): the norm, then the epilogue; a norm with
  ``absorbs_add`` also gets ``add_before``: it normalises x + addend ("add & norm").
  Inputs (x, [addend], [residual]).
- ``fused_pointwise``: x (* scale[c] + shift[c] of an inference batchnorm, iff bn) then the epilogue;
  what a batchnorm not after a conv, or a chain of activations and adds, becomes.

Parameter roles always name the ORIGINAL graph parameters (``layer1.0.bn1.running_var``), so a
PyTorch-named state_dict loads into a fused graph as it is; passes never touch weight values.
"""

from __future__ import annotations

from ..ir.graph import ParamSpec
from ..ir.types import numel
from .epilogue import ATTRS as EPILOGUE_ATTRS
from .epilogue import Epilogue
from .nn import batchnorm_affine, channel_affine, fold_batchnorm
from .registry import REGISTRY, Attr, OpDef, OpKind, ShapeError, register

BN_ATTRS = (
    Attr("bn", "bool", False, doc="a batchnorm follows (folded / applied as a per-channel affine)"),
    Attr("bn_eps", "float", 1e-5, positive=True),
)
# a batchnorm's parameter roles -> their roles inside a fused node
BN_ROLES = {"weight": "bn_weight", "bias": "bn_bias", "running_mean": "bn_mean", "running_var": "bn_var"}
ADD_BEFORE = Attr("add_before", "bool", False, doc="normalise x + addend (the second input)")


def _bn_specs(channels: int) -> dict[str, ParamSpec]:
    return {"bn_weight": ParamSpec((channels,), "ones"), "bn_bias": ParamSpec((channels,), "zeros"),
            "bn_mean": ParamSpec((channels,), "zeros"), "bn_var": ParamSpec((channels,), "ones")}


def _bn_affine(params, attrs):
    return batchnorm_affine(params["bn_weight"], params["bn_bias"], params["bn_mean"], params["bn_var"],
                            attrs["bn_eps"])


def _residual(xs, attrs):
    return xs[-1] if attrs["residual"] else None


def _slopes(params) -> dict:
    return {"slope1": params.get("slope1"), "slope2": params.get("slope2")}


def _slope_numel(numels) -> int:
    return numels.get("slope1", 0) + numels.get("slope2", 0)


def _in_place_residual(attrs, n_inputs) -> tuple[int, ...]:
    return (n_inputs - 1,) if attrs["residual"] else ()


# ---------------------------------------------------------------------------------------------
# fused_<op> for OUT_FUSABLE ops: op without bias -> epilogue with the (batchnorm-folded) bias
# ---------------------------------------------------------------------------------------------

def folded_weight_and_bias(params, attrs):
    """(weight, bias) the kernel multiplies with: the batchnorm folded in when there is one."""
    w, b = params["weight"], params.get("bias")
    if attrs.get("bn"):
        scale_shift = (params["bn_weight"], params["bn_bias"], params["bn_mean"], params["bn_var"])
        w, b = fold_batchnorm(w, b, *scale_shift, attrs["bn_eps"])
    return w, b


def register_out_fused(base: OpDef) -> OpDef:
    """``fused_<base>``: ``base`` (a conv, a linear, ...) + (folded batchnorm) + epilogue."""
    extra = BN_ATTRS if base.folds_batchnorm else ()
    no_bias = {"bias": False}

    def infer(types, attrs):
        out = base.infer(types[:1], attrs)
        Epilogue.of(attrs).check(types, out, 1)
        return out

    def params(types, attrs):
        specs = base.params(types[:1], attrs)
        if attrs.get("bn"):
            specs.update(_bn_specs(specs["weight"].shape[0]))
        specs.update(Epilogue.of(attrs).slope_specs(base.infer(types[:1], attrs)))
        return specs

    def reference(xs, params, attrs):
        w, b = folded_weight_and_bias(params, attrs)
        acc = base.reference(xs[:1], {"weight": w}, {**attrs, **no_bias})
        axis = base.axis_of(attrs, acc.ndim)
        return Epilogue.of(attrs).apply(acc, b, _residual(xs, attrs), channel_axis=axis, **_slopes(params))

    def flops(ins, out, attrs):
        has_bias = attrs["bias"] or attrs.get("bn", False)
        return base.flops(ins[:1], out, {**attrs, **no_bias}) + Epilogue.of(attrs).flops(out, has_bias)

    def packed_numel(attrs, numels):
        # the packed weight, one bias vector (bias and batchnorm folded together), the slopes
        vector = numels.get("bias") or numels.get("bn_weight", 0)
        return numels["weight"] + vector + _slope_numel(numels)

    return register(OpDef(
        base.fused_form, OpKind.FUSED, infer, reference, flops, base.attrs + extra + EPILOGUE_ATTRS, arity=None,
        params=params, doc=f"{base.name} (+ folded batchnorm) + epilogue: acc (+ bias) -> act1 -> (+ residual) -> act2",
        axis=base.axis, fused_form=base.fused_form, base=base.name, reorders_features=base.reorders_features,
        in_place=_in_place_residual, launches=base.launches, packed_numel=packed_numel))


# ---------------------------------------------------------------------------------------------
# fused_<norm> for NORM ops: norm(x (+ addend)) -> epilogue
# ---------------------------------------------------------------------------------------------

def register_norm_fused(base: OpDef) -> OpDef:
    """``fused_<base>``: the normalisation (of x + addend, iff add_before) then the epilogue."""
    extra = (ADD_BEFORE,) if base.absorbs_add else ()

    def main_inputs(attrs) -> int:
        return 2 if attrs.get("add_before") else 1

    def infer(types, attrs):
        out = base.infer(types[:1], attrs)
        if attrs.get("add_before") and (len(types) < 2 or types[1] != out):
            raise ShapeError("add_before needs a second input of the same type as the first")
        Epilogue.of(attrs).check(types, out, main_inputs(attrs))
        return out

    def params(types, attrs):
        specs = base.params(types[:1], attrs)
        specs.update(Epilogue.of(attrs).slope_specs(types[0]))
        return specs

    def reference(xs, params, attrs):
        x = xs[0] + xs[1] if attrs.get("add_before") else xs[0]
        own = {k: v for k, v in params.items() if k not in ("slope1", "slope2")}
        acc = base.reference([x], own, attrs)
        axis = base.axis_of(attrs, acc.ndim)
        return Epilogue.of(attrs).apply(acc, None, _residual(xs, attrs), channel_axis=axis, **_slopes(params))

    def flops(ins, out, attrs):
        return (base.flops(ins[:1], out, attrs) + numel(out) * int(attrs.get("add_before", False))
                + Epilogue.of(attrs).flops(out, False))

    return register(OpDef(
        base.fused_form, OpKind.FUSED, infer, reference, flops, base.attrs + extra + EPILOGUE_ATTRS, arity=None,
        params=params, doc=f"{base.name}(x{' (+ addend)' if extra else ''}) -> act1 -> (+ residual) -> act2",
        axis=base.axis, fused_form=base.fused_form, base=base.name, in_place=_in_place_residual,
        launches=base.launches))


# ---------------------------------------------------------------------------------------------
# fused_pointwise: (batchnorm as a per-channel affine) + epilogue
# ---------------------------------------------------------------------------------------------

def _pointwise_infer(types, attrs):
    out = types[0]
    if attrs["bn"] and (out.rank < 2 or not isinstance(out.shape[1], int)):
        raise ShapeError("a batchnorm affine needs a static channel dimension (dim 1)")
    Epilogue.of(attrs).check(types, out, 1)
    return out


def _pointwise_params(types, attrs):
    specs = _bn_specs(types[0].shape[1]) if attrs["bn"] else {}
    specs.update(Epilogue.of(attrs).slope_specs(types[0]))
    return specs


def _pointwise_ref(xs, params, attrs):
    x = channel_affine(xs[0], *_bn_affine(params, attrs)) if attrs["bn"] else xs[0]
    return Epilogue.of(attrs).apply(x, None, _residual(xs, attrs), **_slopes(params))


register(OpDef("fused_pointwise", OpKind.FUSED, _pointwise_infer, _pointwise_ref,
               lambda ins, out, a: 2 * numel(out) * a["bn"] + Epilogue.of(a).flops(out, False),
               BN_ATTRS + EPILOGUE_ATTRS, arity=None, params=_pointwise_params,
               doc="x (* scale + shift of a batchnorm) -> act1 -> (+ residual) -> act2",
               axis=1, fused_form="fused_pointwise", pointwise=True,
               # a batchnorm is read as two vectors: scale and shift
               packed_numel=lambda a, numels: 2 * numels.get("bn_weight", 0) + _slope_numel(numels)))


# every op that names a fused form gets it derived here (after nn, activations and the other op files)
for _op in list(REGISTRY.values()):
    if _op.fused_form is None or _op.fused_form in REGISTRY:
        continue
    if _op.kind is OpKind.OUT_FUSABLE:
        register_out_fused(_op)
    elif _op.kind is OpKind.NORM:
        register_norm_fused(_op)

FUSED_OPS = tuple(name for name, op in REGISTRY.items() if op.kind is OpKind.FUSED)
