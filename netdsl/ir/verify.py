"""The IR verifier: run after elaboration and after every pass.

A failure here is a compiler bug (never a user mistake), so it raises ``IRError``, not NetDSLError.
"""

from __future__ import annotations

from ..ops import REGISTRY, ShapeError
from .graph import Graph


class IRError(AssertionError):
    pass


def check_ssa(graph: Graph) -> None:
    """Structure only: every value defined once, before its uses, with the type it is used with;
    the outputs defined. Cheap enough to run after every pass on any graph."""
    defined: dict[str, object] = {}
    for v in graph.inputs:
        if v.name in defined:
            raise IRError(f"input %{v.name} defined twice")
        defined[v.name] = v.type
    for node in graph.nodes:
        where = f"node {node.name or '?'} ({node.op})"
        for v in node.inputs:
            t = defined.get(v.name)
            if t is None:
                raise IRError(f"{where}: input %{v.name} is not defined before use")
            if t is not v.type and t != v.type:
                raise IRError(f"{where}: input %{v.name} has type {v.type}, defined as {t}")
        for v in node.outputs:
            if v.name in defined:
                raise IRError(f"{where}: value %{v.name} defined twice")
            defined[v.name] = v.type
    for v in graph.outputs:
        if v.name not in defined:
            raise IRError(f"output %{v.name} is not defined")


def check_node(graph: Graph, node) -> None:
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
        out_type = op.infer(types, node.attrs)
        specs = op.params(types, node.attrs)
    except ShapeError as e:
        raise IRError(f"{where}: {e.message}") from None
    if len(node.outputs) != 1 or node.outputs[0].type != out_type:
        raise IRError(f"{where}: output type {[str(o.type) for o in node.outputs]}, inferred {out_type}")
    if set(specs) != set(node.params):
        raise IRError(f"{where}: parameters {sorted(node.params)}, op declares {sorted(specs)}")
    for role, pname in node.params.items():
        if pname not in graph.params:
            raise IRError(f"{where}: parameter {pname} is not declared in the graph")
        if tuple(graph.params[pname].shape) != tuple(specs[role].shape):
            raise IRError(f"{where}: parameter {pname} has shape {graph.params[pname].shape}, "
                          f"op wants {specs[role].shape}")


def verify(graph: Graph, nodes=None) -> Graph:
    """The structure of the whole graph, and ``nodes`` (default: all) against the registry."""
    check_ssa(graph)
    for node in graph.nodes if nodes is None else nodes:
        check_node(graph, node)
    return graph
