"""The cost model: FLOPs, global-memory bytes read and written, and kernel launches.

One place decides what a node costs (``node_cost``), from the op's registry entry and the plans:
- a view (``OpDef.view``: flatten, reshape, an inference dropout) is free: 0 launches, 0 bytes;
- a concat is free when every input was written straight into its slice (the memory plan says which);
  otherwise one launch per input it copies (along a dim that is not stored last: one copy, no launch);
- any other node makes ``OpDef.launches`` launches that read each distinct input tensor once, read its
  weights once (as the kernel will, ``OpDef.weight_numel``: a folded batchnorm is a packed weight and
  one bias vector, a batchnorm affine a scale and a shift vector) and write its output once;
- given an SM count (the module's), a conv or linear that splits K for it (``memory.gemm_split``) makes
  one more launch, the reduction, and moves its fp32 workspace [SPLIT, M, N] twice (written by the
  partial sums, read by the reduction). Without one, no split is counted.
That is the traffic of a kernel that keeps its tiles on chip; re-reads between tiles (L2 hits) are not
modelled, which is fair to the unfused and the fused graph alike.

Two bounds to measure the fused graph against:

- ``floor_cost``, the floor: the traffic no schedule can avoid. Every weight read once, every graph
  input read once, every graph output written once, nothing else. Batchnorm parameters are left out
  (they fold into the weights and bias vectors the kernels read, at compile time), so the floor stays a
  lower bound; a weight is read whole, as the cost model reads it (an embedding's gather reads only its
  rows, which this does not credit). fused/floor says how far the fused graph is from perfect.
- ``ideal_cost``, the fusion bound: what epilogue fusion at its best moves. Each weight read once
  (batchnorm folded), and each activation that must exist written once and read once by each consumer.
  An activation must exist unless it is read by exactly one pointwise op (activation, batchnorm, add,
  mul), has its reader's output type, and is not a graph output: then its producer could compute the
  reader in its epilogue. Of the two operands of an add, only one can be computed in the adding kernel:
  when both could, the second must exist. Concat inputs exist (they are the concat's storage) but a
  concat itself costs nothing. Dead code, duplicates and dropout are removed first. This is the fusion
  rules' own model of the best they can do, so fused/bound is about 1 by design: it checks that the
  passes do what the rules allow, not how good the rules are (fused/floor says that).

Bytes are counted in the graph's dtypes, or with ``itemsize`` for every floating-point value and weight
(2: the same graph run in fp16); integer ids and boolean masks keep their own size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..ir.graph import Graph, Node, Value
from ..ir.types import BOOL, DTYPES, is_integer, numel
from ..ops import REGISTRY, OpKind
from .cleanup import eliminate_common_subexpressions, eliminate_dead_code, remove_dropout
from .fusion import fold_parameter_linear
from .layout import LayoutPlan, plan_layout, stored_dim
from .memory import MemoryPlan, gemm_split, is_view, value_bytes
from .rewrite import origin_of


@dataclass(frozen=True)
class Cost:
    flops: int = 0
    read: int = 0
    written: int = 0
    launches: int = 0

    @property
    def bytes(self) -> int:
        return self.read + self.written

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.read + other.read, self.written + other.written,
                    self.launches + other.launches)


def _float_size(v: Value, itemsize: int | None) -> int | None:
    """The element size to count ``v`` with: ``itemsize`` for a floating-point value, else its own."""
    return None if itemsize is None or is_integer(v.type.dtype) or v.type.dtype == BOOL else itemsize


def tensor_bytes(v: Value, env: Mapping[str, int], itemsize: int | None = None) -> int:
    """The bytes of value ``v`` at ``env``, a floating-point value counted with ``itemsize`` when given."""
    return value_bytes(v, env, _float_size(v, itemsize))


def weight_size(node: Node, itemsize: int | None = None) -> int:
    """The element size of the node's weights: ``itemsize``, else that of the node's output."""
    return itemsize or DTYPES[node.outputs[0].type.dtype]


def param_bytes(graph: Graph, node: Node, itemsize: int | None = None) -> int:
    """The bytes of weights the node's kernel reads (once), after packing at compile time."""
    numels = {role: numel(tuple(graph.params[p].shape)) for role, p in node.params.items()}
    return REGISTRY[node.op].weight_numel(node.attrs, numels) * weight_size(node, itemsize)


