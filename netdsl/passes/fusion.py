"""Fusion as rules: each rule is a pattern and a rewrite, one short entry, listed in ``RULES``.

Every fused node ends in the one epilogue of ``netdsl.ops.epilogue``::

    acc (+ bias[c]) -> act1 -> (+ residual) -> act2

A rule matches an *anchor* (a pattern over a node and, for two-node patterns, the node producing its
first input), and its rewrite says what fused node the matched nodes start as. Unless the rule says
otherwise, the one shared rule ``grow_epilogue`` then extends that node by the pointwise ops after it,
in the order the epilogue allows. What an op is (its kind, its ``fused_form``, whether it folds a
batchnorm or absorbs an add, its ``axis``) comes from its registry entry; no rule names an op other
than the batchnorm and the add it absorbs.

Two conditions hold for everything a fusion swallows: a value is absorbed only when its one reader is
the next part (a value read twice, or a graph output, must be written to memory anyway), and a
residual is absorbed only when it has exactly the output's type (no broadcasting in an epilogue) and
is not computed from the chain itself (that would be a cycle).

A fused node takes the place of the last node it absorbs (it produces that node's output value), so
values never move in the topological order. Parameters keep their original names under new roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..ir.graph import Graph, Node, Value
from ..ops import REGISTRY, OpDef, OpKind
from ..ops.epilogue import NAMES as EPILOGUE_NAMES
from ..ops.epilogue import Epilogue
from ..ops.fused import BN_ROLES
from .rewrite import GraphIndex, rebuild

# a fused_pointwise kernel views its tensors as [rows, channels] with the channels stored last:
# [N, C], or NHWC for a 4-D tensor (see layout.py)
POINTWISE_RANKS = (2, 4)


# ---------------------------------------------------------------------------------------------
# what a rewrite builds, and the shared rule that grows its epilogue
# ---------------------------------------------------------------------------------------------

@dataclass
class Fused:
    """A fused node being built: its op, the nodes it replaces (in graph order), its main inputs,
    attributes and parameters besides the epilogue's, and the epilogue with what it reads."""

    op: str
    parts: list[Node]
    inputs: tuple[Value, ...]
    attrs: dict
    params: dict
    epilogue: Epilogue = field(default_factory=Epilogue)
    residual: Value | None = None
    slopes: dict[str, str] = field(default_factory=dict)  # "slope1"/"slope2" -> parameter name
    anchor: Node | None = None  # the part whose name and location the fused node keeps (default: the first)

    @property
    def out(self) -> Value:
        return self.parts[-1].output

    def node(self) -> Node:
        anchor = self.anchor or self.parts[0]
        extra = (self.residual,) if self.residual is not None else ()
        epilogue = self.epilogue.attrs() if REGISTRY[self.op].attr("act1") is not None else {}
        return Node(self.op, self.inputs + extra, self.parts[-1].outputs, {**self.attrs, **epilogue},
                    {**self.params, **self.slopes}, anchor.name, anchor.loc)


def _slope_fits(fused: Fused, act: Node) -> bool:
    """A per-channel activation parameter (prelu's slope) runs along the activation's axis (dim 1);
    the kernel applies per-channel vectors along the fused op's axis. They must be the same dim."""
    mine = REGISTRY[act.op].axis_of(act.attrs, fused.out.type.rank)
    return mine is None or mine == REGISTRY[fused.op].axis_of(fused.attrs, fused.out.type.rank)


def grow_epilogue(index: GraphIndex, fused: Fused, taken: set[int]) -> None:
    """Absorb into ``fused`` the pointwise ops after it that its epilogue still has room for."""
    while True:
        out = fused.out
        user = index.sole_user(out)
        if user is None or id(user) in taken:
            return
        op = REGISTRY[user.op]
        if op.is_activation:
            grown = fused.epilogue.then_activation(user.op, user.attrs) if _slope_fits(fused, user) else None
            if grown is None:
                return
            fused.epilogue, which = grown
            if "weight" in user.params:
                fused.slopes["slope" + which] = user.params["weight"]
        elif op.kind is OpKind.BINARY and user.op == "add":
            grown = fused.epilogue.then_residual()
            a, b = user.inputs
            other = b if a.name == out.name else a
            if grown is None or other.type != out.type or user.output.type != out.type:
                return  # an epilogue adds a tensor of exactly the output's shape, once
            if index.depends_on(other, fused.parts):
                return  # the residual is computed from this chain: fusing would make a cycle
            fused.epilogue, fused.residual = grown, other
        else:
            return
        fused.parts.append(user)
        taken.add(id(user))


