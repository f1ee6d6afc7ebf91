"""The op registry: the single source of truth for what an op is.

Each op is declared once, as an ``OpDef``: its kind (which drives fusion), its attributes (with defaults
and validation), its arity, shape inference, parameter shapes and default initialisation, its NumPy
reference, and its FLOPs. The front end, the verifier, the passes, the reference backend, the cost
model and the Triton lowering all read this table; fused ops are ordinary entries whose reference
composes the parts.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..ir.dims import FloorDiv, SymDim
from ..ir.graph import ParamSpec
from ..ir.printer import format_attr
from ..ir.types import INT64_MAX, INT64_MIN, TensorType


class OpKind(enum.Enum):
    ELEMENTWISE = "elementwise"  # unary, pointwise: activations
    BINARY = "binary"  # pointwise over two tensors (add, mul)
    INJECTIVE = "injective"  # data movement: flatten, concat, dropout
    REDUCE = "reduce"  # pooling, softmax
    NORM = "norm"  # batchnorm, layernorm, groupnorm
    OUT_FUSABLE = "out_fusable"  # conv/linear: absorb a following pointwise chain
    FUSED = "fused"  # produced by the passes


class ShapeError(Exception):
    """Raised by shape rules and attribute checks; the front end adds the source location.

    ``arg`` names the call argument at fault, when there is one: an attribute name, or the index of a
    positional attribute argument; the front end then points at that argument instead of the call."""

    def __init__(self, message: str, hint: str | None = None, arg: str | int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.arg = arg


REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    """An attribute: ``type`` is one of int, float, bool, str, pair (int or 2-tuple), padding
    (int, 2-tuple, (top, left, bottom, right), "same" or "valid"), any."""

    name: str
    type: str
    default: Any = REQUIRED
    choices: tuple | None = None
    positive: bool = False
    doc: str = ""
    bounds: tuple[float, float] | None = None  # a number's closed range (a probability: (0, 1))

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


Infer = Callable[[Sequence[TensorType], Mapping[str, Any]], TensorType]
Params = Callable[[Sequence[TensorType], Mapping[str, Any]], dict[str, ParamSpec]]
Reference = Callable[[Sequence[np.ndarray], Mapping[str, np.ndarray], Mapping[str, Any]], np.ndarray]
Flops = Callable[[Sequence[tuple[int, ...]], tuple[int, ...], Mapping[str, Any]], int]


def no_params(types, attrs) -> dict[str, ParamSpec]:
    return {}


ANY_LAYOUT = None  # ``OpDef.axis`` of an op whose kernel reads its tensors in any layout (they must agree)
ORDERED = "ordered"  # ``OpDef.axis`` of an op that needs its input in the IR's own order (a flatten)


@dataclass(frozen=True)
class OpDef:
    """Everything about one op, in one place.

    The first group says what the op means (shape rule, NumPy reference, FLOPs, attributes, parameters).
    The second says how the compiler treats it; passes and backends ask these fields (directly or
    through the properties below) and keep no tables of op names. Defaults follow from the kind.
    """

    name: str
    kind: OpKind
    infer: Infer
    reference: Reference
    flops: Flops
    attrs: tuple[Attr, ...] = ()
    arity: int | None = 1  # number of tensor inputs; None = one or more
    int_inputs: tuple[int, ...] = ()  # inputs that take integer tensors (token ids); all others float
    bool_inputs: tuple[int, ...] = ()  # inputs that take boolean tensors (attention masks)
    params: Params = no_params
    doc: str = ""
    # an op with several results (``infer`` returns a tuple of types, ``reference`` a tuple of arrays):
    # their names, f(attrs) -> names (``("output", "h_n")``); bound at once in a file: ``y, h = x -> rnn(64)``
    results: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None
    # activations only: how the Triton epilogue computes it, as (kernel name, alpha, beta)
    kernel_act: Callable[[Mapping[str, Any]], tuple[str, float, float]] | None = None
    # activations only: which initialisation a preceding conv/linear gets ("kaiming" or "xavier")
    init_for_producer: str | None = None

    # -- layout: the IR dim the op's kernel needs stored last (contiguous) -- channels (1) for a conv,
    # pooling or batchnorm, features (-1) for a linear or layernorm, or a function of the attributes
    # (softmax's dim). Per-channel epilogue vectors (bias, prelu slopes) run along it. ANY_LAYOUT: the
    # kernel walks its tensors element by element; ORDERED: it needs the IR's dim order (flatten).
    axis: int | str | Callable[[Mapping[str, Any]], int] | None = ANY_LAYOUT
    # -- fusion
    fused_form: str | None = None  # the fused op a node of this op becomes when it anchors an epilogue
    base: str | None = None  # a fused op: the op it is derived from
    folds_batchnorm: bool = False  # a following batchnorm folds into its weight ([out, ...]) and bias
    absorbs_add: bool = False  # its fused form can normalise the sum of two inputs ("add & norm")
    pointwise: bool | None = None  # one output element from the same element of each input (None: by kind)
    reorders_features: bool = False  # its weight columns can be permuted at pack time (reads any flatten order)
    # -- memory
    view: bool = False  # its output is its input's storage (nothing is computed)
    constant: bool = False  # its output is a parameter tensor (no inputs; stored with the weights, read-only)
    # a pure reordering of dims: output dim i is input dim perm[i], f(attrs, rank) -> perm
    permutation: Callable[[Mapping[str, Any], int], tuple[int, ...]] | None = None
    strided_inputs: bool = False  # its kernel reads its operands with any strides (the last dim contiguous)
    strided_output: bool = False  # its kernel writes its output with any strides (the last dim contiguous)
    concat_axis: Callable[[Mapping[str, Any]], int] | None = None  # inputs stacked along this dim
    split_axis: Callable[[Mapping[str, Any]], int] | None = None  # results: consecutive pieces of the input along it
    # inputs its kernel may overwrite with its output: f(attrs, number of inputs); None: by kind
    in_place: Callable[[Mapping[str, Any], int], tuple[int, ...]] | None = None
    # -- cost
    launches: int | Callable[[Mapping[str, Any]], int] = 1  # kernel launches per node (0 for a view), or f(attrs)
    # elements of weights its kernel reads, after packing: f(attrs, {role: numel}); None: all of them
    packed_numel: Callable[[Mapping[str, Any], Mapping[str, int]], int] | None = None

    @property
    def is_activation(self) -> bool:
        return self.kernel_act is not None

    @property
    def is_pointwise(self) -> bool:
        if self.pointwise is not None:
            return self.pointwise
        return self.kind in (OpKind.ELEMENTWISE, OpKind.BINARY)

    def attr(self, name: str) -> Attr | None:
        return next((a for a in self.attrs if a.name == name), None)

    def axis_of(self, attrs: Mapping[str, Any], rank: int) -> int | str | None:
        """The IR dim (0..rank-1) the kernel needs contiguous, ANY_LAYOUT or ORDERED."""
        axis = self.axis(attrs) if callable(self.axis) else self.axis
        return axis % rank if isinstance(axis, int) and rank else axis

    def in_place_inputs(self, attrs: Mapping[str, Any], n_inputs: int) -> tuple[int, ...]:
        """Inputs the kernel may overwrite with its output (it reads and writes element by element)."""
        if self.in_place is not None:
            return self.in_place(attrs, n_inputs)
        return tuple(range(n_inputs)) if self.is_pointwise else ()

    def result_names(self, attrs: Mapping[str, Any]) -> tuple[str, ...]:
        """The names of the op's results: one unnamed result unless ``results`` says otherwise."""
        return self.results(attrs) if self.results is not None else ("",)

    def result_types(self, types: Sequence[TensorType], attrs: Mapping[str, Any]) -> tuple[TensorType, ...]:
        """``infer``'s answer as a tuple, one type per result."""
        out = self.infer(types, attrs)
        return tuple(out) if isinstance(out, tuple) else (out,)

    def launches_of(self, attrs: Mapping[str, Any]) -> int:
        """Kernel launches one node of this op makes (a recurrence: per layer and direction)."""
        return self.launches(attrs) if callable(self.launches) else self.launches

    def weight_numel(self, attrs: Mapping[str, Any], numels: Mapping[str, int]) -> int:
        if self.packed_numel is not None:
            return self.packed_numel(attrs, numels)
        return sum(numels.values())


