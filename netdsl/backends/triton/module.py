"""``TritonModule``: a compiled network as a ``torch.nn.Module`` that runs the plans the passes made.

Built once from a fused graph and its weights: every node is lowered (weights packed once). What is
stored where is not decided here but read from the passes' analyses, so the cost report describes
the plan that runs:

- the layout plan (``netdsl.passes.layout``, the graph's ``layout`` annotation, or computed the same
  way for a graph that has none): how each 4-D tensor is stored (NHWC around convs, NCHW around
  sequence ops), the copies converted for readers that want the other layout (an image read by a
  conv, once on entry), the nodes that need a layout fix-up, the flattens that are views;
- the memory plan (``netdsl.passes.memory.plan_buffers``, for the sizes of each call, in the module's
  dtype): one arena of ``plan.arena_bytes``, allocated once per input shape and reused by every call,
  whose buffers hold every value that is not a graph output; views, in-place outputs and concat slices
  are views of their storage. A storage that holds a graph output is allocated per call, so outputs
  stay valid after the next call.

``forward`` takes and returns NCHW tensors (a 4-D output stored NHWC is an NCHW view of it). Layout
conversions are copies made by torch into planned storage; fix-ups are the only memory besides the plan.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ...errors import NetDSLError
from ...ir.graph import Graph, Value
from ...kernels._host import KernelError
from ...ops import REGISTRY
from ...passes.layout import NHWC, LayoutPlan, plan_layout, stored_dim
from ...passes.memory import MemoryPlan, converted_key, is_view, plan_buffers, plan_dims
from ..reference import bind_dims
from .lower import TORCH_DTYPES, TORCH_INT_DTYPES, LowerCtx, Step, lower, to_internal_view, to_ir
from .runtime import warn_if_interpreting


def _shape_only(x) -> np.ndarray:
    """An array with ``x``'s shape and no memory of its own (for binding the symbolic dims)."""
    return np.broadcast_to(np.zeros((), np.uint8), tuple(np.shape(x) if not isinstance(x, torch.Tensor) else x.shape))


def stored_shape(v: Value, dims: Mapping[str, int], layout: str | None) -> tuple[int, ...]:
    shape = tuple(v.type.concrete(dims))
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 and layout == NHWC else shape


def convert(x: torch.Tensor, layout: str) -> torch.Tensor:
    """A 4-D tensor stored in the other layout, viewed as ``layout`` (NHWC <-> NCHW)."""
    return to_internal_view(x) if layout == NHWC else to_ir(x)


class _Storage:
    """The tensors of one call: arena buffers (reused) and output storages (fresh), by storage root."""

    def __init__(self, module: "TritonModule", plan: MemoryPlan, arena: torch.Tensor):
        self.module, self.plan, self.arena = module, plan, arena
        self.flat: dict[str, torch.Tensor] = {}  # storage root -> its memory, flat, in the module's dtype
        self.allocated = arena.numel()

    def memory(self, root: str) -> torch.Tensor:
        if root not in self.flat:
            m, plan = self.module, self.plan
            if root in plan.outputs:
                nbytes = plan.outputs[root]
                raw = torch.empty(nbytes, dtype=torch.uint8, device=m.device)
                self.allocated += nbytes
            else:
                b = plan.buffer_of[root]
                at = plan.offsets[b]
                raw = self.arena[at:at + plan.buffer_sizes[b]]
            self.flat[root] = raw.view(m.torch_dtype)
        return self.flat[root]

    def tensor(self, v: Value, layout: str | None = None) -> torch.Tensor:
        """Where value ``v`` is stored: its storage's memory, shaped as ``v`` (or a concat's slice);
        with ``layout``, where its copy converted to that layout is."""
        dims, plan = self.plan.dims, self.plan
        if layout is not None:
            key = converted_key(v.name, layout)
            shape = stored_shape(v, dims, layout)
            return self.memory(plan.storage[key])[:int(np.prod(shape))].view(shape)
        if v.name in plan.concat_slices:
            concat, c0 = plan.concat_slices[v.name]
            target = self.tensor(self.module.values[concat])
            return target[..., c0:c0 + v.type.concrete(dims)[1]]
        if v.name in self.module.layout.permuted_writes:  # the reader's storage, its reorder undone
            reorder, perm = self.module.layout.permuted_writes[v.name]
            inverse = sorted(range(len(perm)), key=perm.__getitem__)
            return self.tensor(self.module.values[reorder]).permute(*inverse)
        shape = stored_shape(v, dims, self.module.layout.get(v.name))
        return self.memory(plan.storage[v.name])[:int(np.prod(shape))].view(shape)


