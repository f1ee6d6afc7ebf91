"""Fusion passes: fold batchnorm, conv/linear + epilogue, norm + activation, pointwise chains.

Every fused node ends in the epilogue the kernels implement (see netdsl.ops.fused)::

    acc (+ bias[c]) -> act1 -> (+ residual) -> act2

``grow_epilogue`` is the one rule that extends an anchor (a conv, a linear, a norm, a batchnorm
affine, or the first op of a pointwise chain) by the pointwise ops that follow it, in the order the
template allows. An op is absorbed only when the value it reads is read by it alone: a value with a
second reader (or that is a graph output) must be written to memory anyway, so the chain stops there.
A residual is absorbed only when it has exactly the output's type (no broadcasting in an epilogue)
and is not computed from the chain itself (that would be a cycle).

A fused node takes the place of the last node it absorbs (it produces that node's output value), so
values never move in the topological order. Parameters keep their original names under new roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph, Node, Value
from ..ops import REGISTRY
from .rewrite import GraphIndex, rebuild

NO_EPILOGUE = {"act1": "none", "act1_attrs": {}, "residual": False, "act2": "none", "act2_attrs": {}}
FUSED_FORM = {"conv2d": "fused_conv2d", "linear": "fused_linear", "batchnorm": "fused_pointwise",
              "layernorm": "fused_layernorm", "groupnorm": "fused_groupnorm"}
BN_ROLES = {"weight": "bn_weight", "bias": "bn_bias", "running_mean": "bn_mean", "running_var": "bn_var"}
# a fused_pointwise kernel views its tensors as [rows, channels] with the channels stored last:
# [N, C], or NHWC for a 4-D tensor (see layout.py)
POINTWISE_RANKS = (2, 4)
# the dim the epilogue's per-channel vectors (bias, prelu slopes) run along, per fused op; None: last
CHANNEL_AXIS = {"fused_conv2d": 1, "fused_pointwise": 1, "fused_groupnorm": 1, "fused_linear": None,
                "fused_layernorm": None}


@dataclass
class Epilogue:
    """The epilogue being built: act1 -> (+ residual) -> act2, and the prelu slope parameters."""

    act1: tuple[str, dict] = ("none", {})
    slope1: str | None = None
    residual: Value | None = None
    act2: tuple[str, dict] = ("none", {})
    slope2: str | None = None
    absorbed: list[Node] = field(default_factory=list)

    @staticmethod
    def of(node: Node) -> "Epilogue":
        """The epilogue a fused node already has (a plain op has none)."""
        a = node.attrs
        if "act1" not in a:
            return Epilogue()
        return Epilogue((a["act1"], a["act1_attrs"]), node.params.get("slope1"),
                        node.inputs[-1] if a["residual"] else None, (a["act2"], a["act2_attrs"]),
                        node.params.get("slope2"))

    def attrs(self) -> dict[str, Any]:
        return {"act1": self.act1[0], "act1_attrs": dict(self.act1[1]), "residual": self.residual is not None,
                "act2": self.act2[0], "act2_attrs": dict(self.act2[1])}

    def params(self) -> dict[str, str]:
        return {role: p for role, p in (("slope1", self.slope1), ("slope2", self.slope2)) if p is not None}

    def extra_inputs(self) -> tuple[Value, ...]:
        return (self.residual,) if self.residual is not None else ()


def _prelu_fits(fused_op: str, out: Value, act: Node) -> bool:
    """A per-channel prelu slope runs along dim 1; the kernels apply per-channel vectors along the
    dim they store last (channels of NHWC, features of [N, F]). They agree for [N, F], and for
    [N, C, H, W] when the fused op's channels are dim 1."""
    if act.op != "prelu" or act.attrs["shared"] or out.type.rank < 2:
        return True  # one shared slope
    return out.type.rank == 2 or (out.type.rank == 4 and CHANNEL_AXIS[fused_op] == 1)


