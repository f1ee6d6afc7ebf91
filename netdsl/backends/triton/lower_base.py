"""What every lowering shares: the ``Step`` a node lowers to, the ``LowerCtx`` it lowers in, the layout
helpers (NHWC <-> the IR's order, ``along_last`` for layout fix-ups) and the kernels' form of a fused
epilogue. The lowerings themselves are in ``lower`` (convolutions, GEMMs, norms, pools, pointwise) and
``lower_sequence`` (matmul of activations, copies by torch, indexing, embeddings, attention, recurrences).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ...ir.graph import Graph, Node
from ...kernels.epilogue import Epilogue as KernelEpilogue
from ...ops import REGISTRY
from ...ops.epilogue import Epilogue
from ...passes.layout import LayoutPlan, stored_dim

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# inputs that keep their element type: token ids, and boolean attention masks
TORCH_INT_DTYPES = {"i32": torch.int32, "i64": torch.int64, "bool": torch.bool}


@dataclass
class Step:
    node: Node
    run: Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor]
    kernel: str = ""  # for reports
    # a check the module runs after every forward call (outside any CUDA graph): it may read back what
    # the kernels counted (a host sync) and raise KernelError
    after: Callable[[], None] | None = None

    @property
    def launches(self) -> int:
        """Kernel launches per call (0 for views): the op's registry entry says."""
        return REGISTRY[self.node.op].launches_of(self.node.attrs)


@dataclass
class LowerCtx:
    graph: Graph
    weights: dict[str, np.ndarray]
    dtype: torch.dtype
    device: torch.device | str
    layout: LayoutPlan
    allow_tf32: bool = False

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return t.to(device=self.device, dtype=self.dtype)

    def param(self, node: Node, role: str) -> np.ndarray | None:
        name = node.params.get(role)
        return None if name is None else np.asarray(self.weights[name], dtype=np.float32)

    def params(self, node: Node) -> dict[str, np.ndarray]:
        return {role: self.param(node, role) for role in node.params}

    def axis(self, node: Node) -> int | None:
        """Where the dim the node's kernel works along (its registry entry's ``axis``) is stored in the
        layout the node reads; None for a kernel that reads any layout."""
        axis = REGISTRY[node.op].axis_of(node.attrs, node.inputs[0].type.rank)
        if axis is None:
            return None
        return stored_dim(axis, node.inputs[0].type.rank, self.layout.reads_in(node))


# --------------------------------------------------------------------------------------------
# layout helpers
# --------------------------------------------------------------------------------------------

def to_internal_view(x: torch.Tensor) -> torch.Tensor:
    """IR layout (NCHW) -> stored layout (NHWC for rank 4), as a view."""
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def to_internal(x: torch.Tensor) -> torch.Tensor:
    """IR layout (NCHW) -> stored layout (NHWC for rank 4), contiguous."""
    return to_internal_view(x).contiguous()


def to_ir(x: torch.Tensor) -> torch.Tensor:
    """Internal layout -> IR layout (a view)."""
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def along_last(d: int, x: torch.Tensor, kernel, out: torch.Tensor | None = None, *others):
    """Run ``kernel(x, others, out)``, which works along the last stored axis, along stored axis ``d``.

    When ``d`` is not the last (softmax over H of a 4-D tensor, batchnorm over dim 1 of a rank-3
    tensor: the layout plan's fix-ups) ``x`` and every tensor in ``others`` of the same rank
    (residuals, addends) are copied with that axis moved last, the kernel runs, and the result is
    moved back (into ``out`` when given). ``others`` may hold None.
    """
    if d == x.dim() - 1:
        return kernel(x, list(others), out)

    def moved(t):
        return t.movedim(d, -1).contiguous() if t is not None and t.dim() == x.dim() else t

    y = kernel(moved(x), [moved(t) for t in others], None).movedim(-1, d)
    if out is not None:
        out.copy_(y)
        return out
    return y.contiguous()


# --------------------------------------------------------------------------------------------
# epilogues
# --------------------------------------------------------------------------------------------

def kernel_epilogue(ctx: LowerCtx, node: Node, epilogue: Epilogue, bias: np.ndarray | None = None,
                    slope_roles: tuple[str, str] = ("slope1", "slope2")) -> KernelEpilogue:
    """The kernels' form of an epilogue (the residual is bound per call): each activation as the name,
    alpha and beta the Triton epilogue computes, with its slope (prelu) as a tensor."""
    args: dict[str, Any] = {"bias": ctx.tensor(bias) if bias is not None else None}
    for which, (kname, alpha, beta) in epilogue.kernel_acts().items():
        args.update({f"act{which}": kname, f"alpha{which}": float(alpha), f"beta{which}": float(beta)})
        slope = ctx.param(node, slope_roles[int(which) - 1])
        if slope is not None:
            args[f"slope{which}"] = ctx.tensor(slope.reshape(-1))
    return KernelEpilogue(**args)


def epilogue_of(ctx: LowerCtx, node: Node, bias: np.ndarray | None = None) -> KernelEpilogue:
    """A fused node's epilogue, from its attributes."""
    return kernel_epilogue(ctx, node, Epilogue.of(node.attrs), bias)


def _with_residual(ep: KernelEpilogue, node: Node, inputs: list[torch.Tensor]) -> KernelEpilogue:
    return dataclasses.replace(ep, residual=inputs[-1]) if node.attrs.get("residual") else ep