def node_cost(graph: Graph, node: Node, env: Mapping[str, int], plan: MemoryPlan | None,
              layout: LayoutPlan, itemsize: int | None = None, sm_count: int | None = None) -> Cost:
    op = REGISTRY[node.op]
    if is_view(node, layout) or op.constant:  # a parameter read as a value: its readers read the weight
        return Cost()
    inputs = list({v.name: v for v in node.inputs}.values())
    if op.concat_axis is not None:
        copied = [v for v in node.inputs if plan is None or v.name not in plan.concat_slices]
        moved = sum(tensor_bytes(v, env, itemsize) for v in copied)
        rank = node.output.type.rank
        along_rows = stored_dim(op.concat_axis(node.attrs), rank, layout.reads_in(node)) == rank - 1
        return Cost(0, moved, moved, len(copied) if along_rows else 0)
    ins = [v.type.concrete(env) for v in node.inputs]
    flops = int(op.flops(ins, node.outputs[0].type.concrete(env), node.attrs))  # (the first result's shape)
    read = sum(tensor_bytes(v, env, itemsize) for v in inputs) + param_bytes(graph, node, itemsize)
    written = sum(tensor_bytes(v, env, itemsize) for v in node.outputs)
    split, m, n = gemm_split(graph, node, env, sm_count, itemsize)
    if split > 1:  # the reduction launch; the workspace written by the partial sums and read by the reduction
        workspace = split * m * n * 4
        return Cost(flops, read + workspace, written + workspace, op.launches_of(node.attrs) + 1)
    return Cost(flops, read, written, op.launches_of(node.attrs))


def node_costs(graph: Graph, env: Mapping[str, int], itemsize: int | None = None,
               sm_count: int | None = None) -> dict[str, Cost]:
    """Cost per node, keyed by the node's (first) output value: the name the IR printer gives it;
    with ``sm_count``, split-K as a module compiled for that many SMs runs it."""
    plan = graph.annotations.get("memory")
    layout = graph.annotations.get("layout") or plan_layout(graph)
    return {n.outputs[0].name: node_cost(graph, n, env, plan, layout, itemsize, sm_count) for n in graph.nodes}


def total(costs: Mapping[str, Cost]) -> Cost:
    out = Cost()
    for c in costs.values():
        out = out + c
    return out


# ---------------------------------------------------------------------------------------------
# the bounds: the floor, and the fusion bound ("ideal")
# ---------------------------------------------------------------------------------------------

def _cleaned(graph: Graph) -> Graph:
    """``graph`` after the clean-up passes (no dead code, no duplicates, no dropout: a bound computes
    nothing twice and nothing unused), with a matmul by a transposed parameter read as the linear it is
    (a transposed weight moves nothing)."""
    for cleanup in (remove_dropout, eliminate_common_subexpressions, eliminate_dead_code, fold_parameter_linear):
        graph, _ = cleanup(graph)
    return graph


def floor_cost(graph: Graph, env: Mapping[str, int], itemsize: int | None = None) -> Cost:
    """The floor for ``graph`` (any graph: unfused or fused; the same for both): each weight read once
    (batchnorm parameters left out: they fold into other weights), each graph input read once and each
    graph output written once (an output that is a graph input, or a view of one already counted,
    moves nothing). No FLOPs and no launches are counted."""
    graph = _cleaned(graph)
    storage = {v.name: node.inputs[0].name for node in graph.nodes if REGISTRY[node.op].view for v in node.outputs}

    def store(name: str) -> str:
        while name in storage:
            name = storage[name]
        return name

    weights: dict[str, int] = {}
    for node in graph.nodes:
        for role, p in node.params.items():
            if node.op == "batchnorm" or role.startswith("bn_"):  # folded away (a fused node's bn_* roles)
                continue
            weights.setdefault(p, numel(tuple(graph.params[p].shape)) * weight_size(node, itemsize))
    read_names = {store(v.name) for node in graph.nodes for v in node.inputs}
    inputs = {v.name for v in graph.inputs}
    read = sum(tensor_bytes(v, env, itemsize) for v in graph.inputs if v.name in read_names)
    values = {v.name: v for v in graph.values()}
    written = sum(tensor_bytes(values[name], env, itemsize)
                  for name in dict.fromkeys(store(v.name) for v in graph.outputs) if name not in inputs)
    return Cost(0, read + sum(weights.values()), written, 0)


