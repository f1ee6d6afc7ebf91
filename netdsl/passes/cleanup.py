"""Clean-up passes: remove dropout (inference), common subexpressions, dead code.

Each is a pure function ``Graph -> (Graph, summary)``; each returns the very same graph object when
it has nothing to do.
"""

from __future__ import annotations

from typing import Any

from ..ir.graph import Graph, Value
from .rewrite import GraphIndex, rebuild, resolve

COMMUTATIVE = frozenset({"add", "mul"})


def remove_dropout(graph: Graph) -> tuple[Graph, str]:
    """Dropout is the identity at inference: every use of its output reads its input instead."""
    rename: dict[str, Value] = {}
    drop, merged = [], {}
    for i, node in enumerate(graph.nodes):
        if node.op == "dropout":
            rename[node.output.name] = node.inputs[0]
            drop.append(i)
    if not drop:
        return graph, "nothing to remove"
    index = GraphIndex(graph)
    for i in drop:
        node = graph.nodes[i]
        source = resolve(rename, node.inputs[0])
        if source.name in index.producer:  # provenance: the producer now also stands for the dropout
            merged.setdefault(source.name, [source.name]).append(node.output.name)
    return rebuild(graph, drop=drop, rename=rename, merged=merged), f"{len(drop)} removed"


def _hashable(x: Any) -> Any:
    if isinstance(x, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_hashable(v) for v in x)
    return x


def eliminate_common_subexpressions(graph: Graph) -> tuple[Graph, str]:
    """Two nodes with the same op, inputs, attributes and parameters compute the same value: keep the
    first. (Same parameter names mean the same weights; add and mul are commutative.)"""
    seen: dict[Any, Value] = {}
    rename: dict[str, Value] = {}
    drop, merged = [], {}
    for i, node in enumerate(graph.nodes):
        inputs = [resolve(rename, v).name for v in node.inputs]
        if node.op in COMMUTATIVE:
            inputs.sort()
        key = (node.op, tuple(inputs), _hashable(dict(node.attrs)), _hashable(dict(node.params)))
        first = seen.get(key)
        if first is None:
            seen[key] = node.outputs
        else:
            for v, kept in zip(node.outputs, first):
                rename[v.name] = kept
                merged.setdefault(kept.name, [kept.name]).append(v.name)
            drop.append(i)
    if not drop:
        return graph, "nothing to merge"
    return rebuild(graph, drop=drop, rename=rename, merged=merged), f"{len(drop)} merged"


def eliminate_dead_code(graph: Graph) -> tuple[Graph, str]:
    """Remove nodes none of whose outputs reach a graph output."""
    live = {v.name for v in graph.outputs}
    drop = []
    for i in range(len(graph.nodes) - 1, -1, -1):
        node = graph.nodes[i]
        if any(v.name in live for v in node.outputs):
            live.update(v.name for v in node.inputs)
        else:
            drop.append(i)
    if not drop:
        return graph, "nothing dead"
    return rebuild(graph, drop=drop), f"{len(drop)} removed"