# ---------------------------------------------------------------------------------------------
# the rules: pattern -> rewrite
# ---------------------------------------------------------------------------------------------

Match = Callable[[Node, OpDef], bool]


@dataclass(frozen=True)
class Rule:
    """``anchor`` matches a node (with its registry entry); ``after``, when given, matches the node
    producing its first input, which must be read by the anchor alone (the pattern ``after -> anchor``);
    ``walk``, for longer patterns, finds the nodes that end in the anchor (or None).
    ``rewrite(nodes)`` returns the fused node they start as (None: leave them), and ``grow`` says
    whether the epilogue rule then extends it."""

    name: str
    anchor: Match
    rewrite: Callable[[list[Node]], Fused | None]
    after: Match | None = None
    walk: Callable[[GraphIndex, Node], list[Node] | None] | None = None
    grow: bool = True
    doc: str = ""


def _is(op_name: str) -> Match:
    return lambda node, op: node.op == op_name


def _bn_params(bn: Node) -> dict:
    return {BN_ROLES[role]: p for role, p in bn.params.items()}


def _fold(nodes: list[Node]) -> Fused | None:
    """x -> conv/linear -> batchnorm  =>  fused_<op>(bn=true): the batchnorm folded into the weight.
    Only when batchnorm's channels (dim 1) are the op's output channels (its axis): always for a
    conv, for a linear only on [N, F]."""
    src, bn = nodes
    op = REGISTRY[src.op]
    if op.axis_of(src.attrs, src.output.type.rank) != 1:
        return None
    attrs = {**src.attrs, "bn": True, "bn_eps": bn.attrs["eps"], **Epilogue().attrs()}
    return Fused(op.fused_form, [src, bn], src.inputs, attrs, {**src.params, **_bn_params(bn)})


def _out_fusable(nodes: list[Node]) -> Fused:
    """conv/linear (folded or not) + epilogue => fused_<op>: bias -> act1 -> (+ residual) -> act2;
    ResNet's relu(bn(conv(x)) + skip) becomes one node."""
    (node,) = nodes
    op = REGISTRY[node.op]
    attrs = {k: v for k, v in node.attrs.items() if k not in EPILOGUE_NAMES}
    if op.kind is not OpKind.FUSED and REGISTRY[op.fused_form].attr("bn") is not None:
        attrs.update(bn=False, bn_eps=1e-5)
    epi = Epilogue.of(node.attrs)
    inputs = node.inputs[:-1] if epi.residual else node.inputs
    params = {k: v for k, v in node.params.items() if k not in ("slope1", "slope2")}
    slopes = {k: v for k, v in node.params.items() if k in ("slope1", "slope2")}
    return Fused(op.fused_form, [node], inputs, attrs, params, epi, node.inputs[-1] if epi.residual else None, slopes)


def _add_norm(nodes: list[Node]) -> Fused | None:
    """x + y -> layernorm  =>  fused_layernorm(add_before=true) ("add & norm"), same-shape add only."""
    add, norm = nodes
    if not add.inputs[0].type == add.inputs[1].type == add.output.type:
        return None
    attrs = {**norm.attrs, "add_before": True}
    return Fused(REGISTRY[norm.op].fused_form, [add, norm], add.inputs, attrs, dict(norm.params), anchor=norm)


def _norm(nodes: list[Node]) -> Fused | None:
    """norm + epilogue => fused_<norm>; a batchnorm not after a conv => fused_pointwise (a
    per-channel affine, on the ranks the pointwise kernel views as [rows, channels])."""
    (node,) = nodes
    op = REGISTRY[node.op]
    if node.op == "batchnorm":
        if node.output.type.rank not in POINTWISE_RANKS:
            return None
        return Fused(op.fused_form, [node], node.inputs, {"bn": True, "bn_eps": node.attrs["eps"]}, _bn_params(node))
    attrs = dict(node.attrs)
    if REGISTRY[op.fused_form].attr("add_before") is not None:
        attrs["add_before"] = False
    return Fused(op.fused_form, [node], node.inputs, attrs, dict(node.params))


def _pointwise(nodes: list[Node]) -> Fused | None:
    """Activations and same-shape adds left over => fused_pointwise chains (on [N, C] and 4-D)."""
    (node,) = nodes
    if node.output.type.rank not in POINTWISE_RANKS:
        return None
    fused = Fused("fused_pointwise", [node], (node.inputs[0],), {"bn": False, "bn_eps": 1e-5}, {})
    if REGISTRY[node.op].is_activation:
        fused.epilogue, _ = Epilogue().then_activation(node.op, node.attrs)
        if "weight" in node.params:
            fused.slopes["slope1"] = node.params["weight"]
    elif node.op == "add" and node.inputs[0].type == node.inputs[1].type == node.output.type:
        fused.epilogue, fused.residual = Epilogue(residual=True), node.inputs[1]
    else:
        return None
    return fused


