"""Evaluating expressions: names, dotted parameter names, subscripts, tuples, unary minus, chains and the
arithmetic operators, between numbers, symbolic dims (``T * 2``, ``D // 8``, by ``netdsl/ir/dims.py``'s
rules) and tensors (``x * 0.125`` is one ``affine`` node).

The evaluator recurses once per level of nesting, so every construct that nests counts a level
(``ElaboratorState.nest``), and a long left-leaning run of operators is folded in a loop (``binop``).
"""

from __future__ import annotations

import math

from ..errors import NetDSLError, SourceLoc, did_you_mean
from ..ir.dims import DimTooDeep, SymDim
from ..ir.types import BOOL, is_integer
from ..ops import REGISTRY, ShapeError, lookup
from ..ops.registry import bind_attrs, show_value
from . import ast
from .scopes import (DIM_TOO_DEEP, Binding, DeclaredParam, ElaboratorState, Results, Scalar, Scope, Tensor,
                     is_number, loc_of, show, unbound_results)

# integer arithmetic stops here, as the parser stops at integer literals this long (Python's limit for
# printing one): far beyond any size (int64), and products of such numbers would run for minutes
MAX_INT_DIGITS = 4300
MAX_INT = 10**MAX_INT_DIGITS
# the expressions that nest one level deeper, as the parser counts levels (MAX_NESTING)
_NESTED = (ast.Call, ast.Tuple, ast.Neg, ast.Subscript)


class Expressions(ElaboratorState):
    """The evaluation of expressions (a mixin of the elaborator: see ``ElaboratorState``)."""

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
            raise unbound_results(v, e.stages[-1].loc if isinstance(e, ast.Chain) else loc_of(e))
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
                    raise NetDSLError(f"unary `-` applies to numbers and tensors, not {show(v)}", e.loc)
                return -v
            if isinstance(e, ast.BinOp):
                return self.binop(e, env, scope, pending)
            if isinstance(e, ast.Call):
                return self.call(e, None, env, scope, None, pending)
            if isinstance(e, ast.Chain):
                x = self.eval(e.source, env, scope, pending)
                if not isinstance(x, Tensor):
                    raise NetDSLError("a chain starts from a tensor", loc_of(e.source),
                                      hint="write `x -> layer`, where x is an input or a named value")
                for i, stage in enumerate(e.stages):
                    if isinstance(x, Results):
                        raise unbound_results(x, e.stages[i - 1].loc)
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
            raise NetDSLError(f"only a tensor can be indexed, not {show(x)}", loc_of(e.value))
        rank = x.value.type.rank
        if len(e.indices) > rank:
            raise NetDSLError(f"{len(e.indices)} indices for a tensor of rank {rank} ({x.value.type})", e.loc,
                              hint="index at most one position per dim")
        dim = 0
        for index in e.indices:
            if isinstance(index, ast.SliceIndex):
                parts = {k: (None if p is None else self.eval(p, env, scope, pending), loc_of(p) or index.loc)
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
                x = self._index_op("select", x, dim, {"index": value}, {"index": loc_of(index)}, scope,
                                   loc_of(index))
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
        if not all(is_number(v) or isinstance(v, SymDim) for v in (left, right)):
            raise NetDSLError(f"`{e.op}` needs numbers, got {show(left)} and {show(right)}", e.loc,
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
        if not is_number(c):
            raise NetDSLError(f"`{e.op}` between a tensor and {show(c)} is not supported", e.loc,
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


def _dim_arith(e: ast.BinOp, left, right):
    """Arithmetic on symbolic dims in an attribute (``T * 2``, ``D // 8``, ``H - 1``), by dims.py's rules:
    sums and differences of dims and integers, products with an integer, floor division by a positive one."""
    for v in (left, right):
        if not isinstance(v, (int, SymDim)):
            raise NetDSLError(f"`{e.op}` of a dimension and {show(v)}: dimensions combine with integers only",
                              e.loc, hint="e.g. `T * 2`, `D // 8`, `H - 1`")
    if e.op == "/":
        raise NetDSLError("`/` on a dimension is not supported", e.loc,
                          hint="a dimension divides with `//` (floor division), e.g. `D // 8`")
    if e.op == "*" and isinstance(left, SymDim) and isinstance(right, SymDim):
        raise NetDSLError(f"the product of two dimensions (`{left}` and `{right}`) is not supported", e.loc,
                          hint="a dimension is multiplied by an integer (`T * 2`); use -1 in a shape to infer a size")
    if e.op == "//" and (isinstance(right, SymDim) or right < 0):
        raise NetDSLError(f"a dimension divides only by a positive integer, not {show(right)}", e.loc,
                          hint="e.g. `D // 8`")
    try:
        return _arith(e.op, left, right)
    except DimTooDeep as err:
        raise NetDSLError(f"this size is too complex: {err}", e.loc, hint=DIM_TOO_DEEP) from None
