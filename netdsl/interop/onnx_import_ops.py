"""What each ONNX op becomes in a .net file: one converter per op type, entered in one table
(``onnx_import.CONVERTERS``); the converters of shape and data-movement ops are in ``onnx_import_shapes``.

A converter reads one ONNX node through the importer's ``Context`` (its attributes, the constant
tensors it takes, the shapes ONNX infers) and returns the netdsl layers (``Step``s) it becomes, or
raises ``Unsupported`` naming the attribute or value the language cannot express and what to do about
it. The importer collects every ``Unsupported`` before it writes anything, so a user sees all of them
at once. Parameters keep PyTorch's layouts, which are netdsl's: a conv weight is OIHW as ONNX stores it,
a linear weight is ``[out, in]`` (ONNX's ``MatMul`` holds ``[in, out]``, transposed here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ..ops.activations import SELU_ALPHA, SELU_SCALE


@dataclass
class Step:
    """One layer of the .net text: ``op(args)`` of the tensors ``inputs`` (ONNX value names), giving ``output``.

    ``op`` is a netdsl layer, or ``+`` / ``*`` / ``-`` between two tensors (``a - b`` is written
    ``a + -b``). ``params`` are the layer's tensors by role (``weight``, ``bias``, ...): the step is
    labelled and they are saved as ``label.role``. ``label_from`` are the initializers whose names may
    suggest the label (``conv1.weight`` -> ``conv1``); ``=`` is no layer: the output is the input. A layer
    of several ``results`` is written ``a, b = x -> split(...)`` (``output`` then names the step only)."""

    output: str
    op: str
    inputs: tuple[str, ...]
    args: tuple[str, ...] = ()
    params: dict[str, np.ndarray] = field(default_factory=dict)
    label_from: tuple[str, ...] = ()
    origin: tuple[str, str] = ("", "")  # the ONNX node's (name, op type), set by the importer
    label: str = ""  # chosen by the importer for a step with parameters
    results: tuple[str, ...] = ()  # a layer of several results (split): the ONNX values it binds at once


class Unsupported(Exception):
    """A node the language cannot express: ``problem`` (the attribute or value at fault) and ``todo``."""

    def __init__(self, problem: str, todo: str):
        super().__init__(problem)
        self.problem = problem
        self.todo = todo


class Context(Protocol):
    """What a converter may ask of the importer about the model being imported."""

    opset: int
    onnx: Any  # the onnx module (imported by the importer)
    uses: Any  # value name -> how many node inputs and graph outputs read it

    def attr(self, node, name: str, default: Any = None) -> Any: ...
    def const(self, name: str) -> np.ndarray | None: ...
    def dims(self, name: str) -> tuple | None: ...
    def shape_list(self, name: str) -> list | None: ...
    def used(self, name: str) -> bool: ...
    def readers(self, name: str) -> list: ...


# --- formatting of arguments ---------------------------------------------------------------------

def num(x: float) -> str:
    """A float32 attribute as the shortest literal that reads back to the same float32."""
    value = np.float32(x)
    if not np.isfinite(value):
        raise Unsupported(f"the value {x} is not finite", "only finite numbers can be written in a .net file")
    text = str(value)
    return text if any(c in text for c in ".e") else text + ".0"


def pair(values: Sequence[int]) -> str:
    """An int-or-pair attribute: ``3`` when both sizes agree, else ``(3, 5)``."""
    a, b = (int(v) for v in values)
    return str(a) if a == b else f"({a}, {b})"


def kw(name: str, value: str, default: str) -> tuple[str, ...]:
    """``name=value``, or nothing when the value is netdsl's default."""
    return () if value == default else (f"{name}={value}",)


def same_f32(a: float, b: float) -> bool:
    return bool(np.float32(a) == np.float32(b))


# --- reading inputs ------------------------------------------------------------------------------

def const_input(node, cx: Context, i: int, what: str, required: bool = True) -> np.ndarray | None:
    """Input ``i`` of ``node`` as a constant (an initializer or a Constant node), or None when absent."""
    name = node.input[i] if i < len(node.input) else ""
    if not name:
        if required:
            raise Unsupported(f"it has no {what}", "give the node its input")
        return None
    value = cx.const(name)
    if value is None:
        raise Unsupported(f"its {what} `{name}` is computed, not a constant",
                          "netdsl layers own their parameters: store this input as an initializer")
    return value


def float_param(value: np.ndarray, what: str) -> np.ndarray:
    if value.dtype.kind != "f":
        raise Unsupported(f"its {what} holds {value.dtype} values", "parameters are floating point")
    return value.astype(np.float32)


