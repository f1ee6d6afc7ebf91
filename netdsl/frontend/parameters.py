"""Parameters: ``param name: [dims] = init`` statements and their initialisers, reading a parameter as a
tensor (by its name, or a layer's by label and role: ``tok.weight``), and the initialisation chosen for a
conv's or linear's weight from the activation it feeds.
"""

from __future__ import annotations

import math

from ..errors import NetDSLError, SourceLoc, did_you_mean
from ..ir.dims import SymDim
from ..ir.graph import Node, ParamSpec, Value
from ..ir.types import INT64_MAX, TensorType
from ..ops import REGISTRY, OpKind
from . import ast
from .scopes import Binding, DeclaredParam, ElaboratorState, Scope, Tensor, is_number, loc_of, show


class Parameters(ElaboratorState):
    """Declaring and reading parameters (a mixin of the elaborator: see ``ElaboratorState``)."""

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

    def declare_param(self, st: ast.ParamStmt, env, scope: Scope) -> DeclaredParam:
        """``param name: [dims] = init``: a learned tensor of static shape, named in the current scope."""
        shape = []
        for d in st.shape:
            v = self.eval(d, env, scope, {})
            if isinstance(v, SymDim):
                raise NetDSLError(f"a parameter's shape is static, but `{v}` is a dimension of the inputs",
                                  loc_of(d), hint="give the size as an integer or a block parameter")
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise NetDSLError(f"a parameter's dims are positive integers, got {show(v)}", loc_of(d),
                                  hint="a parameter has no empty dims: give sizes of at least 1")
            if v > INT64_MAX:
                raise NetDSLError(f"a parameter's dim must fit a 64-bit integer, got {show(v)}", loc_of(d),
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
            raise NetDSLError("a parameter is initialised by name", loc_of(init), hint=usage)
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
            if not is_number(v) or not _fits_float(v) or (k != "value" and v <= 0):
                raise NetDSLError(f"`{k}` of `{call.func}` must be a {'finite' if k == 'value' else 'positive'} "
                                  f"number, got {show(v)}", loc_of(e),
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


def _fits_float(v: int | float) -> bool:
    """Whether a number is a finite float (an integer beyond 1.8e308 is not)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def choose_initialisers(nodes: list[Node], params: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
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
