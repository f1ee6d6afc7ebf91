"""The types of inputs: a network's input declarations (its symbolic dims and their defaults), a block's
inputs checked against what its caller passes, every written type checked, and every size checked to be
at least 1 at the file's default sizes.
"""

from __future__ import annotations

from ..errors import NetDSLError, SourceLoc, did_you_mean
from ..ir.dims import SymDim
from ..ir.graph import Node, Value
from ..ir.types import DTYPES, INT64_MAX, TensorType
from ..ops.registry import show_value
from . import ast
from .scopes import ElaboratorState, Tensor


class InputTypes(ElaboratorState):
    """The typing of inputs (a mixin of the elaborator: see ``ElaboratorState``)."""

    def network_input(self, d: ast.InputDecl) -> Tensor:
        if d.type is None:
            raise NetDSLError(f"network input `{d.name}` needs a type", d.loc,
                              hint=f"e.g. `input {d.name}: f32[N, 3, H, W]`")
        t = d.type
        check_type(t)
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


def check_type(t: ast.TypeExpr) -> None:
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


def check_default_sizes(nodes: list[Node], defaults: dict[str, int], default_locs: dict[str, SourceLoc]) -> None:
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