def _attention_walk(index: GraphIndex, node: Node) -> list[Node] | None:
    """matmul(q, k -> transpose(-2, -1)) (-> affine(scale)) -> softmax(dim=-1) -> matmul(., v): the
    nodes of attention spelled out, in graph order, each read only by the next."""
    def sole_producer(value: Value, op: str) -> Node | None:
        node = index.producer.get(value.name)
        return node if node is not None and node.op == op and index.sole_user(value) is not None else None

    chain = [node]
    soft = sole_producer(node.inputs[0], "softmax")
    if soft is None or soft.attrs["dim"] % soft.output.type.rank != soft.output.type.rank - 1:
        return None
    chain.append(soft)
    scores = soft.inputs[0]
    scaled = sole_producer(scores, "affine")
    if scaled is not None:
        if scaled.attrs["shift"] != 0:
            return None
        chain.append(scaled)
        scores = scaled.inputs[0]
    qk = sole_producer(scores, "matmul")
    kt = sole_producer(qk.inputs[1], "transpose") if qk is not None else None
    if kt is None:
        return None
    rank = kt.output.type.rank
    if {kt.attrs["dim0"] % rank, kt.attrs["dim1"] % rank} != {rank - 2, rank - 1}:
        return None
    chain += [qk, kt]
    return sorted(chain, key=lambda n: index.position[id(n)])


def _attention(nodes: list[Node]) -> Fused | None:
    """=> scaled_dot_product_attention(q, k, v, scale): the L x S scores never reach memory."""
    kt, qk, *middle, soft, pv = nodes
    q, k, v = qk.inputs[0], kt.inputs[0], pv.inputs[1]
    if not (q.type.rank == k.type.rank == v.type.rank >= 3 and q.type.shape[:-2] == k.type.shape[:-2]
            == v.type.shape[:-2] == pv.output.type.shape[:-2]):
        return None  # batch dims that broadcast: left as they are
    scale = middle[0].attrs["scale"] if middle else 1.0
    return Fused("scaled_dot_product_attention", nodes, (q, k, v), {"causal": False, "scale": float(scale)}, {},
                 anchor=pv)


def _parameter_linear_walk(index: GraphIndex, node: Node) -> list[Node] | None:
    """matmul(a, W -> transpose) (+ b), where W [out, in] and b [out] are parameters read as values (a packed
    projection such as nn.MultiheadAttention's in_proj, or a head tied to an embedding) read by nothing else:
    the nodes of the pattern, in graph order."""
    a, wt = node.inputs
    tr = index.producer.get(wt.name)
    if a.type.rank < 2 or wt.type.rank != 2 or tr is None or REGISTRY[tr.op].permutation is None:
        return None
    w = index.producer.get(tr.inputs[0].name)
    if (REGISTRY[tr.op].permutation(tr.attrs, 2) != (1, 0) or w is None or not REGISTRY[w.op].constant
            or index.sole_user(wt) is not node or index.sole_user(w.output) is not tr):
        return None
    parts = [node, tr, w]
    add = index.sole_user(node.output)
    if add is not None and add.op == "add" and add.output.type == node.output.type:
        (other,) = [v for v in add.inputs if v.name != node.output.name] or [None]
        bias = index.producer.get(other.name) if other is not None else None
        if (bias is not None and REGISTRY[bias.op].constant and other.type.shape == (wt.type.shape[1],)
                and index.sole_user(other) is add):
            parts += [add, bias]
    return sorted(parts, key=lambda n: index.position[id(n)])


def _parameter_linear(nodes: list[Node]) -> Fused | None:
    """=> linear(a) with those parameters as its weight and bias; it then takes an epilogue like any linear."""
    (matmul,) = [n for n in nodes if REGISTRY[n.op].kind is OpKind.OUT_FUSABLE]
    weight, *bias = sorted((n for n in nodes if REGISTRY[n.op].constant), key=lambda n: -n.output.type.rank)
    params = {"weight": weight.params["value"], **({"bias": bias[0].params["value"]} if bias else {})}
    return Fused("linear", nodes, (matmul.inputs[0],), {"out_features": weight.output.type.shape[0],
                                                         "bias": bool(bias)}, params, anchor=matmul)


def _anchors_epilogue(*kinds: OpKind) -> Match:
    """Ops of these kinds that have a fused form, and the fused ops derived from them."""
    def match(node: Node, op: OpDef) -> bool:
        return op.fused_form is not None and (REGISTRY[op.base] if op.base else op).kind in kinds
    return match