REGISTRY: dict[str, OpDef] = {}
ALIASES: dict[str, str] = {}


def register(op: OpDef, aliases: Sequence[str] = ()) -> OpDef:
    assert op.name not in REGISTRY, f"op {op.name} registered twice"
    REGISTRY[op.name] = op
    for alias in aliases:
        ALIASES[alias] = op.name
    return op


def lookup(name: str) -> OpDef | None:
    return REGISTRY.get(ALIASES.get(name, name))


_LONG_INT = 10**30  # an integer from this size on is shown shortened in a message


def show_value(value: Any) -> str:
    """A value for a message, as the model language writes it (``format_attr``), with a very long integer
    shortened to its leading digits and its length: ``12345678901234567890...(6000 digits)``. (Python
    refuses to print an integer of more than 4300 digits, and a message has no use for them all.)"""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _LONG_INT:
        a = abs(value)
        digits = int(a.bit_length() * math.log10(2)) + 1  # the exact count, or one more
        if a < 10 ** (digits - 1):
            digits -= 1
        return f"{'-' if value < 0 else ''}{a // 10 ** (digits - 20)}...({digits} digits)"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(show_value, value)) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(map(show_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={show_value(v)}" for k, v in value.items()) + "}"
    return format_attr(value)


_show = show_value


def _check_numbers(attr: Attr, value: Any) -> None:
    """Every integer in an attribute value fits int64 (sizes and indices are int64 in every backend, and a
    larger one would overflow there, or print a wrong size) and every float is finite (``1e999`` is inf,
    ``1e999 - 1e999`` nan)."""
    t = type(value)  # the common cases first: this runs for every attribute of every node
    if t is int and INT64_MIN <= value <= INT64_MAX or t is float and math.isfinite(value) or t in (bool, str):
        return
    if t is tuple and all(type(v) is int and INT64_MIN <= v <= INT64_MAX for v in value):
        return
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            if not INT64_MIN <= v <= INT64_MAX:
                raise ShapeError(f"attribute `{attr.name}` is out of range: {show_value(v)} does not fit a 64-bit "
                                 "integer", hint=attr.doc or None, arg=attr.name)
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise ShapeError(f"attribute `{attr.name}` must be a finite number, got {show_value(v)}",
                                 hint="a number beyond 1.8e308 is inf as a float, and inf - inf is nan",
                                 arg=attr.name)
        elif isinstance(v, (tuple, list)):
            todo.extend(v)
        elif isinstance(v, dict):
            todo.extend(v.values())
        elif isinstance(v, SymDim):  # `N * 100000000000000000000`: its coefficients and constant
            todo.append(v.const)
            for atom, coeff in v.terms:
                todo += [coeff, atom.expr, atom.divisor] if isinstance(atom, FloorDiv) else [coeff]


def check_attr(attr: Attr, value: Any) -> Any:
    """Validate one attribute value and return it normalised; raise ShapeError when it is wrong."""
    value = _check_attr_type(attr, value)
    _check_numbers(attr, value)
    return value


def _check_attr_type(attr: Attr, value: Any) -> Any:
    t = attr.type

    def bad(expected: str):
        return ShapeError(
            f"attribute `{attr.name}` must be {expected}, got {_show(value)}",
            hint=attr.doc or None,
            arg=attr.name,
        )

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if t == "int":
        if not is_int(value):
            raise bad("an integer")
    elif t == "float":
        if not (is_int(value) or isinstance(value, float)):
            raise bad("a number")
        try:
            value = float(value)
        except OverflowError:
            raise bad("a number that fits a float") from None
    elif t == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
    elif t == "str":
        if not isinstance(value, str):
            raise bad("a string")
    elif t in ("pair", "padding"):
        if t == "padding" and isinstance(value, str):
            if value not in ("same", "valid"):
                raise bad('an integer, a pair, "same" or "valid"')
            return value
        if is_int(value):
            value = (value, value)
        if t == "padding" and isinstance(value, tuple) and len(value) == 4 and all(is_int(v) for v in value):
            if min(value) < 0:
                raise ShapeError(f"attribute `{attr.name}` must not be negative, got {_show(value)}", arg=attr.name)
            return value[:2] if value[:2] == value[2:] else value  # (top, left, bottom, right); symmetric: a pair
        if not (isinstance(value, tuple) and len(value) == 2 and all(is_int(v) for v in value)):
            raise bad("an integer or a pair of integers"
                      + (', (top, left, bottom, right), "same" or "valid"' if t == "padding" else ""))
        if attr.positive and min(value) <= 0:
            raise ShapeError(f"attribute `{attr.name}` must be positive, got {_show(value)}", arg=attr.name)
        if min(value) < 0:
            raise ShapeError(f"attribute `{attr.name}` must not be negative, got {_show(value)}", arg=attr.name)
        return value
    if attr.choices is not None and value not in attr.choices:
        raise ShapeError(
            f"attribute `{attr.name}` must be one of {', '.join(map(_show, attr.choices))}, got {_show(value)}",
            arg=attr.name,
        )
    if attr.positive and value <= 0:
        raise ShapeError(f"attribute `{attr.name}` must be positive, got {_show(value)}", arg=attr.name)
    if attr.bounds is not None and math.isfinite(value) and not attr.bounds[0] <= value <= attr.bounds[1]:
        lo, hi = attr.bounds
        raise ShapeError(f"attribute `{attr.name}` must be from {_show(lo)} to {_show(hi)}, got {_show(value)}",
                         hint=attr.doc or None, arg=attr.name)
    return value


def bind_attrs(op: OpDef, positional: Sequence[Any], keywords: Mapping[str, Any]) -> dict[str, Any]:
    """Map call arguments to the op's attributes, check them, and fill in defaults."""
    if len(positional) > len(op.attrs):
        most = f"at most {len(op.attrs)} attribute argument(s)" if op.attrs else "no attribute arguments"
        raise ShapeError(f"`{op.name}` takes {most}, got {len(positional)}", hint=signature(op),
                         arg=len(op.attrs))
    values: dict[str, Any] = {}
    for attr, value in zip(op.attrs, positional):
        values[attr.name] = value
    for key, value in keywords.items():
        if op.attr(key) is None:
            from ..errors import did_you_mean

            raise ShapeError(
                f"`{op.name}` has no attribute `{key}`",
                hint=did_you_mean(key, [a.name for a in op.attrs]) or signature(op),
                arg=key,
            )
        if key in values:
            raise ShapeError(f"attribute `{key}` of `{op.name}` is given twice (by position and by name)",
                             hint=signature(op), arg=key)
        values[key] = value
    out: dict[str, Any] = {}
    for attr in op.attrs:
        if attr.name in values:
            out[attr.name] = check_attr(attr, values[attr.name])
        elif attr.required:
            raise ShapeError(f"`{op.name}` needs attribute `{attr.name}`", hint=signature(op))
        else:
            out[attr.name] = None if attr.default is None else _check_attr_type(attr, attr.default)  # (numbers fit)
    return out


def signature(op: OpDef) -> str:
    parts = [a.name if a.required else f"{a.name}={_show(a.default)}" for a in op.attrs]
    return f"usage: {op.name}({', '.join(parts)})"