def ideal_cost(graph: Graph, env: Mapping[str, int], itemsize: int | None = None) -> Cost:
    """The fusion bound for ``graph`` (any graph: unfused or fused): the traffic when every value that
    epilogue fusion could keep on chip stays there (see the module's docstring)."""
    graph = _cleaned(graph)
    layout = plan_layout(graph)
    storage: dict[str, str] = {}  # view -> the value it is a view of

    def store(name: str) -> str:
        while name in storage:
            name = storage[name]
        return name

    readers: dict[str, list[Node]] = {}
    producer: dict[str, Node] = {}
    constants = {n.output.name for n in graph.nodes if REGISTRY[n.op].constant}
    for node in graph.nodes:
        if REGISTRY[node.op].constant:  # read like an input (its bytes count where it is read)
            continue
        if is_view(node, layout):
            storage.update((v.name, node.inputs[0].name) for v in node.outputs)
            continue
        for v in node.outputs:
            producer[v.name] = node
        for name in dict.fromkeys(store(v.name) for v in node.inputs):
            readers.setdefault(name, []).append(node)
    outputs = {store(v.name) for v in graph.outputs}

    def fusable(name: str) -> bool:
        """Whether the value could stay on chip: its one reader is pointwise, of the same shape."""
        node, users = producer.get(name), readers.get(name, [])
        if (node is None or REGISTRY[node.op].concat_axis is not None or name in outputs or len(users) != 1
                or len(node.outputs) != 1):
            return False
        if node.op == "add" and REGISTRY[users[0].op].absorbs_add:  # "add & norm": the sum feeds the norm's kernel
            return True
        if not REGISTRY[users[0].op].is_pointwise:
            return False
        return node.output.type == users[0].output.type

    on_chip = {name for name in producer if fusable(name)}
    for node in graph.nodes:  # a binary op computes at most one operand in its own kernel
        if REGISTRY[node.op].kind is OpKind.BINARY:
            a, b = (store(v.name) for v in node.inputs)
            if a != b and a in on_chip and b in on_chip:  # x + x reads one value
                on_chip.discard(b)
    folded = 0
    weights = 0
    for node in graph.nodes:
        src = producer.get(node.inputs[0].name) if node.inputs else None
        if (node.op == "batchnorm" and src is not None and REGISTRY[src.op].folds_batchnorm
                and node.inputs[0].name in on_chip):
            c = numel(tuple(graph.params[node.params["weight"]].shape))
            folded += 0 if src.attrs["bias"] else c * weight_size(node, itemsize)
        elif REGISTRY[node.op].constant:
            continue
        elif node.op == "batchnorm":
            weights += 2 * numel(tuple(graph.params[node.params["weight"]].shape)) * weight_size(node, itemsize)
        else:
            weights += param_bytes(graph, node, itemsize)
    # kernels: a value kept on chip joins its producer to its reader's kernel; a kernel reads each
    # stored tensor once, however many of its nodes use it, and writes its one stored output
    kernel: dict[str, str] = {}  # producer output -> the output its kernel stores

    def kernel_of(name: str) -> str:
        while name in on_chip:
            name = readers[name][0].output.name
        return name

    stored_reads: dict[str, set[str]] = {}
    for name, node in producer.items():
        if REGISTRY[node.op].concat_axis is not None:
            continue
        k = kernel[name] = kernel_of(name)
        if name != node.outputs[0].name:
            continue  # a node with several results reads its inputs once
        for v in node.inputs:
            s = store(v.name)
            if s not in on_chip:
                stored_reads.setdefault(k, set()).add(s)
    sizes = {v.name: tensor_bytes(v, env, itemsize) for v in graph.values() if v.name in constants or v in graph.inputs}
    sizes.update((v.name, tensor_bytes(v, env, itemsize)) for node in set(producer.values()) for v in node.outputs)
    read = sum(sizes[s] for reads in stored_reads.values() for s in reads)
    written = sum(sizes[name] for name, node in producer.items()
                  if name not in on_chip and REGISTRY[node.op].concat_axis is None)
    launches = len({id(producer[k]) for k in kernel.values()})  # a node with several results is one kernel
    return Cost(0, read + weights + folded, written, launches)


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CostSummary:
    """The totals of the unfused and the fused graph, with the two bounds: ``ideal``, the fusion bound
    (the rules' best: ``ideal_cost``), and ``floor``, the traffic no schedule avoids (``floor_cost``)."""

    unfused: Cost
    fused: Cost
    ideal: Cost
    unfused_nodes: int
    fused_nodes: int
    floor: Cost = Cost()

    @property
    def fused_over_unfused(self) -> float:
        return self.fused.bytes / self.unfused.bytes

    @property
    def fused_over_ideal(self) -> float:
        """fused / the fusion bound: about 1 by design (the passes do what the rules allow)."""
        return self.fused.bytes / self.ideal.bytes

    @property
    def fused_over_floor(self) -> float:
        """fused / the floor: how far the fused graph is from moving only weights, inputs and outputs."""
        return self.fused.bytes / self.floor.bytes