def grow_epilogue(index: GraphIndex, fused_op: str, chain: list[Node], out: Value, epi: Epilogue,
                  taken: set[int]) -> Value:
    """Absorb into ``epi`` the pointwise ops after ``out`` that the template still has room for.

    ``chain`` holds the nodes already in the fused node (for the cycle check). Absorbed nodes are
    appended to ``epi.absorbed`` and marked in ``taken``; returns the new output value.
    """
    while True:
        user = index.sole_user(out)
        if user is None or id(user) in taken:
            return out
        op = REGISTRY[user.op]
        if op.is_activation:
            if not _prelu_fits(fused_op, out, user):
                return out
            act, slope = (user.op, dict(user.attrs)), user.params.get("weight")
            if epi.act1[0] == "none" and epi.residual is None:
                epi.act1, epi.slope1 = act, slope
            elif epi.act2[0] == "none":
                epi.act2, epi.slope2 = act, slope
            else:
                return out
        elif user.op == "add":
            if epi.residual is not None or epi.act2[0] != "none":
                return out
            a, b = user.inputs
            other = b if a.name == out.name else a
            if other.type != out.type or user.output.type != out.type:
                return out  # an epilogue adds a tensor of exactly the output's shape
            if index.depends_on(other, chain + epi.absorbed):
                return out  # the residual is computed from this chain: fusing would make a cycle
            epi.residual = other
        else:
            return out
        epi.absorbed.append(user)
        taken.add(id(user))
        out = user.output


class _Fuser:
    """Collects the rewrites of one fusion pass and applies them with one ``rebuild``."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.index = GraphIndex(graph)
        self.taken: set[int] = set()
        self.put: dict[int, Node] = {}
        self.drop: list[int] = []
        self.merged: dict[str, list[str]] = {}
        self.absorbed_ops: dict[str, int] = {}

    def emit(self, op: str, parts: list[Node], inputs: tuple[Value, ...], attrs: dict, params: dict,
             anchor: Node) -> None:
        """Replace ``parts`` (in graph order, the last producing the output) by one ``op`` node."""
        last = parts[-1]
        node = Node(op, inputs, last.outputs, attrs, params, anchor.name, anchor.loc)
        positions = [self.index.position[id(p)] for p in parts]
        self.put[positions[-1]] = node
        self.drop += positions[:-1]
        self.merged[last.output.name] = [p.output.name for p in parts]
        for p in parts:
            self.taken.add(id(p))
            if p is not anchor:
                self.absorbed_ops[p.op] = self.absorbed_ops.get(p.op, 0) + 1

    def result(self) -> Graph:
        if not self.put:
            return self.graph
        return rebuild(self.graph, self.put, self.drop, merged=self.merged)

    def summary(self, what: str) -> str:
        ops = ", ".join(f"{n} {op}" for op, n in sorted(self.absorbed_ops.items(), key=lambda t: (-t[1], t[0])))
        return f"{len(self.put)} {what}" + (f" (absorbed {ops})" if ops else "")


# ---------------------------------------------------------------------------------------------
# the passes
# ---------------------------------------------------------------------------------------------

def fold_batchnorm(graph: Graph) -> tuple[Graph, str]:
    """conv2d/linear -> batchnorm  =>  fused_conv2d/fused_linear(bn=true), when the conv's output is
    read by the batchnorm alone (otherwise the un-normalised output must exist anyway). A linear is
    folded only when its output is [N, F], where batchnorm's channels (dim 1) are its features."""
    f = _Fuser(graph)
    for node in graph.nodes:
        if node.op != "batchnorm":
            continue
        src = f.index.producer.get(node.inputs[0].name)
        if src is None or src.op not in ("conv2d", "linear") or f.index.sole_user(src.output) is not node:
            continue
        if src.op == "linear" and src.output.type.rank != 2:
            continue
        attrs = {**src.attrs, "bn": True, "bn_eps": node.attrs["eps"], **NO_EPILOGUE}
        params = {**src.params, **{BN_ROLES[r]: p for r, p in node.params.items()}}
        f.emit(FUSED_FORM[src.op], [src, node], src.inputs, attrs, params, src)
    return f.result(), f"{len(f.put)} folded"


