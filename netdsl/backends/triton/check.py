"""`netdsl check`: the Triton backend against the reference backend, node by node.

Both run the same fused graph on the same inputs and weights. For fp16/bf16 the weights and inputs
are rounded to that dtype first, so the reference (fp32) sees exactly the numbers the kernels see
and what is measured is the kernels' arithmetic. Every node's output is compared against the dtype's
tolerance (``netdsl.tolerances``); the first node out of tolerance is named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...ir.graph import Graph
from ...tolerances import TOLERANCES
from .. import reference
from .lower import TORCH_DTYPES
from .module import TritonModule


@dataclass
class NodeCheck:
    name: str
    op: str
    shape: tuple[int, ...]
    abs_err: float
    rel_err: float
    ok: bool


def _round(array: np.ndarray, dtype: str) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(TORCH_DTYPES[dtype])
    return t.to(torch.float32).numpy()


def check(fused: Graph, weights: dict[str, np.ndarray], inputs: dict[str, np.ndarray], dtype: str = "fp32",
          device: str = "cpu") -> list[NodeCheck]:
    weights = {k: _round(w, dtype) for k, w in weights.items()}
    inputs = {k: _round(x, dtype) for k, x in inputs.items()}
    module = TritonModule(fused, weights, dtype=dtype, device=device)
    got = module.run({k: torch.from_numpy(x) for k, x in inputs.items()}, trace=True)
    ref = reference.run(fused, inputs, weights, dtype="f32", trace=True)
    tol = TOLERANCES[dtype]
    out = []
    for node in fused.nodes:
        name = node.output.name
        g = got[name].to(torch.float32).cpu().numpy()
        r = ref[name]
        abs_err, rel_err, ok = tol.error(g, r)
        out.append(NodeCheck(name, node.op, tuple(r.shape), abs_err, rel_err, ok))
    return out


def format_checks(checks: list[NodeCheck], dtype: str) -> str:
    tol = TOLERANCES[dtype]
    width = max([len(c.name) for c in checks] + [4])
    lines = [f"{'node':<{width}}  {'op':<16} {'shape':<18} {'max abs err':>12} {'rel err':>10}  "
             f"(tolerance {dtype}: rtol {tol.rtol:g}, atol {tol.atol:g})"]
    for c in checks:
        shape = "x".join(map(str, c.shape))
        lines.append(f"{c.name:<{width}}  {c.op:<16} {shape:<18} {c.abs_err:>12.3e} {c.rel_err:>10.2e}  "
                     f"{'ok' if c.ok else 'DIVERGES'}")
    bad = [c for c in checks if not c.ok]
    if bad:
        lines.append(f"FAIL: first divergent node: {bad[0].name} ({bad[0].op}); {len(bad)} node(s) out of tolerance")
    else:
        lines.append(f"OK: all {len(checks)} nodes within tolerance")
    return "\n".join(lines)
