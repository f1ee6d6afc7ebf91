"""Elaboration: AST -> typed IR graph.

Evaluates a network's statements in order: expands block calls (with their parameters bound),
repetitions and groups; maps call arguments to op attributes through the registry; infers every
value's type; names nodes and parameters hierarchically from labels (``layer1.0.conv1.weight``).
Every mistake becomes a ``NetDSLError`` at the offending span; an error inside an expanded block
also names each call site that led there. Nothing in a model file is ever evaluated as Python.

The elaborator is one object whose methods are grouped by theme in mixins: ``expressions`` (evaluation
and arithmetic), ``calls`` (ops and blocks), ``parameters`` (``param`` statements, initialisers),
``input_types`` (input declarations and size checks), on the shared state of ``scopes``. This module
runs the statements of a network or block and builds the graph.
"""

from __future__ import annotations

from ..errors import NetDSLError, SourceLoc, did_you_mean
from ..ir.dims import SymDim
from ..ir.graph import Graph
from . import ast
from .calls import MAX_NODES, MAX_REPEAT, Calls, _gather_shape_args
from .expressions import MAX_INT, MAX_INT_DIGITS, Expressions
from .input_types import InputTypes, check_default_sizes, check_type
from .parameters import Parameters, choose_initialisers
from .scopes import Binding, DeclaredParam, Results, Scalar, Scope, Tensor, result_names

# the names this module has always offered (tests/test_language_sequence.py imports _gather_shape_args)
__all__ = ["MAX_INT", "MAX_INT_DIGITS", "MAX_NODES", "MAX_REPEAT", "Binding", "DeclaredParam", "Results", "Scalar",
           "Scope", "Tensor", "_gather_shape_args", "elaborate"]


class _Elaborator(Expressions, Calls, Parameters, InputTypes):
    """One elaboration: the statements of the network and of every block it expands."""

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
                                  "bound", st.loc, hint=f"bind each result: `{', '.join(result_names(value))} = ...`"
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

    def _define(self, env, name: str, loc: SourceLoc) -> None:
        if name in env:
            prev = env[name]
            raise NetDSLError(f"`{name}` is already defined", loc,
                              hint="each name is assigned once (values are immutable); pick a new name"
                              ).with_note("previous definition", prev.loc)
        if name in ("true", "false"):
            raise NetDSLError(f"`{name}` is a reserved word", loc)


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
                    check_type(d.type)
    for st in net.body:  # the dims of every network input can be named in attribute expressions
        if isinstance(st, ast.InputStmt):
            for d in st.decls:
                for dim in (d.type.dims if d.type is not None else ()):
                    if isinstance(dim.value, str):
                        e.dims.setdefault(dim.value, SymDim.symbol(dim.value))
    env: dict[str, Binding] = {}
    outputs = e.run_body(net.body, env, Scope(""), where=net.loc)
    inputs = tuple(b.value.value for b in env.values() if b.is_input)
    check_default_sizes(e.nodes, e.dim_defaults, e.dim_default_locs)
    params = choose_initialisers(e.nodes, e.params)
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
