"""Layout planning (an analysis): how each 4-D tensor is stored, in which layout each node reads it,
and where a copy is needed.

A 4-D tensor is stored NHWC (channels contiguous) or NCHW (the IR's own order, contiguous); other
ranks keep the IR's order. Which one follows from what reads and writes it, i.e. from each op's
``OpDef.axis`` (the IR dim its kernel needs stored last):

- an op working per channel on a 4-D tensor (``axis`` 1: convs, pooling, batchnorm, resampling)
  reads and writes NHWC: the implicit-GEMM conv gathers a contiguous run of channels per pixel, and
  the pointwise/norm/pool kernels view a tensor as [pixels, channels];
- an op working along another dim (a linear, layernorm, softmax over the last dim, matmul, attention)
  or needing the IR's order (``ORDERED``: reshape, transpose, a flatten that is not a view) reads and
  writes NCHW, the order PyTorch and the user see;
- an op that walks elements in any layout (``ANY_LAYOUT``: activations, add, mul, concat) reads its
  4-D operands in the layout of the first one stored NHWC (NCHW when none is) and writes that layout.

A 4-D graph input is stored NCHW (the caller's) and a 4-D output is handed back as an NCHW view. A
value read in the layout it is not stored in gets one converted copy (``converted``), which every
reader wanting that layout shares: e.g. an image read by a conv is converted to NHWC once, on entry.
A node whose ``axis`` is still not stored last in the layout it reads (a softmax over H, a
batchnorm over dim 1 of [N, C, L]) gets a *fix-up*: its operands are copied with that dim moved last,
and its result moved back. A flatten of an NHWC map is a free view when the map is [N, C, 1, 1] or
every reader can take the features in (H, W, C) order (``reorders_features``: a linear permutes its
weight columns at pack time); otherwise it reads the map converted to NCHW, and every view op (a
flatten, a reshape) is a view of what it reads.

The result, ``annotations["layout"]``, is a ``LayoutPlan``; the memory plan and the Triton module
read it, so what ``show`` prints is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..ir.dims import SymDim
from ..ir.graph import Graph, Node
from ..ops import REGISTRY
from ..ops.registry import ORDERED

NHWC, NCHW = "NHWC", "NCHW"
NHWC_DIM = (0, 3, 1, 2)  # IR dim (NCHW) -> its position in NHWC storage


def stored_dim(dim: int, rank: int, layout: str | None) -> int:
    """The position of IR dim ``dim`` in storage of ``layout`` (only 4-D tensors can be NHWC)."""
    dim %= rank
    return NHWC_DIM[dim] if rank == 4 and layout == NHWC else dim


@dataclass(frozen=True)
class LayoutPlan:
    layout: Mapping[str, str]  # every 4-D value -> how it is stored
    reads: Mapping[str, str]  # node output -> the layout the node reads its 4-D inputs in
    converted: Mapping[str, str]  # 4-D value -> the other layout, of the one copy some readers read
    fixups: Mapping[str, int]  # node output -> the IR dim its kernel needs last, which storage does not have
    hwc_flatten: Mapping[str, tuple[int, int, int]]  # flatten output -> (C, H, W): a view in (H, W, C) order
    # a transpose/permute read only by kernels that take strided operands -> its permutation: a strided
    # view of its input, no copy (the head split before attention)
    strided_views: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # a value whose only reader reorders its dims and whose kernel writes any strides -> (the reorder's
    # output, its permutation): the kernel writes straight into the reordered storage (the head merge
    # after attention), and the reorder costs nothing
    permuted_writes: Mapping[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    # a split/chunk (``OpDef.split_axis``; keyed by its first result) whose pieces are read, directly or
    # through views and strided reorders, only by kernels that take strided operands: its pieces are
    # strided views of its input, no copy (Q, K and V of one GEMM before attention)
    split_views: frozenset[str] = frozenset()

    def is_free_reorder(self, name: str) -> bool:
        """A transpose/permute that moves nothing: a strided view, or written in place by its producer."""
        return name in self.strided_views or any(t == name for t, _ in self.permuted_writes.values())

    def get(self, name: str, default=None):
        return self.layout.get(name, default)

    def __getitem__(self, name: str) -> str:
        return self.layout[name]

    def reads_in(self, node: Node) -> str | None:
        return self.reads.get(node.outputs[0].name)

    def summary(self) -> str:
        nhwc = sum(1 for x in self.layout.values() if x == NHWC)
        return (f"{nhwc} NHWC, {len(self.layout) - nhwc} NCHW, {len(self.converted)} converted; "
                f"{len(self.fixups)} layout fix-ups, {len(self.hwc_flatten)} (H, W, C) flattens, "
                f"{len(self.strided_views)} strided views, {len(self.permuted_writes)} permuted writes, "
                f"{len(self.split_views)} splits into views")


def _merges_to_rows(node: Node) -> bool:
    """A view of a 4-D [N, C, H, W] as [N, C*H*W] (a flatten, a reshape(N, -1))."""
    if not REGISTRY[node.op].view:
        return False
    t, o = node.inputs[0].type, node.output.type
    return t.rank == 4 and o.rank == 2 and o.shape[0] == t.shape[0]


def _nhwc_view(graph: Graph, node: Node, users) -> str | None:
    """For a view merging an NHWC map into rows: "view" when the map is [N, C, 1, 1] (both orders
    agree), "hwc" when every reader takes the features in (H, W, C) order; None otherwise."""
    if not _merges_to_rows(node):
        return None
    c, h, w = node.inputs[0].type.shape[1:]
    if h == 1 and w == 1:
        return "view"
    readers = users.get(node.output.name, [])
    if (any(isinstance(d, SymDim) for d in (c, h, w)) or not readers
            or node.output.name in {v.name for v in graph.outputs}):
        return None
    if all(REGISTRY[u.op].reorders_features and u.inputs[0].name == node.output.name for u in readers):
        return "hwc"
    return None


def _reads(graph: Graph, node: Node, layout: Mapping[str, str], users) -> str | None:
    """The layout ``node`` reads its 4-D inputs in (None: it has none)."""
    fours = [v for v in node.inputs if v.type.rank == 4]
    if not fours:
        return None
    axis = REGISTRY[node.op].axis_of(node.attrs, 4)
    if axis == 1:
        return NHWC
    if axis is None:
        return NHWC if any(layout.get(v.name) == NHWC for v in fours) else NCHW
    if axis == ORDERED and layout.get(node.inputs[0].name) == NHWC and _nhwc_view(graph, node, users):
        return NHWC  # a flatten that is a view of the NHWC map as it is
    return NCHW


def plan_layout(graph: Graph) -> LayoutPlan:
    users = graph.users()
    layout = {v.name: NCHW for v in graph.inputs if v.type.rank == 4}
    reads: dict[str, str] = {}
    converted: dict[str, str] = {}
    fixups: dict[str, int] = {}
    hwc: dict[str, tuple[int, int, int]] = {}
    for node in graph.nodes:
        out = node.outputs[0].name  # (the first result's name keys a node with several)
        r = _reads(graph, node, layout, users)
        if r is not None:
            reads[out] = r
            for v in node.inputs:
                if v.type.rank == 4 and layout[v.name] != r:
                    converted[v.name] = r
        axis = REGISTRY[node.op].axis_of(node.attrs, node.inputs[0].type.rank if node.inputs else 0)
        for v in node.outputs:
            if v.type.rank == 4:
                axis4 = REGISTRY[node.op].axis_of(node.attrs, 4)
                layout[v.name] = NHWC if axis4 == 1 or (axis4 is None and r == NHWC) else NCHW
        if axis == ORDERED:
            if r == NHWC and _nhwc_view(graph, node, users) == "hwc":
                hwc[out] = tuple(node.inputs[0].type.shape[1:])
        elif axis is not None and node.inputs:
            rank = node.inputs[0].type.rank
            if stored_dim(axis, rank, r) != rank - 1:
                fixups[out] = axis
    strided = _strided_views(graph, layout, users)
    return LayoutPlan(layout, reads, converted, fixups, hwc, strided,
                      _permuted_writes(graph, layout, users, strided), _split_views(graph, layout, users, strided))


def _split_views(graph: Graph, layout: Mapping[str, str], users, strided) -> frozenset[str]:
    """Splits whose pieces can be strided views of their input: stored in the IR's order, no piece a graph
    output, every piece read only by kernels taking strided operands (``strided_inputs``), possibly through
    views (reshape, unflatten) and reorders that are strided views themselves."""
    outputs = {v.name for v in graph.outputs}

    def strided_readers(name: str) -> bool:
        readers = users.get(name, [])
        return bool(readers) and name not in outputs and all(
            REGISTRY[r.op].strided_inputs
            or (len(r.outputs) == 1 and (REGISTRY[r.op].view or r.output.name in strided)
                and strided_readers(r.output.name))
            for r in readers)

    return frozenset(
        node.outputs[0].name for node in graph.nodes
        if REGISTRY[node.op].split_axis is not None and layout.get(node.inputs[0].name, NCHW) == NCHW
        and all(strided_readers(v.name) for v in node.outputs))


def _permuted_writes(graph: Graph, layout: Mapping[str, str], users, strided) -> dict:
    producer = {v.name: n for n in graph.nodes for v in n.outputs}
    outputs = {v.name for v in graph.outputs}
    writes = {}
    for node in graph.nodes:
        op = REGISTRY[node.op]
        if op.permutation is None or not node.inputs or node.output.name in strided:
            continue
        v = node.inputs[0]
        src = producer.get(v.name)
        perm = op.permutation(node.attrs, v.type.rank)
        if (src is not None and REGISTRY[src.op].strided_output and len(src.outputs) == 1
                and perm[-1] == v.type.rank - 1
                and len(users.get(v.name, [])) == 1 and v.name not in outputs
                and layout.get(v.name, NCHW) == NCHW and layout.get(node.output.name, NCHW) == NCHW):
            writes[v.name] = (node.output.name, perm)
    return writes


def _strided_views(graph: Graph, layout: Mapping[str, str], users) -> dict[str, tuple[int, ...]]:
    """Reorderings of dims that need no copy: every reader's kernel takes strided operands
    (``strided_inputs``), the last dim stays last (contiguous), the input is stored in the IR's order,
    and the value is not a graph output (those are handed back contiguous)."""
    outputs = {v.name for v in graph.outputs}
    views = {}
    for node in graph.nodes:
        op = REGISTRY[node.op]
        if op.permutation is None or not node.inputs:
            continue
        rank = node.inputs[0].type.rank
        perm = op.permutation(node.attrs, rank)
        readers = users.get(node.output.name, [])
        if (perm[-1] == rank - 1 and readers and node.output.name not in outputs
                and layout.get(node.inputs[0].name, NCHW) == NCHW
                and all(REGISTRY[u.op].strided_inputs for u in readers)):
            views[node.output.name] = perm
    return views


def mark_layout(graph: Graph) -> tuple[Graph, str]:
    plan = plan_layout(graph)
    return graph.replace(annotations={**graph.annotations, "layout": plan}), plan.summary()
