"""What each ONNX op becomes in a .net file: one converter per op type, in one table (``CONVERTERS``).

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
    suggest the label (``conv1.weight`` -> ``conv1``); ``=`` is no layer: the output is the input."""

    output: str
    op: str
    inputs: tuple[str, ...]
    args: tuple[str, ...] = ()
    params: dict[str, np.ndarray] = field(default_factory=dict)
    label_from: tuple[str, ...] = ()
    origin: tuple[str, str] = ("", "")  # the ONNX node's (name, op type), set by the importer
    label: str = ""  # chosen by the importer for a step with parameters


class Unsupported(Exception):
    """A node the language cannot express: ``problem`` (the attribute or value at fault) and ``todo``."""

    def __init__(self, problem: str, todo: str):
        super().__init__(problem)
        self.problem = problem
        self.todo = todo


class Context(Protocol):
    """What a converter may ask of the importer about the model being imported."""

    opset: int

    def attr(self, node, name: str, default: Any = None) -> Any: ...
    def const(self, name: str) -> np.ndarray | None: ...
    def dims(self, name: str) -> tuple | None: ...
    def shape_list(self, name: str) -> list | None: ...
    def used(self, name: str) -> bool: ...


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


def spatial_pads(node, cx: Context, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
                 ) -> tuple[int, int]:
    """(pad_h, pad_w) of a 2-D conv or pool, from ``pads`` or ``auto_pad``; asymmetric padding is unsupported."""
    auto = cx.attr(node, "auto_pad", "NOTSET")
    if auto == "VALID":
        return (0, 0)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        dims = cx.dims(node.input[0])
        pads = []
        for axis in range(2):
            span = dilations[axis] * (kernel[axis] - 1) + 1
            size = dims[2 + axis] if dims and len(dims) == 4 else None
            if strides[axis] == 1:
                total = span - 1
            elif isinstance(size, int):
                total = max((-(-size // strides[axis]) - 1) * strides[axis] + span - size, 0)
            else:
                raise Unsupported(f"auto_pad={auto} with stride {strides[axis]} on a dynamic size",
                                  "export with explicit pads, or with static input sizes")
            if total % 2:
                raise Unsupported(f"auto_pad={auto} needs asymmetric padding here (total {total})",
                                  "netdsl pads both sides equally: use an odd kernel, or pad explicitly")
            pads.append(total // 2)
        return tuple(pads)
    p = [int(v) for v in (cx.attr(node, "pads") or [0, 0, 0, 0])]
    if len(p) != 4:
        raise Unsupported(f"pads={p}", "only 2-D (NCHW) convolutions and pools import")
    if p[0] != p[2] or p[1] != p[3]:
        raise Unsupported(f"asymmetric pads={p} (top, left, bottom, right)",
                          "netdsl pads both sides equally: re-export with symmetric padding")
    return (p[0], p[1])


def _geometry(node, cx: Context, kernel: Sequence[int]) -> tuple[list[int], list[int], tuple[int, int]]:
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
    args = (str(w.shape[0]), pair(kernel), *kw("stride", pair(strides), "1"), *kw("padding", pair(pads), "0"),
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
    if any(2 * p > k for p, k in zip(pads, kernel)):
        raise Unsupported(f"pads {list(pads)} exceed half the kernel {kernel}",
                          "netdsl pools pad at most half the kernel (as PyTorch)")
    args = (pair(kernel), *kw("stride", pair(strides), pair(kernel)), *kw("padding", pair(pads), "0"))
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


def _leaky(node, cx):
    return kw("alpha", num(cx.attr(node, "alpha", 0.01)), num(0.01))


def _elu(node, cx):
    return kw("alpha", num(cx.attr(node, "alpha", 1.0)), num(1.0))


def _selu(node, cx):
    alpha, gamma = cx.attr(node, "alpha", SELU_ALPHA), cx.attr(node, "gamma", SELU_SCALE)
    if not (same_f32(alpha, SELU_ALPHA) and same_f32(gamma, SELU_SCALE)):
        raise Unsupported(f"alpha={alpha}, gamma={gamma}", f"netdsl's selu has alpha={SELU_ALPHA}, gamma={SELU_SCALE}")
    return ()


def _hardsigmoid(node, cx):
    alpha, beta = cx.attr(node, "alpha", 0.2), cx.attr(node, "beta", 0.5)
    if not (same_f32(alpha, 1 / 6) and same_f32(beta, 0.5)):
        raise Unsupported(f"alpha={alpha}, beta={beta}", "netdsl's hardsigmoid is PyTorch's: alpha=1/6, beta=0.5")
    return ()


def _gelu(node, cx):
    approximate = cx.attr(node, "approximate", "none")
    return kw("approximate", f'"{approximate}"', '"none"')


def clip(node, cx: Context) -> list[Step]:
    """``Clip(0, 6)`` is ``relu6`` and ``Clip(0)`` is ``relu``; bounds are attributes before opset 11."""
    if cx.opset < 11:
        lo, hi = cx.attr(node, "min"), cx.attr(node, "max")
    else:
        lo, hi = (const_input(node, cx, i, name, required=False) for i, name in ((1, "min"), (2, "max")))
        lo, hi = (None if v is None else float(v.reshape(-1)[0]) for v in (lo, hi))
    if lo == 0 and hi == 6:
        return [Step(node.output[0], "relu6", (node.input[0],))]
    if lo == 0 and hi is None:
        return [Step(node.output[0], "relu", (node.input[0],))]
    raise Unsupported(f"bounds min={lo}, max={hi}", "only Clip(0, 6) (relu6) and Clip(0) (relu) have a layer")


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


# --- shapes and data movement --------------------------------------------------------------------------

def flatten(node, cx: Context) -> list[Step]:
    axis = int(cx.attr(node, "axis", 1))
    dims = cx.dims(node.input[0])
    if dims is not None and axis < 0:
        axis += len(dims)
    if axis == 1:
        return [Step(node.output[0], "flatten", (node.input[0],))]
    if dims is not None and axis == 0:
        return [Step(node.output[0], "reshape", (node.input[0],), ("1", "-1"))]
    lead = dims[:axis] if dims is not None else None
    if lead is None or not all(isinstance(d, int) for d in lead):
        raise Unsupported(f"axis={axis} over dynamic leading dims", "flatten from axis 1, or give static sizes")
    return [Step(node.output[0], "reshape", (node.input[0],), (str(int(np.prod(lead))), "-1"))]


def reshape(node, cx: Context) -> list[Step]:
    target = cx.shape_list(node.input[1])
    if target is None:
        raise Unsupported("its shape is computed from something other than constants and input sizes",
                          "reshape to a constant shape, or one built from the input's sizes")
    dims = cx.dims(node.input[0])
    out = []
    for i, d in enumerate(target):
        if d == 0 and not cx.attr(node, "allowzero", 0):
            if dims is None or i >= len(dims) or dims[i] is None:
                raise Unsupported(f"shape {target} copies dim {i}, whose size is unknown", "give the size explicitly")
            d = dims[i]
        if d is None:
            raise Unsupported(f"shape {target} holds a size that depends on something other than the inputs' sizes",
                              "reshape to sizes of the network's inputs")
        out.append(str(d))
    return [Step(node.output[0], "reshape", (node.input[0],), tuple(out))]


def transpose(node, cx: Context) -> list[Step]:
    perm = cx.attr(node, "perm")
    if perm is None:
        dims = cx.dims(node.input[0])
        if dims is None:
            raise Unsupported("no perm, on an input of unknown rank", "give perm")
        perm = list(reversed(range(len(dims))))
    perm = [int(p) for p in perm]
    moved = [i for i, p in enumerate(perm) if p != i]
    if not moved:
        return [Step(node.output[0], "=", (node.input[0],))]
    if len(moved) == 2:
        return [Step(node.output[0], "transpose", (node.input[0],), tuple(map(str, moved)))]
    return [Step(node.output[0], "permute", (node.input[0],), tuple(map(str, perm)))]


def softmax(op: str):
    def convert(node, cx: Context) -> list[Step]:
        axis = int(cx.attr(node, "axis", -1 if cx.opset >= 13 else 1))
        if cx.opset < 13:  # over the input flattened from `axis` on: one dim only when it is the last
            dims = cx.dims(node.input[0])
            if dims is None or axis % len(dims) != len(dims) - 1:
                raise Unsupported(f"axis={axis} at opset {cx.opset} (softmax over all dims from {axis} on)",
                                  "export at opset 13 or later, or apply it over the last dim")
            axis = -1
        return [Step(node.output[0], op, (node.input[0],), kw("dim", str(axis), "-1"))]
    return convert


def concat(node, cx: Context) -> list[Step]:
    if len(node.input) == 1:
        return [Step(node.output[0], "=", (node.input[0],))]
    return [Step(node.output[0], "concat", tuple(node.input), kw("dim", str(int(cx.attr(node, "axis"))), "1"))]


def _axes(node, cx: Context, input_since: int = 13) -> list[int]:
    """The node's axes: an attribute before opset ``input_since`` (13 for Squeeze, 18 for ReduceMean), an input after."""
    if cx.opset < input_since:
        axes = cx.attr(node, "axes")
    else:
        value = const_input(node, cx, 1, "axes", required=False)
        axes = None if value is None else value.reshape(-1).tolist()
    if not axes:
        raise Unsupported("no axes", "name the axes")
    return [int(a) for a in axes]


def axis_by_axis(op: str):
    """Unsqueeze / Squeeze of several axes as one step per axis: inserted axes in ascending order (they
    index the output), removed ones from the last (they index the input), so each index stays valid."""
    def convert(node, cx: Context) -> list[Step]:
        axes = _axes(node, cx)
        if len(axes) > 1 and min(axes) < 0:
            raise Unsupported(f"several axes {axes}, some negative", "give the axes as non-negative indices")
        steps, source = [], node.input[0]
        for i, axis in enumerate(sorted(axes, reverse=op == "squeeze")):
            out = node.output[0] if i == len(axes) - 1 else f"{node.output[0]}::{i}"
            steps.append(Step(out, op, (source,), (str(axis),)))
            source = out
        return steps
    return convert


def _ints(node, cx: Context, i: int) -> np.ndarray | None:
    """Input ``i`` as integers folded from constants and static sizes (a chunk's bounds), None when absent."""
    if i >= len(node.input) or not node.input[i]:
        return None
    values = cx.shape_list(node.input[i])
    if values is None or not all(isinstance(v, int) for v in values):
        raise Unsupported(f"its input `{node.input[i]}` is not made of constants and static sizes",
                          "slice with constant bounds, or give the sliced dims a static size")
    return np.array(values, np.int64)


def slice_(node, cx: Context) -> list[Step]:
    """Slice with constant bounds: one ``slice(dim, start=, end=, step=)`` per axis (Python's clamping, as ONNX)."""
    if cx.opset < 10:
        starts, ends, axes = (np.array(cx.attr(node, k) or [], np.int64) for k in ("starts", "ends", "axes"))
        steps = None
    else:
        starts, ends, axes, steps = (_ints(node, cx, i) for i in range(1, 5))
    axes = axes.reshape(-1).tolist() if axes is not None and axes.size else list(range(starts.size))
    steps = steps.reshape(-1).tolist() if steps is not None else [1] * len(axes)
    if min(steps) < 1:
        raise Unsupported(f"steps={steps}", "netdsl slices forwards (step >= 1)")
    out, source = [], node.input[0]
    for i, (axis, start, end, step) in enumerate(zip(axes, starts.reshape(-1).tolist(), ends.reshape(-1).tolist(), steps)):
        args = (str(axis), *kw("start", str(start), "0"), *(() if end >= 2**31 - 1 else (f"end={end}",)),
                *kw("step", str(step), "1"))
        result = node.output[0] if i == len(axes) - 1 else f"{node.output[0]}::{i}"
        out.append(Step(result, "slice", (source,), args))
        source = result
    return out


def gather(node, cx: Context) -> list[Step]:
    """Rows of a constant table by integer ids is ``embedding``; one constant index of a tensor is ``select``."""
    table, index = cx.const(node.input[0]), cx.const(node.input[1])
    axis = int(cx.attr(node, "axis", 0))
    if table is not None and index is None and axis == 0 and table.ndim == 2:
        return [Step(node.output[0], "embedding", (node.input[1],), tuple(map(str, table.shape)),
                     {"weight": float_param(table, "table")}, (node.input[0],))]
    if table is None and index is not None and index.ndim == 0:
        return [Step(node.output[0], "select", (node.input[0],), (str(axis), str(int(index))))]
    raise Unsupported("it is neither a lookup in a constant table by ids nor one constant index of a tensor",
                      "netdsl has embedding(...) and select(dim, index)")


# Resize as F.interpolate exports it: (mode, coordinate_transformation_mode) -> upsample's mode arguments
_RESIZE = {("nearest", "asymmetric"): (), ("linear", "pytorch_half_pixel"): ('mode="bilinear"',),
           ("linear", "half_pixel"): ('mode="bilinear"',),
           ("linear", "align_corners"): ('mode="bilinear"', "align_corners=true")}


def resize(node, cx: Context) -> list[Step]:
    """Resize of H and W by constant scales or sizes, as ``F.interpolate`` exports it (nearest with floor,
    or bilinear): ``upsample``."""
    mode, ctm = cx.attr(node, "mode", "nearest"), cx.attr(node, "coordinate_transformation_mode", "half_pixel")
    nearest_mode = cx.attr(node, "nearest_mode", "round_prefer_floor")
    if (mode, ctm) not in _RESIZE or (mode == "nearest" and nearest_mode != "floor"):
        raise Unsupported(f"mode={mode}, coordinate_transformation_mode={ctm}, nearest_mode={nearest_mode}",
                          "netdsl's upsample is F.interpolate's nearest (floor) or bilinear")
    scales = const_input(node, cx, 2, "scales", required=False)
    sizes = cx.shape_list(node.input[3]) if len(node.input) > 3 and node.input[3] else None  # [N, C] + (h, w)
    if scales is not None and scales.size == 4 and list(scales[:2]) == [1, 1]:
        sh, sw = (float(v) for v in scales[2:])
        args: tuple[str, ...] = (num(sh) if sh == sw else f"({num(sh)}, {num(sw)})",)
    elif sizes is not None and len(sizes) == 4 and all(isinstance(v, int) for v in sizes[2:]):
        args = (f"size={pair(sizes[2:])}",)
    else:
        raise Unsupported("no constant scales [1, 1, sh, sw] or sizes [N, C, h, w]", "resize H and W by constants")
    return [Step(node.output[0], "upsample", (node.input[0],), args + _RESIZE[mode, ctm])]


def reduce_mean(node, cx: Context) -> list[Step]:
    """A mean over H and W of ``[N, C, H, W]`` (PyTorch's ``x.mean((2, 3))``) is ``global_avgpool``, then
    ``flatten`` when the reduced dims are dropped."""
    dims, axes = cx.dims(node.input[0]), _axes(node, cx, input_since=18)
    if dims is None or len(dims) != 4 or sorted(a % 4 for a in axes) != [2, 3]:
        raise Unsupported(f"axes={axes} on an input of rank {len(dims) if dims else 'unknown'}",
                          "only the mean over H and W of [N, C, H, W] (global average pooling) imports")
    if cx.attr(node, "keepdims", 1):
        return [Step(node.output[0], "global_avgpool", (node.input[0],))]
    pooled = node.output[0] + "::pooled"
    return [Step(pooled, "global_avgpool", (node.input[0],)), Step(node.output[0], "flatten", (pooled,))]


def passthrough(what: str):
    """Identity, and Dropout at inference: the output is the input."""
    def convert(node, cx: Context) -> list[Step]:
        only_first_output(node, cx, what)
        return [Step(node.output[0], "=", (node.input[0],))]
    return convert


# The ONNX op types that import, and the inputs of each that must be constants (never walked as tensors).
CONVERTERS: dict[str, tuple[Callable[[Any, Context], list[Step]], tuple[int, ...]]] = {
    "Conv": (conv, (1, 2)),
    "ConvTranspose": (conv_transpose, (1, 2)),
    "Gemm": (gemm, (1, 2)),
    "MatMul": (matmul, ()),
    "BatchNormalization": (batchnorm, (1, 2, 3, 4)),
    "LayerNormalization": (layernorm, (1, 2)),
    "PRelu": (prelu, (1,)),
    "MaxPool": (maxpool, ()),
    "AveragePool": (avgpool, ()),
    "GlobalAveragePool": (unary("global_avgpool"), ()),
    "ReduceMean": (reduce_mean, (1,)),
    "Slice": (slice_, (1, 2, 3, 4)),
    "Gather": (gather, ()),
    "Resize": (resize, (1, 2, 3)),
    "Relu": (unary("relu"), ()),
    "Clip": (clip, (1, 2)),
    "LeakyRelu": (unary("leaky_relu", _leaky), ()),
    "Sigmoid": (unary("sigmoid"), ()),
    "Tanh": (unary("tanh"), ()),
    "Elu": (unary("elu", _elu), ()),
    "Selu": (unary("selu", _selu), ()),
    "Softplus": (unary("softplus"), ()),
    "Softsign": (unary("softsign"), ()),
    "Mish": (unary("mish"), ()),
    "Gelu": (unary("gelu", _gelu), ()),
    "HardSwish": (unary("hardswish"), ()),
    "HardSigmoid": (unary("hardsigmoid", _hardsigmoid), ()),
    "Add": (arithmetic, ()),
    "Sub": (arithmetic, ()),
    "Mul": (arithmetic, ()),
    "Div": (arithmetic, ()),
    "Flatten": (flatten, ()),
    "Reshape": (reshape, (1,)),
    "Transpose": (transpose, ()),
    "Softmax": (softmax("softmax"), ()),
    "LogSoftmax": (softmax("log_softmax"), ()),
    "Concat": (concat, ()),
    "Unsqueeze": (axis_by_axis("unsqueeze"), (1,)),
    "Squeeze": (axis_by_axis("squeeze"), (1,)),
    "Dropout": (passthrough("the dropout mask"), (1, 2)),
    "Identity": (passthrough(""), ()),
}
