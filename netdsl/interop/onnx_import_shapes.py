"""ONNX's shape and data-movement ops as netdsl layers: flatten, reshape, transpose, softmax, concat,
(un)squeeze, slice, gather, resize, split (several results), the spatial mean and max, and the ops that
pass their input on (Identity, and Dropout at inference); one converter each, entered in the importer's
table (``onnx_import.CONVERTERS``).

Their sizes and indices must be known when importing: constants, or shape arithmetic folded from the
input's sizes (``Context.shape_list``), as PyTorch's exporter writes ``x.view(x.size(0), -1)``.
"""

from __future__ import annotations

import numpy as np

from .onnx_import_ops import Context, Step, Unsupported, const_input, float_param, kw, num, only_first_output, pair


def _product(dims) -> str | None:
    """The product of ``dims`` as a size the language can write: an integer, or one dim times an integer
    (``N * 3``); None for a product of two dims (no type holds one) or a size ONNX does not know."""
    static, names = 1, []
    for d in dims:
        if d is None:
            return None
        if isinstance(d, int):
            static *= d
        else:
            names.append(d)
    if len(names) > 1:
        return None
    if not names:
        return str(static)
    return names[0] if static == 1 else f"{names[0]} * {static}"


def flatten(node, cx: Context) -> list[Step]:
    """ONNX's Flatten(axis) is 2-D, [prod(dims[:axis]), prod(dims[axis:])]: ``flatten`` for axis 1 over static
    dims, else a ``reshape`` to the two products, each a static size or one dim times one."""
    axis = int(cx.attr(node, "axis", 1))
    dims = cx.dims(node.input[0])
    if dims is None:
        if axis == 1:
            return [Step(node.output[0], "flatten", (node.input[0],))]
        raise Unsupported(f"axis={axis} on an input of unknown rank", "give the input's shape")
    if axis < 0:
        axis += len(dims)
    if axis == 1 and all(isinstance(d, int) for d in dims[1:]):
        return [Step(node.output[0], "flatten", (node.input[0],))]
    lead, tail = _product(dims[:axis]), _product(dims[axis:])
    if lead is None or tail is None:
        raise Unsupported(f"axis={axis} on {list(dims)}: a result dim would be a product of dynamic dims",
                          "give all but one of those dims static sizes")
    return [Step(node.output[0], "reshape", (node.input[0],), (lead, tail))]


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


def global_reduce(pool: str):
    """ReduceMean / ReduceMax over H and W of ``[N, C, H, W]`` (PyTorch's ``x.mean((2, 3))``, ``x.amax((2, 3))``)
    is ``global_avgpool`` / ``global_maxpool``, then ``flatten`` when the reduced dims are dropped."""
    what = {"global_avgpool": "mean", "global_maxpool": "max"}[pool]

    def convert(node, cx: Context) -> list[Step]:
        dims, axes = cx.dims(node.input[0]), _axes(node, cx, input_since=18)
        if dims is None or len(dims) != 4 or sorted(a % 4 for a in axes) != [2, 3]:
            raise Unsupported(f"axes={axes} on an input of rank {len(dims) if dims else 'unknown'}",
                              f"only the {what} over H and W of [N, C, H, W] (a global pool) imports")
        if cx.attr(node, "keepdims", 1):
            return [Step(node.output[0], pool, (node.input[0],))]
        pooled = node.output[0] + "::pooled"
        return [Step(pooled, pool, (node.input[0],)), Step(node.output[0], "flatten", (pooled,))]
    return convert


def split(node, cx: Context) -> list[Step]:
    """Split into constant sizes along any axis: ``a, b = x -> split((s1, s2), dim=axis)`` (one size when the
    pieces are equal); without sizes, equal pieces of the (static) dim, the last smaller from opset 18 on."""
    axis, count = int(cx.attr(node, "axis", 0)), len(node.output)
    if cx.opset < 13:
        given = cx.attr(node, "split")
        sizes = [int(v) for v in given] if given else None
    else:
        value = const_input(node, cx, 1, "split", required=False)
        sizes = None if value is None else [int(v) for v in value.reshape(-1)]
    dims = cx.dims(node.input[0])
    size = dims[axis % len(dims)] if dims and -len(dims) <= axis < len(dims) else None
    if sizes is None:
        if not isinstance(size, int):
            raise Unsupported(f"equal pieces of axis {axis}, whose size is not static",
                              "give the split sizes, or a static size to the split dim")
        if cx.opset < 18 and size % count:
            raise Unsupported(f"{count} equal pieces of a dim of size {size}", "give the split sizes")
        piece = -(-size // count)  # opset 18: the last piece smaller
        sizes = [piece] * (count - 1) + [size - piece * (count - 1)]
    if len(sizes) != count or min(sizes) < 1:
        raise Unsupported(f"split sizes {sizes} for {count} outputs", "give one positive size per output")
    if count == 1:
        return [Step(node.output[0], "=", (node.input[0],))]
    same = all(s == sizes[0] for s in sizes[:-1]) and sizes[-1] <= sizes[0]
    arg = str(sizes[0]) if same else f"({', '.join(map(str, sizes))})"
    return [Step(node.output[0] + "::split", "split", (node.input[0],), (arg, *kw("dim", str(axis), "0")),
                 results=tuple(node.output))]


def passthrough(what: str):
    """Identity, and Dropout at inference: the output is the input."""
    def convert(node, cx: Context) -> list[Step]:
        only_first_output(node, cx, what)
        return [Step(node.output[0], "=", (node.input[0],))]
    return convert
