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
  are views of their storage. The storages that hold graph outputs are allocated with it.

Everything else a call decides is decided once per input shape too: the ``LaunchPlan`` (``plan``) of a
shape holds the memory, buffers for the inputs, and the calls of one forward, prepared by its first
call (``prepared``: each kernel launch with its grid, config and arguments fixed; a step that does torch
work besides launching is called as it is). A later call for a known shape copies its inputs in, runs
those calls (on a CUDA device, replays them as one CUDA graph: ``graphs``) and returns fresh copies of
the outputs, so outputs stay valid after the next call.

Split-K (``netdsl.kernels.splitk``): a module made for an SM count (``sm_count``; none by default, so
no split, until split-K has been measured on hardware) plans each shape's splits with the memory plan
(``MemoryPlan.splits``, decided by ``netdsl.passes.memory.gemm_split``), runs each split conv/linear
with that split (two launches: partial sums, then the reduction with the epilogue) and gives their fp32
partial sums the plan's workspace, so the bytes it allocates and the launches it makes are still the
plans' and the cost report's for the same SM count.

``forward`` takes and returns NCHW tensors (a 4-D output stored NHWC is returned with the strides of an
NCHW view of it). Layout conversions are copies made by torch into planned storage; fix-ups, the input
buffers and the returned copies are the only memory besides the plan.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ...errors import NetDSLError
from ...ir.graph import Graph, Value
from ...kernels import _host
from ...kernels._host import KernelError
from ...ops import REGISTRY
from ...passes.layout import NHWC, LayoutPlan, plan_layout, stored_dim
from ...passes.memory import MemoryPlan, is_view, plan_buffers, plan_dims
from ..reference import bind_dims
from .graphs import graphs_wanted, replay
from .lower import TORCH_DTYPES, TORCH_INT_DTYPES, LowerCtx, Step, lower, to_internal_view, to_ir
from .plan import LaunchPlan, stored_shape
from .prepared import Call, copy_call, run_and_prepare
from .runtime import device as runtime_device
from .runtime import warn_if_interpreting


def _shape_only(x) -> np.ndarray:
    """An array with ``x``'s shape and no memory of its own (for binding the symbolic dims)."""
    return np.broadcast_to(np.zeros((), np.uint8), tuple(np.shape(x) if not isinstance(x, torch.Tensor) else x.shape))


def convert(x: torch.Tensor, layout: str) -> torch.Tensor:
    """A 4-D tensor stored in the other layout, viewed as ``layout`` (NHWC <-> NCHW)."""
    return to_internal_view(x) if layout == NHWC else to_ir(x)


def _located(node, e: KernelError, given: Mapping) -> NetDSLError:
    """A kernel's refusal as an error at the node's source line."""
    return NetDSLError(f"`{node.op}` cannot run on these inputs: {e}", node.loc,
                       hint="the shapes of this call: " + ", ".join(
                           f"{k}={list(np.shape(x))}" for k, x in given.items()))