def summarize(unfused: Graph, fused: Graph, env: Mapping[str, int], itemsize: int | None = None) -> CostSummary:
    """The totals of both graphs and the bounds, with every floating-point value and weight counted
    with ``itemsize`` bytes when given (2: fp16)."""
    return CostSummary(total(node_costs(unfused, env, itemsize)), total(node_costs(fused, env, itemsize)),
                       ideal_cost(unfused, env, itemsize), len(unfused.nodes), len(fused.nodes),
                       floor_cost(unfused, env, itemsize))


def _h(x: float, unit: str = "") -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{suffix}{unit}"
    return f"{int(x)}{unit}"


def cost_report(unfused: Graph, fused: Graph, env: Mapping[str, int], itemsize: int | None = None) -> str:
    """Per fused node (named as the IR printer names it: its output value): launches, FLOPs and bytes,
    next to what the original nodes it stands for cost unfused; then the totals of the unfused graph,
    the fused graph, the fusion bound and the floor."""
    before = node_costs(unfused, env, itemsize)
    after = node_costs(fused, env, itemsize)
    width = max([len(n.outputs[0].name) for n in fused.nodes] + [8])
    opw = max([len(n.op) for n in fused.nodes] + [16])
    dims = ", ".join(f"{k}={v}" for k, v in sorted(env.items()))
    size = f"; floats in {itemsize}-byte elements" if itemsize else ""
    lines = [f"Cost at {dims} (bytes: global memory read + written; weights read once per launch{size})",
             f"{'node':<{width}}  {'op':<{opw}} {'parts':>5} {'launches':>8} {'FLOPs':>9}  {'bytes unfused':>13} "
             f"{'bytes fused':>12} {'read':>9} {'written':>9}"]
    for n in fused.nodes:
        parts = [p for p in origin_of(fused, n.outputs[0].name) if p in before]
        was = total({p: before[p] for p in parts})
        c = after[n.outputs[0].name]
        lines.append(f"{n.outputs[0].name:<{width}}  {n.op:<{opw}} {len(parts):>5} {f'{was.launches}->{c.launches}':>8} "
                     f"{_h(c.flops):>9}  {_h(was.bytes, 'B'):>13} {_h(c.bytes, 'B'):>12} {_h(c.read, 'B'):>9} "
                     f"{_h(c.written, 'B'):>9}")
    s = summarize(unfused, fused, env, itemsize)
    lines.append("")
    lines.append(f"{'':<13} {'nodes':>6} {'launches':>9} {'FLOPs':>9} {'read':>10} {'written':>10} {'bytes':>10}")
    for label, c, nodes in (("unfused", s.unfused, s.unfused_nodes), ("fused", s.fused, s.fused_nodes),
                            ("fusion bound", s.ideal, None), ("floor", s.floor, None)):
        flops = _h(c.flops) if nodes is not None else "-"
        launches = c.launches if label != "floor" else "-"
        lines.append(f"{label:<13} {nodes if nodes is not None else '-':>6} {launches:>9} {flops:>9} "
                     f"{_h(c.read, 'B'):>10} {_h(c.written, 'B'):>10} {_h(c.bytes, 'B'):>10}")
    lines.append(f"fused/unfused bytes {s.fused_over_unfused:.3f}, fused/floor bytes {s.fused_over_floor:.3f}, "
                 f"fused/fusion bound {s.fused_over_ideal:.3f}, launches {s.unfused.launches} -> {s.fused.launches} "
                 f"(fusion bound {s.ideal.launches})")
    if itemsize is None:  # the same graph in fp16: ids and masks keep their size, so the ratios can move
        half = summarize(unfused, fused, env, 2)
        lines.append(f"in fp16: fused/unfused bytes {half.fused_over_unfused:.3f}, fused/floor bytes "
                     f"{half.fused_over_floor:.3f} (fused {_h(half.fused.bytes, 'B')}, floor {_h(half.floor.bytes, 'B')})")
    lines.append("floor: weights read once, graph inputs read once, graph outputs written once (no schedule moves less)")
    lines.append("fusion bound: every value whose one reader is a same-shape pointwise op kept on chip (the rules' best)")
    return "\n".join(lines)