class TritonModule(torch.nn.Module):
    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray], dtype: str = "fp32",
                 device: str | torch.device = "cpu", allow_tf32: bool = False):
        super().__init__()
        if dtype not in TORCH_DTYPES:
            raise NetDSLError(f"unknown dtype `{dtype}`", hint="one of fp32, fp16, bf16")
        self.graph = graph
        self.dtype_name = dtype
        self.torch_dtype = TORCH_DTYPES[dtype]
        self.itemsize = torch.empty((), dtype=self.torch_dtype).element_size()
        self.device = torch.device(device)
        if self.device.type != "meta":
            warn_if_interpreting()
        self.layout: LayoutPlan = graph.annotations.get("layout") or plan_layout(graph)
        self.values = {v.name: v for v in graph.values()}
        ctx = LowerCtx(graph, dict(weights), self.torch_dtype, self.device, self.layout, allow_tf32)
        self.steps: list[Step] = [lower(node, ctx) for node in graph.nodes]
        self._plans: dict[tuple, tuple[MemoryPlan, torch.Tensor | None]] = {}
        self.allocated_bytes = 0  # what the last call allocated: the arena and the output storages
        default = plan_dims(graph)
        self.plan = self.plan_for(default) if default is not None else None

    # -- the plans ------------------------------------------------------------------------------

    def plan_for(self, dims: Mapping[str, int]) -> MemoryPlan:
        """The memory plan for these sizes, in the module's dtype (cached per shape)."""
        key = tuple(sorted(dims.items()))
        if key not in self._plans:
            self._plans[key] = (plan_buffers(self.graph, dims, self.layout, self.itemsize), None)
        return self._plans[key][0]

    def _arena(self, dims: Mapping[str, int]) -> tuple[MemoryPlan, torch.Tensor]:
        plan = self.plan_for(dims)
        key = tuple(sorted(dims.items()))
        arena = self._plans[key][1]
        if arena is None:
            arena = torch.empty(plan.arena_bytes, dtype=torch.uint8, device=self.device)
            self._plans[key] = (plan, arena)
        return plan, arena

    @property
    def hwc_flatten(self) -> Mapping[str, tuple[int, int, int]]:
        return self.layout.hwc_flatten

    @property
    def concat_slices(self) -> dict[str, tuple[str, int, int]]:
        """value -> (concat value, first channel, end channel): producers writing into a concat's storage."""
        if self.plan is None:
            return {}
        return {name: (concat, c0, c0 + self.values[name].type.shape[1])
                for name, (concat, c0) in self.plan.concat_slices.items()}

    @property
    def launches(self) -> int:
        """Triton kernel launches per forward call (layout copies, done by torch, not counted)."""
        total = 0
        slices = self.concat_slices
        for s in self.steps:
            op = REGISTRY[s.node.op]
            if op.concat_axis is not None:
                rank = s.node.output.type.rank
                d = stored_dim(op.concat_axis(s.node.attrs), rank, self.layout.reads_in(s.node))
                if d == rank - 1:  # a copy per input not in place
                    total += sum(1 for v in s.node.inputs if v.name not in slices)
            else:
                total += op.launches_of(s.node.attrs)
        return total

    # -- running --------------------------------------------------------------------------------

    def run(self, inputs, trace: bool = False) -> dict[str, torch.Tensor]:
        """Run the network; return {output name: tensor (IR layout)}, and every value when ``trace``."""
        if isinstance(inputs, Mapping):
            given = dict(inputs)
        else:
            if len(inputs) != len(self.graph.inputs):
                raise NetDSLError(f"network `{self.graph.name}` takes {len(self.graph.inputs)} input(s), "
                                  f"got {len(inputs)}")
            given = {v.name: x for v, x in zip(self.graph.inputs, inputs)}
        dims = bind_dims(self.graph, {k: _shape_only(x) for k, x in given.items()})
        plan, arena = self._arena(dims)
        storage = _Storage(self, plan, arena)
        values: dict[str, torch.Tensor] = {}
        converted: dict[str, torch.Tensor] = {}  # values some readers read in the other layout

        def produced(v: Value, t: torch.Tensor) -> None:
            values[v.name] = t
            other = self.layout.converted.get(v.name)
            if other is not None:  # one converted copy (by torch) for every reader wanting it
                converted[v.name] = storage.tensor(v, other).copy_(convert(t, other))

        def read(v: Value, node) -> torch.Tensor:
            if v.name in converted and self.layout.reads_in(node) != self.layout.get(v.name):
                return converted[v.name]
            return values[v.name]

        for v in self.graph.inputs:
            x = given[v.name]
            x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
            dtype = TORCH_INT_DTYPES.get(v.type.dtype, self.torch_dtype)  # token ids stay integers
            produced(v, x.to(device=self.device, dtype=dtype).contiguous())
        traced: dict[str, torch.Tensor] = {}
        for step in self.steps:
            node = step.node
            if REGISTRY[node.op].constant:  # a parameter read as a value: the packed weight, nothing runs
                produced(node.output, step.run([], None))
                if trace:
                    traced[node.output.name] = values[node.output.name]
                continue
            if is_view(node, self.layout) and len(node.outputs) > 1:  # pieces: strided views of the input
                x = read(node.inputs[0], node)
                dim = REGISTRY[node.op].split_axis(node.attrs) % x.dim()
                sizes = [v.type.concrete(dims)[dim] for v in node.outputs]
                for v, piece in zip(node.outputs, torch.split(x, sizes, dim=dim), strict=True):
                    produced(v, piece)
                    if trace:
                        traced[v.name] = piece.clone()
                continue
            if is_view(node, self.layout):  # nothing runs: the output is what the node reads, reshaped
                x = read(node.inputs[0], node)
                if node.output.name in self.layout.strided_views:  # dims reordered by strides only
                    produced(node.output, x.permute(*self.layout.strided_views[node.output.name]))
                elif self.layout.is_free_reorder(node.output.name):  # its producer wrote it in place
                    produced(node.output, storage.tensor(node.output))
                else:
                    produced(node.output, x.reshape(stored_shape(node.output, dims, self.layout.get(node.output.name))))
                if trace:
                    traced[node.output.name] = values[node.output.name].clone()
                continue
            outs = [storage.tensor(v) for v in node.outputs]
            try:
                y = step.run([read(v, node) for v in node.inputs], outs if len(outs) > 1 else outs[0])
            except KernelError as e:
                raise NetDSLError(f"`{node.op}` cannot run on these inputs: {e}", node.loc,
                                  hint="the shapes of this call: " + ", ".join(
                                      f"{k}={list(x.shape)}" for k, x in given.items())) from None
            for v, out, t in zip(node.outputs, outs, y if len(outs) > 1 else (y,), strict=True):
                if t.data_ptr() != out.data_ptr():
                    raise AssertionError(f"node {v.name} ({node.op}) did not write its planned storage")
                produced(v, t)
                if trace:  # later nodes reuse this storage: keep a copy
                    traced[v.name] = t.clone()
        self.allocated_bytes = storage.allocated
        result = {oname: self._ir_view(v.name, values[v.name])
                  for oname, v in zip(self.graph.output_names, self.graph.outputs)}
        if trace:
            result.update({k: self._ir_view(k, t) for k, t in traced.items()})
        return result

    def _ir_view(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """A traced value in the IR's layout (undoing an (H, W, C)-order flatten)."""
        if name in self.layout.hwc_flatten:
            c, h, w = self.layout.hwc_flatten[name]
            return t.reshape(t.shape[0], h, w, c).permute(0, 3, 1, 2).reshape(t.shape[0], -1)
        return to_ir(t) if self.layout.get(name) == NHWC else t

    def forward(self, *inputs: torch.Tensor):
        outs = list(self.run(list(inputs)).values())
        return outs[0] if len(outs) == 1 else tuple(outs)
