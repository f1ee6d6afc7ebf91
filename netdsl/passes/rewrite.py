"""What every pass needs to read and rebuild a graph: an index of producers and users, and `rebuild`.

Passes decide on the graph they were given (never on a half-rewritten one) and then call
``rebuild`` once. A fused node takes the place of the node that produced its output value, so every
value keeps its position in the topological order and the rebuilt graph is topologically sorted.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from ..ir.graph import Graph, Node, Value

# annotations that describe one exact graph and go stale when its nodes change
ANALYSES = ("layout", "memory")


class GraphIndex:
    """Producers, users, use counts and positions of one graph (built once per pass)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.position: dict[int, int] = {}  # id(node) -> index in graph.nodes
        self.producer: dict[str, Node] = {}
        self.users: dict[str, list[Node]] = {}
        for i, node in enumerate(graph.nodes):
            self.position[id(node)] = i
            for v in node.outputs:
                self.producer[v.name] = node
            for v in node.inputs:
                self.users.setdefault(v.name, []).append(node)
        self.outputs = {v.name for v in graph.outputs}

    def uses(self, value: Value) -> int:
        """How many times ``value`` is read, a graph output counting as a read."""
        return len(self.users.get(value.name, ())) + (value.name in self.outputs)

    def sole_user(self, value: Value) -> Node | None:
        """The one node that reads ``value`` (once), or None when the value is needed anywhere else:
        read twice, read by two nodes, or a graph output. Only then may a fusion swallow it."""
        users = self.users.get(value.name, ())
        if len(users) != 1 or value.name in self.outputs:
            return None
        return users[0]

    def depends_on(self, value: Value, nodes: Iterable[Node]) -> bool:
        """Whether ``value`` is computed (transitively) from an output of one of ``nodes``."""
        targets = {id(n) for n in nodes}
        if not targets:
            return False
        first = min(self.position[t] for t in targets)
        stack, seen = [value], set()
        while stack:
            v = stack.pop()
            node = self.producer.get(v.name)
            if node is None or id(node) in seen or self.position[id(node)] < first:
                continue  # graph inputs and nodes before the earliest target cannot depend on it
            if id(node) in targets:
                return True
            seen.add(id(node))
            stack.extend(node.inputs)
        return False


def resolve(rename: Mapping[str, Value], v: Value) -> Value:
    while v.name in rename:
        v = rename[v.name]
    return v


def origin_of(graph: Graph, value_name: str) -> tuple[str, ...]:
    """The values of the original (unfused) graph that the node producing ``value_name`` computes."""
    return graph.annotations.get("origin", {}).get(value_name, (value_name,))


def rebuild(graph: Graph, put: Mapping[int, Node] | None = None, drop: Iterable[int] = (),
            rename: Mapping[str, Value] | None = None,
            merged: Mapping[str, Iterable[str]] | None = None) -> Graph:
    """A new graph: node i replaced by ``put[i]``, nodes in ``drop`` removed, and every use of a value
    named in ``rename`` replaced by its target (for removed dropouts and common subexpressions).

    ``merged`` maps each surviving output value to the output values of the old graph that its node
    now computes, which keeps the ``origin`` annotation (used by the cost report) up to date. Stale
    analyses are dropped. Unchanged nodes are kept as they are (the same objects), which lets the pass
    manager verify only what changed.
    """
    put, rename, drop = put or {}, rename or {}, set(drop)
    nodes = []
    for i, node in enumerate(graph.nodes):
        if i in put:
            node = put[i]
        elif i in drop:
            continue
        if rename and any(v.name in rename for v in node.inputs):
            node = node.replace(inputs=tuple(resolve(rename, v) for v in node.inputs))
        nodes.append(node)
    outputs = tuple(resolve(rename, v) for v in graph.outputs) if rename else graph.outputs
    annotations = {k: v for k, v in graph.annotations.items() if k not in ANALYSES}
    if merged:
        origin = dict(graph.annotations.get("origin", {}))
        for out, parts in merged.items():
            combined: list[str] = []
            for p in parts:
                combined += origin.pop(p, (p,))
            origin[out] = tuple(dict.fromkeys(combined))
        annotations["origin"] = origin
    return graph.replace(nodes=tuple(nodes), outputs=outputs, annotations=annotations)
