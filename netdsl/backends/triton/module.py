"""``TritonModule``: a compiled network as a ``torch.nn.Module``.

Built once from a fused graph and its weights: every node is lowered (weights packed once), copy-free
concats are planned (a producer whose only use is a channel concat writes straight into its slice of
the concat's buffer), and each value is released after its last use. ``forward`` takes and returns
NCHW tensors; inside, rank-4 tensors are NHWC.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ...errors import NetDSLError
from ...ir.dims import SymDim
from ...ir.graph import Graph
from ..reference import bind_dims
from .lower import LOWERINGS, TORCH_DTYPES, LowerCtx, Step, internal_dim, to_internal, to_ir
from .runtime import warn_if_interpreting


def _plan_hwc_flatten(graph: Graph) -> dict[str, tuple[int, int, int]]:
    """Flattens of NHWC maps whose every user is a linear layer: free views in (H, W, C) order."""
    users = graph.users()
    out = {}
    for n in graph.nodes:
        t = n.inputs[0].type if n.inputs else None
        if n.op != "flatten" or t is None or t.rank != 4 or n.attrs["start_dim"] != 1:
            continue
        c, h, w = t.shape[1:]
        if any(isinstance(d, SymDim) for d in (c, h, w)) or (h == 1 and w == 1):
            continue
        readers = users.get(n.output.name, [])
        if readers and n.output.name not in {v.name for v in graph.outputs} and all(
                u.op in ("linear", "fused_linear") and u.inputs[0].name == n.output.name for u in readers):
            out[n.output.name] = (c, h, w)
    return out


def _plan_concat_slices(graph: Graph, steps: Mapping[str, Step]) -> dict[str, tuple[str, int, int]]:
    """value -> (concat value, c0, c1) for producers that write straight into a concat's buffer."""
    counts = graph.use_counts()
    outputs = {v.name for v in graph.outputs}
    taken: set[str] = set()
    plan = {}
    for n in graph.nodes:
        if n.op != "concat":
            continue
        rank = n.output.type.rank
        if internal_dim(n.attrs["dim"], rank) != rank - 1:
            continue
        c0 = 0
        names = [v.name for v in n.inputs]
        for v in n.inputs:
            c1 = c0 + v.type.shape[n.attrs["dim"] % rank]
            step = steps.get(v.name)
            if (step is not None and step.writes_out and counts.get(v.name) == 1 and v.name not in outputs
                    and names.count(v.name) == 1 and v.name not in taken):
                plan[v.name] = (n.output.name, c0, c1)
                taken.add(v.name)
            c0 = c1
    return plan


def _shape_only(x) -> np.ndarray:
    """An array with ``x``'s shape and no memory of its own (for binding the symbolic dims)."""
    return np.broadcast_to(np.zeros((), np.uint8), tuple(np.shape(x) if not isinstance(x, torch.Tensor) else x.shape))


class TritonModule(torch.nn.Module):
    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray], dtype: str = "fp32",
                 device: str | torch.device = "cpu", allow_tf32: bool = False):
        super().__init__()
        if dtype not in TORCH_DTYPES:
            raise NetDSLError(f"unknown dtype `{dtype}`", hint="one of fp32, fp16, bf16")
        self.graph = graph
        self.dtype_name = dtype
        self.torch_dtype = TORCH_DTYPES[dtype]
        self.device = torch.device(device)
        if self.device.type != "meta":
            warn_if_interpreting()
        self.hwc_flatten = _plan_hwc_flatten(graph)
        ctx = LowerCtx(graph, dict(weights), self.torch_dtype, self.device, allow_tf32, self.hwc_flatten)
        self.steps: list[Step] = []
        for node in graph.nodes:
            lowering = LOWERINGS.get(node.op)
            if lowering is None:
                raise NetDSLError(f"op `{node.op}` has no Triton lowering", node.loc)
            self.steps.append(lowering(node, ctx))
        by_value = {s.node.output.name: s for s in self.steps}
        self.concat_slices = _plan_concat_slices(graph, by_value)
        last_use: dict[str, int] = {}
        for i, node in enumerate(graph.nodes):
            for v in node.inputs:
                last_use[v.name] = i
        self._last_use = last_use

    @property
    def launches(self) -> int:
        """Triton kernel launches per forward call (layout fix-up copies, done by torch, not counted)."""
        total = 0
        for s in self.steps:
            if s.node.op == "concat":
                rank = s.node.output.type.rank
                if internal_dim(s.node.attrs["dim"], rank) == rank - 1:  # a copy per input not written in place
                    total += sum(1 for v in s.node.inputs if v.name not in self.concat_slices)
            else:
                total += s.launches
        return total

    def _buffer(self, name: str, dims: dict[str, int], buffers: dict[str, torch.Tensor]) -> torch.Tensor:
        if name not in buffers:
            t = next(v for v in self.graph.values() if v.name == name).type
            shape = list(t.concrete(dims))
            if len(shape) == 4:
                shape = [shape[0], shape[2], shape[3], shape[1]]
            buffers[name] = torch.empty(shape, dtype=self.torch_dtype, device=self.device)
        return buffers[name]

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
        values: dict[str, torch.Tensor] = {}
        for v in self.graph.inputs:
            x = given[v.name]
            x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
            values[v.name] = to_internal(x.to(device=self.device, dtype=self.torch_dtype))
        keep = {v.name for v in self.graph.outputs}
        buffers: dict[str, torch.Tensor] = {}
        traced: dict[str, torch.Tensor] = {}
        for i, step in enumerate(self.steps):
            node = step.node
            name = node.output.name
            out = None
            if name in self.concat_slices:
                target, c0, c1 = self.concat_slices[name]
                out = self._buffer(target, dims, buffers)[..., c0:c1]
            elif node.op == "concat" and internal_dim(node.attrs["dim"], node.output.type.rank) == \
                    node.output.type.rank - 1:
                out = self._buffer(name, dims, buffers)
            values[name] = step.run([values[v.name] for v in node.inputs], out)
            if trace:
                traced[name] = values[name]
            else:
                for v in node.inputs:
                    if self._last_use.get(v.name) == i and v.name not in keep:
                        values.pop(v.name, None)
        result = {oname: to_ir(values[v.name]) for oname, v in zip(self.graph.output_names, self.graph.outputs)}
        if trace:
            result.update({k: self._ir_view(k, t) for k, t in traced.items()})
        return result

    def _ir_view(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """A traced value in the IR's layout (undoing an (H, W, C)-order flatten)."""
        if name in self.hwc_flatten:
            c, h, w = self.hwc_flatten[name]
            return t.reshape(t.shape[0], h, w, c).permute(0, 3, 1, 2).reshape(t.shape[0], -1)
        return to_ir(t)

    def forward(self, *inputs: torch.Tensor):
        outs = list(self.run(list(inputs)).values())
        return outs[0] if len(outs) == 1 else tuple(outs)
