"""The .net text of an imported ONNX model: names that are valid and distinct, labels taken from PyTorch's
module paths, and layers written as chains (``x -> conv -> relu``) wherever a value has one reader.

The importer (``onnx_import``) converts the nodes into ``Step``s; this module only chooses names and
writes statements, so what the text looks like is decided in one place.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Protocol

import numpy as np

from ..errors import NetDSLError
from ..frontend.syntax_errors import KEYWORDS
from .onnx_import_ops import Step

DTYPES = {1: "f32", 10: "f16", 11: "f64", 16: "bf16", 6: "i32", 7: "i64", 9: "bool"}  # onnx.TensorProto -> netdsl
_INFIX = {"+", "*", "-"}
_SHORT = {"conv2d": "conv", "conv_transpose2d": "deconv", "linear": "fc", "batchnorm": "bn", "layernorm": "ln",
          "prelu": "act"}  # labels of layers whose node has no name
_WIDTH = 100  # a chain longer than this is continued on the next line, one `->` per step


class Model(Protocol):
    """What the writer reads of the importer's model: the ONNX graph (its inputs and outputs), the constants,
    and the network's names of ONNX's dim_params (filled in by ``input_declarations``)."""

    graph: Any
    consts: dict[str, np.ndarray]
    symbols: dict[str, str]


def ident(text: str, digit_prefix: str) -> str:
    """``text`` as a netdsl name: other characters become ``_``; one starting with a digit gets a prefix."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")
    if name and name[0].isdigit():
        name = digit_prefix + name
    return name + "_" if name in KEYWORDS else name


def _module_path(node_name: str, op_type: str) -> str:
    """``/layer1/layer1.0/conv1/Conv`` (a PyTorch export's node name) -> ``layer1.0.conv1``."""
    parts = [p for p in node_name.split("/") if p]
    scoped = "/" in node_name  # the last part of a scoped name is the op's (`Conv_1`, or `MatMul` of a Gemm)
    if parts and re.fullmatch(re.escape(op_type) + r"(_\d+)?" + (r"|[A-Z][A-Za-z0-9]*(_\d+)?" if scoped else ""),
                              parts[-1]):
        parts.pop()
    return ".".join(p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + ".")))


class Names:
    """One namespace for the file's names: inputs, dims, values, labels and params are all distinct, and
    none is a keyword or an op's name."""

    def __init__(self) -> None:
        from ..ops.registry import ALIASES, REGISTRY

        self.taken = set(REGISTRY) | set(ALIASES) | KEYWORDS

    def new(self, base: str, fallback: str) -> str:
        """``base``, or ``base_1``, ``base_2``, ... when taken; without a base, ``fallback1``, ``fallback2``, ..."""
        name, k = (base, 1) if base else (f"{fallback}1", 2)
        while name in self.taken:
            name, k = (f"{base}_{k}" if base else f"{fallback}{k}"), k + 1
        self.taken.add(name)
        return name


