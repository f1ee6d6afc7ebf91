"""`netdsl check`: the Triton backend against the reference backend, node by node.

The Triton module runs the whole fused graph once, as it would for a user (NHWC inside, concat slices,
views), tracing every value. Each node is then judged on its own: the reference computes the node from
exactly the values the kernel read (the traced Triton inputs, and for fp16/bf16 the inputs and weights
rounded to that dtype first), so what is measured is that node's arithmetic, and the first node out of
the dtype's tolerance (``netdsl.tolerances``) is the one that is wrong. Comparing every node against
a reference run of the whole network instead would charge each node with the rounding of all the nodes
before it: in bf16 a deep network drifts by several percent without any kernel being wrong. That
drift is shown too ("from input": the error against a reference run from the network's inputs), for
information; it does not decide ``ok``.

``check_report`` is the same result as data, for `netdsl check --json`; ``watch_steps`` lets a caller
see each node's kernels start and finish (progress, and `netdsl compile` naming the nodes a kernel serves).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np
import torch

from ...ir.graph import Graph, Node
from ...ops import REGISTRY
from ...progress import Progress, quiet
from ...tolerances import TOLERANCES
from .. import reference
from ..reference import bind_attrs_to_sizes, bind_dims
from .lower import TORCH_DTYPES
from .module import TritonModule


@dataclass
class NodeCheck:
    name: str
    op: str
    shape: tuple[int, ...]
    abs_err: float  # max |triton - reference|, the reference fed the values the kernel read
    rel_err: float  # abs_err / max |reference|
    ok: bool  # abs_err within the dtype's tolerance
    drift: float = 0.0  # relative error against a reference run from the network's inputs (information)


def _round(array: np.ndarray, dtype: str) -> np.ndarray:
    """``array`` as the kernels see it in ``dtype`` (integer token ids are left as they are)."""
    if np.issubdtype(np.asarray(array).dtype, np.integer) or np.asarray(array).dtype == np.bool_:
        return np.asarray(array)
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(TORCH_DTYPES[dtype])
    return t.to(torch.float32).numpy()


def watch_steps(module: TritonModule, hook: Callable[[int, Node, bool], None]) -> None:
    """Make ``module`` call ``hook(index in the graph, node, finished)`` before (False) and after (True)
    each step it runs (a view runs no step and is not reported). The module runs ``module.steps`` in
    graph order, so wrapping each step's ``run`` is all it takes."""
    def watched(index: int, step):
        run = step.run

        def run_watched(*args):
            hook(index, step.node, False)
            result = run(*args)
            hook(index, step.node, True)
            return result
        return replace(step, run=run_watched)

    module.steps = [watched(i, step) for i, step in enumerate(module.steps)]


def check(fused: Graph, weights: dict[str, np.ndarray], inputs: dict[str, np.ndarray], dtype: str = "fp32",
          device: str | None = None, progress: Progress | None = None) -> list[NodeCheck]:
    """Run ``fused`` on the Triton backend once and judge every node (see the module's docstring).
    ``progress``: told of each node as the kernels run, then as the reference checks it."""
    progress = progress or quiet()
    weights = {k: _round(w, dtype) for k, w in weights.items()}
    inputs = {k: _round(x, dtype) for k, x in inputs.items()}
    module = TritonModule(fused, weights, dtype=dtype, device=device)
    total = len(fused.nodes)
    progress.stage("running Triton kernels", total, "nodes")
    watch_steps(module, lambda i, node, finished: progress.update(i + finished, node.outputs[0].name))
    got = module.run({k: torch.from_numpy(x) for k, x in inputs.items()}, trace=True)
    progress.stage("running the reference", None)
    seen = dict(inputs)  # every value as the kernels saw it (exact in fp32)
    seen.update({v.name: got[v.name].to(torch.float32).cpu().numpy() for node in fused.nodes for v in node.outputs})
    chained = reference.run(fused, inputs, weights, dtype="f32", trace=True)
    tol = TOLERANCES[dtype]
    dims = bind_dims(fused, inputs)
    out = []
    progress.stage("checking", total, "nodes")
    for i, node in enumerate(fused.nodes):
        progress.update(i, node.outputs[0].name)
        params = {role: weights[w] for role, w in node.params.items()}
        attrs = bind_attrs_to_sizes(node.attrs, dims)
        results = REGISTRY[node.op].reference([seen[v.name] for v in node.inputs], params, attrs)
        for v, r in zip(node.outputs, results if len(node.outputs) > 1 else (results,), strict=True):
            r = np.asarray(r, dtype=np.float32)
            abs_err, rel_err, ok = tol.error(seen[v.name], r)
            _, drift, _ = tol.error(seen[v.name], chained[v.name])
            out.append(NodeCheck(v.name, node.op, tuple(r.shape), abs_err, rel_err, ok, drift))
    progress.update(total)
    return out


def _finite(x: float) -> float | None:
    """A JSON number, or null for inf/NaN (a shape mismatch, a kernel that wrote NaN): JSON has neither."""
    return x if math.isfinite(x) else None


def check_report(checks: list[NodeCheck], dtype: str) -> dict:
    """The check as data (the "nodes", "tolerance", "ok" and "first_divergent" of `check --json`)."""
    tol = TOLERANCES[dtype]
    nodes = []
    for c in checks:
        row = asdict(c)
        row.update(shape=list(c.shape), abs_err=_finite(c.abs_err), rel_err=_finite(c.rel_err),
                   drift=_finite(c.drift))
        nodes.append(row)
    bad = [c.name for c in checks if not c.ok]
    return {"tolerance": {"atol": tol.atol, "rtol": tol.rtol}, "nodes": nodes, "ok": not bad,
            "divergent": len(bad), "first_divergent": bad[0] if bad else None}


def format_checks(checks: list[NodeCheck], dtype: str) -> str:
    tol = TOLERANCES[dtype]
    width = max([len(c.name) for c in checks] + [4])
    opw = max([len(c.op) for c in checks] + [16])
    lines = [f"tolerance {dtype}: max abs err <= {tol.atol:g} + {tol.rtol:g} * max|ref|, each node fed the values "
             "its kernel read (\"from input\": the relative error accumulated from the network's inputs, "
             "for information)",
             f"{'node':<{width}}  {'op':<{opw}} {'shape':<18} {'max abs err':>12} {'rel err':>10}  {'':<8}  "
             f"{'from input':>10}"]
    for c in checks:
        shape = "x".join(map(str, c.shape))
        lines.append(f"{c.name:<{width}}  {c.op:<{opw}} {shape:<18} {c.abs_err:>12.3e} {c.rel_err:>10.2e}  "
                     f"{'ok' if c.ok else 'DIVERGES':<8}  {c.drift:>10.2e}")
    bad = [c for c in checks if not c.ok]
    if bad:
        lines.append(f"FAIL: first divergent node: {bad[0].name} ({bad[0].op}); {len(bad)} node(s) out of tolerance")
    else:
        lines.append(f"OK: all {len(checks)} nodes within tolerance")
    return "\n".join(lines)