def fuse_conv_epilogue(graph: Graph) -> tuple[Graph, str]:
    """conv2d/linear (folded or not) + the pointwise ops after it  =>  one fused_conv2d/fused_linear:
    bias -> act1 -> (+ residual) -> act2; ResNet's relu(bn(conv(x)) + skip) becomes one node."""
    f = _Fuser(graph)
    for node in graph.nodes:
        if node.op not in ("conv2d", "linear", "fused_conv2d", "fused_linear") or id(node) in f.taken:
            continue
        op = FUSED_FORM.get(node.op, node.op)
        epi = Epilogue.of(node)
        grow_epilogue(f.index, op, [node], node.output, epi, f.taken)
        if not epi.absorbed:
            continue
        base_attrs = {k: v for k, v in node.attrs.items() if k not in NO_EPILOGUE}
        if op != node.op:  # a plain conv2d / linear: no batchnorm
            base_attrs.update(bn=False, bn_eps=1e-5)
        base_params = {k: v for k, v in node.params.items() if k not in ("slope1", "slope2")}
        main_inputs = node.inputs[:-1] if node.attrs.get("residual") else node.inputs
        f.emit(op, [node] + epi.absorbed, main_inputs + epi.extra_inputs(), {**base_attrs, **epi.attrs()},
               {**base_params, **epi.params()}, node)
    return f.result(), f.summary("fused")


def fuse_norm_activation(graph: Graph) -> tuple[Graph, str]:
    """Normalisations + what follows them:
    batchnorm not after a conv => fused_pointwise (a per-channel affine) + epilogue;
    layernorm / groupnorm + epilogue => fused_layernorm / fused_groupnorm;
    add -> layernorm ("add & norm") => fused_layernorm(add_before=true)."""
    f = _Fuser(graph)
    for node in graph.nodes:
        if node.op not in ("batchnorm", "layernorm", "groupnorm") or id(node) in f.taken:
            continue
        if node.op == "batchnorm" and node.output.type.rank not in POINTWISE_RANKS:
            continue
        op = FUSED_FORM[node.op]
        parts, inputs = [node], node.inputs
        attrs, params = dict(node.attrs), dict(node.params)
        if node.op == "batchnorm":
            attrs = {"bn": True, "bn_eps": node.attrs["eps"]}
            params = {BN_ROLES[r]: p for r, p in node.params.items()}
        if node.op == "layernorm":
            attrs["add_before"] = False
            add = f.index.producer.get(node.inputs[0].name)
            if (add is not None and add.op == "add" and id(add) not in f.taken
                    and f.index.sole_user(add.output) is node
                    and add.inputs[0].type == add.inputs[1].type == add.output.type):
                parts, inputs = [add, node], add.inputs
                attrs["add_before"] = True
        epi = Epilogue()
        grow_epilogue(f.index, op, parts, node.output, epi, f.taken)
        if not epi.absorbed and len(parts) == 1:
            continue  # a lone norm stays what it is
        f.emit(op, parts + epi.absorbed, inputs + epi.extra_inputs(), {**attrs, **epi.attrs()},
               {**params, **epi.params()}, node)
    return f.result(), f.summary("fused")


def fuse_pointwise(graph: Graph) -> tuple[Graph, str]:
    """Chains of pointwise ops left over (activations and same-shape adds not after a conv or a norm)
    => fused_pointwise nodes of up to act1 -> (+ residual) -> act2 each (on [N, C] and 4-D tensors)."""
    f = _Fuser(graph)
    for node in graph.nodes:
        if id(node) in f.taken or node.output.type.rank not in POINTWISE_RANKS:
            continue
        epi = Epilogue()
        if REGISTRY[node.op].is_activation:
            epi.act1, epi.slope1 = (node.op, dict(node.attrs)), node.params.get("weight")
        elif node.op == "add" and node.inputs[0].type == node.inputs[1].type == node.output.type:
            epi.residual = node.inputs[1]
        else:
            continue
        grow_epilogue(f.index, "fused_pointwise", [node], node.output, epi, f.taken)
        if not epi.absorbed:
            continue  # a lone activation or add is already one launch
        attrs = {"bn": False, "bn_eps": 1e-5, **epi.attrs()}
        f.emit("fused_pointwise", [node] + epi.absorbed, (node.inputs[0],) + epi.extra_inputs(), attrs,
               epi.params(), node)
    return f.result(), f.summary("fused")
