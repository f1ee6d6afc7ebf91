"""The structural IR verifier: SSA form, without looking at what the ops are.

Checking nodes against their op definitions (arity, attributes, inferred types, parameters) needs the
op registry, which sits above the IR: that is ``netdsl.ops.verify``, whose ``verify`` runs both.
A failure here is a compiler bug (never a user mistake), so it raises ``IRError``, not NetDSLError.
"""

from __future__ import annotations

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
