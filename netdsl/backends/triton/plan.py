"""``LaunchPlan``: what a forward call for one input shape needs, decided once and kept on the module.

For a given shape every decision a call makes comes out the same: the memory plan's buffers, where
each value is stored, each kernel's grid, config and epilogue arguments, whether it needs 64-bit
offsets. So the module makes them once per shape, here, and a later call for that shape copies its
inputs in, runs a list of prepared calls (``prepared``), and hands back copies of its outputs:

- ``arena``: the memory plan's arena (``plan.arena_bytes``), as before;
- ``workspace``: the memory plan's fp32 split-K scratch (``plan.workspace`` bytes; empty without a
  split), which the prepared split-K launches use (``prepared.run_and_prepare``);
- ``inputs``: one buffer per graph input, in the IR's layout and the element type the graph reads,
  that each call's inputs are copied into (so a kernel reads the same address every call);
- the storages holding graph outputs, allocated with the plan (not per call): each call returns fresh
  copies of the outputs (``results`` says where they are), so outputs stay valid after the next call;
- ``calls``: the prepared calls of one forward (layout conversions by torch, kernel launches, and the
  steps that must run as they are), made by the first call; by recording mode (see
  ``netdsl.kernels._host.recording``), since a recorded launch is planned with the GPU's configs;
- ``graph``: on a CUDA device, the CUDA graph those calls were captured in (``graphs``).

Memory besides the memory plan: the input buffers, and the returned copies of the outputs.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ...ir.graph import Value
from ...passes.layout import NHWC, LayoutPlan
from ...passes.memory import MemoryPlan, converted_key
from .prepared import Call, storage_id


def stored_shape(v: Value, dims: Mapping[str, int], layout: str | None) -> tuple[int, ...]:
    shape = tuple(v.type.concrete(dims))
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 and layout == NHWC else shape


class LaunchPlan:
    """The memory, the prepared calls and the results of forward calls for one input shape."""

    def __init__(self, memory: MemoryPlan, dims: Mapping[str, int], layout: LayoutPlan,
                 values: Mapping[str, Value], inputs: Mapping[str, torch.dtype], dtype: torch.dtype,
                 device: torch.device):
        self.memory, self.dims, self.layout, self.ir_values = memory, dict(dims), layout, values
        self.dtype, self.device = dtype, device
        self.arena = torch.empty(memory.arena_bytes, dtype=torch.uint8, device=device)
        self.workspace = torch.empty(memory.workspace // 4, dtype=torch.float32, device=device)
        self.allocated = memory.arena_bytes + memory.workspace  # the arena, the workspace, the output storages
        self.inputs = {name: torch.empty(tuple(values[name].type.concrete(dims)), dtype=t, device=device)
                       for name, t in inputs.items()}
        self._flat: dict[str, torch.Tensor] = {}  # storage root -> its memory, flat, in the module's dtype
        self.calls: dict[bool, list[Call]] = {}  # by recording mode: one forward, prepared
        self.run_as_is: dict[bool, list[str]] = {}  # by recording mode: steps repeated by calling them
        self.results: dict[str, tuple[str, torch.Tensor]] = {}  # output name -> (value, where it is stored)
        self.graph = None  # a torch.cuda.CUDAGraph of the calls, once captured; False if capture failed

    def persistent(self) -> set[int]:
        """The storages that live as long as the plan (what the prepared calls may read and write)."""
        return {storage_id(t) for t in (self.arena, self.workspace, *self.inputs.values(), *self._flat.values())}

    def memory_of(self, root: str) -> torch.Tensor:
        if root not in self._flat:
            plan = self.memory
            if root in plan.outputs:
                raw = torch.empty(plan.outputs[root], dtype=torch.uint8, device=self.device)
                self.allocated += plan.outputs[root]
            else:
                b = plan.buffer_of[root]
                at = plan.offsets[b]
                raw = self.arena[at:at + plan.buffer_sizes[b]]
            self._flat[root] = raw.view(self.dtype)
        return self._flat[root]

    def tensor(self, v: Value, layout: str | None = None) -> torch.Tensor:
        """Where value ``v`` is stored: its storage's memory, shaped as ``v`` (or a concat's slice);
        with ``layout``, where its copy converted to that layout is."""
        dims, plan = self.dims, self.memory
        if layout is not None:
            shape = stored_shape(v, dims, layout)
            return self.memory_of(plan.storage[converted_key(v.name, layout)])[:int(np.prod(shape))].view(shape)
        if v.name in plan.concat_slices:
            concat, c0 = plan.concat_slices[v.name]
            target = self.tensor(self.ir_values[concat])
            return target[..., c0:c0 + v.type.concrete(dims)[1]]
        if v.name in self.layout.permuted_writes:  # the reader's storage, its reorder undone
            reorder, perm = self.layout.permuted_writes[v.name]
            inverse = sorted(range(len(perm)), key=perm.__getitem__)
            return self.tensor(self.ir_values[reorder]).permute(*inverse)
        shape = stored_shape(v, dims, self.layout.get(v.name))
        return self.memory_of(plan.storage[v.name])[:int(np.prod(shape))].view(shape)

    def stage(self, given: Mapping[str, object]) -> None:
        """Copy a call's inputs into the plan's input buffers (converting their element type; outside
        autograd, which the kernels do not record)."""
        with torch.no_grad():
            for name, buffer in self.inputs.items():
                x = given[name]
                buffer.copy_(x if isinstance(x, torch.Tensor) else torch.as_tensor(x))
