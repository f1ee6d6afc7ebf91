"""The full IR verifier: the structure of a graph (``netdsl.ir.verify.check_ssa``) and its nodes
against the op registry. Run after elaboration and after every pass.

A failure here is a compiler bug (never a user mistake), so it raises ``IRError``, not NetDSLError.
"""

from __future__ import annotations

from typing import Iterable

from ..ir.graph import Graph, Node
from ..ir.verify import IRError, check_ssa
from .registry import REGISTRY, ShapeError


def check_node(graph: Graph, node: Node) -> None:
    """One node against the registry: op, arity, attributes, inferred type, parameters."""
    where = f"node {node.name or '?'} ({node.op})"
    op = REGISTRY.get(node.op)
    if op is None:
        raise IRError(f"{where}: unknown op")
    if op.arity is not None and len(node.inputs) != op.arity:
        raise IRError(f"{where}: {len(node.inputs)} inputs, op takes {op.arity}")
    missing = [a.name for a in op.attrs if a.name not in node.attrs]
    if missing:
        raise IRError(f"{where}: missing attributes {missing}")
    types = [v.type for v in node.inputs]
    try:
        out_types = op.result_types(types, node.attrs)
        specs = op.params(types, node.attrs)
    except ShapeError as e:
        raise IRError(f"{where}: {e.message}") from None
    if tuple(o.type for o in node.outputs) != out_types:
        raise IRError(f"{where}: output types {[str(o.type) for o in node.outputs]}, inferred "
                      f"{[str(t) for t in out_types]}")
    if set(specs) != set(node.params):
        raise IRError(f"{where}: parameters {sorted(node.params)}, op declares {sorted(specs)}")
    for role, pname in node.params.items():
        if pname not in graph.params:
            raise IRError(f"{where}: parameter {pname} is not declared in the graph")
        if tuple(graph.params[pname].shape) != tuple(specs[role].shape):
            raise IRError(f"{where}: parameter {pname} has shape {graph.params[pname].shape}, "
                          f"op wants {specs[role].shape}")


def verify(graph: Graph, nodes: Iterable[Node] | None = None) -> Graph:
    """The structure of the whole graph, and ``nodes`` (default: all) against the registry."""
    check_ssa(graph)
    for node in graph.nodes if nodes is None else nodes:
        check_node(graph, node)
    return graph
