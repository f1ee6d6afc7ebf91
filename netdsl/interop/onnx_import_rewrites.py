"""Patterns of ONNX nodes that are one netdsl layer, rewritten before the nodes are converted: PyTorch's
linear on a 3-D input (MatMul + Add), a weight kept as [out, in] and transposed in the graph (Transpose +
MatMul (+ Add), as netdsl's own export writes a linear), its GELU before opset 20 (written with Erf), and zero padding (Pad)
feeding a convolution or an average pool, which becomes that layer's own padding.

netdsl has no pad layer: a ``Pad`` imports only folded into the Conv or AveragePool it alone feeds (a
conv's padding may be (top, left, bottom, right)). One function, ``fold_pad``, decides whether it folds and
says why not; the ``Pad`` converter raises that reason when the pad is left, so it is listed with the
other nodes that cannot be imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .onnx_import_ops import Context, Step, Unsupported, const_input, spatial_pads


class Rewrites:
    """Patterns of ONNX nodes that are one netdsl layer, each replaced by one node at the place of its last:
    ``MatMul(x, W) + b`` (PyTorch's linear on a 3-D input) by a Gemm (one ``linear`` with a bias), and
    ``x * 0.5 * (1 + erf(x / sqrt 2))`` (PyTorch's GELU before opset 20) by a Gelu, and a zero ``Pad`` by
    the padding of the Conv or AveragePool it feeds."""

    def __init__(self, model):
        self.model, self.nodes = model, list(model.graph.node)
        self.users: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.users.setdefault(i, []).append(n)
        self.replace: dict[int, Any] = {}
        self.drop: set[int] = set()

    def nodes_after(self) -> list:
        for n in self.nodes:
            self.transposed_weight(n)
            self.matmul_add(n)
            self.erf_gelu(n)
            self.pad_into_window(n)
        return [self.replace.get(id(n), n) for n in self.nodes if id(n) not in self.drop]

    def only_user(self, value: str, op_type: str):
        """The node that alone reads ``value``, when it is an ``op_type``."""
        users = self.users.get(value, [])
        if self.model.uses[value] == 1 and len(users) == 1 and users[0].op_type == op_type \
                and id(users[0]) not in self.drop:
            return users[0]
        return None

    def other(self, node, value: str) -> str:
        return node.input[1] if node.input[0] == value else node.input[0]

    def is_number(self, name: str, value: float) -> bool:
        c = self.model.const(name)
        return c is not None and c.size == 1 and bool(np.isclose(float(c.reshape(())), value, rtol=1e-6, atol=0))

    def merge(self, pattern: list, new) -> None:
        self.drop.update(id(n) for n in pattern[:-1])
        self.replace[id(pattern[-1])] = new

    def matmul_add(self, n) -> None:
        w = self.model.const(n.input[1]) if n.op_type == "MatMul" else None
        add = self.only_user(n.output[0], "Add") if w is not None and w.ndim == 2 else None
        if add is None:
            return
        bias = self.other(add, n.output[0])
        b, dims = self.model.const(bias), self.model.dims(n.output[0])
        if b is not None and b.dtype.kind == "f" and b.size == w.shape[1] == b.shape[-1] \
                and b.ndim <= (len(dims) if dims is not None else 1):
            self.merge([n, add], self.model.onnx.helper.make_node(
                "Gemm", [n.input[0], n.input[1], bias], [add.output[0]], name=n.name))

    def transposed_weight(self, t) -> None:
        """``x @ W^T (+ b)`` with W a constant [out, in] matrix transposed by a Transpose node: one Gemm with
        transB (a ``linear`` whose weight keeps W's name, so the layer keeps its label)."""
        w = self.model.const(t.input[0]) if t.op_type == "Transpose" else None
        if w is None or w.ndim != 2 or w.dtype.kind != "f" or list(self.model.attr(t, "perm", [1, 0])) != [1, 0]:
            return
        mm = self.only_user(t.output[0], "MatMul")
        if mm is None or mm.input[1] != t.output[0]:
            return
        pattern, inputs, out = [t, mm], [mm.input[0], t.input[0]], mm.output[0]
        add = self.only_user(mm.output[0], "Add")
        if add is not None:
            b = self.model.const(self.other(add, mm.output[0]))
            if b is not None and b.dtype.kind == "f" and b.size == w.shape[0] == b.shape[-1] and b.ndim == 1:
                pattern, inputs, out = [t, mm, add], inputs + [self.other(add, mm.output[0])], add.output[0]
        self.merge(pattern, self.model.onnx.helper.make_node("Gemm", inputs, [out], name=mm.name, transB=1))

    def erf_gelu(self, erf) -> None:
        div = self.model.producer.get(erf.input[0]) if erf.op_type == "Erf" else None
        if div is None or div.op_type != "Div" or not self.is_number(div.input[1], 2 ** 0.5) \
                or self.only_user(div.output[0], "Erf") is not erf:
            return
        x, add = div.input[0], self.only_user(erf.output[0], "Add")
        times = self.only_user(add.output[0], "Mul") if add and self.is_number(self.other(add, erf.output[0]), 1) else None
        if times is None:
            return
        factor, half = self.other(times, add.output[0]), None
        if factor == x:  # (x * (1 + erf)) * 0.5
            half = self.only_user(times.output[0], "Mul")
            pattern = [div, erf, add, times, half]
            ok = half is not None and self.is_number(self.other(half, times.output[0]), 0.5)
        else:  # (x * 0.5) * (1 + erf)
            half = self.model.producer.get(factor)
            pattern = [half, div, erf, add, times]
            ok = half is not None and half.op_type == "Mul" and self.model.uses[factor] == 1 \
                and x in half.input and self.is_number(self.other(half, x), 0.5)
        if ok:
            self.merge(pattern, self.model.onnx.helper.make_node("Gelu", [x], [pattern[-1].output[0]], name=erf.name))

    def pad_into_window(self, pad) -> None:
        users = self.users.get(pad.output[0], []) if pad.op_type == "Pad" else []
        if len(users) != 1 or self.model.uses[pad.output[0]] != 1 or id(users[0]) in self.drop:
            return
        try:
            folded = fold_pad(pad, users, self.model)
        except Unsupported:
            return  # the Pad converter lists it with the reason
        self.merge([pad, users[0]], folded)


def fold_integer_constants(model):
    """``model`` with each node computed from integer constants alone (the shape arithmetic PyTorch's exporter
    writes for F.pad's pads: ConstantOfShape, Concat, Reshape, Slice, Transpose, Cast) replaced by an
    initializer holding its value (computed by onnx's reference evaluator at the model's opset), so that the
    pads are constants and shape inference sees through them. A node reading a float (a weight) is kept."""
    import onnx

    consts = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = list(model.graph.node)  # (one Python object per node: folded ones are known by id)
    for n in nodes:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            value = _evaluate(onnx, model, n, {})
            if value is not None:
                consts[n.output[0]] = value[0]
    folded, added = set(), []
    outputs = {o.name for o in model.graph.output}  # (a result of the graph keeps its node)
    for n in nodes:
        inputs = [i for i in n.input if i]
        if n.op_type == "Constant" or n.domain not in ("", "ai.onnx") or not inputs or outputs & set(n.output) \
                or not all(i in consts and np.asarray(consts[i]).dtype.kind in "iu" for i in inputs):
            continue
        values = _evaluate(onnx, model, n, {i: consts[i] for i in inputs})
        if values is None:  # left as it is: the converters say what they make of it
            continue
        folded.add(id(n))
        for name, value in zip(n.output, values):
            consts[name] = np.asarray(value)
            added.append(onnx.numpy_helper.from_array(np.asarray(value), name))
    if not folded:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [n for n in nodes if id(n) not in folded]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    out.graph.initializer.extend(added)
    return out


def _evaluate(onnx, model, node, inputs: dict) -> list | None:
    """The results of ``node`` on constant ``inputs``, by onnx's reference evaluator with the model's opsets
    (an op's meaning depends on them); None when it cannot be evaluated."""
    from onnx.reference import ReferenceEvaluator

    graph = onnx.helper.make_graph(
        [node], "fold", [], [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o],
        [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in inputs.items()])
    try:
        return ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=model.opset_import)).run(None, {})
    except Exception:
        return None


# --- Pad ---------------------------------------------------------------------------------------------

NO_PAD_LAYER = "netdsl has no pad layer: zero padding of H and W imports folded into the Conv or AveragePool it feeds"


def pad_amounts(pad, cx: Context) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a constant-zero Pad of H and W of [N, C, H, W]; Unsupported otherwise."""
    mode = cx.attr(pad, "mode", "constant")
    if mode != "constant":
        raise Unsupported(f"mode={mode}", NO_PAD_LAYER)
    axes = None
    if cx.opset < 11:
        pads, value = cx.attr(pad, "pads") or [], float(cx.attr(pad, "value", 0.0))
    else:
        pads = cx.shape_list(pad.input[1]) if len(pad.input) > 1 and pad.input[1] else None
        if pads is None or not all(isinstance(p, int) for p in pads):
            raise Unsupported("its pads are computed, not constants", "pad by constant amounts")
        v = const_input(pad, cx, 2, "constant value", required=False)
        value = 0.0 if v is None or v.size == 0 else float(v.reshape(-1)[0])
        a = const_input(pad, cx, 3, "axes", required=False)
        axes = None if a is None else [int(i) for i in a.reshape(-1)]
    if value != 0:
        raise Unsupported(f"constant value {value}", "only zero padding folds into a conv or avgpool")
    dims = cx.dims(pad.input[0])
    rank = len(dims) if dims is not None else (len(pads) // 2 if axes is None else None)
    if rank != 4 or len(pads) != 2 * (len(axes) if axes is not None else 4):
        raise Unsupported(f"pads {list(pads)} of an input of rank {rank if rank is not None else 'unknown'}",
                          "only H and W of [N, C, H, W] fold into a conv or avgpool")
    full = [0] * 8
    for i, axis in enumerate(axes if axes is not None else range(4)):
        full[axis % 4], full[axis % 4 + 4] = pads[i], pads[i + len(pads) // 2]
    if any(full[k] for k in (0, 1, 4, 5)):
        raise Unsupported(f"pads {full} reach N or C", "pad only H and W (dims 2 and 3)")
    if min(full) < 0:
        raise Unsupported(f"negative pads {full} (a crop)", "crop with a Slice")
    return full[2], full[3], full[6], full[7]


def fold_pad(pad, readers: list, cx: Context) -> Any:
    """The Conv or AveragePool that alone reads ``pad``'s result, with the pad added to its own padding (and
    the Pad's input as its input); Unsupported, saying why, when it cannot be."""
    amounts = pad_amounts(pad, cx)
    reader = readers[0] if len(readers) == 1 and cx.uses[pad.output[0]] == 1 else None
    if reader is None or reader.op_type not in ("Conv", "AveragePool") or reader.input[0] != pad.output[0]:
        what = ", ".join(r.op_type for r in readers) or "nothing"
        if cx.uses[pad.output[0]] > len(readers):
            what += " and the graph's outputs"
        raise Unsupported(f"its result feeds {what}, not one Conv or AveragePool", NO_PAD_LAYER)
    if reader.op_type == "Conv":
        weight = cx.const(reader.input[1]) if len(reader.input) > 1 else None
        kernel = cx.attr(reader, "kernel_shape") or (weight.shape[2:] if weight is not None else [])
    else:
        kernel = cx.attr(reader, "kernel_shape") or []
    if len(kernel) != 2:
        raise Unsupported(f"the {reader.op_type} it feeds has no 2-D kernel", NO_PAD_LAYER)
    strides = [int(v) for v in (cx.attr(reader, "strides") or [1, 1])]
    dilations = [int(v) for v in (cx.attr(reader, "dilations") or [1, 1])]
    own = spatial_pads(reader, cx, [int(k) for k in kernel], strides, dilations)
    if isinstance(own, str):
        raise Unsupported(f'the {reader.op_type} it feeds pads "same" with a stride on a dynamic size',
                          "export with explicit pads or static sizes")
    attrs = {}
    if reader.op_type == "AveragePool":
        if any(own) and not cx.attr(reader, "count_include_pad", 0):
            raise Unsupported("the AveragePool it feeds leaves its own padding out of the average, where the Pad's "
                              "zeros count", "pad in one place, or count the padding (count_include_pad=1)")
        if cx.attr(reader, "ceil_mode", 0) and (amounts[2] or amounts[3]):
            raise Unsupported("the AveragePool it feeds has ceil_mode=1 and the Pad pads the bottom or right (the "
                              "last window would be kept where the pool would drop it)", "pad the top and left only")
        attrs["count_include_pad"] = 1  # the Pad's zeros are pixels of the average
    attrs["pads"] = [int(a + b) for a, b in zip(amounts, own)]
    if reader.op_type == "AveragePool" and any(p >= int(kernel[i % 2]) for i, p in enumerate(attrs["pads"])):
        raise Unsupported(f"with the AveragePool's own pads it pads {attrs['pads']}, which reach the pool's kernel "
                          f"{[int(k) for k in kernel]}", "a pool pads each side by less than its kernel size")
    return _with(cx, reader, pad.input[0], attrs)


def _with(cx, node, source: str, attrs: dict) -> Any:
    """A copy of ``node`` reading ``source`` with ``attrs`` set (and no ``auto_pad``: the pads are explicit)."""
    new = cx.onnx.NodeProto()
    new.CopyFrom(node)
    new.input[0] = source
    kept = [a for a in new.attribute if a.name not in set(attrs) | {"auto_pad"}]
    del new.attribute[:]
    new.attribute.extend(kept + [cx.onnx.helper.make_attribute(k, v) for k, v in attrs.items()])
    return new


def pad(node, cx: Context) -> list[Step]:
    """A Pad left by the rewrites: nothing when it pads nothing, else the reason it does not fold."""
    if pad_amounts(node, cx) == (0, 0, 0, 0):
        return [Step(node.output[0], "=", (node.input[0],))]
    fold_pad(node, cx.readers(node.output[0]), cx)
    raise Unsupported("it does not fold into the layer it feeds", NO_PAD_LAYER)
