"""The epilogue: what every fused op does after its main computation, described once.

::

    acc (+ bias[c]) -> act1 -> (+ residual) -> act2

This one class is read by everything that deals with an epilogue: the fusion passes grow it
(``then_activation``, ``then_residual``), a fused node stores it as five attributes (``attrs``,
``of``), the fused ops' NumPy references apply it (``apply``), the cost model counts it (``flops``),
parameter inference shapes its prelu slopes (``slope_specs``), and the Triton lowering turns it into
the kernels' arguments (``kernel_acts``: the name, alpha and beta of each activation as
``netdsl.kernels.activations`` computes it; rrelu becomes leaky_relu there).

The attributes (shared by every fused op, see ``ATTRS``):

    act1        "none" or the name of an activation, e.g. "leaky_relu"
    act1_attrs  that activation's attributes exactly as its node had them, e.g. {"alpha": 0.2}
    residual    true: the node's LAST input (the output's type, no broadcasting) is added
    act2        the activation after the residual add ("none" or a name), act2_attrs its attributes

A learned prelu slope is a parameter under role ``slope1`` / ``slope2`` (the original prelu node's
parameter, [C] per channel or [1] shared). ``c`` is the fused op's ``axis`` (its registry entry).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from ..ir.graph import ParamSpec
from ..ir.types import TensorType, numel
from .registry import REGISTRY, Attr, ShapeError

ATTRS = (
    Attr("act1", "str", "none", doc="activation after the bias (a name from netdsl.ops.activations)"),
    Attr("act1_attrs", "any", {}, doc="act1's attributes, e.g. {alpha=0.2}"),
    Attr("residual", "bool", False, doc="add the last input (same type as the output)"),
    Attr("act2", "str", "none", doc="activation after the residual add"),
    Attr("act2_attrs", "any", {}, doc="act2's attributes"),
)
NAMES = tuple(a.name for a in ATTRS)


@dataclass(frozen=True)
class Epilogue:
    act1: str = "none"
    act1_attrs: Mapping[str, Any] = field(default_factory=dict)
    residual: bool = False
    act2: str = "none"
    act2_attrs: Mapping[str, Any] = field(default_factory=dict)

    # -- as node attributes ------------------------------------------------------------------

    @staticmethod
    def of(attrs: Mapping[str, Any]) -> "Epilogue":
        """The epilogue a node has (a node without epilogue attributes has the empty one)."""
        if "act1" not in attrs:
            return Epilogue()
        return Epilogue(attrs["act1"], dict(attrs["act1_attrs"]), attrs["residual"], attrs["act2"],
                        dict(attrs["act2_attrs"]))

    def attrs(self) -> dict[str, Any]:
        return {"act1": self.act1, "act1_attrs": dict(self.act1_attrs), "residual": self.residual,
                "act2": self.act2, "act2_attrs": dict(self.act2_attrs)}

    @property
    def empty(self) -> bool:
        return self.act1 == "none" and not self.residual and self.act2 == "none"

    def activations(self) -> tuple[tuple[str, str, Mapping[str, Any]], ...]:
        """(which, name, attrs) of each activation present: which is "1" or "2"."""
        return tuple((i, name, a) for i, name, a in (("1", self.act1, self.act1_attrs),
                                                      ("2", self.act2, self.act2_attrs)) if name != "none")

    # -- growth (the fusion passes) ------------------------------------------------------------

    def then_activation(self, name: str, attrs: Mapping[str, Any]) -> tuple["Epilogue", str] | None:
        """This epilogue followed by an activation, and the slot it took ("1" or "2"); None: no room."""
        if self.act1 == "none" and not self.residual:
            return replace(self, act1=name, act1_attrs=dict(attrs)), "1"
        if self.act2 == "none":
            return replace(self, act2=name, act2_attrs=dict(attrs)), "2"
        return None

    def then_residual(self) -> "Epilogue | None":
        if self.residual or self.act2 != "none":
            return None
        return replace(self, residual=True)

    # -- meaning, checks, cost, parameters --------------------------------------------------------

    def check(self, types, out: TensorType, n_main: int) -> None:
        """Shape-rule checks of a fused node with ``n_main`` inputs before the residual."""
        for which, name, _ in self.activations():
            if not (name in REGISTRY and REGISTRY[name].is_activation):
                raise ShapeError(f"act{which}={name!r} is not an activation")
        expected = n_main + int(self.residual)
        if len(types) != expected:
            raise ShapeError(f"{len(types)} inputs, expected {expected}")
        if self.residual and types[-1] != out:
            raise ShapeError(f"residual {types[-1]} must have the output's type {out}")

    def apply(self, acc: np.ndarray, bias=None, residual=None, slope1=None, slope2=None,
              channel_axis: int = 1) -> np.ndarray:
        """acc (+ bias[c]) -> act1 -> (+ residual) -> act2: the NumPy meaning."""
        y = acc
        if bias is not None:
            shape = [1] * y.ndim
            shape[channel_axis] = -1
            y = y + bias.reshape(shape)
        slopes = {"1": slope1, "2": slope2}
        if self.act1 != "none":
            y = _activation(self.act1, y, self.act1_attrs, slopes["1"])
        if self.residual:
            y = y + residual
        if self.act2 != "none":
            y = _activation(self.act2, y, self.act2_attrs, slopes["2"])
        return y

    def flops(self, out: tuple[int, ...], has_bias: bool) -> int:
        per = int(has_bias) + int(self.residual)
        for _, name, attrs in self.activations():
            per += REGISTRY[name].flops([out], out, attrs) // max(numel(out), 1)
        return per * numel(out)

    def slope_specs(self, out: TensorType) -> dict[str, ParamSpec]:
        """The learned activation parameters (prelu slopes), shaped as the original node's."""
        specs = {}
        for which, name, attrs in self.activations():
            spec = REGISTRY[name].params([out], attrs).get("weight")
            if spec is not None:
                specs["slope" + which] = spec
        return specs

    def kernel_acts(self) -> dict[str, tuple[str, float, float]]:
        """{which: (kernel activation name, alpha, beta)} as the Triton epilogue computes each."""
        return {which: REGISTRY[name].kernel_act(attrs) for which, name, attrs in self.activations()}


def _activation(name: str, x: np.ndarray, attrs: Mapping[str, Any], slope) -> np.ndarray:
    return REGISTRY[name].reference([x], {} if slope is None else {"weight": slope}, attrs)
