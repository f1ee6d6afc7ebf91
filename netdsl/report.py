"""`netdsl show`: the IR text, the parameter table and FLOPs per node (nodes named as the IR printer names them)."""

from __future__ import annotations

import numpy as np

from .ir.graph import Graph, Node
from .ops import REGISTRY
from .params import parameter_count


def node_name(node: Node) -> str:
    """The name `show`, `check` and the cost report give a node: its (first) output value, as the IR
    printer writes it. (``Node.name`` is the scope its parameters are named under; a fused node keeps
    its anchor's scope but produces the value of the last node it absorbed.)"""
    return node.outputs[0].name


def node_flops(graph: Graph, env: dict[str, int]) -> dict[str, int]:
    """FLOPs per node, keyed by ``node_name``."""
    out = {}
    for n in graph.nodes:
        ins = [v.type.concrete(env) for v in n.inputs]
        out[node_name(n)] = int(REGISTRY[n.op].flops(ins, n.outputs[0].type.concrete(env), n.attrs))
    return out


def _human(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return str(int(x))


def parameter_table(graph: Graph) -> str:
    rows = [(name, "x".join(map(str, spec.shape)), int(np.prod(spec.shape)))
            for name, spec in graph.used_params().items()]
    width = max([len(r[0]) for r in rows] + [9])
    lines = [f"{'parameter':<{width}}  {'shape':<16} {'count':>12}"]
    lines += [f"{n:<{width}}  {s:<16} {c:>12,}" for n, s, c in rows]
    total = parameter_count(graph)
    buffers = sum(r[2] for r in rows) - total
    lines.append(f"{'total':<{width}}  {'':<16} {total:>12,}  ({total / 1e6:.2f}M parameters"
                 + (f", {buffers:,} in batchnorm statistics" if buffers else "") + ")")
    return "\n".join(lines)


def flops_table(graph: Graph, env: dict[str, int]) -> str:
    flops = node_flops(graph, env)
    width = max([len(node_name(n)) for n in graph.nodes] + [4])
    dims = ", ".join(f"{k}={v}" for k, v in sorted(env.items()))
    lines = [f"FLOPs at {dims}:", f"{'node':<{width}}  {'op':<16} {'output':<20} {'FLOPs':>10}"]
    for n in graph.nodes:
        shape = ", ".join("x".join(map(str, v.type.concrete(env))) for v in n.outputs)
        lines.append(f"{node_name(n):<{width}}  {n.op:<16} {shape:<20} {_human(flops[node_name(n)]):>10}")
    lines.append(f"{'total':<{width}}  {'':<16} {'':<20} {_human(sum(flops.values())):>10}")
    return "\n".join(lines)


def show(graph: Graph, env: dict[str, int], pipeline: str = "O0", dump_after: str | None = None,
         cost: bool = False) -> str:
    """The report of `netdsl show`: pass summaries and dumps (when a pipeline runs), the IR (with each
    value's layout and the memory plan after O1), parameters, FLOPs and, with ``cost``, the cost report
    of the unfused graph next to the fused one (the O1 pipeline's, when no pipeline was asked for)."""
    from .passes import format_annotated, run_pipeline

    parts: list[str] = []
    unfused = graph
    if dump_after and pipeline == "O0":
        pipeline = "O1"  # asking for the IR after a pass means running the passes
    if pipeline != "O0":
        graph = run_pipeline(graph, pipeline, dump_after=dump_after, log=parts.append, dims=env)
        parts.append("")
    parts += [format_annotated(graph), "", parameter_table(graph), "", flops_table(graph, env)]
    if cost:
        from .passes.cost import cost_report

        fused = graph if graph is not unfused else run_pipeline(unfused, "O1", dims=env)
        parts += ["", cost_report(unfused, fused, env)]
    return "\n".join(parts)


def cost_fields(graph, env: dict[str, int], pipeline: str) -> dict:
    """`show --cost --json`: per fused node (the ``pipeline``'s graph, O1 when it is O0) its cost and
    the cost of the unfused nodes it stands for; the totals and ratios of the text report."""
    from .passes import run_pipeline
    from .passes.cost import node_costs, summarize, total
    from .passes.rewrite import origin_of

    fused = run_pipeline(graph, pipeline if pipeline != "O0" else "O1", log=lambda _: None, dims=env)
    before, after = node_costs(graph, env), node_costs(fused, env)

    def cost(c, nodes=None) -> dict:
        row = {"launches": c.launches, "flops": c.flops, "read": c.read, "written": c.written, "bytes": c.bytes}
        return row if nodes is None else {"nodes": nodes, **row}

    rows = []
    for n in fused.nodes:
        name = n.outputs[0].name
        parts = [p for p in origin_of(fused, name) if p in before]
        rows.append({"name": name, "op": n.op, "parts": parts, **cost(after[name]),
                     "unfused": cost(total({p: before[p] for p in parts}))})
    s = summarize(graph, fused, env)
    ratio = (lambda a, b: a / b if b else None)
    bounds = {"ideal": s.ideal, "floor": s.floor}  # (no FLOPs: traffic only)
    doc = {"dims": dict(sorted(env.items())), "pipeline": pipeline if pipeline != "O0" else "O1", "nodes": rows,
           "totals": {"unfused": cost(s.unfused, s.unfused_nodes), "fused": cost(s.fused, s.fused_nodes),
                      **{k: {f: v for f, v in cost(c).items() if f != "flops"} for k, c in bounds.items()}},
           "fused_over_unfused_bytes": ratio(s.fused.bytes, s.unfused.bytes)}
    doc.update((f"fused_over_{k}_bytes", ratio(s.fused.bytes, c.bytes)) for k, c in bounds.items())
    return doc
