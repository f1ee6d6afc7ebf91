"""What elaboration works with: the values an expression evaluates to (a tensor, a scalar, several results,
a declared parameter), the bindings of names to them, the scopes that name layers and parameters
hierarchically, and the state that the elaborator's parts (``expressions``, ``calls``, ``parameters``,
``input_types``, and the statements in ``elaborate``) share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import NetDSLError, SourceLoc
from ..ir.dims import SymDim
from ..ir.graph import Node, ParamSpec, Value
from ..ops.registry import show_value
from . import ast
from .parser import MAX_NESTING

Scalar = Any  # int, float, str, bool, a SymDim (a network input's dim, in an attribute) or a tuple of those

DIM_TOO_DEEP = ("sizes are tracked symbolically, and this one has become too complex: give the input fixed "
                "sizes (f32[N, 3, 224, 224]) instead of symbolic dims")


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


class ElaboratorState:
    """The state of one elaboration. The elaborator's methods are spread over mixins of this class, by
    theme: ``expressions.Expressions`` evaluates, ``calls.Calls`` applies ops and blocks,
    ``parameters.Parameters`` declares and reads parameters, ``input_types.InputTypes`` types the inputs,
    and ``elaborate._Elaborator`` runs the statements. They call one another through ``self``."""

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

    def _fresh_value_name(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self.value_names:
            candidate, k = f"{name}~{k}", k + 1
        self.value_names.add(candidate)
        return candidate


def loc_of(e) -> SourceLoc | None:
    return getattr(e, "loc", None)


def show(v) -> str:
    """A value for a message: a number, string or tuple as the language writes it (a very long integer
    shortened); "a tensor" otherwise."""
    return "a tensor" if isinstance(v, Tensor) else show_value(v)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def result_names(r: Results) -> list[str]:
    return [n if n.isidentifier() else f"{r.what.split('`')[1].split('.')[-1]}{n}" for n in r.names]


def unbound_results(r: Results, loc: SourceLoc | None) -> NetDSLError:
    return NetDSLError(f"{r.what} gives {len(r.tensors)} results ({', '.join(r.names)}); bind them to names first",
                       loc, hint=f"e.g. `{', '.join(result_names(r))} = ...`, then use one of them")
