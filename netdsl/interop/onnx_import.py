"""`netdsl import model.onnx -o model.net`: an ONNX model as a readable .net file and its weights.

The importer reads the model (``onnx`` is imported only here, inside functions, so the CLI starts
without it), folds what is constant (initializers, Constant nodes, and shape arithmetic such as
``x.view(x.size(0), -1)``), converts each node that computes the outputs through the per-op table
(``CONVERTERS``, whose converters are in ``onnx_import_ops`` and ``onnx_import_shapes``; patterns of nodes
that are one layer are rewritten first, ``onnx_import_rewrites``) and writes the layers as chains
(``onnx_import_text``). Every node the language cannot express is reported at once, before anything is
written. The text is then loaded back with the front end and the weights matched to it strictly, so an
import that succeeds is a model netdsl runs.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import NetDSLError
from . import onnx_import_ops as ops
from . import onnx_import_rewrites as rewrites
from . import onnx_import_shapes as shapes
from .onnx_import_ops import Context, Step, Unsupported
from .onnx_import_rewrites import Rewrites
from .onnx_import_text import DTYPES, Names, Writer, ident, input_declarations

# The ONNX op types that import, and the inputs of each that must be constants (never walked as tensors).
CONVERTERS: dict[str, tuple[Callable[[Any, Context], list[Step]], tuple[int, ...]]] = {
    "Conv": (ops.conv, (1, 2)),
    "ConvTranspose": (ops.conv_transpose, (1, 2)),
    "Gemm": (ops.gemm, (1, 2)),
    "MatMul": (ops.matmul, ()),
    "BatchNormalization": (ops.batchnorm, (1, 2, 3, 4)),
    "LayerNormalization": (ops.layernorm, (1, 2)),
    "PRelu": (ops.prelu, (1,)),
    "MaxPool": (ops.maxpool, ()),
    "AveragePool": (ops.avgpool, ()),
    "GlobalAveragePool": (ops.unary("global_avgpool"), ()),
    "GlobalMaxPool": (ops.unary("global_maxpool"), ()),
    "ReduceMean": (shapes.global_reduce("global_avgpool"), (1,)),
    "ReduceMax": (shapes.global_reduce("global_maxpool"), (1,)),
    "Split": (shapes.split, (1,)),
    "Slice": (shapes.slice_, (1, 2, 3, 4)),
    "Gather": (shapes.gather, ()),
    "Resize": (shapes.resize, (1, 2, 3)),
    "Relu": (ops.unary("relu"), ()),
    "Clip": (ops.clip, (1, 2)),
    "LeakyRelu": (ops.unary("leaky_relu", ops.leaky_args), ()),
    "Sigmoid": (ops.unary("sigmoid"), ()),
    "Tanh": (ops.unary("tanh"), ()),
    "Elu": (ops.unary("elu", ops.elu_args), ()),
    "Selu": (ops.unary("selu", ops.selu_args), ()),
    "Softplus": (ops.unary("softplus"), ()),
    "Softsign": (ops.unary("softsign"), ()),
    "Mish": (ops.unary("mish"), ()),
    "Gelu": (ops.unary("gelu", ops.gelu_args), ()),
    "HardSwish": (ops.unary("hardswish"), ()),
    "HardSigmoid": (ops.unary("hardsigmoid", ops.hardsigmoid_args), ()),
    "Add": (ops.arithmetic, ()),
    "Sub": (ops.arithmetic, ()),
    "Mul": (ops.arithmetic, ()),
    "Div": (ops.arithmetic, ()),
    "Flatten": (shapes.flatten, ()),
    "Reshape": (shapes.reshape, (1,)),
    "Transpose": (shapes.transpose, ()),
    "Softmax": (shapes.softmax("softmax"), ()),
    "LogSoftmax": (shapes.softmax("log_softmax"), ()),
    "Concat": (shapes.concat, ()),
    "Unsqueeze": (shapes.axis_by_axis("unsqueeze"), (1,)),
    "Squeeze": (shapes.axis_by_axis("squeeze"), (1,)),
    "Dropout": (shapes.passthrough("the dropout mask"), (1, 2)),
    "Pad": (rewrites.pad, (1, 2, 3)),
    "Identity": (shapes.passthrough(""), ()),
}


def add_parser(sub) -> None:
    """The `netdsl import` subcommand (called by netdsl.cli; keep this module's imports light)."""
    c = sub.add_parser("import", help="turn an ONNX model into a .net file (and its weights into a .safetensors file beside it)")
    c.add_argument("model", help="an .onnx file")
    c.add_argument("-o", "--output", required=True, help="the .net file to write (weights go to the same name .safetensors)")
    c.set_defaults(fn=run)


def run(args) -> int:
    """Import ``args.model``; write ``args.output`` and the weights beside it, or nothing at all."""
    from ..files import check_writable, write_atomically
    from ..params import save_weights

    out = Path(args.output)
    weights_path = out.with_suffix(".safetensors")
    if out.suffix == ".safetensors":
        raise NetDSLError(f"`{out}` would be both the model and its weights", hint="name the model `model.net`")
    check_writable(out, ".net file")
    check_writable(weights_path, "weights file")
    text, weights = import_onnx(args.model, network_file=out.name)
    save_weights(weights_path, weights)
    try:
        write_atomically(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), ".net file")
    except BaseException:
        weights_path.unlink(missing_ok=True)  # both files or neither
        raise
    count = sum(int(np.prod(w.shape)) for w in weights.values())
    print(f"wrote {out} and {weights_path} ({len(weights)} tensors, {count:,} values)")
    return 0


