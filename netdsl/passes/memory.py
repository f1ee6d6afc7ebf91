"""Buffer planning by liveness (an analysis): which activation shares memory with which.

Storage first, then reuse:
- views (flatten, a dropout still there) are the same storage as their input;
- concat without a copy: a concat input that is computed by a kernel (not a graph input, a view or
  another concat), read once by that concat and not a graph output is written by its producer
  straight into its channel slice of the concat's buffer (the kernels store into a channel slice);
- in place: an elementwise kernel may write its output over an input whose storage nobody reads
  afterwards (an activation's or a pointwise node's input; the residual of a fused conv/norm);
- each remaining storage lives from its first write to its last read, and a linear scan gives it a
  free buffer (the smallest that fits, else the largest free one, grown) or a new one.

Graph inputs belong to the caller and are not planned; graph outputs live to the end. Sizes need
concrete dims: ``annotations["dims"]`` (set by run_pipeline's ``dims``), else the file's defaults
with N=1. The plan is stored as ``annotations["memory"]`` (a MemoryPlan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..ir.graph import Graph, Value
from ..ir.types import DTYPES, numel
from ..ops import REGISTRY, OpKind

VIEW_OPS = frozenset({"flatten", "dropout"})


def in_place_inputs(node) -> tuple[int, ...]:
    """Inputs of ``node`` its kernel may overwrite with its output (read and written element by element)."""
    op = REGISTRY[node.op]
    if op.kind is OpKind.ELEMENTWISE or node.op == "batchnorm":
        return (0,)
    if node.op in ("add", "mul"):
        return (0, 1)
    if node.op == "fused_pointwise":
        return (0, len(node.inputs) - 1) if node.attrs["residual"] else (0,)
    if op.kind is OpKind.FUSED and node.attrs.get("residual"):
        return (len(node.inputs) - 1,)
    return ()


@dataclass(frozen=True)
class MemoryPlan:
    dims: Mapping[str, int]
    buffer_of: Mapping[str, int]  # value -> buffer index (views and concat slices: their storage's)
    buffer_sizes: tuple[int, ...]  # bytes
    views: Mapping[str, str]  # view value -> the value whose storage it is
    concat_slices: Mapping[str, tuple[str, int]]  # value -> (concat value, first channel)
    in_place: Mapping[str, str]  # value -> the input it overwrites
    no_reuse: int  # bytes if every kernel output had its own buffer
    max_live: int  # the most bytes live at once (a lower bound for any plan)

    @property
    def peak(self) -> int:
        return sum(self.buffer_sizes)

    def summary(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in sorted(self.dims.items()))
        return (f"{len(self.buffer_sizes)} buffers, peak activation memory {_mb(self.peak)} "
                f"(no reuse {_mb(self.no_reuse)}, most live at once {_mb(self.max_live)}); "
                f"{len(self.in_place)} in place, {len(self.concat_slices)} concat inputs written in place, "
                f"at {dims}")


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def plan_dims(graph: Graph) -> dict[str, int] | None:
    """Concrete dims for sizing: annotations["dims"], else the file's defaults with N=1."""
    env = {**graph.dim_defaults, **graph.annotations.get("dims", {})}
    for v in graph.inputs:
        for sym in v.type.symbols():
            if sym not in env:
                if sym != "N":
                    return None
                env["N"] = 1
    return env


def value_bytes(v: Value, env: Mapping[str, int]) -> int:
    return numel(v.type.concrete(env)) * DTYPES[v.type.dtype]


def _concat_slices(graph: Graph, producer) -> dict[str, tuple[str, int]]:
    outputs = {v.name for v in graph.outputs}
    slices: dict[str, tuple[str, int]] = {}
    for node in graph.nodes:
        if node.op != "concat" or node.attrs["dim"] % node.output.type.rank != 1:
            continue
        offset = 0
        names = [v.name for v in node.inputs]
        for v in node.inputs:
            src = producer.get(v.name)
            if (src is not None and src.op not in VIEW_OPS and src.op != "concat" and v.name not in outputs
                    and names.count(v.name) == 1 and v.name not in slices and isinstance(offset, int)):
                slices[v.name] = (node.output.name, offset)
            offset = offset + v.type.shape[1]
    return slices


def plan_memory(graph: Graph) -> tuple[Graph, str]:
    env = plan_dims(graph)
    if env is None:
        return graph, "skipped (give sizes for the symbolic input dims)"
    producer = {v.name: n for n in graph.nodes for v in n.outputs}
    last_use: dict[str, int] = {}
    end = len(graph.nodes)
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_use[v.name] = i
    for v in graph.outputs:
        last_use[v.name] = end
    external = {v.name for v in graph.inputs}

    slices = _concat_slices(graph, producer)
    root: dict[str, str] = {v.name: v.name for v in graph.inputs}
    members: dict[str, list[str]] = {}
    views, in_place = {}, {}
    start: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        out = node.output.name
        if node.op in VIEW_OPS:
            root[out] = root[node.inputs[0].name]
            views[out] = node.inputs[0].name
        elif out in slices:
            root[out] = slices[out][0]
        else:
            root[out] = out
            for k in in_place_inputs(node):
                r = root[node.inputs[k].name]
                others = [root[v.name] for j, v in enumerate(node.inputs) if j != k]
                if (r not in external and node.inputs[k].type == node.output.type and r not in others
                        and all(last_use.get(m, -1) <= i for m in members[r])):
                    root[out] = r
                    in_place[out] = node.inputs[k].name
                    break
        r = root[out]
        members.setdefault(r, []).append(out)
        start.setdefault(r, i)
    # one interval per storage: from its first write to the last read of anything stored in it
    intervals = []
    for r, ms in members.items():
        if r in external:
            continue
        stop = max(last_use.get(m, start[r]) for m in ms)
        size = value_bytes(producer[r].output, env)
        intervals.append((start[r], stop, size, r))
    intervals.sort()
    buffers: list[int] = []
    free: list[int] = []
    busy: list[tuple[int, int]] = []  # (stop, buffer)
    buffer_of_root: dict[str, int] = {}
    live = max_live = 0
    live_sizes: dict[int, int] = {}
    for begin, stop, size, r in intervals:
        for item in [b for b in busy if b[0] < begin]:  # storages whose last read is done
            busy.remove(item)
            free.append(item[1])
            live -= live_sizes.pop(item[1])
        fits = [b for b in free if buffers[b] >= size]
        if fits:
            b = min(fits, key=lambda j: buffers[j])
        elif free:
            b = max(free, key=lambda j: buffers[j])
            buffers[b] = size
        else:
            b = len(buffers)
            buffers.append(size)
        if b in free:
            free.remove(b)
        busy.append((stop, b))
        buffer_of_root[r] = b
        live += size
        live_sizes[b] = size
        max_live = max(max_live, live)
    no_reuse = sum(value_bytes(n.output, env) for n in graph.nodes if n.op not in VIEW_OPS)
    buffer_of = {v: buffer_of_root[r] for v, r in root.items() if r in buffer_of_root}
    plan = MemoryPlan(env, buffer_of, tuple(buffers), views, slices, in_place, no_reuse, max_live)
    return graph.replace(annotations={**graph.annotations, "memory": plan}), plan.summary()
