"""Applying ops and blocks: a call's arguments bound to an op's attributes through the registry, the node it
becomes and its inferred types; a block's body expanded with its parameters bound, in a scope of its own;
chains, groups and repetitions (``layer * n``), named as PyTorch names them (``layer3.0``, ``layer3.1``).
"""

from __future__ import annotations

from typing import Any

from ..errors import NetDSLError, SourceLoc, did_you_mean
from ..ir.dims import DimTooDeep
from ..ir.graph import Node, Value
from ..ir.types import BOOL, is_integer
from ..ops import ALIASES, REGISTRY, OpKind, ShapeError, lookup
from ..ops.registry import OpDef, bind_attrs, signature
from . import ast
from .scopes import DIM_TOO_DEEP, Binding, ElaboratorState, Results, Scope, Tensor, loc_of, show, unbound_results

MAX_REPEAT = 1000  # a repetition count above this is surely a typo (and would elaborate for minutes)
MAX_NODES = 100_000  # no model of the seeds comes near; a runaway nesting of repetitions does


class Calls(ElaboratorState):
    """The application of ops and blocks (a mixin of the elaborator: see ``ElaboratorState``)."""

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
            raise NetDSLError(f"the output size of `{op.name}` is too complex: {e}", loc, hint=DIM_TOO_DEEP) from None
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

    def split_args(self, call: ast.Call, env, scope, pending) -> tuple[list[Tensor], list, dict, dict]:
        """Evaluate a call's arguments: (tensors, positional scalars, keyword scalars, locations), where
        ``locations`` maps a positional scalar's index or a keyword's name to its source span."""
        tensors, scalars, kwargs, locs = [], [], {}, {}
        for a in call.args:
            v = self.eval(a, env, scope, pending)
            if isinstance(v, Tensor):
                if scalars:
                    raise NetDSLError(f"`{call.func}` got a tensor where it needs a number", loc_of(a),
                                      hint=f"tensor arguments come first: {call.func}(tensors..., attributes...)")
                tensors.append(v)
            else:
                locs[len(scalars)] = loc_of(a)
                scalars.append(v)
        for kw in call.kwargs:
            if kw.name in kwargs:
                raise NetDSLError(f"argument `{kw.name}` is given twice", kw.loc).with_note("first given",
                                                                                            locs[kw.name])
            v = self.eval(kw.value, env, scope, pending)
            if isinstance(v, Tensor):
                raise NetDSLError(f"argument `{kw.name}` must be a number, string or true/false, not a tensor",
                                  loc_of(kw.value), hint="tensors are inputs: `x -> layer(...)` or layer(x, ...)")
            kwargs[kw.name] = v
            locs[kw.name] = kw.loc
        return tensors, scalars, kwargs, locs

    def call(self, call: ast.Call, chained: Tensor | None, env, scope: Scope, label: str | None,
             pending) -> Tensor | Results:
        """A layer or block call; ``chained`` is the value flowing in from ``->``, if any."""
        if isinstance(chained, Results):
            raise unbound_results(chained, call.loc)
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
            raise NetDSLError(f"a repetition count must be a positive integer, got {show(n)}", loc_of(stage.repeat),
                              hint="`layer * n` applies the layer n times in a chain")
        if n > MAX_REPEAT:
            raise NetDSLError(f"a repetition count must be at most {MAX_REPEAT}, got {n}", loc_of(stage.repeat),
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