class TritonModule(torch.nn.Module):
    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray], dtype: str = "fp32",
                 device: str | torch.device | None = None, allow_tf32: bool = False, cuda_graphs: bool = True,
                 sm_count: int | None = None):
        super().__init__()
        if dtype not in TORCH_DTYPES:
            raise NetDSLError(f"unknown dtype `{dtype}`", hint="one of fp32, fp16, bf16")
        self.graph = graph
        self.dtype_name = dtype
        self.torch_dtype = TORCH_DTYPES[dtype]
        self.itemsize = torch.empty((), dtype=self.torch_dtype).element_size()
        self.device = torch.device(device if device is not None else runtime_device())
        if self.device.type != "meta":
            warn_if_interpreting()
        self.cuda_graphs = graphs_wanted(cuda_graphs, self.device)
        # SMs a conv/linear's tile grid should fill (split-K): the GPU's unless given; none on the CPU
        self.sm_count = sm_count
        self.layout: LayoutPlan = graph.annotations.get("layout") or plan_layout(graph)
        self.values = {v.name: v for v in graph.values()}
        ctx = LowerCtx(graph, dict(weights), self.torch_dtype, self.device, self.layout, allow_tf32)
        self.steps: list[Step] = [lower(node, ctx) for node in graph.nodes]
        self._plans: dict[tuple, MemoryPlan] = {}
        self.launch_plans: dict[tuple, LaunchPlan] = {}  # by sorted dims: one per input shape
        self._by_shapes: dict[tuple, LaunchPlan] = {}  # by the inputs' shapes, once they were checked
        self.allocated_bytes = 0  # what the plan of the last call allocated: the arena and the output storages
        default = plan_dims(graph)
        self.plan = self.plan_for(default) if default is not None else None

    # -- the plans ------------------------------------------------------------------------------

    def plan_for(self, dims: Mapping[str, int]) -> MemoryPlan:
        """The memory plan for these sizes, in the module's dtype (cached per shape)."""
        key = tuple(sorted(dims.items()))
        if key not in self._plans:
            self._plans[key] = plan_buffers(self.graph, dims, self.layout, self.itemsize, self.sm_count)
        return self._plans[key]

    def launch_plan(self, dims: Mapping[str, int]) -> LaunchPlan:
        """The launch plan for these sizes (made on first use, then kept)."""
        key = tuple(sorted(dims.items()))
        if key not in self.launch_plans:
            inputs = {v.name: TORCH_INT_DTYPES.get(v.type.dtype, self.torch_dtype)  # token ids stay integers
                      for v in self.graph.inputs}
            self.launch_plans[key] = LaunchPlan(self.plan_for(dims), dims, self.layout, self.values, inputs,
                                                self.torch_dtype, self.device)
        return self.launch_plans[key]

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
        total = len(self.plan.splits) if self.plan is not None else 0  # a split-K node's reduction launch
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

    def _given(self, inputs) -> dict:
        if isinstance(inputs, Mapping):
            return dict(inputs)
        if len(inputs) != len(self.graph.inputs):
            raise NetDSLError(f"network `{self.graph.name}` takes {len(self.graph.inputs)} input(s), "
                              f"got {len(inputs)}")
        return {v.name: x for v, x in zip(self.graph.inputs, inputs)}

    def _plan_of(self, given: dict) -> LaunchPlan:
        """The launch plan for these inputs: by their shapes when seen before, else checked and bound."""
        try:
            shapes = tuple(tuple(given[v.name].shape) for v in self.graph.inputs)
        except (KeyError, AttributeError):
            shapes = None
        plan = self._by_shapes.get(shapes)
        if plan is None:
            plan = self.launch_plan(bind_dims(self.graph, {k: _shape_only(x) for k, x in given.items()}))
            if shapes is not None:
                self._by_shapes[shapes] = plan
        return plan

    def run(self, inputs, trace: bool = False) -> dict[str, torch.Tensor]:
        """Run the network; return {output name: tensor (IR layout)}, and every value when ``trace``.

        The first call for an input shape runs every step and prepares the calls of the shape's
        launch plan; later calls (not traced) copy the inputs in and repeat those calls: on a CUDA
        device as one CUDA graph (``graphs``). Outputs are fresh tensors (copies), valid after the next call."""
        given = self._given(inputs)
        plan = self._plan_of(given)
        plan.stage(given)
        mode = _host.recording_now()
        calls = None if trace else plan.calls.get(mode)
        if calls is None:
            traced = self._execute(plan, given, trace, prepare=not trace and mode not in plan.calls)
        else:
            traced = {}
            if self.cuda_graphs and not mode:
                replay(plan)
            else:
                for call in calls:
                    call()
        self._checks_after(given)
        self.allocated_bytes = plan.allocated
        result = {oname: self._ir_view(name, t.clone()) for oname, (name, t) in plan.results.items()}  # fresh
        result.update({k: self._ir_view(k, t) for k, t in traced.items()})
        return result

    def _execute(self, plan: LaunchPlan, given: Mapping, trace: bool, prepare: bool) -> dict[str, torch.Tensor]:
        """Run every step on the plan's memory (first call of a shape, or traced); with ``prepare``, keep
        the calls a later call repeats. Returns the traced values (when ``trace``)."""
        dims = plan.dims
        values: dict[str, torch.Tensor] = {}
        converted: dict[str, torch.Tensor] = {}  # values some readers read in the other layout
        calls: list[Call] = []
        as_is: list[str] = []  # the steps (first output) that must run as they are (see prepared.run_and_prepare)

        def produced(v: Value, t: torch.Tensor) -> None:
            values[v.name] = t
            other = self.layout.converted.get(v.name)
            if other is not None:  # one converted copy (by torch) for every reader wanting it
                dst, src = plan.tensor(v, other), convert(t, other)
                converted[v.name] = dst.copy_(src)
                calls.append(copy_call(dst, src))

        def read(v: Value, node) -> torch.Tensor:
            if v.name in converted and self.layout.reads_in(node) != self.layout.get(v.name):
                return converted[v.name]
            return values[v.name]

        for v in self.graph.inputs:
            produced(v, plan.inputs[v.name])
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
                    produced(node.output, plan.tensor(node.output))
                else:
                    produced(node.output, x.reshape(stored_shape(node.output, dims, self.layout.get(node.output.name))))
                if trace:
                    traced[node.output.name] = values[node.output.name].clone()
                continue
            outs = [plan.tensor(v) for v in node.outputs]
            args = ([read(v, node) for v in node.inputs], outs if len(outs) > 1 else outs[0])
            y, prepared = self._run_step(step, args, given, prepare, plan)
            if prepared is None:
                calls.append(self._as_is(step, args, plan, self._split_of(step, plan)))
                as_is.append(node.outputs[0].name)
            else:
                calls.extend(prepared)
            for v, out, t in zip(node.outputs, outs, y if len(outs) > 1 else (y,), strict=True):
                if t.data_ptr() != out.data_ptr():
                    raise AssertionError(f"node {v.name} ({node.op}) did not write its planned storage")
                produced(v, t)
                if trace:  # later nodes reuse this storage: keep a copy
                    traced[v.name] = t.clone()
        outputs = zip(self.graph.output_names, self.graph.outputs)
        plan.results = {oname: (v.name, values[v.name]) for oname, v in outputs}
        if prepare:
            plan.calls[_host.recording_now()] = calls
            plan.run_as_is[_host.recording_now()] = as_is
        return traced

    def _checks_after(self, given: Mapping) -> None:
        """The steps' checks of what their kernels counted (``Step.after``), once the call has run."""
        for step in self.steps:
            if step.after is not None:
                try:
                    step.after()
                except KernelError as e:
                    raise _located(step.node, e, given) from None

    @staticmethod
    def _split_of(step: Step, plan: LaunchPlan) -> tuple:
        """The step's run's arguments after (inputs, out) for this shape: the planned K slices of a split-K
        node (``run(inputs, out, split_k)``, positional so that wrappers passing ``*args`` keep it)."""
        split = plan.memory.splits.get(step.node.outputs[0].name, 1)
        return (split,) if split > 1 else ()

    @staticmethod
    def _as_is(step: Step, args: tuple, plan: LaunchPlan, split: tuple) -> Call:
        """A step that must run as it is (it does torch work besides its launches), as a prepared call."""
        def call() -> None:
            try:
                step.run(*args, *split)
            except KernelError as e:
                raise _located(step.node, e, plan.inputs) from None
        return call

    def _run_step(self, step: Step, args: tuple, given: Mapping, prepare: bool,
                  plan: LaunchPlan) -> tuple[torch.Tensor, list[Call] | None]:
        """Run one step (a KernelError becomes a located NetDSLError); with ``prepare``, also its launches
        as prepared calls, or None when it must run as it is (``prepared.run_and_prepare``)."""
        node = step.node
        split = self._split_of(step, plan)
        try:
            if not prepare:
                return step.run(*args, *split), None
            return run_and_prepare(lambda: step.run(*args, *split), plan.persistent(),
                                   plan.workspace if split else None)
        except KernelError as e:
            raise _located(node, e, given) from None

    def _ir_view(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """A traced value in the IR's layout (undoing an (H, W, C)-order flatten)."""
        if name in self.layout.hwc_flatten:
            c, h, w = self.layout.hwc_flatten[name]
            return t.reshape(t.shape[0], h, w, c).permute(0, 3, 1, 2).reshape(t.shape[0], -1)
        return to_ir(t) if self.layout.get(name) == NHWC else t

    def forward(self, *inputs: torch.Tensor):
        outs = list(self.run(list(inputs)).values())
        return outs[0] if len(outs) == 1 else tuple(outs)
