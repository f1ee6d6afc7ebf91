"""Layout planning (an analysis): how each tensor is stored, and where a kernel needs a layout copy.

Kernels work channels-last: the implicit-GEMM conv gathers one contiguous run of channels per pixel,
and pointwise/norm/pool kernels view a tensor as [pixels, channels] with channel stride 1. So inside a
compiled model every 4-D tensor is stored NHWC; other ranks keep the IR's order. At the boundary the
user and PyTorch see NCHW: a 4-D graph input is converted once on entry (into storage the memory plan
gives it), and a 4-D output is handed back as an NCHW view of its NHWC storage.

What each op needs comes from its registry entry (``OpDef.axis``): the IR dim its kernel needs
stored last. When that dim is not last in storage (a layernorm or linear over W of a 4-D tensor, a
softmax over H, a batchnorm over dim 1 of [N, C, L]), the node gets a *fix-up*: its operands are copied
with that dim moved last, and its result moved back. A flatten (``ORDERED``: it needs the IR's dim
order) of an NHWC map is a free view when the map is [N, C, 1, 1] or when every reader can take the
features in (H, W, C) order (``reorders_features``: a linear permutes its weight columns at pack time);
otherwise it is a layout copy with storage of its own.

The result, ``annotations["layout"]``, is a ``LayoutPlan``; the memory plan and the Triton module
read it, so what ``show`` prints is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..ir.dims import SymDim
from ..ir.graph import Graph, Node
from ..ops import REGISTRY
from ..ops.registry import ORDERED

NHWC_DIM = (0, 3, 1, 2)  # IR dim (NCHW) -> its position in NHWC storage


def stored_dim(dim: int, rank: int) -> int:
    """The position of IR dim ``dim`` in storage (NHWC for rank 4, the IR's order otherwise)."""
    dim %= rank
    return NHWC_DIM[dim] if rank == 4 else dim


@dataclass(frozen=True)
class LayoutPlan:
    layout: Mapping[str, str]  # every 4-D value -> "NHWC" (graph inputs: "NCHW", converted on entry)
    fixups: Mapping[str, int]  # node output -> the IR dim its kernel needs last, which storage does not have
    hwc_flatten: Mapping[str, tuple[int, int, int]]  # flatten output -> (C, H, W): a view in (H, W, C) order
    copies: frozenset[str]  # flatten outputs that are layout copies (not views)

    def get(self, name: str, default=None):
        return self.layout.get(name, default)

    def __getitem__(self, name: str) -> str:
        return self.layout[name]

    def summary(self) -> str:
        nhwc = sum(1 for x in self.layout.values() if x == "NHWC")
        return (f"{nhwc} NHWC, {len(self.layout) - nhwc} NCHW; {len(self.fixups)} layout fix-ups, "
                f"{len(self.copies)} layout copies, {len(self.hwc_flatten)} (H, W, C) flattens")


def _flatten_plan(graph: Graph, node: Node, users) -> str:
    """"view", "hwc" (a view read in (H, W, C) order) or "copy" for a flatten."""
    t = node.inputs[0].type
    if t.rank != 4 or node.attrs["start_dim"] != 1:
        return "view" if t.rank != 4 else "copy"
    c, h, w = t.shape[1:]
    if h == 1 and w == 1:
        return "view"
    readers = users.get(node.output.name, [])
    if (any(isinstance(d, SymDim) for d in (c, h, w)) or not readers
            or node.output.name in {v.name for v in graph.outputs}):
        return "copy"
    if all(REGISTRY[u.op].reorders_features and u.inputs[0].name == node.output.name for u in readers):
        return "hwc"
    return "copy"


def plan_layout(graph: Graph) -> LayoutPlan:
    users = graph.users()
    layout = {v.name: "NCHW" for v in graph.inputs if v.type.rank == 4}
    fixups: dict[str, int] = {}
    hwc: dict[str, tuple[int, int, int]] = {}
    copies: set[str] = set()
    for node in graph.nodes:
        if node.output.type.rank == 4:
            layout[node.output.name] = "NHWC"
        if not node.inputs:
            continue
        rank = node.inputs[0].type.rank
        axis = REGISTRY[node.op].axis_of(node.attrs, rank)
        if axis == ORDERED:
            how = _flatten_plan(graph, node, users)
            if how == "hwc":
                hwc[node.output.name] = tuple(node.inputs[0].type.shape[1:])
            elif how == "copy":
                copies.add(node.output.name)
        elif axis is not None and stored_dim(axis, rank) != rank - 1:
            fixups[node.output.name] = axis
    return LayoutPlan(layout, fixups, hwc, frozenset(copies))


def mark_layout(graph: Graph) -> tuple[Graph, str]:
    plan = plan_layout(graph)
    return graph.replace(annotations={**graph.annotations, "layout": plan}), plan.summary()
