"""Elaboration: AST -> typed IR graph.

Evaluates a network's statements in order: expands block calls (with their parameters bound),
repetitions and groups; maps call arguments to op attributes through the registry; infers every
value's type; names nodes and parameters hierarchically from labels (``layer1.0.conv1.weight``).
Every mistake becomes a ``NetDSLError`` at the offending span; an error inside an expanded block
also names each call site that led there. Nothing in a model file is ever evaluated as Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import NetDSLError, SourceLoc, did_you_mean
from ..ir.dims import DimTooDeep, SymDim
from ..ir.graph import Graph, Node, ParamSpec, Value
from ..ir.types import BOOL, DTYPES, INT64_MAX, TensorType, is_integer
from ..ops import ALIASES, REGISTRY, OpKind, ShapeError, lookup
from ..ops.registry import signature
from ..ops.registry import OpDef, bind_attrs, show_value
from . import ast
from .parser import MAX_NESTING

Scalar = Any  # int, float, str, bool, a SymDim (a network input's dim, in an attribute) or a tuple of those

MAX_REPEAT = 1000  # a repetition count above this is surely a typo (and would elaborate for minutes)
MAX_NODES = 100_000  # no model of the seeds comes near; a runaway nesting of repetitions does
# integer arithmetic stops here, as the parser stops at integer literals this long (Python's limit for
# printing one): far beyond any size (int64), and products of such numbers would run for minutes
MAX_INT_DIGITS = 4300
MAX_INT = 10**MAX_INT_DIGITS
_DIM_TOO_DEEP = ("sizes are tracked symbolically, and this one has become too complex: give the input fixed "
                 "sizes (f32[N, 3, 224, 224]) instead of symbolic dims")
# the expressions that nest one level deeper, as the parser counts levels (MAX_NESTING)
_NESTED = (ast.Call, ast.Tuple, ast.Neg, ast.Subscript)


@dataclass(frozen=True)
class Tensor:
    value: Value


@dataclass(frozen=True)
class Results:
    """The several results of one op or block (``rnn``'s output and final state, ``chunk``'s pieces); they
    are bound at once (``y, h = x -> rnn(64)``) and are never a value themselves."""

    tensors: tuple[Tensor, ...]
    names: tuple[str, ...]
    what: str  # "`rnn`", "block `mha`": for messages


@dataclass(frozen=True)
class DeclaredParam:
    """A ``param`` statement's tensor: its full name and spec; read, it becomes a ``parameter`` node."""

    name: str
    spec: ParamSpec


@dataclass
class Binding:
    value: Tensor | Scalar
    loc: SourceLoc | None
    is_input: bool = False
    used: bool = False


@dataclass
class Scope:
    """A naming scope: the hierarchical prefix of everything created in it."""

    prefix: str
    taken: dict[str, SourceLoc | None] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def full(self, local: str) -> str:
        return f"{self.prefix}.{local}" if self.prefix else local

    def claim(self, label: str | None, base: str, loc: SourceLoc | None) -> str:
        """The local name for a new child: the label, or ``base_k`` when there is none."""
        if label is not None:
            if label in self.taken:
                err = NetDSLError(f"label `{label}` is used twice in the same scope", loc,
                                  hint="labels name parameters; give each layer its own label")
                raise err.with_note("first used here", self.taken[label])
            self.taken[label] = loc
            return label
        while True:
            k = self.counters.get(base, 0)
            self.counters[base] = k + 1
            name = f"{base}_{k}"
            if name not in self.taken:
                self.taken[name] = loc
                return name

    def child(self, local: str) -> "Scope":
        return Scope(self.full(local))


