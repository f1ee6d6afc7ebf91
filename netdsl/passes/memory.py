"""Buffer planning by liveness (an analysis): where every activation is stored.

Storage first, then reuse:
- views (a flatten, a reshape, a dropout still there: ``OpDef.view``) are the same storage as what
  they read;
- concat without a copy: an input of a concat along its stored-last dim (``OpDef.concat_axis``;
  channels of NHWC) that is computed by a kernel (not a graph input, a view or another concat), used
  once by that concat and not a graph output is written by its producer straight into its slice of
  the concat's storage; its other readers read it there (kernels take inputs with a row stride);
- in place: a kernel may write its output over an input (``OpDef.in_place_inputs``: an activation's or
  a pointwise node's input; the residual of a fused conv/norm) whose storage nobody reads afterwards;
- a value some readers read in the other layout (``LayoutPlan.converted``) gets storage for that
  copy (``image@NHWC``: an image read by a conv, converted once on entry); graph inputs belong to
  the caller and are not planned;
- a storage that holds a graph output is allocated per call (the caller keeps it); every other storage
  lives from its first write to its last read, and a linear scan gives it a free buffer of one arena
  (the smallest that fits, else the largest free one, grown) or a new one.

Sizes need concrete dims: ``annotations["dims"]`` (set by run_pipeline's ``dims``), else the file's
defaults with N=1; bytes are the IR dtype's unless an item size is given (the Triton module plans
fp16 runs with 2). Buffers start at multiples of ``ALIGN`` bytes. The plan is stored as
``annotations["memory"]`` (a MemoryPlan); the Triton module allocates exactly this plan.

Split-K (``netdsl.kernels.splitk``), only for a plan made for an SM count: a GEMM over an [out, ...]
weight (``OpDef.folds_batchnorm``: conv, linear) whose tile grid is too short for the SMs splits its K
loop; ``gemm_split`` decides it with the kernels' own chooser, and the plan keeps each split
(``splits``) and one fp32 scratch buffer (``workspace``, bytes) the size of the largest [SPLIT, M, N]
workspace, shared by the split nodes one after the other and counted in the peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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
    converted: Mapping[str, str]  # converted copy (``x@NHWC``) -> the value it is a copy of
    no_reuse: int  # bytes if every kernel output had its own buffer
    max_live: int  # the most bytes live at once (a lower bound for any plan)
    splits: Mapping[str, int] = field(default_factory=dict)  # split-K node (first output) -> K slices (> 1)
    workspace: int = 0  # bytes of the fp32 split-K scratch buffer (0: no split)

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
        return self.arena_bytes + sum(self.outputs.values()) + self.workspace

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


def gemm_split(graph: Graph, node, env: Mapping[str, int], sm_count: int | None,
               itemsize: int | None = None) -> tuple[int, int, int]:
    """(K slices, M, N) of a split-K node: its workspace is [slices, M, N] fp32; (1, 0, 0) when it does
    not split. A GEMM over an [out, ...] weight (``folds_batchnorm``; [OC, IC/G, KH, KW] or [N, K]): M
    output rows, N = ``out`` columns in G groups, K = KH*KW taps of IC/G. Decided by
    ``kernels.splitk.choose_split`` for ``sm_count`` SMs over the sm_80 configs of the kernel's tier
    (fp32: exact FMA; fp16/bf16: tensor cores), the same for a node on every call of a shape.
    A depthwise conv (one input channel per group) runs the direct kernel: no split."""
    op = REGISTRY[node.op]
    base = REGISTRY[op.base] if op.base is not None else op
    if not sm_count or not base.folds_batchnorm or "weight" not in node.params:
        return 1, 0, 0
    from ..kernels import conv, matmul  # only with an SM count: Triton is imported by then
    from ..kernels.splitk import choose_split

    weight = tuple(graph.params[node.params["weight"]].shape)
    groups = node.attrs.get("groups", 1)
    out = tuple(node.outputs[0].type.concrete(env))
    axis = op.axis_of(node.attrs, len(out))
    n = out[axis]
    m = math.prod(out) // n
    if groups > 1 and weight[1] == 1:
        return 1, 0, 0
    tier = "fma" if (itemsize or DTYPES[node.outputs[0].type.dtype]) == 4 else "fast"
    tiered = conv.TIERED_CONFIGS if len(weight) == 4 else matmul.TIERED_CONFIGS
    configs = [c for c, tiers in tiered if tier in tiers]
    _, split = choose_split(m, n // groups, weight[1], configs, sm_count, taps=math.prod(weight[2:]), groups=groups)
    return (split, m, n) if split > 1 else (1, 0, 0)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def is_view(node, layout: LayoutPlan | None = None) -> bool:
    """Whether ``node`` stores nothing: its output is its input's storage (``OpDef.view``, or a
    reordering of dims the layout plan keeps a strided view)."""
    if REGISTRY[node.op].view:
        return True
    if layout is None:
        return False
    if len(node.outputs) > 1:
        return node.outputs[0].name in layout.split_views
    return layout.is_free_reorder(node.output.name)


def converted_key(value: str, layout: str) -> str:
    """The storage name of ``value``'s copy converted to ``layout`` (e.g. ``image@NHWC``)."""
    return f"{value}@{layout}"


