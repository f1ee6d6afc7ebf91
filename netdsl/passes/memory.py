"""Buffer planning by liveness (an analysis): where every activation is stored.

Storage first, then reuse:
- views (a flatten the layout plan keeps a view, a dropout still there: ``OpDef.view``) are the same
  storage as their input; a flatten the layout plan makes a copy has storage of its own;
- concat without a copy: an input of a concat along its stored-last dim (``OpDef.concat_axis``;
  channels of NHWC) that is computed by a kernel (not a graph input, a view or another concat), used
  once by that concat and not a graph output is written by its producer straight into its slice of
  the concat's storage; its other readers read it there (kernels take inputs with a row stride);
- in place: a kernel may write its output over an input (``OpDef.in_place_inputs``: an activation's or
  a pointwise node's input; the residual of a fused conv/norm) whose storage nobody reads afterwards;
- a 4-D graph input gets storage for its NHWC copy (the layout plan converts it on entry); other
  graph inputs belong to the caller and are not planned;
- a storage that holds a graph output is allocated per call (the caller keeps it); every other storage
  lives from its first write to its last read, and a linear scan gives it a free buffer of one arena
  (the smallest that fits, else the largest free one, grown) or a new one.

Sizes need concrete dims: ``annotations["dims"]`` (set by run_pipeline's ``dims``), else the file's
defaults with N=1; bytes are the IR dtype's unless an item size is given (the Triton module plans
fp16 runs with 2). Buffers start at multiples of ``ALIGN`` bytes. The plan is stored as
``annotations["memory"]`` (a MemoryPlan); the Triton module allocates exactly this plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import NetDSLError
from ..ir.graph import Graph, Value
from ..ir.sizes import concrete_dims
from ..ir.types import DTYPES, numel
from ..ops import REGISTRY
from .layout import LayoutPlan, plan_layout, stored_dim

ALIGN = 64  # bytes: every buffer starts on a multiple (vector loads want 16)


@dataclass(frozen=True)
class MemoryPlan:
    dims: Mapping[str, int]
    storage: Mapping[str, str]  # value -> the value whose storage holds it (itself when it has its own)
    buffer_of: Mapping[str, int]  # value -> arena buffer index (views, slices, in place: their storage's)
    buffer_sizes: tuple[int, ...]  # bytes, each a multiple of ALIGN
    outputs: Mapping[str, int]  # storages that hold a graph output -> bytes (allocated per call)
    views: Mapping[str, str]  # view value -> the value whose storage it is
    concat_slices: Mapping[str, tuple[str, int]]  # value -> (concat value, first channel)
    in_place: Mapping[str, str]  # value -> the input it overwrites
    entry: tuple[str, ...]  # 4-D graph inputs converted to NHWC on entry (planned storage)
    no_reuse: int  # bytes if every kernel output had its own buffer
    max_live: int  # the most bytes live at once (a lower bound for any plan)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Byte offset of each buffer in the arena."""
        out, at = [], 0
        for size in self.buffer_sizes:
            out.append(at)
            at += size
        return tuple(out)

    @property
    def arena_bytes(self) -> int:
        return sum(self.buffer_sizes)

    @property
    def peak(self) -> int:
        return self.arena_bytes + sum(self.outputs.values())

    def summary(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in sorted(self.dims.items()))
        return (f"{len(self.buffer_sizes)} buffers + {len(self.outputs)} outputs, peak activation memory "
                f"{_mb(self.peak)} (no reuse {_mb(self.no_reuse)}, most live at once {_mb(self.max_live)}); "
                f"{len(self.in_place)} in place, {len(self.concat_slices)} concat inputs written in place, "
                f"at {dims}")


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def plan_dims(graph: Graph) -> dict[str, int] | None:
    """Concrete dims for sizing: annotations["dims"], else the file's defaults with N=1; None when a
    symbolic input dim has no size."""
    try:
        return concrete_dims(graph, graph.annotations.get("dims", {}))
    except NetDSLError:
        return None


def value_bytes(v: Value, env: Mapping[str, int], itemsize: int | None = None) -> int:
    return numel(v.type.concrete(env)) * (itemsize or DTYPES[v.type.dtype])


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def is_view(node, layout: LayoutPlan) -> bool:
    """Whether ``node`` stores nothing: a view op the layout plan does not turn into a copy."""
    return REGISTRY[node.op].view and node.output.name not in layout.copies


