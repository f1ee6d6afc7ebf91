"""Text form of the IR, for `netdsl show` and golden tests.

    network tiny(%x: f32[N, 3, 8, 8]) {
      %conv1 = conv2d(%x) {out_channels=4, kernel_size=(3, 3), padding=(1, 1)} : f32[N, 4, 8, 8]
      %relu_0 = relu(%conv1) : f32[N, 4, 8, 8]
      return %relu_0
    }

Attributes equal to their defaults are left out when the caller says what the defaults are (the op
registry does: ``format_graph(graph, attr_defaults=netdsl.ops.printing.attr_defaults)``); parameters
are listed in `show`'s table.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .graph import Graph, Node

# op name -> {attribute: default value} of the attributes to leave out when they hold their default
AttrDefaults = Callable[[str], Mapping[str, Any]]


def format_attr(value: Any) -> str:
    """A value as the model language writes it: true/false, "quoted" strings, (tuples). Also used
    by the error messages that quote a value from a model (netdsl.ops.registry, the elaborator)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(format_attr(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={format_attr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    return str(value)


def _shown_attrs(node: Node, attr_defaults: AttrDefaults | None) -> Mapping[str, Any]:
    if attr_defaults is None or not node.attrs:
        return node.attrs
    defaults = attr_defaults(node.op)
    return {k: v for k, v in node.attrs.items() if k not in defaults or v != defaults[k]}


def format_node(node: Node, attr_defaults: AttrDefaults | None = None) -> str:
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    ins = ", ".join(f"%{v.name}" for v in node.inputs)
    attrs = _shown_attrs(node, attr_defaults)
    attr_text = " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in attrs.items()) + "}" if attrs else ""
    types = ", ".join(str(v.type) for v in node.outputs)
    return f"{outs} = {node.op}({ins}){attr_text} : {types}"


def format_graph(graph: Graph, attr_defaults: AttrDefaults | None = None) -> str:
    """The text form of ``graph``; ``attr_defaults`` (op name -> default attribute values) leaves
    out the attributes that hold their default (default: every attribute is printed)."""
    args = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    lines = [f"network {graph.name}({args}) {{"]
    lines += [f"  {format_node(n, attr_defaults)}" for n in graph.nodes]
    rets = []
    for name, v in zip(graph.output_names or [v.name for v in graph.outputs], graph.outputs):
        rets.append(f"%{v.name}" if name == v.name else f"{name}=%{v.name}")
    lines.append(f"  return {', '.join(rets)}")
    lines.append("}")
    return "\n".join(lines)
