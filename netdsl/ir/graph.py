"""The IR: a typed SSA graph.

``Graph(inputs, nodes, outputs)``; each ``Node(op, inputs, attrs, params) -> outputs`` names an op of
the registry; each ``Value`` has a unique name and a ``TensorType``. Nodes are kept in a topological
order. Graphs, nodes and values are treated as immutable: a pass builds a new graph (``replace``).
Parameters are declared on the graph (``ParamSpec``: shape and default initialisation) and named
hierarchically (``layer1.0.conv1.weight``); a node refers to them by role (``{"weight": "..."}``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from ..errors import SourceLoc
from .types import TensorType


@dataclass(frozen=True)
class Value:
    name: str
    type: TensorType

    def __str__(self) -> str:
        return f"%{self.name}"


@dataclass(frozen=True)
class ParamSpec:
    """A learned tensor: its shape and how it is initialised by default.

    ``init`` is one of ``kaiming`` (He normal, for the ReLU family), ``xavier`` (Glorot uniform, for
    sigmoid/tanh/softsign), ``normal`` (N(0, ``std``^2), row ``zero_row`` zero: an embedding table and its
    padding row), ``uniform`` (U(-``value``, ``value``)), ``zeros``, ``ones``, ``const`` (``value``).
    """

    shape: tuple[int, ...]
    init: str = "zeros"
    fan_in: int = 1
    fan_out: int = 1
    value: float = 0.0
    zero_row: int | None = None
    std: float = 1.0


@dataclass(frozen=True, eq=False)
class Node:
    op: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)  # role -> graph parameter name
    name: str = ""  # hierarchical scope, e.g. "layer1.0.conv1"
    loc: SourceLoc | None = None

    @property
    def output(self) -> Value:
        (out,) = self.outputs
        return out

    def replace(self, **changes) -> "Node":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Value, ...]
    params: Mapping[str, ParamSpec] = field(default_factory=dict)
    output_names: tuple[str, ...] = ()  # user-facing names of the outputs
    dim_defaults: Mapping[str, int] = field(default_factory=dict)  # e.g. {"H": 224} from the file
    source: str | None = None  # file name, for messages
    # analysis results and provenance attached by the passes (netdsl.passes): e.g. "layout"
    # (value -> "NHWC"/"NCHW"), "memory" (the buffer plan), "origin" (fused value -> original values)
    annotations: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes) -> "Graph":
        return dataclasses.replace(self, **changes)

    def producers(self) -> dict[str, Node]:
        return {v.name: n for n in self.nodes for v in n.outputs}

    def users(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v.name, []).append(n)
        return out

    def use_counts(self) -> dict[str, int]:
        """How many times each value is read, counting graph outputs as readers."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            for v in n.inputs:
                counts[v.name] = counts.get(v.name, 0) + 1
        for v in self.outputs:
            counts[v.name] = counts.get(v.name, 0) + 1
        return counts

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        for n in self.nodes:
            yield from n.outputs

    def used_params(self) -> dict[str, ParamSpec]:
        used = {p for n in self.nodes for p in n.params.values()}
        return {k: v for k, v in self.params.items() if k in used}