def _concat_slices(graph: Graph, producer, layout: LayoutPlan) -> dict[str, tuple[str, int]]:
    outputs = {v.name for v in graph.outputs}
    slices: dict[str, tuple[str, int]] = {}
    for node in graph.nodes:
        concat_axis = REGISTRY[node.op].concat_axis
        if concat_axis is None:
            continue
        rank = node.output.type.rank
        axis = concat_axis(node.attrs) % rank
        if stored_dim(axis, rank) != rank - 1:
            continue  # a slice along any other stored dim is not a run of whole rows
        offset = 0
        names = [v.name for v in node.inputs]
        for v in node.inputs:
            src = producer.get(v.name)
            if (src is not None and not is_view(src, layout) and src.output.name not in layout.copies
                    and REGISTRY[src.op].concat_axis is None and v.name not in outputs
                    and names.count(v.name) == 1 and v.name not in slices and isinstance(offset, int)):
                slices[v.name] = (node.output.name, offset)
            offset = offset + v.type.shape[axis]
    return slices


def plan_buffers(graph: Graph, env: Mapping[str, int], layout: LayoutPlan | None = None,
                 itemsize: int | None = None) -> MemoryPlan:
    """The memory plan of ``graph`` at sizes ``env`` (see the module docstring)."""
    layout = layout or graph.annotations.get("layout") or plan_layout(graph)
    producer = {v.name: n for n in graph.nodes for v in n.outputs}
    value = {v.name: v for v in graph.values()}
    last_use: dict[str, int] = {}
    end = len(graph.nodes)
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_use[v.name] = i
    for v in graph.outputs:
        last_use[v.name] = end
    entry = tuple(v.name for v in graph.inputs if v.type.rank == 4)
    external = {v.name for v in graph.inputs if v.type.rank != 4}

    slices = _concat_slices(graph, producer, layout)
    root: dict[str, str] = {v.name: v.name for v in graph.inputs}
    start: dict[str, int] = {name: 0 for name in entry}
    stop: dict[str, int] = {name: last_use.get(name, 0) for name in entry}  # per storage: its last read
    views, in_place = {}, {}
    for i, node in enumerate(graph.nodes):
        out = node.output.name
        if is_view(node, layout):
            root[out] = root[node.inputs[0].name]
            views[out] = node.inputs[0].name
        elif out in slices:
            root[out] = slices[out][0]
        else:
            root[out] = out
            op = REGISTRY[node.op]
            for k in op.in_place_inputs(node.attrs, len(node.inputs)):
                r = root[node.inputs[k].name]
                others = [root[v.name] for j, v in enumerate(node.inputs) if j != k]
                if (r not in external and node.inputs[k].type == node.output.type and r not in others
                        and stop.get(r, -1) <= i):
                    root[out] = r
                    in_place[out] = node.inputs[k].name
                    break
        r = root[out]
        start.setdefault(r, i)
        stop[r] = max(stop.get(r, i), last_use.get(out, i))
    outputs_of = {root[v.name] for v in graph.outputs} - external
    sizes = {r: _aligned(value_bytes(value[r], env, itemsize)) for r in start}

    # the linear scan over the arena's storages; output storages count as live, but own their memory
    intervals = sorted((start[r], stop[r], sizes[r], r) for r in start)
    buffers: list[int] = []
    free: list[int] = []
    busy: list[tuple[int, int | None, int]] = []  # (stop, buffer or None for an output storage, bytes)
    buffer_of_root: dict[str, int] = {}
    live = max_live = 0
    for begin, last, size, r in intervals:
        for item in [b for b in busy if b[0] < begin]:  # storages whose last read is done
            busy.remove(item)
            live -= item[2]
            if item[1] is not None:
                free.append(item[1])
        live += size
        max_live = max(max_live, live)
        if r in outputs_of:
            busy.append((last, None, size))
            continue
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
        busy.append((last, b, size))
        buffer_of_root[r] = b
    no_reuse = sum(sizes[name] for name in entry) + sum(
        _aligned(value_bytes(n.output, env, itemsize)) for n in graph.nodes if not is_view(n, layout))
    storage = {v: r for v, r in root.items() if r not in external}
    buffer_of = {v: buffer_of_root[r] for v, r in storage.items() if r in buffer_of_root}
    return MemoryPlan(dict(env), storage, buffer_of, tuple(buffers), {r: sizes[r] for r in sorted(outputs_of)},
                      views, slices, in_place, entry, no_reuse, max_live)


def plan_memory(graph: Graph) -> tuple[Graph, str]:
    env = plan_dims(graph)
    if env is None:
        return graph, "skipped (give sizes for the symbolic input dims)"
    plan = plan_buffers(graph, env)
    return graph.replace(annotations={**graph.annotations, "memory": plan}), plan.summary()