def only_first_output(node, cx: Context, what: str) -> None:
    """The node's extra outputs (a pool's indices, dropout's mask, a norm's statistics) must be unused."""
    for extra in node.output[1:]:
        if extra and cx.used(extra):
            raise Unsupported(f"its output `{extra}` ({what}) is used", "netdsl's layer gives only its main result")


def padding_arg(pads: Sequence[int] | str) -> str:
    """A conv or pool's ``padding`` as netdsl writes it: ``1``, ``(1, 2)``, ``(top, left, bottom, right)``, ``"same"``."""
    if isinstance(pads, str):
        return f'"{pads}"'
    top, left, bottom, right = (int(v) for v in pads)
    if (top, left) == (bottom, right):
        return pair((top, left))
    return f"({top}, {left}, {bottom}, {right})"


def spatial_pads(node, cx: Context, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
                 ) -> tuple[int, int, int, int] | str:
    """(top, left, bottom, right) of a 2-D conv or pool, from ``pads`` or ``auto_pad``. SAME_UPPER is netdsl's
    ``"same"``: explicit pads where the sizes give them (stride 1, or static sizes), else ``"same"`` itself;
    SAME_LOWER puts the odd pad at the beginning, which needs the pads explicit."""
    auto = cx.attr(node, "auto_pad", "NOTSET")
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        dims = cx.dims(node.input[0])
        begin, end = [], []
        for axis in range(2):
            span = dilations[axis] * (kernel[axis] - 1) + 1
            size = dims[2 + axis] if dims and len(dims) == 4 else None
            if strides[axis] == 1:
                total = span - 1
            elif isinstance(size, int):
                total = max((-(-size // strides[axis]) - 1) * strides[axis] + span - size, 0)
            elif auto == "SAME_UPPER":
                return "same"
            else:
                raise Unsupported(f"auto_pad={auto} with stride {strides[axis]} on a dynamic size",
                                  "export with explicit pads, with static input sizes, or with SAME_UPPER")
            small, large = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else large)
            end.append(large if auto == "SAME_UPPER" else small)
        return (begin[0], begin[1], end[0], end[1])
    p = [int(v) for v in (cx.attr(node, "pads") or [0, 0, 0, 0])]
    if len(p) != 4:
        raise Unsupported(f"pads={p}", "only 2-D (NCHW) convolutions and pools import")
    return tuple(p)


def symmetric_pads(pads: tuple[int, int, int, int] | str) -> tuple[int, int]:
    """(pad_h, pad_w) of a layer that pads both sides alike (conv_transpose2d crops them)."""
    if isinstance(pads, str) or pads[:2] != pads[2:]:
        raise Unsupported(f"asymmetric pads={pads if isinstance(pads, str) else list(pads)} (top, left, bottom, "
                          "right)", "conv_transpose2d crops both sides equally: re-export with symmetric padding")
    return pads[:2]


def _geometry(node, cx: Context, kernel: Sequence[int]
              ) -> tuple[list[int], list[int], tuple[int, int, int, int] | str]:
    if len(kernel) != 2:
        raise Unsupported(f"a {len(kernel)}-D kernel {list(kernel)}", "only 2-D (NCHW) convolutions and pools import")
    strides = [int(v) for v in (cx.attr(node, "strides") or [1, 1])]
    dilations = [int(v) for v in (cx.attr(node, "dilations") or [1, 1])]
    return strides, dilations, spatial_pads(node, cx, kernel, strides, dilations)


# --- layers with parameters ------------------------------------------------------------------------

def conv(node, cx: Context) -> list[Step]:
    w = float_param(const_input(node, cx, 1, "weight"), "weight")
    b = const_input(node, cx, 2, "bias", required=False)
    kernel = [int(v) for v in (cx.attr(node, "kernel_shape") or w.shape[2:])]
    strides, dilations, pads = _geometry(node, cx, kernel)
    groups = int(cx.attr(node, "group", 1))
    args = (str(w.shape[0]), pair(kernel), *kw("stride", pair(strides), "1"),
            *kw("padding", padding_arg(pads), "0"),
            *kw("dilation", pair(dilations), "1"), *kw("groups", str(groups), "1"),
            *(() if b is not None else ("bias=false",)))
    params = {"weight": w} | ({} if b is None else {"bias": float_param(b, "bias")})
    return [Step(node.output[0], "conv2d", (node.input[0],), args, params, tuple(node.input[1:]))]


def conv_transpose(node, cx: Context) -> list[Step]:
    w = float_param(const_input(node, cx, 1, "weight"), "weight")
    b = const_input(node, cx, 2, "bias", required=False)
    if cx.attr(node, "output_shape"):
        raise Unsupported("output_shape is given", "give pads and output_padding instead")
    if cx.attr(node, "auto_pad", "NOTSET") != "NOTSET":
        raise Unsupported(f"auto_pad={cx.attr(node, 'auto_pad')}", "give explicit pads")
    kernel = [int(v) for v in (cx.attr(node, "kernel_shape") or w.shape[2:])]
    strides, dilations, pads = _geometry(node, cx, kernel)
    pads = symmetric_pads(pads)
    groups = int(cx.attr(node, "group", 1))
    out_pad = [int(v) for v in (cx.attr(node, "output_padding") or [0, 0])]
    args = (str(w.shape[1] * groups), pair(kernel), *kw("stride", pair(strides), "1"),
            *kw("padding", pair(pads), "0"), *kw("output_padding", pair(out_pad), "0"),
            *kw("dilation", pair(dilations), "1"), *kw("groups", str(groups), "1"),
            *(() if b is not None else ("bias=false",)))
    params = {"weight": w} | ({} if b is None else {"bias": float_param(b, "bias")})
    return [Step(node.output[0], "conv_transpose2d", (node.input[0],), args, params, tuple(node.input[1:]))]


def _bias_vector(c: np.ndarray, out: int, what: str) -> np.ndarray:
    """A Gemm's C (or the vector added after a MatMul) as the linear's bias ``[out]``."""
    c = float_param(c, what)
    if c.size == 1:
        return np.full(out, c.reshape(()), np.float32)
    if c.size != out or c.shape[-1] != out:
        raise Unsupported(f"its {what} has shape {list(c.shape)}, not one value per output ({out})",
                          "only a bias shared by every row imports")
    return c.reshape(out)


def gemm(node, cx: Context) -> list[Step]:
    """``alpha * A' B' + beta * C`` with a constant B (and C): a ``linear``; alpha and beta scale its
    weight and bias; ``transA`` becomes a ``transpose(0, 1)`` before it."""
    b = float_param(const_input(node, cx, 1, "weight (B)"), "weight (B)")
    c = const_input(node, cx, 2, "bias (C)", required=False)
    if b.ndim != 2:
        raise Unsupported(f"its B has rank {b.ndim}", "a Gemm's B is a matrix")
    weight = b if cx.attr(node, "transB", 0) else b.T
    alpha, beta = float(cx.attr(node, "alpha", 1.0)), float(cx.attr(node, "beta", 1.0))
    if alpha != 1.0:
        weight = weight * np.float32(alpha)
    params = {"weight": np.ascontiguousarray(weight, np.float32)}
    if c is not None:
        params["bias"] = _bias_vector(c, weight.shape[0], "bias (C)") * np.float32(beta)
    steps, source = [], node.input[0]
    if cx.attr(node, "transA", 0):
        source = node.output[0] + "::transposed"
        steps.append(Step(source, "transpose", (node.input[0],), ("0", "1")))
    args = (str(weight.shape[0]), *(() if c is not None else ("bias=false",)))
    steps.append(Step(node.output[0], "linear", (source,), args, params, tuple(node.input[1:])))
    return steps


def matmul(node, cx: Context) -> list[Step]:
    """A constant matrix on the right is a ``linear`` without bias; otherwise ``matmul`` (a constant
    operand becomes a ``param``)."""
    a, b = node.input[0], node.input[1]
    w = cx.const(b)
    if w is not None and w.ndim == 2:
        weight = np.ascontiguousarray(float_param(w, "weight").T)
        return [Step(node.output[0], "linear", (a,), (str(weight.shape[0]), "bias=false"), {"weight": weight}, (b,))]
    return [Step(node.output[0], "matmul", (a, b))]


def batchnorm(node, cx: Context) -> list[Step]:
    if cx.attr(node, "training_mode", 0):
        raise Unsupported("training_mode=1", "export the model in eval mode (batch statistics are not inference)")
    if cx.attr(node, "spatial", 1) != 1:
        raise Unsupported("spatial=0", "only per-channel batchnorm imports")
    only_first_output(node, cx, "running statistics")
    roles = ("weight", "bias", "running_mean", "running_var")
    what = ("scale", "bias (B)", "mean", "variance")
    params = {r: float_param(const_input(node, cx, i + 1, w), w) for i, (r, w) in enumerate(zip(roles, what))}
    args = kw("eps", num(cx.attr(node, "epsilon", 1e-5)), num(1e-5))
    return [Step(node.output[0], "batchnorm", (node.input[0],), args, params, tuple(node.input[1:]))]


def layernorm(node, cx: Context) -> list[Step]:
    only_first_output(node, cx, "mean and inverse standard deviation")
    scale = float_param(const_input(node, cx, 1, "scale"), "scale")
    bias = const_input(node, cx, 2, "bias (B)", required=False)
    axis = int(cx.attr(node, "axis", -1))
    if axis >= 0:
        dims = cx.dims(node.input[0])
        if dims is None:
            raise Unsupported(f"axis={axis} on an input of unknown rank", "give the input's shape, or use a negative axis")
        axis -= len(dims)
    if scale.ndim > -axis:
        raise Unsupported(f"its scale has shape {list(scale.shape)}, more dims than the {-axis} normalised",
                          "the scale is one value per normalised element")
    norm_shape = tuple(cx.dims(node.input[0])[axis:]) if cx.dims(node.input[0]) else scale.shape
    if scale.shape != norm_shape:
        if not all(isinstance(d, int) for d in norm_shape):
            raise Unsupported(f"its scale {list(scale.shape)} broadcasts over dynamic dims", "give a full scale")
        scale = np.broadcast_to(scale, norm_shape)
    params = {"weight": np.ascontiguousarray(scale),
              "bias": np.broadcast_to(float_param(bias, "bias"), scale.shape).copy() if bias is not None
              else np.zeros(scale.shape, np.float32)}
    args = (*kw("eps", num(cx.attr(node, "epsilon", 1e-5)), num(1e-5)), *kw("dims", str(-axis), "1"))
    return [Step(node.output[0], "layernorm", (node.input[0],), args, params, tuple(node.input[1:]))]


def prelu(node, cx: Context) -> list[Step]:
    slope = float_param(const_input(node, cx, 1, "slope"), "slope")
    dims = cx.dims(node.input[0])
    rank = len(dims) if dims else None
    if slope.size == 1:
        return [Step(node.output[0], "prelu", (node.input[0],), ("shared=true",), {"weight": slope.reshape(1)},
                     (node.input[1],))]
    if rank is None or slope.ndim != rank - 1 or slope.shape[0] != slope.size:  # [C, 1, 1] on [N, C, H, W]
        raise Unsupported(f"its slope has shape {list(slope.shape)}", "netdsl's prelu has one slope per channel (dim 1)")
    return [Step(node.output[0], "prelu", (node.input[0],), (), {"weight": slope.reshape(-1)}, (node.input[1],))]


# --- pooling -----------------------------------------------------------------------------------------

def _pool(node, cx: Context, op: str) -> tuple[str, ...]:
    kernel = [int(v) for v in cx.attr(node, "kernel_shape")]
    strides, dilations, pads = _geometry(node, cx, kernel)
    if not isinstance(pads, str) and any(p >= kernel[i % 2] for i, p in enumerate(pads)):
        raise Unsupported(f"pads {list(pads)} reach the kernel size {kernel}",
                          "pads must be smaller than the kernel (ONNX's rule)")
    args = (pair(kernel), *kw("stride", pair(strides), pair(kernel)), *kw("padding", padding_arg(pads), "0"))
    if op == "maxpool2d":
        args += kw("dilation", pair(dilations), "1")
    elif pair(dilations) != "1":
        raise Unsupported(f"dilations={dilations}", "netdsl's avgpool has no dilation")
    return args + kw("ceil_mode", "true" if cx.attr(node, "ceil_mode", 0) else "false", "false")


def maxpool(node, cx: Context) -> list[Step]:
    only_first_output(node, cx, "the indices")
    if cx.attr(node, "storage_order", 0):
        raise Unsupported("storage_order=1", "only the default (row-major) order imports")
    return [Step(node.output[0], "maxpool2d", (node.input[0],), _pool(node, cx, "maxpool2d"))]


def avgpool(node, cx: Context) -> list[Step]:
    args = _pool(node, cx, "avgpool2d")
    if any(a.startswith("padding=") for a in args):  # ONNX counts only real pixels unless told
        args += kw("count_include_pad", "true" if cx.attr(node, "count_include_pad", 0) else "false", "true")
    return [Step(node.output[0], "avgpool2d", (node.input[0],), args)]


# --- pointwise ---------------------------------------------------------------------------------------

def unary(op: str, check: Callable[[Any, Context], tuple[str, ...]] = lambda node, cx: ()):
    """A converter for an ONNX op that is the netdsl layer ``op``; ``check`` returns its arguments."""
    def convert(node, cx: Context) -> list[Step]:
        return [Step(node.output[0], op, (node.input[0],), check(node, cx))]
    return convert


def leaky_args(node, cx):
    return kw("alpha", num(cx.attr(node, "alpha", 0.01)), num(0.01))


def elu_args(node, cx):
    return kw("alpha", num(cx.attr(node, "alpha", 1.0)), num(1.0))


def selu_args(node, cx):
    alpha, gamma = cx.attr(node, "alpha", SELU_ALPHA), cx.attr(node, "gamma", SELU_SCALE)
    if not (same_f32(alpha, SELU_ALPHA) and same_f32(gamma, SELU_SCALE)):
        raise Unsupported(f"alpha={alpha}, gamma={gamma}", f"netdsl's selu has alpha={SELU_ALPHA}, gamma={SELU_SCALE}")
    return ()


def hardsigmoid_args(node, cx):
    """Any alpha and beta; ONNX's defaults (0.2, 0.5) are not torch's (1/6, 0.5), which netdsl's are."""
    alpha, beta = cx.attr(node, "alpha", 0.2), cx.attr(node, "beta", 0.5)
    return (*(() if same_f32(alpha, 1 / 6) else (f"alpha={num(alpha)}",)), *kw("beta", num(beta), num(0.5)))


def gelu_args(node, cx):
    approximate = cx.attr(node, "approximate", "none")
    return kw("approximate", f'"{approximate}"', '"none"')


def clip(node, cx: Context) -> list[Step]:
    """``Clip(0, 6)`` is ``relu6``, ``Clip(0)`` ``relu``, any other constant bounds ``hardtanh(min_val, max_val)``,
    no bounds the input itself; bounds are attributes before opset 11."""
    if cx.opset < 11:
        lo, hi = cx.attr(node, "min"), cx.attr(node, "max")
    else:
        lo, hi = (const_input(node, cx, i, name, required=False) for i, name in ((1, "min"), (2, "max")))
        lo, hi = (None if v is None else float(v.reshape(-1)[0]) for v in (lo, hi))
    x = (node.input[0],)
    if lo == 0 and hi == 6:
        return [Step(node.output[0], "relu6", x)]
    if lo == 0 and hi is None:
        return [Step(node.output[0], "relu", x)]
    if lo is None and hi is None:
        return [Step(node.output[0], "=", x)]
    if lo is None or hi is None:
        raise Unsupported(f"only one bound, min={lo}, max={hi}",
                          "netdsl clamps one side only at 0 (relu); give both bounds (hardtanh)")
    if lo > hi:
        raise Unsupported(f"bounds min={lo} > max={hi} (every output is max)", "give min <= max")
    args = (*kw("min_val", num(lo), num(-1.0)), *kw("max_val", num(hi), num(1.0)))
    return [Step(node.output[0], "hardtanh", x, args)]


def _scalar(value: np.ndarray | None, other_dims: tuple | None) -> float | None:
    """A constant operand that is one number, broadcast without changing the other operand's shape."""
    if value is None or value.size != 1 or value.dtype.kind not in "fiu":
        return None
    if value.ndim and (other_dims is None or value.ndim > len(other_dims)):
        return None
    return float(value.reshape(()))


def arithmetic(node, cx: Context) -> list[Step]:
    """Add, Sub, Mul, Div: between tensors ``+``, ``-``, ``*``; with one number an ``affine`` layer."""
    op = node.op_type
    a, b = node.input[0], node.input[1]
    ca, cb = cx.const(a), cx.const(b)
    if ca is not None and cb is not None:
        raise Unsupported("both operands are constants", "fold the constants before importing")
    sa, sb = _scalar(ca, cx.dims(b)), _scalar(cb, cx.dims(a))
    if sa is not None or sb is not None:
        x, c = (b, sa) if sa is not None else (a, sb)
        scale, shift = {"Add": (1.0, c), "Mul": (c, 0.0), "Sub": (1.0, -c) if sb is not None else (-1.0, c),
                        "Div": (1.0 / c if c else None, 0.0) if sb is not None else (None, None)}[op]
        if scale is None:
            raise Unsupported(f"{'division by zero' if sb == 0 else 'a number divided by a tensor'}",
                              "only a tensor divided by a non-zero number imports")
        args = (*kw("scale", num(scale), "1.0"), *kw("shift", num(shift), "0.0"))
        return [Step(node.output[0], "affine", (x,), args)]
    if op == "Div":
        raise Unsupported("a division by a tensor", "the language has no tensor division; multiply by a reciprocal")
    for name, value in ((a, ca), (b, cb)):
        if value is not None and value.dtype.kind != "f":
            raise Unsupported(f"its constant `{name}` holds {value.dtype} values", "only float constants import")
    return [Step(node.output[0], {"Add": "+", "Mul": "*", "Sub": "-"}[op], (a, b))]