RULES: dict[str, tuple[Rule, ...]] = {
    "fold_parameter_linear": (
        Rule("parameter_linear", lambda node, op: op.kind is OpKind.OUT_FUSABLE and op.arity == 2, _parameter_linear,
             walk=_parameter_linear_walk, grow=False,
             doc="matmul by a transposed parameter (+ a parameter bias): a linear with those weights"),
    ),
    "fold_batchnorm": (
        Rule("fold", _is("batchnorm"), _fold, after=lambda node, op: op.folds_batchnorm, grow=False,
             doc="conv/linear -> batchnorm: fold into the weight and bias"),
    ),
    "fuse_attention": (
        Rule("attention", _is("matmul"), _attention, walk=_attention_walk, grow=False,
             doc="matmul -> (scale) -> softmax -> matmul: one attention kernel"),
    ),
    "fuse_norm_activation": (
        Rule("add_norm", lambda node, op: op.absorbs_add, _add_norm, after=_is("add"),
             doc='add -> layernorm: normalise the sum in one kernel ("add & norm")'),
        Rule("norm", lambda node, op: op.kind is OpKind.NORM and op.fused_form is not None, _norm,
             doc="norm + epilogue; a batchnorm alone: a per-channel affine + epilogue"),
    ),
    "fuse_conv_epilogue": (
        Rule("out_fusable", _anchors_epilogue(OpKind.OUT_FUSABLE), _out_fusable,
             doc="conv/linear (batchnorm folded or not) + epilogue"),
    ),
    "fuse_pointwise": (
        Rule("pointwise", lambda node, op: op.is_activation or node.op == "add", _pointwise,
             doc="pointwise chains"),
    ),
}


def apply_rules(graph: Graph, rules: tuple[Rule, ...], verb: str = "fused") -> tuple[Graph, str]:
    """One pass: try the rules on every node not yet taken, in graph order; rebuild once."""
    index = GraphIndex(graph)
    taken: set[int] = set()
    put: dict[int, Node] = {}
    drop: list[int] = []
    merged: dict[str, list[str]] = {}
    absorbed: dict[str, int] = {}
    for node in graph.nodes:
        if id(node) in taken:
            continue
        for rule in rules:
            fused = _match(index, rule, node, taken)
            if fused is None:
                continue
            if rule.grow:
                grow_epilogue(index, fused, taken)
                if len(fused.parts) == 1:
                    continue  # a lone op that nothing joined stays what it is
            anchor = fused.anchor or fused.parts[0]
            positions = [index.position[id(p)] for p in fused.parts]
            put[positions[-1]] = fused.node()
            drop.extend(positions[:-1])
            merged[fused.out.name] = [p.output.name for p in fused.parts]
            for p in fused.parts:
                taken.add(id(p))
                if p is not anchor:
                    absorbed[p.op] = absorbed.get(p.op, 0) + 1
            break
    summary = ", ".join(f"{n} {op}" for op, n in sorted(absorbed.items(), key=lambda t: (-t[1], t[0])))
    result = rebuild(graph, put, drop, merged=merged) if put else graph
    return result, f"{len(put)} {verb}" + (f" (absorbed {summary})" if summary and verb == "fused" else "")


def _match(index: GraphIndex, rule: Rule, node: Node, taken: set[int]) -> Fused | None:
    if not rule.anchor(node, REGISTRY[node.op]):
        return None
    nodes = [node]
    if rule.walk is not None:
        nodes = rule.walk(index, node)
        if nodes is None or any(id(n) in taken for n in nodes):
            return None
    elif rule.after is not None:
        src = index.producer.get(node.inputs[0].name)
        if (src is None or id(src) in taken or len(src.outputs) != 1 or not rule.after(src, REGISTRY[src.op])
                or index.sole_user(src.output) is not node):
            return None
        nodes = [src, node]
    return rule.rewrite(nodes)


def _pass(name: str, verb: str = "fused"):
    def run(graph: Graph) -> tuple[Graph, str]:
        return apply_rules(graph, RULES[name], verb)
    run.__name__ = name
    run.__doc__ = "; ".join(r.doc for r in RULES[name])
    return run


fold_parameter_linear = _pass("fold_parameter_linear", "folded")
fold_batchnorm = _pass("fold_batchnorm", "folded")
fuse_attention = _pass("fuse_attention")
fuse_norm_activation = _pass("fuse_norm_activation")
fuse_conv_epilogue = _pass("fuse_conv_epilogue")
fuse_pointwise = _pass("fuse_pointwise")