def _concat_slices(graph: Graph, producer, layout: LayoutPlan) -> dict[str, tuple[str, int]]:
    outputs = {v.name for v in graph.outputs}
    slices: dict[str, tuple[str, int]] = {}
    for node in graph.nodes:  # (a concat has one output)
        concat_axis = REGISTRY[node.op].concat_axis
        if concat_axis is None:
            continue
        rank = node.output.type.rank
        reads = layout.reads_in(node)
        axis = concat_axis(node.attrs) % rank
        if stored_dim(axis, rank, reads) != rank - 1:
            continue  # a slice along any other stored dim is not a run of whole rows
        offset = 0
        names = [v.name for v in node.inputs]
        for v in node.inputs:
            src = producer.get(v.name)
            if (src is not None and not is_view(src, layout) and REGISTRY[src.op].concat_axis is None
                    and v.name not in outputs and layout.get(v.name) == reads and v.name not in layout.converted
                    and names.count(v.name) == 1 and v.name not in slices and isinstance(offset, int)):
                slices[v.name] = (node.output.name, offset)
            offset = offset + v.type.shape[axis]
    return slices


def plan_buffers(graph: Graph, env: Mapping[str, int], layout: LayoutPlan | None = None,
                 itemsize: int | None = None, sm_count: int | None = None) -> MemoryPlan:
    """The memory plan of ``graph`` at sizes ``env`` (see the module docstring); with ``sm_count``, the
    split-K nodes for that many SMs and their workspace."""
    layout = layout or graph.annotations.get("layout") or plan_layout(graph)
    producer = {v.name: n for n in graph.nodes for v in n.outputs}
    value = {v.name: v for v in graph.values()}
    # graph inputs belong to the caller, a parameter read as a value (`OpDef.constant`) to the weights
    external = {v.name for v in graph.inputs} | {n.output.name for n in graph.nodes if REGISTRY[n.op].constant}
    end = len(graph.nodes)

    def read_from(v: Value, node) -> str:
        """The storage a node reads input ``v`` from: ``v``'s, or its converted copy's."""
        want = layout.reads_in(node)
        if v.type.rank == 4 and layout.get(v.name) != want:
            return converted_key(v.name, want)
        return v.name

    # last reads per (value or converted copy)
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_use[read_from(v, node)] = i
    for v in graph.outputs:
        last_use[v.name] = end
    conversions = {converted_key(v, lay): v for v, lay in layout.converted.items()}

    slices = _concat_slices(graph, producer, layout)
    root: dict[str, str] = {name: name for name in external}
    start: dict[str, int] = {}
    stop: dict[str, int] = {}  # per storage: its last read
    views, in_place = {}, {}

    def converted_now(name: str, i: int) -> None:
        """The converted copy of ``name`` is written at step ``i`` (after its producer, or on entry)."""
        lay = layout.converted.get(name)
        if lay is not None:
            key = converted_key(name, lay)
            root[key] = key
            start[key] = i
            stop[key] = last_use.get(key, i)

    for v in graph.inputs:
        converted_now(v.name, 0)
    for i, node in enumerate(graph.nodes):
        if REGISTRY[node.op].constant:
            converted_now(node.output.name, i)
            continue
        if len(node.outputs) > 1 and is_view(node, layout):  # pieces that are strided views of the input
            src = read_from(node.inputs[0], node)
            for v in node.outputs:
                root[v.name] = root[src]
                views[v.name] = src
                r = root[src]
                if r not in external:
                    stop[r] = max(stop.get(r, i), last_use.get(v.name, i))
            continue
        if len(node.outputs) > 1:  # each result its own storage
            for v in node.outputs:
                root[v.name] = v.name
                start[v.name] = i
                stop[v.name] = last_use.get(v.name, i)
                converted_now(v.name, i)
            continue
        out = node.output.name
        if out in layout.permuted_writes:  # written by its kernel into its reader's reordered storage
            root[out] = layout.permuted_writes[out][0]
        elif is_view(node, layout):
            src = read_from(node.inputs[0], node)
            root[out] = root[src]
            views[out] = src
        elif out in slices:
            root[out] = slices[out][0]
        else:
            root[out] = out
            op = REGISTRY[node.op]
            for k in op.in_place_inputs(node.attrs, len(node.inputs)):
                src = read_from(node.inputs[k], node)
                r = root[src]
                others = [root[read_from(v, node)] for j, v in enumerate(node.inputs) if j != k]
                same_layout = node.output.type.rank != 4 or layout.reads_in(node) == layout.get(out)
                if (r not in external and node.inputs[k].type == node.output.type and r not in others
                        and same_layout and stop.get(r, -1) <= i):
                    root[out] = r
                    in_place[out] = src
                    break
        r = root[out]
        if r not in external:  # a view of a graph input is the caller's storage
            start.setdefault(r, i)
            stop[r] = max(stop.get(r, i), last_use.get(out, i))
        converted_now(out, i)
    outputs_of = {root[v.name] for v in graph.outputs} - external
    sizes = {r: _aligned(value_bytes(value[conversions.get(r, r)], env, itemsize)) for r in start}

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
    no_reuse = sum(sizes[key] for key in conversions) + sum(
        _aligned(value_bytes(v, env, itemsize)) for n in graph.nodes if not is_view(n, layout)
        and not REGISTRY[n.op].constant for v in n.outputs)
    storage = {v: r for v, r in root.items() if r not in external}
    buffer_of = {v: buffer_of_root[r] for v, r in storage.items() if r in buffer_of_root}
    gemms = {n.outputs[0].name: gemm_split(graph, n, env, sm_count, itemsize) for n in graph.nodes}
    splits = {name: s for name, (s, _, _) in gemms.items() if s > 1}
    workspace = max((_aligned(s * m * n * 4) for s, m, n in gemms.values() if s > 1), default=0)
    return MemoryPlan(dict(env), storage, buffer_of, tuple(buffers), {r: sizes[r] for r in sorted(outputs_of)},
                      views, slices, in_place, conversions, no_reuse, max_live, splits, workspace)


def plan_memory(graph: Graph) -> tuple[Graph, str]:
    env = plan_dims(graph)
    if env is None:
        return graph, "skipped (give sizes for the symbolic input dims)"
    plan = plan_buffers(graph, env)
    return graph.replace(annotations={**graph.annotations, "memory": plan}), plan.summary()