# --- reading the model ------------------------------------------------------------------------------

def _load(source) -> tuple[Any, str]:
    """(ModelProto, name for messages) from a path, bytes or a ModelProto; a NetDSLError if it is no model."""
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(source, onnx.ModelProto):
        return source, source.graph.name or "model"
    try:
        if isinstance(source, (bytes, bytearray)):
            model, where = onnx.load_from_string(bytes(source)), "the ONNX model"
        else:
            where = f"ONNX file `{source}`"
            model = onnx.load(str(source))
    except FileNotFoundError:
        raise NetDSLError(f"{where} does not exist", hint="check the file's name") from None
    except OSError as e:
        raise NetDSLError(f"cannot read {where}: {e.strerror or e}", hint="check that it is a file you may read") from None
    except (DecodeError, ValueError, RuntimeError) as e:
        raise NetDSLError(f"{where} is not an ONNX model ({e})", hint="is it a .onnx file, complete?") from None
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid"
        raise NetDSLError(f"{where} is not a valid ONNX model: {first}", hint="is it a .onnx file, complete?") from None
    return model, where


class _Model:
    """The ONNX graph as the converters see it (``onnx_import_ops.Context``): attributes, constants,
    inferred shapes (dims as ints or the network's symbols) and which values are used."""

    def __init__(self, model) -> None:
        import onnx

        self.onnx = onnx
        model = rewrites.fold_integer_constants(model)
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        try:
            inferred = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # shape inference is a help, not a requirement
            inferred = model.graph
        self.consts: dict[str, np.ndarray] = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output if o}
        for n in model.graph.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                self.consts[n.output[0]] = self._constant(n)
        self.types = {v.name: v.type for v in (*inferred.input, *inferred.value_info, *inferred.output)}
        self.uses = Counter(i for n in model.graph.node for i in n.input if i)
        self.reading: dict[str, list] = {}
        for n in model.graph.node:
            for i in dict.fromkeys(n.input):
                self.reading.setdefault(i, []).append(n)
        self.uses.update(o.name for o in model.graph.output)
        self.symbols: dict[str, str] = {}  # ONNX dim_param -> the network's dim name

    def _constant(self, node) -> np.ndarray:
        a = node.attribute[0]
        value = self.onnx.helper.get_attribute_value(a)
        if a.name == "value":
            return self.onnx.numpy_helper.to_array(value)
        if a.name.startswith("value_float"):
            return np.array(value, np.float32)
        if a.name.startswith("value_int"):
            return np.array(value, np.int64)
        return np.array(value)

    def attr(self, node, name: str, default: Any = None) -> Any:
        for a in node.attribute:
            if a.name == name:
                value = self.onnx.helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def is_integer(self, name: str) -> bool:
        t = self.types.get(name)
        return t is not None and t.HasField("tensor_type") and DTYPES.get(t.tensor_type.elem_type) in ("i32", "i64")

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def used(self, name: str) -> bool:
        return self.uses[name] > 0

    def readers(self, name: str) -> list:
        """The nodes that read ``name`` (a graph output is read by none of them: see ``uses``)."""
        return self.reading.get(name, [])

    def dims(self, name: str) -> tuple | None:
        """The value's shape: ints, the network's dim names, None for a size ONNX does not know."""
        if name in self.consts:
            return tuple(int(d) for d in self.consts[name].shape)
        t = self.types.get(name)
        if t is None or not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
            return None
        return tuple(d.dim_value if d.HasField("dim_value") else self.symbols.get(d.dim_param)
                     for d in t.tensor_type.shape.dim)

    def shape_list(self, name: str) -> list | None:
        """A 1-D shape tensor's entries (ints, dim names, None where unknown), folded through Shape, Gather,
        Concat, Unsqueeze, Squeeze, Cast and Slice; None when it depends on other computation."""
        if name in self.consts:
            value = self.consts[name]
            return [int(v) for v in value.reshape(-1)] if value.dtype.kind in "iu" else None
        node = self.producer.get(name)
        if node is None:
            return None
        op = node.op_type
        if op == "Shape":
            dims = self.dims(node.input[0])
            if dims is None:
                return None
            return list(dims)[self.attr(node, "start", 0):self.attr(node, "end", len(dims))]
        if op in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
            return self.shape_list(node.input[0])
        if op == "Concat":
            parts = [self.shape_list(i) for i in node.input]
            return None if any(p is None for p in parts) else [d for p in parts for d in p]
        if op == "Gather" and self.attr(node, "axis", 0) == 0 and node.input[1] in self.consts:
            data = self.shape_list(node.input[0])
            index = self.consts[node.input[1]].reshape(-1)
            return None if data is None else [data[int(i)] for i in index]
        if op in ("Add", "Sub", "Mul", "Div"):  # sizes computed from sizes (a chunk's bounds)
            a, b = (self.shape_list(i) for i in node.input[:2])
            if a is None or b is None or not all(isinstance(v, int) for v in a + b) or (op == "Div" and 0 in b):
                return None
            fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.floor_divide}[op]
            return [int(v) for v in np.atleast_1d(fn(np.array(a), np.array(b)))]
        if op == "Slice" and all(i in self.consts for i in node.input[1:3]):
            data = self.shape_list(node.input[0])
            start, end = (int(self.consts[i].reshape(-1)[0]) for i in node.input[1:3])
            return None if data is None else data[start:end]
        return None


