"""What the IR printer needs from the registry: the default attribute values of each op, so that the
text form leaves out attributes that hold them (``format_graph(graph, attr_defaults=attr_defaults)``)."""

from __future__ import annotations

from typing import Any

from .registry import REGISTRY, check_attr


def attr_defaults(op: str) -> dict[str, Any]:
    """The optional attributes of ``op`` with their defaults, normalised as ``bind_attrs`` fills them
    in (``kernel_size=3`` is ``(3, 3)``); empty for an op the registry does not know."""
    opdef = REGISTRY.get(op)
    if opdef is None:
        return {}
    return {a.name: None if a.default is None else check_attr(a, a.default) for a in opdef.attrs if not a.required}
