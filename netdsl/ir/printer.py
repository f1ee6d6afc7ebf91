"""Text form of the IR, for `netdsl show` and golden tests.

    network tiny(%x: f32[N, 3, 8, 8]) {
      %conv1 = conv2d(%x) {out_channels=4, kernel_size=(3, 3), padding=(1, 1)} : f32[N, 4, 8, 8]
      %relu_0 = relu(%conv1) : f32[N, 4, 8, 8]
      return %relu_0
    }

Attributes equal to their defaults are left out; parameters are listed in `show`'s table.
"""

from __future__ import annotations

from typing import Any

from ..ops import REGISTRY
from ..ops.registry import check_attr
from .graph import Graph, Node


def format_attr(value: Any) -> str:
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


def _non_default_attrs(node: Node) -> dict[str, Any]:
    op = REGISTRY[node.op]
    out = {}
    for name, value in node.attrs.items():
        attr = op.attr(name)
        if attr is not None and not attr.required:
            default = attr.default if attr.default is None else check_attr(attr, attr.default)
            if value == default:
                continue
        out[name] = value
    return out


def format_node(node: Node) -> str:
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    ins = ", ".join(f"%{v.name}" for v in node.inputs)
    attrs = _non_default_attrs(node)
    attr_text = " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in attrs.items()) + "}" if attrs else ""
    types = ", ".join(str(v.type) for v in node.outputs)
    return f"{outs} = {node.op}({ins}){attr_text} : {types}"


def format_graph(graph: Graph) -> str:
    args = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    lines = [f"network {graph.name}({args}) {{"]
    lines += [f"  {format_node(n)}" for n in graph.nodes]
    rets = []
    for name, v in zip(graph.output_names or [v.name for v in graph.outputs], graph.outputs):
        rets.append(f"%{v.name}" if name == v.name else f"{name}=%{v.name}")
    lines.append(f"  return {', '.join(rets)}")
    lines.append("}")
    return "\n".join(lines)