class Writer:
    """Steps as .net statements: a value with one reader, which takes it as its chain input, is written
    inline (``x -> conv -> relu``); every other value gets a name."""

    def __init__(self, model: Model, steps: list[Step], names: Names):
        self.model, self.names = model, names
        self.labels = Names()  # labels are never read as values: a chain's result may share its last label
        self.alias = {}
        for s in steps:
            if s.op == "=":
                self.alias[s.output] = self.resolve(s.inputs[0])
        self.steps = [s for s in steps if s.op != "="]
        for s in self.steps:
            s.inputs = tuple(self.resolve(i) for i in s.inputs)
        self.producer = {o: s for s in self.steps for o in (s.results or (s.output,))}
        self.outputs = [self.resolve(o.name) for o in model.graph.output]
        self.uses = Counter(i for s in self.steps for i in s.inputs) + Counter(self.outputs)
        self.value: dict[str, str] = {}  # ONNX value -> netdsl name
        self.weights: dict[str, np.ndarray] = {}

    def resolve(self, name: str) -> str:
        return self.alias.get(name, name)

    def inline(self, v: str) -> bool:
        s = self.producer.get(v)
        if s is None or s.results or self.uses[v] != 1 or v in self.outputs:
            return False
        reader = next(r for r in self.steps if v in r.inputs)
        return reader.op not in _INFIX and len(reader.inputs) == 1

    def ref(self, v: str) -> str:
        return self.expr(self.producer[v]) if self.inline(v) else self.value[v]

    def expr(self, s: Step) -> str:
        if s.op in _INFIX:
            a, b = (self.value[i] for i in s.inputs)
            return f"{a} * {b}" if s.op == "*" else f"{a} + {'-' if s.op == '-' else ''}{b}"
        if len(s.inputs) > 1:
            return f"{s.op}({', '.join([self.value[i] for i in s.inputs] + list(s.args))})"
        label = f"{s.label}: " if s.params else ""
        call = f"{s.op}({', '.join(s.args)})" if s.args else s.op
        return f"{self.ref(s.inputs[0])} -> {label}{call}"

    def label(self, s: Step) -> str:
        """A layer's label: from its weight's name (PyTorch's ``conv1.weight``), else its node's name."""
        for name in s.label_from:
            if name and "." in name and ":" not in name:
                return self.labels.new(ident(name.rsplit(".", 1)[0], "layer"), s.op)
        return self.labels.new(ident(_module_path(*s.origin), "layer"), _SHORT.get(s.op, s.op))

    def lines(self) -> list[str]:
        out = []
        for v in self.model.graph.output:  # outputs keep their ONNX names
            r = self.resolve(v.name)
            if r in self.producer and r not in self.value:
                self.value[r] = self.names.new(ident(v.name, "out"), "out")
        for s in self.steps:
            if s.params:
                s.label = self.label(s)
                self.weights.update({f"{s.label}.{role}": w for role, w in s.params.items()})
            for i in s.inputs:
                if i not in self.value and i in self.model.consts:
                    out.append(self.param(i))
            for r in s.results:  # bound at once; a result nothing reads is `_`
                if self.uses[r]:
                    self.value.setdefault(r, self.names.new(ident(r, "v"), "piece"))
            if not s.results and not self.inline(s.output):
                self.value.setdefault(s.output, self.names.new(ident(_module_path(*s.origin), "v"),
                                                               s.origin[1].lower()))
        for s in self.steps:
            if s.results:
                names = ", ".join(self.value[r] if self.uses[r] else "_" for r in s.results)
                out.append(_wrap(f"    {names} = {self.expr(s)}"))
            elif not self.inline(s.output):
                out.append(_wrap(f"    {self.value[s.output]} = {self.expr(s)}"))
        items: list[str] = []
        for v in self.model.graph.output:  # an input passed on, or a value given twice, gets a name of its own
            r = self.resolve(v.name)
            if r not in self.value and r in self.model.consts:  # an initializer given as an output
                out.append(self.param(r))
            if r in self.producer and self.value[r] not in items:
                items.append(self.value[r])
            else:
                items.append(f"{self.names.new(ident(v.name, 'out'), 'out')} = {self.value[r]}")
        return out + [f"    output {', '.join(items)}"]

    def param(self, name: str) -> str:
        value = self.model.consts[name].astype(np.float32)
        value = value.reshape(1) if value.ndim == 0 else value
        own = self.names.new(ident(name, "p"), "const")
        while own in self.labels.taken:  # a label's parameters would be named beside this one
            own = self.names.new(ident(name, "p"), "const")
        self.labels.taken.add(own)
        self.value[name] = own
        self.weights[self.value[name]] = value
        return f"    param {self.value[name]}: [{', '.join(map(str, value.shape))}]"


def _wrap(line: str) -> str:
    """A statement whose chain is too long for one line, as one ``->`` step per continuation line."""
    if len(line) <= _WIDTH:
        return line
    head, *stages = line.split(" -> ")
    return "\n        -> ".join([head, *stages])


def input_declarations(model: Model, names: Names) -> tuple[list[str], dict[str, str]]:
    """``input x: f32[N, 3, 32, 32]`` declarations, and each input's netdsl name; ONNX's dim_params become
    the network's dim names (a dim with neither size nor name gets a fresh one)."""
    fresh = (f"D{i}" for i in range(1, 10**6))
    typed = []
    for v in model.graph.input:
        if v.name in model.consts:
            continue
        dims = []
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(str(d.dim_value))
            elif d.dim_param:
                if d.dim_param not in model.symbols:
                    model.symbols[d.dim_param] = names.new(ident(d.dim_param, "D"), next(fresh))
                dims.append(model.symbols[d.dim_param])
            else:
                dims.append(names.new(next(fresh), "D"))
        if not dims:
            raise NetDSLError(f"input `{v.name}` has no shape", hint="export the model with its input shapes")
        typed.append((v.name, f"{DTYPES.get(v.type.tensor_type.elem_type, 'f32')}[{', '.join(dims)}]"))
    declared = {name: names.new(ident(name, "in"), "x") for name, _ in typed}
    return [f"    input {declared[name]}: {t}" for name, t in typed], declared