class _Elaborator:
    def __init__(self, module: ast.Module):
        self.module = module
        self.nodes: list[Node] = []
        self.params: dict[str, ParamSpec] = {}
        self.value_names: set[str] = set()
        self.block_stack: list[str] = []
        self.dim_defaults: dict[str, int] = {}
        self.dim_default_locs: dict[str, SourceLoc] = {}
        self.dim_locs: dict[str, SourceLoc] = {}  # where each symbolic input dim is first written
        # the symbolic dims of the network's inputs (N, T, ...): names an attribute expression may use
        self.dims: dict[str, SymDim] = {}
        self.param_nodes: dict[str, Tensor] = {}  # parameter name -> the `parameter` node reading it
        self.level = 0  # how deeply the expression being evaluated nests, through the blocks it is inside

    def nest(self, loc: SourceLoc | None) -> None:
        """Go one level deeper (the caller steps back up with ``self.level -= 1``).

        The parser allows MAX_NESTING levels in one expression; a block's body nests inside the call that
        expands it, so blocks expanding blocks could stack expressions deeper than Python's recursion limit
        allows (each level is a few frames of this recursive evaluator). Counting the levels across blocks
        turns that into an error at the construct that goes too deep, with the chain of block calls."""
        if self.level >= MAX_NESTING:
            raise NetDSLError(f"nesting deeper than {MAX_NESTING} levels"
                              + (", counting the blocks being expanded" if self.block_stack else ""), loc,
                              hint="blocks that expand blocks add up: flatten some of them, or give intermediate "
                                   "results names" if self.block_stack else
                              "give intermediate results names (`y1 = ...`, then use `y1`)")
        self.level += 1

    # --- values and nodes ------------------------------------------------------------------------
    def _fresh_value_name(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self.value_names:
            candidate, k = f"{name}~{k}", k + 1
        self.value_names.add(candidate)
        return candidate

    def apply_op(self, op: OpDef, inputs: list[Tensor], attrs: dict, scope: Scope, label: str | None,
                 loc: SourceLoc, param_names: dict[str, str] | None = None) -> Tensor | Results:
        types = [t.value.type for t in inputs]
        for i, t in enumerate(types):
            if is_integer(t.dtype) and not _takes_integer_input(op, i):
                raise NetDSLError(f"`{op.name}` takes a floating-point tensor, got {t}", loc,
                                  hint="an integer tensor holds token ids: look them up with `embedding(...)` first")
            if t.dtype == BOOL and i not in op.bool_inputs:
                raise NetDSLError(f"`{op.name}` takes a floating-point tensor, got {t}", loc,
                                  hint="a boolean tensor is an attention mask (true: may attend): "
                                       "sdpa(q, k, v, mask)")
        # the element types of the data (token ids and masks are checked by the op's shape rule)
        dtypes = {t.dtype for i, t in enumerate(types) if i not in op.int_inputs and i not in op.bool_inputs}
        if len(dtypes) > 1:
            raise NetDSLError(f"`{op.name}` mixes element types {', '.join(sorted(dtypes))}", loc,
                              hint="the tensors a layer combines share one element type: declare the inputs alike")
        try:
            out_types = op.result_types(types, attrs)
            specs = op.params(types, attrs)
        except ShapeError as e:
            raise NetDSLError(e.message, loc, e.hint or signature(op)) from None
        except DimTooDeep as e:
            raise NetDSLError(f"the output size of `{op.name}` is too complex: {e}", loc, hint=_DIM_TOO_DEEP) from None
        if len(self.nodes) >= MAX_NODES:
            raise NetDSLError(f"the network has more than {MAX_NODES:,} layers", loc,
                              hint="check the repetition counts (`block(...) * n`)")
        local = scope.claim(label, op.name, loc)
        name = scope.full(local)
        params = {}
        for role, spec in specs.items():
            if param_names is not None:  # a `parameter` node: the parameter exists already
                params[role] = param_names[role]
                continue
            pname = f"{name}.{role}"
            if pname in self.params:
                raise NetDSLError(f"parameter `{pname}` is declared twice", loc,
                                  hint="a `param` and a layer's parameter have the same name; rename one")
            self.params[pname] = spec
            params[role] = pname
        if len(out_types) == 1:
            out = Value(self._fresh_value_name(name), out_types[0])
            self.nodes.append(Node(op.name, tuple(t.value for t in inputs), (out,), attrs, params, name, loc))
            return Tensor(out)
        names = op.result_names(attrs) if op.results is not None else tuple(map(str, range(len(out_types))))
        outs = tuple(Value(self._fresh_value_name(f"{name}.{r}"), t) for r, t in zip(names, out_types, strict=True))
        self.nodes.append(Node(op.name, tuple(t.value for t in inputs), outs, attrs, params, name, loc))
        return Results(tuple(Tensor(v) for v in outs), names, f"`{op.name}`")

    def read_param(self, pname: str, loc: SourceLoc) -> Tensor:
        """A parameter as a tensor: one `parameter` node per parameter, however often it is read."""
        if pname not in self.param_nodes:
            spec = self.params[pname]
            op = REGISTRY["parameter"]
            node_name = self._fresh_value_name(pname)
            out = Value(node_name, TensorType(tuple(spec.shape)))
            self.nodes.append(Node(op.name, (), (out,), {"shape": tuple(spec.shape)}, {"value": pname}, pname, loc))
            self.param_nodes[pname] = Tensor(out)
        return self.param_nodes[pname]

    def lookup_qualified(self, q: ast.Qualified, env: dict[str, Binding], scope: Scope) -> Tensor:
        """``tok.weight``: a dotted `param`, or the parameter ``weight`` of the layer labelled ``tok`` (defined
        earlier in this scope)."""
        binding = env.get(q.id)
        if binding is not None:
            binding.used = True
            return self.read_param(binding.value.name, q.loc)
        pname = scope.full(q.id)
        if pname in self.params:
            return self.read_param(pname, q.loc)
        label = scope.full(".".join(q.parts[:-1]))
        roles = [k[len(label) + 1:] for k in self.params if k.startswith(label + ".")]
        if roles:
            raise NetDSLError(f"layer `{'.'.join(q.parts[:-1])}` has no parameter `{q.parts[-1]}`", q.loc,
                              hint=did_you_mean(q.parts[-1], roles) or f"its parameters: {', '.join(sorted(roles))}")
        raise NetDSLError(f"no parameter `{q.id}`", q.loc,
                          hint="a dotted name reads a parameter: one declared with `param`, or a layer's by its label "
                               "and role (`tok.weight`), defined before this line")

    # --- expressions ----------------------------------------------------------------------------
    def lookup_name(self, node: ast.Name, env: dict[str, Binding], pending: dict[str, ast.Assign]):
        binding = env.get(node.id)
        if binding is not None:
            binding.used = True
            return binding.value
        dim = self.dims.get(node.id)  # after values and block parameters: a symbolic dim of the inputs
        if dim is not None:
            return dim
        if node.id in pending:
            later = pending[node.id]
            cycle = _find_cycle(node.id, pending)
            if cycle:
                raise NetDSLError(f"values form a cycle: {' -> '.join(cycle)}", node.loc,
                                  hint="a network is acyclic: every value must be computed from values defined before it")
            raise NetDSLError(f"`{node.id}` is used before it is defined (on line {later.loc.line})", node.loc,
                              hint="define values before using them")
        if lookup(node.id) or node.id in self.module.blocks:
            raise NetDSLError(f"`{node.id}` is a layer, not a value", node.loc,
                              hint=f"apply it to a value: `x -> {node.id}` or `{node.id}(x)`")
        raise NetDSLError(f"undefined name `{node.id}`", node.loc, hint=did_you_mean(node.id, [*env, *self.dims])
                          or f"define it before it is used (`{node.id} = ...`), or declare it: `input {node.id}: ...`")

    def eval(self, e: ast.Expr, env, scope: Scope, pending) -> Tensor | Scalar:
        """An expression's value: a tensor or a scalar (several results must be bound by an assignment)."""
        v = self.eval_results(e, env, scope, pending)
        if isinstance(v, Results):  # pointing at the call that gave them
            raise _unbound_results(v, e.stages[-1].loc if isinstance(e, ast.Chain) else _loc_of(e))
        return v

    def eval_results(self, e: ast.Expr, env, scope: Scope, pending) -> Tensor | Scalar | Results:
        nested = isinstance(e, _NESTED)
        if nested:  # a call, a tuple, a unary minus or a subscript: one level deeper (see `nest`)
            self.nest(e.loc)
        try:
            if isinstance(e, (ast.Num, ast.Str, ast.Bool)):
                return e.value
            if isinstance(e, ast.Name):
                v = self.lookup_name(e, env, pending)
                return self.read_param(v.name, e.loc) if isinstance(v, DeclaredParam) else v
            if isinstance(e, ast.Qualified):
                return self.lookup_qualified(e, env, scope)
            if isinstance(e, ast.Subscript):
                return self.subscript(e, env, scope, pending)
            if isinstance(e, ast.Tuple):
                items = [self.eval(i, env, scope, pending) for i in e.items]
                if any(isinstance(i, Tensor) for i in items):
                    raise NetDSLError("a tuple holds numbers, not tensors", e.loc,
                                      hint="to join tensors along channels use concat(a, b, ...)")
                return tuple(items)
            if isinstance(e, ast.Neg):
                v = self.eval(e.operand, env, scope, pending)
                if isinstance(v, Tensor):
                    return self.affine(v, -1.0, 0.0, "-", scope, e.loc)
                if isinstance(v, (str, bool, tuple)):
                    raise NetDSLError(f"unary `-` applies to numbers and tensors, not {_show(v)}", e.loc)
                return -v
            if isinstance(e, ast.BinOp):
                return self.binop(e, env, scope, pending)
            if isinstance(e, ast.Call):
                return self.call(e, None, env, scope, None, pending)
            if isinstance(e, ast.Chain):
                x = self.eval(e.source, env, scope, pending)
                if not isinstance(x, Tensor):
                    raise NetDSLError("a chain starts from a tensor", _loc_of(e.source),
                                      hint="write `x -> layer`, where x is an input or a named value")
                for i, stage in enumerate(e.stages):
                    if isinstance(x, Results):
                        raise _unbound_results(x, e.stages[i - 1].loc)
                    x = self.apply_stage(x, stage, env, scope, pending)
                return x
            raise AssertionError(f"unknown expression {e!r}")
        finally:
            if nested:
                self.level -= 1

    def subscript(self, e: ast.Subscript, env, scope: Scope, pending) -> Tensor:
        """``x[:, 0]``, ``pos[:T]``, ``x[1:-1:2]``: basic indexing as in torch, one index per leading dim; an
        integer index is a ``select`` (the dim goes away), a range a ``slice`` (``:`` alone: nothing)."""
        x = self.eval(e.value, env, scope, pending)
        if not isinstance(x, Tensor):
            raise NetDSLError(f"only a tensor can be indexed, not {_show(x)}", _loc_of(e.value))
        rank = x.value.type.rank
        if len(e.indices) > rank:
            raise NetDSLError(f"{len(e.indices)} indices for a tensor of rank {rank} ({x.value.type})", e.loc,
                              hint="index at most one position per dim")
        dim = 0
        for index in e.indices:
            if isinstance(index, ast.SliceIndex):
                parts = {k: (None if p is None else self.eval(p, env, scope, pending), _loc_of(p) or index.loc)
                         for k, p in (("start", index.start), ("end", index.stop), ("step", index.step))}
                if all(v is None for v, _ in parts.values()):
                    dim += 1
                    continue
                kwargs = {k: v for k, (v, _) in parts.items() if v is not None}
                locs = {k: loc for k, (_, loc) in parts.items()}
                x = self._index_op("slice", x, dim, kwargs, locs, scope, index.loc)
                dim += 1
            else:
                value = self.eval(index, env, scope, pending)
                x = self._index_op("select", x, dim, {"index": value}, {"index": _loc_of(index)}, scope,
                                   _loc_of(index))
        return x

    def _index_op(self, name: str, x: Tensor, dim: int, kwargs: dict, locs: dict, scope: Scope,
                  loc: SourceLoc) -> Tensor:
        op = REGISTRY[name]
        for key, v in kwargs.items():
            if isinstance(v, Tensor):
                raise NetDSLError("an index is a number or a dim, not a tensor", locs.get(key) or loc,
                                  hint="indexing by a tensor (gather) is not supported; use embedding(...) for ids")
        try:
            attrs = bind_attrs(op, [], {"dim": dim, **kwargs})
        except ShapeError as err:
            raise NetDSLError(err.message, locs.get(err.arg) or loc, err.hint) from None
        return self.apply_op(op, [x], attrs, scope, None, loc)

    def binop(self, e: ast.BinOp, env, scope, pending):
        # `x + x + ... + x` is a tree as deep as the sum is long (leaning left): walk down its left spine in a
        # loop and fold back up, so that any length of such a run costs no recursion. A right operand that is
        # itself an operation (`1 + (2 * 3)`) nests one level deeper.
        spine = [e]
        while isinstance(spine[-1].left, ast.BinOp):
            spine.append(spine[-1].left)
        acc = self.eval(spine[-1].left, env, scope, pending)
        for b in reversed(spine):
            if isinstance(b.right, ast.BinOp):
                self.nest(b.right.loc)
                try:
                    right = self.eval(b.right, env, scope, pending)
                finally:
                    self.level -= 1
            else:
                right = self.eval(b.right, env, scope, pending)
            acc = self.combine(b, acc, right, scope)
        return acc

    def combine(self, e: ast.BinOp, left, right, scope: Scope):
        """``left e.op right`` for the values of the two operands of ``e``."""
        lt, rt = isinstance(left, Tensor), isinstance(right, Tensor)
        if lt and rt:
            if e.op in ("+", "*"):
                op = REGISTRY["add" if e.op == "+" else "mul"]
                return self.apply_op(op, [left, right], {}, scope, None, e.loc)
            raise NetDSLError(f"`{e.op}` between tensors is not supported", e.loc,
                              hint="tensors combine with `+` (residual add), `*` or concat(...)")
        if lt or rt:
            return self.tensor_and_number(e, left, right, scope)
        if not all(_is_number(v) or isinstance(v, SymDim) for v in (left, right)):
            raise NetDSLError(f"`{e.op}` needs numbers, got {_show(left)} and {_show(right)}", e.loc,
                              hint="arithmetic on attributes takes numbers and dims; on tensors, tensors and numbers")
        if e.op in ("/", "//") and not isinstance(right, SymDim) and right == 0:
            raise NetDSLError("division by zero", e.loc, hint="the divisor of an attribute's expression is 0")
        if isinstance(left, SymDim) or isinstance(right, SymDim):
            return _dim_arith(e, left, right)
        try:
            value = _arith(e.op, left, right)
        except OverflowError:  # a huge integer mixed with a float
            raise NetDSLError(f"the result of `{e.op}` is too large", e.loc) from None
        if isinstance(value, int) and abs(value) >= MAX_INT:  # (a product of products would take minutes)
            raise NetDSLError(f"the result of `{e.op}` is too large: an integer of more than {MAX_INT_DIGITS} digits",
                              e.loc, hint="sizes and attributes are 64-bit integers")
        return value

    def tensor_and_number(self, e: ast.BinOp, left, right, scope: Scope) -> Tensor:
        """``x * c``, ``c * x``, ``x / c``, ``x + c``, ``c + x``, ``x - c``, ``c - x``: one ``affine`` node
        (y = scale * x + shift), which fuses into a conv's or linear's epilogue like any activation."""
        x, c = (left, right) if isinstance(left, Tensor) else (right, left)
        side = "right" if isinstance(left, Tensor) else "left"
        if isinstance(c, SymDim):
            raise NetDSLError(f"`{e.op}` between a tensor and the dimension `{c}` is not supported", e.loc,
                              hint="a tensor is scaled or shifted by a number (`x * 0.125`, `x + 1`); dimensions "
                                   "are for attributes, e.g. reshape(N, T, -1)")
        if not _is_number(c):
            raise NetDSLError(f"`{e.op}` between a tensor and {_show(c)} is not supported", e.loc,
                              hint="a tensor is scaled or shifted by a number: `x * 0.125`, `x / 8`, `x + 1`, `1 - x`")
        if e.op == "//":
            raise NetDSLError("`//` between a tensor and a number is not supported", e.loc,
                              hint="`//` is floor division of numbers and dims (`D // 8`); scale a tensor with "
                                   "`x / 8` or `x * 0.125`")
        if e.op == "/" and side == "left":
            raise NetDSLError("`/` of a number by a tensor is not supported", e.loc,
                              hint=f"a tensor can be divided by a number (`x / {show_value(c)}`), but "
                                   f"`{show_value(c)} / x` is not an affine map of x")
        if e.op == "/" and c == 0:
            raise NetDSLError("division of a tensor by zero", e.loc, hint="divide by a non-zero number")
        if e.op == "*":
            scale, shift = c, 0.0
        elif e.op == "/":
            scale, shift = 1 / c, 0.0
        elif e.op == "+":
            scale, shift = 1.0, c
        elif side == "right":  # x - c
            scale, shift = 1.0, -c
        else:  # c - x
            scale, shift = -1.0, c
        return self.affine(x, scale, shift, e.op, scope, e.loc)

    def affine(self, x: Tensor, scale, shift, written: str, scope: Scope, loc: SourceLoc) -> Tensor:
        """An ``affine(scale, shift)`` node for arithmetic written ``written`` between a tensor and a number."""
        t = x.value.type
        if is_integer(t.dtype) or t.dtype == BOOL:
            ids = is_integer(t.dtype)
            raise NetDSLError(f"`{written}` on {'an integer' if ids else 'a boolean'} tensor ({t}) is not supported",
                              loc, hint="an integer tensor holds token ids: look them up with `embedding(...)` first"
                              if ids else "a boolean tensor is an attention mask: sdpa(q, k, v, mask)")
        op = REGISTRY["affine"]
        # `x * 1e400`: the literal is inf (said here in terms of the source, before check_attr says it of `scale`)
        if not all(math.isfinite(v) for v in (scale, shift) if isinstance(v, float)):
            raise NetDSLError(f"`{written}` with a number that is not finite ({show_value(scale)}, "
                              f"{show_value(shift)} as scale, shift)", loc, hint="the number is too large for a float")
        try:
            attrs = bind_attrs(op, [], {"scale": scale, "shift": shift})
        except ShapeError as err:  # a number too large for a float
            raise NetDSLError(err.message, loc, err.hint) from None
        return self.apply_op(op, [x], attrs, scope, None, loc)

    def split_args(self, call: ast.Call, env, scope, pending) -> tuple[list[Tensor], list, dict, dict]:
        """Evaluate a call's arguments: (tensors, positional scalars, keyword scalars, locations), where
        ``locations`` maps a positional scalar's index or a keyword's name to its source span."""
        tensors, scalars, kwargs, locs = [], [], {}, {}
        for a in call.args:
            v = self.eval(a, env, scope, pending)
            if isinstance(v, Tensor):
                if scalars:
                    raise NetDSLError(f"`{call.func}` got a tensor where it needs a number", _loc_of(a),
                                      hint=f"tensor arguments come first: {call.func}(tensors..., attributes...)")
                tensors.append(v)
            else:
                locs[len(scalars)] = _loc_of(a)
                scalars.append(v)
        for kw in call.kwargs:
            if kw.name in kwargs:
                raise NetDSLError(f"argument `{kw.name}` is given twice", kw.loc).with_note("first given",
                                                                                            locs[kw.name])
            v = self.eval(kw.value, env, scope, pending)
            if isinstance(v, Tensor):
                raise NetDSLError(f"argument `{kw.name}` must be a number, string or true/false, not a tensor",
                                  _loc_of(kw.value), hint="tensors are inputs: `x -> layer(...)` or layer(x, ...)")
            kwargs[kw.name] = v
            locs[kw.name] = kw.loc
        return tensors, scalars, kwargs, locs

    def call(self, call: ast.Call, chained: Tensor | None, env, scope: Scope, label: str | None,
             pending) -> Tensor | Results:
        """A layer or block call; ``chained`` is the value flowing in from ``->``, if any."""
        if isinstance(chained, Results):
            raise _unbound_results(chained, call.loc)
        op = lookup(call.func)
        block = self.module.blocks.get(call.func)
        if op is None and block is None:
            layers = [name for name, o in REGISTRY.items() if o.kind is not OpKind.FUSED]
            known = layers + list(ALIASES) + list(self.module.blocks)
            raise NetDSLError(f"unknown layer `{call.func}`", call.func_loc,
                              hint=did_you_mean(call.func, known) or "see docs/language.md for the list of layers")
        if block is None and op.constant:
            raise NetDSLError(f"`{call.func}` is not a layer", call.func_loc,
                              hint="declare a learned tensor with `param name: [dims] = init` and use its name")
        if block is None and op.kind is OpKind.FUSED:
            raise NetDSLError(f"`{call.func}` is made by the compiler's fusion passes; it is not a layer of the "
                              "language", call.func_loc,
                              hint="write the layers it fuses, e.g. `conv2d(...) -> batchnorm -> relu`")
        tensors, scalars, kwargs, arg_locs = self.split_args(call, env, scope, pending)
        inputs = ([chained] if chained is not None else []) + tensors
        if block is not None:
            outs = self.instantiate(block, inputs, scalars, kwargs, arg_locs, scope, label, call)
            if len(outs) != 1:
                return Results(tuple(t for _, t in outs), tuple(n for n, _ in outs), f"block `{block.name}`")
            return outs[0][1]
        if not inputs:
            raise NetDSLError(f"`{op.name}` needs an input tensor", call.loc,
                              hint=f"write `x -> {call.func}` or `{call.func}(x)`")
        if op.arity is not None and len(inputs) != op.arity:
            how = " (including the one from `->`)" if chained is not None else ""
            raise NetDSLError(f"`{op.name}` takes {op.arity} tensor input(s), got {len(inputs)}{how}", call.loc,
                              hint=_arity_hint(op, call.func, chained is not None))
        scalars, arg_locs = _gather_shape_args(op, scalars, arg_locs)
        try:
            attrs = bind_attrs(op, scalars, kwargs)
        except ShapeError as e:
            # an attribute's own rule is the best hint; else the op's signature shows what it takes
            raise NetDSLError(e.message, _arg_loc(op, e.arg, arg_locs) or call.loc,
                              e.hint or signature(op)) from None
        return self.apply_op(op, inputs, attrs, scope, label, call.loc)

    def repeat_count(self, stage: ast.Stage, env, scope: Scope, pending) -> int:
        if stage.repeat is None:
            return 1
        n = self.eval(stage.repeat, env, scope, pending)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise NetDSLError(f"a repetition count must be a positive integer, got {_show(n)}", _loc_of(stage.repeat),
                              hint="`layer * n` applies the layer n times in a chain")
        if n > MAX_REPEAT:
            raise NetDSLError(f"a repetition count must be at most {MAX_REPEAT}, got {n}", _loc_of(stage.repeat),
                              hint="a longer stack is a block that repeats a block: `(layer * 100) * 100`")
        return n

    def apply_stage(self, x: Tensor, stage: ast.Stage, env, scope: Scope, pending) -> Tensor:
        if stage.repeat is None:
            return self.apply_body(x, stage.body, env, scope, stage.label, stage.label_loc, pending)
        n = self.repeat_count(stage, env, scope, pending)
        if stage.label is not None:
            inner = scope.child(scope.claim(stage.label, "", stage.label_loc))
            for i in range(n):
                x = self.apply_body(x, stage.body, env, inner, str(i), stage.loc, pending)
            return x
        for _ in range(n):
            x = self.apply_body(x, stage.body, env, scope, None, stage.loc, pending)
        return x

    def apply_body(self, x, body, env, scope: Scope, label, label_loc, pending) -> Tensor:
        nested = isinstance(body, ast.Group) or bool(body.args or body.kwargs)  # a group or a call: a level deeper
        if nested:
            self.nest(body.loc)
        try:
            if isinstance(body, ast.Call):
                return self.call(body, x, env, scope, label, pending)
            # a group: without a label its steps are named in the current scope
            if label is None:
                for st in body.stages:
                    x = self.apply_stage(x, st, env, scope, pending)
                return x
            # with a label, its unlabelled steps are numbered children, as in a PyTorch nn.Sequential:
            # `layer3: (down(256) -> block(256) * 5)` gives layer3.0, layer3.1, ..., layer3.5
            inner = scope.child(scope.claim(label, "", label_loc))
            index = 0
            for st in body.stages:
                if st.label is not None:
                    x = self.apply_stage(x, st, env, inner, pending)
                    continue
                for _ in range(self.repeat_count(st, env, inner, pending)):
                    x = self.apply_body(x, st.body, env, inner, str(index), st.loc, pending)
                    index += 1
            return x
        finally:
            if nested:
                self.level -= 1

    # --- blocks ---------------------------------------------------------------------------------
    def instantiate(self, block: ast.BlockDef, inputs: list[Tensor], scalars: list, kwargs: dict, arg_locs: dict,
                    scope: Scope, label: str | None, call: ast.Call) -> list[tuple[str, Tensor]]:
        if block.name in self.block_stack:
            chain = " -> ".join(self.block_stack[self.block_stack.index(block.name):] + [block.name])
            raise NetDSLError(f"block `{block.name}` calls itself ({chain})", call.loc,
                              hint="blocks cannot be recursive; use repetition (`block(...) * n`)")
        names = [p.name for p in block.params]
        usage = f"block {block.name}({', '.join(names)})"
        decls = [d for st in block.body if isinstance(st, ast.InputStmt) for d in st.decls]
        if len(decls) != len(inputs):
            raise NetDSLError(
                f"block `{block.name}` takes {len(decls)} input tensor(s) "
                f"({', '.join(d.name for d in decls)}), got {len(inputs)}", call.loc,
                hint="the value before `->` is the first input; further tensors come first in the parentheses")
        if len(scalars) > len(names):
            raise NetDSLError(f"block `{block.name}` takes {len(names)} parameter(s), got {len(scalars)}",
                              arg_locs.get(len(names), call.loc), hint=usage)
        bound: dict[str, Any] = dict(zip(names, scalars))
        for key, value in kwargs.items():
            if key not in names:
                raise NetDSLError(f"block `{block.name}` has no parameter `{key}`", arg_locs.get(key, call.loc),
                                  hint=did_you_mean(key, names) or usage)
            if key in bound:
                raise NetDSLError(f"parameter `{key}` of block `{block.name}` is given twice (by position and by "
                                  "name)", arg_locs.get(key, call.loc), hint=usage)
            bound[key] = value
        env: dict[str, Binding] = {}
        for p in block.params:
            if p.name in bound:
                env[p.name] = Binding(bound[p.name], p.loc, used=True)
            elif p.default is not None:
                try:
                    default = self.eval(p.default, env, scope, {})
                except NetDSLError as err:
                    raise err.with_note(f"in the default of parameter `{p.name}` of block `{block.name}`, used",
                                        call.loc)
                env[p.name] = Binding(default, p.loc, used=True)
            else:
                raise NetDSLError(f"block `{block.name}` needs parameter `{p.name}`", call.loc, hint=usage)
        inner = scope.child(scope.claim(label, block.name, call.loc))
        self.nest(call.loc)  # the block's body nests inside this call
        self.block_stack.append(block.name)
        try:
            return self.run_body(block.body, env, inner, given=inputs, where=block.loc)
        except NetDSLError as err:
            raise err.with_note(f"in block `{block.name}`, instantiated", call.loc)
        finally:
            self.block_stack.pop()
            self.level -= 1

    # --- statements -----------------------------------------------------------------------------
    def run_body(self, body: list, env: dict[str, Binding], scope: Scope, given: list[Tensor] | None = None,
                 where: SourceLoc | None = None):
        """Run a network's (given=None) or a block's statements; return the output tensors.
        ``where`` is the network's or block's name, for errors about the body as a whole."""
        pending: dict[str, ast.Assign] = {}  # assignments not run yet (the first one of each name)
        for st in body:
            if isinstance(st, ast.Assign):
                for name in st.names:
                    pending.setdefault(name, st)
        outputs: list[tuple[str, Tensor, SourceLoc]] = []
        inputs_seen = 0
        for st in body:
            if isinstance(st, ast.InputStmt):
                for d in st.decls:
                    self._define(env, d.name, d.loc)
                    if given is None:
                        value = self.network_input(d)
                    else:
                        value = given[inputs_seen]
                        if d.type is not None:
                            self._check_block_input(d, value)
                    inputs_seen += 1
                    env[d.name] = Binding(value, d.loc, is_input=True)
            elif isinstance(st, ast.ParamStmt):
                self._define(env, st.name, st.loc)
                env[st.name] = Binding(self.declare_param(st, env, scope), st.loc)
            elif isinstance(st, ast.Assign):
                locs = st.name_locs or [st.loc]
                for name, loc in zip(st.names, locs):
                    if name != "_":
                        self._define(env, name, loc)
                # `st` is still pending: `a = a -> relu` is a cycle
                value = self.eval_results(st.value, env, scope, pending)
                for name in st.names:
                    pending.pop(name, None)
                values = self._bind_results(st, value)
                for name, loc, v in zip(st.names, locs, values):
                    if name != "_":
                        env[name] = Binding(v, loc)
            else:
                for i, item in enumerate(st.items):
                    value = self.eval(item.value, env, scope, pending)
                    if not isinstance(value, Tensor):
                        raise NetDSLError("an output must be a tensor", item.loc,
                                          hint="output a value of the network, e.g. `output y`")
                    name = item.name or (item.value.id if isinstance(item.value, ast.Name) else f"output{len(outputs)}")
                    if any(name == o[0] for o in outputs):
                        raise NetDSLError(f"output `{name}` is declared twice", item.loc,
                                          hint="give each output its own name: `output a = ..., b = ...`")
                    outputs.append((name, value, item.loc))
        for name, b in env.items():
            if b.is_input and not b.used:
                raise NetDSLError(f"input `{name}` is never used", b.loc, hint="use it or remove it")
        if not outputs:
            what = "block" if given is not None else "network"
            raise NetDSLError(f"this {what} has no output", where, hint="add `output <value>`")
        if given is None:
            return outputs
        return [(name, t) for name, t, _ in outputs]

    def _bind_results(self, st: ast.Assign, value) -> list:
        """The values an assignment binds: one per name (``_`` takes a result and drops it)."""
        n = len(st.names)
        if isinstance(value, Results):
            if len(value.tensors) != n:
                names = ", ".join(value.names)
                raise NetDSLError(f"{value.what} gives {len(value.tensors)} results ({names}), but {n} name(s) are "
                                  "bound", st.loc, hint=f"bind each result: `{', '.join(_result_names(value))} = ...`"
                                  " (`_` drops one)")
            return list(value.tensors)
        if n != 1:
            raise NetDSLError(f"{n} names are bound, but the expression gives one value", st.loc,
                              hint="bind several names only to a layer with several results (`y, h = x -> rnn(64)`, "
                                   "`q, k, v = x -> chunk(3, dim=-1)`) or a block with several outputs")
        if st.names[0] == "_":
            raise NetDSLError("`_` drops a result of a layer with several results; here it binds nothing", st.loc,
                              hint="give the value a name")
        return [value]

    def declare_param(self, st: ast.ParamStmt, env, scope: Scope) -> DeclaredParam:
        """``param name: [dims] = init``: a learned tensor of static shape, named in the current scope."""
        shape = []
        for d in st.shape:
            v = self.eval(d, env, scope, {})
            if isinstance(v, SymDim):
                raise NetDSLError(f"a parameter's shape is static, but `{v}` is a dimension of the inputs",
                                  _loc_of(d), hint="give the size as an integer or a block parameter")
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise NetDSLError(f"a parameter's dims are positive integers, got {_show(v)}", _loc_of(d),
                                  hint="a parameter has no empty dims: give sizes of at least 1")
            if v > INT64_MAX:
                raise NetDSLError(f"a parameter's dim must fit a 64-bit integer, got {_show(v)}", _loc_of(d),
                                  hint=f"sizes go up to {INT64_MAX:,}")
            shape.append(v)
        pname = scope.full(st.name)
        if pname in self.params:
            raise NetDSLError(f"parameter `{pname}` is declared twice", st.loc,
                              hint="a `param` and a layer's parameter have the same name; rename one")
        scope.claim(st.name, "", st.loc)
        spec = self.param_init(tuple(shape), st.init, env, scope)
        self.params[pname] = spec
        return DeclaredParam(pname, spec)

    def param_init(self, shape: tuple[int, ...], init, env, scope: Scope) -> ParamSpec:
        """``zeros`` (the default), ``ones``, ``normal(std=1)``, ``uniform(bound)`` (U(-bound, bound)) or
        ``const(value)``."""
        kinds = {"zeros": (), "ones": (), "normal": ("std",), "uniform": ("bound",), "const": ("value",),
                 "xavier": ()}
        usage = "one of zeros, ones, normal(std=...), uniform(bound), const(value), xavier"
        if init is None:
            return ParamSpec(shape, "zeros")
        if isinstance(init, ast.Name):
            call = ast.Call(init.id, [], [], init.loc, init.loc)
        elif isinstance(init, ast.Call):
            call = init
        else:
            raise NetDSLError("a parameter is initialised by name", _loc_of(init), hint=usage)
        if call.func not in kinds:
            raise NetDSLError(f"unknown initialiser `{call.func}`", call.func_loc,
                              hint=did_you_mean(call.func, kinds) or usage)
        names = kinds[call.func]
        given = dict(zip(names, call.args))
        if len(call.args) > len(names):
            raise NetDSLError(f"`{call.func}` takes {len(names)} argument(s), got {len(call.args)}", call.loc, hint=usage)
        for kw in call.kwargs:
            if kw.name not in names or kw.name in given:
                raise NetDSLError(f"`{call.func}` has no argument `{kw.name}`" if kw.name not in names
                                  else f"argument `{kw.name}` is given twice", kw.loc, hint=usage)
            given[kw.name] = kw.value
        values = {}
        for k, e in given.items():
            v = self.eval(e, env, scope, {})
            if not _is_number(v) or not _fits_float(v) or (k != "value" and v <= 0):
                raise NetDSLError(f"`{k}` of `{call.func}` must be a {'finite' if k == 'value' else 'positive'} "
                                  f"number, got {_show(v)}", _loc_of(e),
                                  hint=f"{'a value' if k == 'value' else 'a scale'} below 1.8e308, e.g. "
                                       f"{call.func}({k}=0.02)")
            values[k] = float(v)
        if call.func in ("normal", "uniform") and not values:
            if call.func == "uniform":
                raise NetDSLError("`uniform` needs its bound: U(-bound, bound)", call.loc, hint="e.g. uniform(0.1)")
            values["std"] = 1.0
        if call.func == "const" and not values:
            raise NetDSLError("`const` needs its value", call.loc, hint="e.g. const(0.5)")
        if call.func == "normal":
            return ParamSpec(shape, "normal", std=values["std"])
        if call.func == "xavier":  # Glorot uniform with torch's fans: [out, in, *kernel]
            rest = math.prod(shape[2:])
            fan_in = (shape[1] if len(shape) > 1 else 1) * rest
            return ParamSpec(shape, "xavier", fan_in=fan_in, fan_out=shape[0] * rest)
        return ParamSpec(shape, call.func, value=values.get("bound", values.get("value", 0.0)))

    def _define(self, env, name: str, loc: SourceLoc) -> None:
        if name in env:
            prev = env[name]
            raise NetDSLError(f"`{name}` is already defined", loc,
                              hint="each name is assigned once (values are immutable); pick a new name"
                              ).with_note("previous definition", prev.loc)
        if name in ("true", "false"):
            raise NetDSLError(f"`{name}` is a reserved word", loc)

    def network_input(self, d: ast.InputDecl) -> Tensor:
        if d.type is None:
            raise NetDSLError(f"network input `{d.name}` needs a type", d.loc,
                              hint=f"e.g. `input {d.name}: f32[N, 3, H, W]`")
        t = d.type
        _check_type(t)
        dims = []
        for dim in t.dims:
            if isinstance(dim.value, int):
                dims.append(dim.value)
                continue
            if dim.default is not None:
                old = self.dim_defaults.get(dim.value)
                if old is not None and old != dim.default:
                    raise NetDSLError(f"dimension `{dim.value}` is given two defaults ({old} and {dim.default})",
                                      dim.loc, hint="a dim has one size: give its default once, or the same "
                                      "default everywhere").with_note("first default", self.dim_default_locs[dim.value])
                self.dim_defaults[dim.value] = dim.default
                self.dim_default_locs[dim.value] = dim.loc
            self.dim_locs.setdefault(dim.value, dim.loc)
            dims.append(SymDim.symbol(dim.value))
        value = Value(self._fresh_value_name(d.name), TensorType(tuple(dims), t.dtype))
        return Tensor(value)

    def _check_block_input(self, d: ast.InputDecl, value: Tensor) -> None:
        t, actual = d.type, value.value.type
        if t.dtype != actual.dtype:
            raise NetDSLError(f"block input `{d.name}` expects element type {t.dtype}, got {actual}", d.loc,
                              hint=f"pass a {t.dtype} tensor, or change the type written for the input")
        ok = len(t.dims) == actual.rank and all(
            not isinstance(dim.value, int) or dim.value == got for dim, got in zip(t.dims, actual.shape))
        if not ok:
            raise NetDSLError(f"block input `{d.name}` expects a tensor of shape "
                              f"[{', '.join(str(x.value) for x in t.dims)}], got {actual}", d.loc,
                              hint="pass a tensor of that shape, or change the shape written for the input")


def _check_type(t: ast.TypeExpr) -> None:
    """A written tensor type (a network's or a block's input): a known element type, sizes of at least 1
    that fit int64, and defaults of symbolic dims likewise."""
    if t.dtype not in DTYPES:
        raise NetDSLError(f"unknown element type `{t.dtype}`", t.dtype_loc,
                          hint=did_you_mean(t.dtype, DTYPES) or f"one of {', '.join(DTYPES)}")
    for dim in t.dims:
        size, loc = (dim.value, dim.loc) if isinstance(dim.value, int) else (dim.default, dim.default_loc)
        if size is None:
            continue
        if size < 1:
            raise NetDSLError("a dimension must be at least 1", loc or dim.loc,
                              hint="a tensor has no empty dims: give a size of at least 1" if isinstance(dim.value, int)
                              else f"`{dim.value}={size}` is the default size of `{dim.value}`; give one of at least 1")
        if size > INT64_MAX:
            raise NetDSLError(f"a dimension must fit a 64-bit integer, got {show_value(size)}", loc or dim.loc,
                              hint=f"sizes go up to {INT64_MAX:,}")


def _result_names(r: Results) -> list[str]:
    return [n if n.isidentifier() else f"{r.what.split('`')[1].split('.')[-1]}{n}" for n in r.names]


def _unbound_results(r: Results, loc: SourceLoc | None) -> NetDSLError:
    return NetDSLError(f"{r.what} gives {len(r.tensors)} results ({', '.join(r.names)}); bind them to names first",
                       loc, hint=f"e.g. `{', '.join(_result_names(r))} = ...`, then use one of them")


def _find_cycle(start: str, pending: dict[str, ast.Assign]) -> list[str] | None:
    """A dependency cycle through ``start`` among the assignments not yet run, if there is one."""
    def deps(name):
        found: list[str] = []
        _collect_names(pending[name].value, found)
        return [d for d in found if d in pending]

    stack = [(start, [start])]
    seen = set()
    while stack:
        name, path = stack.pop()
        for d in deps(name):
            if d == start:
                return path + [start]
            if d not in seen:
                seen.add(d)
                stack.append((d, path + [d]))
    return None


def _collect_names(e, out: list[str]) -> None:
    """Append the names ``e`` reads, in order (with an explicit stack: a long sum is a deep tree)."""
    todo = [e]
    while todo:
        e = todo.pop()
        if isinstance(e, ast.Name):
            out.append(e.id)
            continue
        if isinstance(e, ast.BinOp):
            parts = [e.left, e.right]
        elif isinstance(e, ast.Neg):
            parts = [e.operand]
        elif isinstance(e, ast.Tuple):
            parts = e.items
        elif isinstance(e, ast.Subscript):
            parts = [e.value]
            for i in e.indices:
                parts += [i.start, i.stop, i.step] if isinstance(i, ast.SliceIndex) else [i]
        elif isinstance(e, ast.Call):
            parts = [*e.args, *(k.value for k in e.kwargs)]
        elif isinstance(e, ast.Chain):
            parts = [e.source, *e.stages]
        elif isinstance(e, ast.Stage):
            parts = [e.body]
        elif isinstance(e, ast.Group):
            parts = e.stages
        else:
            continue
        todo.extend(p for p in reversed(parts) if p is not None)


def _arith(op: str, left, right):
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "//":
        return left // right
    if isinstance(left, int) and isinstance(right, int) and left % right == 0:
        return left // right
    return left / right


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fits_float(v: int | float) -> bool:
    """Whether a number is a finite float (an integer beyond 1.8e308 is not)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _dim_arith(e: ast.BinOp, left, right):
    """Arithmetic on symbolic dims in an attribute (``T * 2``, ``D // 8``, ``H - 1``), by dims.py's rules:
    sums and differences of dims and integers, products with an integer, floor division by a positive one."""
    for v in (left, right):
        if not isinstance(v, (int, SymDim)):
            raise NetDSLError(f"`{e.op}` of a dimension and {_show(v)}: dimensions combine with integers only",
                              e.loc, hint="e.g. `T * 2`, `D // 8`, `H - 1`")
    if e.op == "/":
        raise NetDSLError("`/` on a dimension is not supported", e.loc,
                          hint="a dimension divides with `//` (floor division), e.g. `D // 8`")
    if e.op == "*" and isinstance(left, SymDim) and isinstance(right, SymDim):
        raise NetDSLError(f"the product of two dimensions (`{left}` and `{right}`) is not supported", e.loc,
                          hint="a dimension is multiplied by an integer (`T * 2`); use -1 in a shape to infer a size")
    if e.op == "//" and (isinstance(right, SymDim) or right < 0):
        raise NetDSLError(f"a dimension divides only by a positive integer, not {_show(right)}", e.loc,
                          hint="e.g. `D // 8`")
    try:
        return _arith(e.op, left, right)
    except DimTooDeep as err:
        raise NetDSLError(f"this size is too complex: {err}", e.loc, hint=_DIM_TOO_DEEP) from None


def _takes_integer_input(op: OpDef, index: int) -> bool:
    """Whether ``op`` accepts an integer tensor (token ids, ``i64[N, T]``) as its input ``index``
    (``OpDef.int_inputs``); every other op input must be floating point."""
    return index in op.int_inputs


def _gather_shape_args(op: OpDef, scalars: list, locs: dict) -> tuple[list, dict]:
    """The rule for ops with a variable number of attribute arguments: when an op's FIRST attribute has type
    "shape" (a tuple of dims), every positional attribute argument of a call goes into it, so
    ``reshape(N, T, 8, -1)`` is ``reshape(shape=(N, T, 8, -1))`` and ``permute(0, 2, 1, 3)`` is
    ``permute(dims=(0, 2, 1, 3))``. A single tuple is passed as it is (``reshape((N, -1))``). That attribute
    is then the op's only positional one: the op's other attributes are given by name."""
    if not scalars or not op.attrs or op.attrs[0].type != "shape":
        return scalars, locs
    if len(scalars) == 1 and isinstance(scalars[0], tuple):
        return scalars, locs
    first, last = locs.get(0), locs.get(len(scalars) - 1)
    span = first
    if first is not None and last is not None and first.line == last.line:
        span = SourceLoc(first.file, first.line, first.col, last.col + last.width - first.col, first.source)
    gathered = {k: v for k, v in locs.items() if not isinstance(k, int)}
    if span is not None:
        gathered[0] = span
    return [tuple(scalars)], gathered


def _arg_loc(op: OpDef, arg: str | int | None, arg_locs: dict) -> SourceLoc | None:
    """Where the call gave the attribute ``arg`` (a name or a positional index), if it did."""
    if arg in arg_locs:
        return arg_locs[arg]
    names = [a.name for a in op.attrs]
    if isinstance(arg, str) and arg in names:
        return arg_locs.get(names.index(arg))
    return None


def _arity_hint(op: OpDef, written: str, chained: bool) -> str:
    if op.arity == 1:
        return f"`{written}` applies to one tensor: `x -> {written}(...)` or `{written}(x, ...)`"
    infix = {"add": " or `a + b`", "mul": " or `a * b`"}.get(op.name, "")
    names = ", ".join("abcdefgh"[:op.arity])
    via = "; the value before `->` counts as the first" if chained else ""
    return f"write `{written}({names})`{infix}{via}"


def _loc_of(e) -> SourceLoc | None:
    return getattr(e, "loc", None)


def _show(v) -> str:
    """A value for a message: a number, string or tuple as the language writes it (a very long integer
    shortened); "a tensor" otherwise."""
    return "a tensor" if isinstance(v, Tensor) else show_value(v)


def _choose_initialisers(nodes: list[Node], params: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
    """He init for weights feeding the ReLU family, Glorot for those feeding sigmoid/tanh/softsign.

    A conv/linear's activation is the first activation reached through its single-user chain of
    norms and dropouts."""
    users: dict[str, list[Node]] = {}
    for n in nodes:
        for v in n.inputs:
            users.setdefault(v.name, []).append(n)
    out = dict(params)
    for n in nodes:
        if REGISTRY[n.op].kind is not OpKind.OUT_FUSABLE or "weight" not in n.params:
            continue
        cur = n
        while True:
            nxt = users.get(cur.output.name, [])
            if len(nxt) != 1:
                break
            op = REGISTRY[nxt[0].op]
            if op.is_activation:
                if op.init_for_producer == "xavier":
                    spec = out[n.params["weight"]]
                    out[n.params["weight"]] = ParamSpec(spec.shape, "xavier", spec.fan_in, spec.fan_out)
                break
            if op.kind not in (OpKind.NORM, OpKind.INJECTIVE) or nxt[0].op == "concat" or len(nxt[0].outputs) != 1:
                break
            cur = nxt[0]
    return out


def _check_default_sizes(nodes: list[Node], defaults: dict[str, int], default_locs: dict[str, SourceLoc]) -> None:
    """Every symbolic size is at least 1 at the file's default sizes (and N=1). A shape rule cannot reject
    a 3x3 conv of an H x W input, but with the default H=2 its output would be 0 high (and `show` would print
    it). The first node with such an output is the error. A size that uses a dim without a default is not
    checked (it is known only at run time); a static size is the shape rule's business (a slice may be empty)."""
    env = {"N": 1, **defaults}
    known: dict[int, int | SymDim] = {}  # id(dim) -> its size: values mostly share their dims' objects
    for node in nodes:
        for v in node.outputs:
            sizes, empty = [], []
            for d in v.type.shape:
                if type(d) is not int:
                    size = known.get(id(d))
                    if size is None:
                        try:
                            size = d.evaluate(env)
                        except KeyError:  # a dim without a default
                            size = d
                        known[id(d)] = size
                    if type(size) is int and size < 1:
                        empty.append(d)
                    d = size
                sizes.append(d)
            if not empty:
                continue
            names = [k for k in env if any(k in d.symbols() for d in empty)]
            concrete = f"{v.type.dtype}[{', '.join(map(str, sizes))}]"
            err = NetDSLError(f"`{node.op}` gives an empty output ({concrete}, from {v.type}) for the default sizes "
                              f"{', '.join(f'{k}={env[k]}' for k in names)}", node.loc,
                              hint="the input is too small for this layer at these sizes: give larger defaults, or "
                                   "check the layer's kernel size, stride and padding")
            for k in names:
                if k in default_locs:
                    err.with_note(f"the default of `{k}`", default_locs[k])
            raise err


def elaborate(module: ast.Module, network: str | None = None) -> Graph:
    """Build the IR graph of one network of a parsed file."""
    if network is None:
        if not module.networks:
            raise NetDSLError(f"{module.file} defines no network", SourceLoc(module.file, 1, 1, 1, module.source),
                              hint="add `network name { input ...; output ... }`")
        if len(module.networks) > 1:
            first, second = list(module.networks.values())[:2]
            raise NetDSLError(f"{module.file} defines several networks: {', '.join(module.networks)}", second.loc,
                              hint="choose one with --network NAME").with_note("first network", first.loc)
        network = next(iter(module.networks))
    if network not in module.networks:
        raise NetDSLError(f"no network `{network}` in {module.file}", None,
                          hint=did_you_mean(network, module.networks) or f"networks: {', '.join(module.networks)}")
    net = module.networks[network]
    e = _Elaborator(module)
    for block in module.blocks.values():
        seen = set()
        for p in block.params:
            if p.name in seen:
                raise NetDSLError(f"block `{block.name}` has two parameters named `{p.name}`", p.loc,
                                  hint="rename one of them")
            seen.add(p.name)
        for st in block.body:  # every type written is checked, in blocks used or not
            for d in (st.decls if isinstance(st, ast.InputStmt) else ()):
                if d.type is not None:
                    _check_type(d.type)
    for st in net.body:  # the dims of every network input can be named in attribute expressions
        if isinstance(st, ast.InputStmt):
            for d in st.decls:
                for dim in (d.type.dims if d.type is not None else ()):
                    if isinstance(dim.value, str):
                        e.dims.setdefault(dim.value, SymDim.symbol(dim.value))
    env: dict[str, Binding] = {}
    outputs = e.run_body(net.body, env, Scope(""), where=net.loc)
    inputs = tuple(b.value.value for b in env.values() if b.is_input)
    _check_default_sizes(e.nodes, e.dim_defaults, e.dim_default_locs)
    params = _choose_initialisers(e.nodes, e.params)
    return Graph(
        name=net.name,
        inputs=inputs,
        nodes=tuple(e.nodes),
        outputs=tuple(t.value for _, t, _ in outputs),
        params=params,
        output_names=tuple(name for name, _, _ in outputs),
        dim_defaults=dict(e.dim_defaults),
        source=module.file,
        annotations={"dim_locs": dict(e.dim_locs)},
    )