# --- converting -------------------------------------------------------------------------------------

def _needed(model: _Model, nodes: list) -> list:
    """The nodes that compute the outputs, in graph order; constant inputs (a shape, a weight) are not walked."""
    producer = {o: n for n in nodes for o in n.output if o}
    needed: set[int] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in needed or node.op_type == "Constant":
            continue
        needed.add(id(node))
        if node.op_type in CONVERTERS:
            constant = CONVERTERS[node.op_type][1]
            stack += [i for k, i in enumerate(node.input) if i and k not in constant and i not in model.consts]
        else:  # an op without a converter: its float inputs, not the shape arithmetic feeding its sizes
            stack += [i for i in node.input if i and i not in model.consts and not model.is_integer(i)]
    return [n for n in nodes if id(n) in needed]


def _convert(model: _Model, nodes: list, where: str) -> list[Step]:
    """Every node as steps; every node that cannot be converted listed in one NetDSLError."""
    steps: list[Step] = []
    problems: list[str] = []
    for node in nodes:
        name = f"{node.op_type} node `{node.name or node.output[0]}`"
        try:
            if node.domain not in ("", "ai.onnx"):
                raise Unsupported(f"its domain `{node.domain}` is not the standard one", "use standard ONNX ops")
            if node.op_type not in CONVERTERS:
                raise Unsupported("the language has no layer for it",
                                  f"replace it in the source model, or add a converter for `{node.op_type}`")
            for step in CONVERTERS[node.op_type][0](node, model):
                step.origin = (node.name, node.op_type)
                steps.append(step)
        except Unsupported as u:
            problems.append(f"  - {name}: {u.problem}; {u.todo}")
    for v in model.graph.input:
        if v.name not in model.consts and v.type.tensor_type.elem_type not in DTYPES:
            problems.append(f"  - input `{v.name}`: element type {v.type.tensor_type.elem_type} has no netdsl type; "
                            "give it a float or integer type")
    if problems:
        raise NetDSLError(f"{where}: {len(problems)} node{'s' if len(problems) > 1 else ''} cannot be imported:\n"
                          + "\n".join(problems),
                          hint="nothing was written; the supported ONNX ops are " + ", ".join(sorted(CONVERTERS)))
    return steps


def import_onnx(source, network_file: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """An ONNX model (a path, its bytes or a ModelProto) as (.net text, weights by parameter name).

    The text is checked by loading it with the front end and matching the weights to it strictly, so
    what this returns is a model netdsl runs; anything the language cannot express is one NetDSLError
    that lists every node at fault."""
    from ..frontend import load_source
    from ..params import check_weights

    model_proto, where = _load(source)
    model = _Model(model_proto)
    names = Names()
    stem = Path(source).stem if isinstance(source, (str, Path)) else model_proto.graph.name
    network = ident(stem, "net") or "model"
    inputs, input_names = input_declarations(model, names)
    steps = _convert(model, _needed(model, Rewrites(model).nodes_after()), where)
    writer = Writer(model, steps, names)
    writer.value.update(input_names)
    body = writer.lines()
    origin = Path(source).name if isinstance(source, (str, Path)) else "an ONNX model"
    producer = f", from {model_proto.producer_name} {model_proto.producer_version}".rstrip() \
        if model_proto.producer_name else ""
    text = "\n".join([f"# imported from {origin} (ONNX opset {model.opset}{producer})", "",
                      f"network {network} {{", *inputs, *body, "}", ""])
    file = network_file or f"{network}.net"
    try:
        graph = load_source(text, file)
        weights = check_weights(graph, writer.weights, origin=f"the weights imported from {origin}")
    except NetDSLError as e:
        snippet = e.loc.snippet() if e.loc else ""
        raise NetDSLError(f"{where} converts, but netdsl rejects the result: {e.message}"
                          + (f"\n{snippet}" if snippet else ""), hint=e.hint) from None
    return text, weights
