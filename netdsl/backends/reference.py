"""The reference backend: the plain NumPy meaning of any IR graph (before or after the passes).

Runs nodes in order with each op's registry reference, in float32 or float64, dropping every value
after its last use. ``trace=True`` keeps every intermediate value (for `netdsl check`). Inputs of an
integer type (token ids, ``i64[N, T]``) are taken as integer arrays, never cast to float. Symbolic
dims in attributes (``reshape(N, T, 8, -1)``) are bound to the input sizes before each reference runs.
Before anything runs, the inputs, the weights (by name and shape) and every value's size at the bound
dims are checked: an empty value or one over the memory budget is an error at the layer that makes it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import NetDSLError, did_you_mean
from ..ir.dims import SymDim, evaluate
from ..ir.graph import Graph
from ..ir.sizes import check_allocation, check_sizes, tensor_bytes
from ..ir.types import BOOL, DTYPES, NUMPY_DTYPES, TensorType, is_integer
from ..ops import REGISTRY
from ..params import match_weights


def bind_dims(graph: Graph, arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Bind the graph's symbolic input dims from concrete input shapes; a mismatch is a NetDSLError."""
    env: dict[str, int] = {}
    for v in graph.inputs:
        if v.name not in arrays:
            given = [k for k in arrays if k not in {u.name for u in graph.inputs}]
            raise NetDSLError(f"no value given for input `{v.name}`"
                              + (f" (given: {', '.join(f'`{k}`' for k in given)})" if given else ""),
                              hint=(did_you_mean(v.name, given) if given else None)
                              or f"`{graph.name}` takes {', '.join(f'`{u.name}`' for u in graph.inputs)}")
        shape = np.shape(arrays[v.name])
        t: TensorType = v.type
        hint = f"`{v.name}` takes an array of {t.rank} dimensions: {', '.join(map(str, t.shape))}"
        if len(shape) != t.rank:
            raise NetDSLError(f"input `{v.name}` expects {t}, got an array of shape {tuple(shape)}", hint=hint)
        for d, got in zip(t.shape, shape):
            if got < 1 and isinstance(d, SymDim):
                raise NetDSLError(f"input `{v.name}` expects {t}, got an empty array of shape {tuple(shape)}",
                                  hint="every size must be at least 1")
            if isinstance(d, SymDim):
                (sym,) = d.symbols()
                if env.setdefault(sym, got) != got:
                    raise NetDSLError(f"input `{v.name}`: dimension {sym} is {env[sym]} elsewhere, got {got}",
                                      hint=f"every input must agree on the size of {sym}")
            elif d != got:
                raise NetDSLError(f"input `{v.name}` expects {t}, got an array of shape {tuple(shape)}", hint=hint)
    return env


def as_input_dict(graph: Graph, inputs) -> dict[str, np.ndarray]:
    """``inputs`` (a dict by input name, a list in the graph's order, or one array) as a dict."""
    if isinstance(inputs, Mapping):
        return dict(inputs)
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    if len(inputs) != len(graph.inputs):
        raise NetDSLError(f"network `{graph.name}` takes {len(graph.inputs)} input(s), got {len(inputs)}",
                          hint="pass one array per input, in order, or a dict by name: "
                               + ", ".join(v.name for v in graph.inputs))
    return {v.name: x for v, x in zip(graph.inputs, inputs)}


def input_array(v, x, np_dtype) -> np.ndarray:
    """Input ``v``'s array: an integer input takes integer arrays (as its own integer type), a float input
    takes float arrays (in the dtype the network runs in); anything else is a NetDSLError."""
    x = np.asarray(x)
    t: TensorType = v.type
    if t.dtype == BOOL:
        if x.dtype != np.bool_:
            raise NetDSLError(f"input `{v.name}` expects {t} (a boolean mask), got an array of {x.dtype}",
                              hint="pass a boolean array (true: may attend), e.g. `ids != pad_id`")
        return x
    if is_integer(t.dtype):
        if not (np.issubdtype(x.dtype, np.integer) and x.dtype != np.bool_):
            raise NetDSLError(f"input `{v.name}` expects {t} (integers), got an array of {x.dtype}",
                              hint=f"pass integer ids, e.g. `ids.astype(np.{np.dtype(NUMPY_DTYPES[t.dtype]).name})`")
        info = np.iinfo(NUMPY_DTYPES[t.dtype])
        if x.size and (x.min() < info.min or x.max() > info.max):
            raise NetDSLError(f"input `{v.name}` expects {t}, but its values do not fit a {t.dtype}",
                              hint=f"{t.dtype} holds {info.min}..{info.max}; declare the input i64")
        return x.astype(NUMPY_DTYPES[t.dtype], copy=False)
    if not np.issubdtype(x.dtype, np.floating):
        raise NetDSLError(f"input `{v.name}` expects {t} (floating point), got an array of {x.dtype}",
                          hint=f"pass a float array, e.g. `x.astype(np.float32)`; integer ids need an integer "
                               f"input type (`input {v.name}: i64[...]`)")
    return np.asarray(x, dtype=np_dtype)


def _has_dim(value: Any) -> bool:
    if isinstance(value, SymDim):
        return True
    if isinstance(value, (tuple, list)):
        return any(_has_dim(v) for v in value)
    if isinstance(value, Mapping):
        return any(_has_dim(v) for v in value.values())
    return False


def _bind_attr(value: Any, dims: Mapping[str, int]) -> Any:
    """``value`` with every symbolic dim replaced by its size."""
    if isinstance(value, SymDim):
        return evaluate(value, dims)
    if isinstance(value, tuple):
        return tuple(_bind_attr(v, dims) for v in value)
    if isinstance(value, list):
        return [_bind_attr(v, dims) for v in value]
    if isinstance(value, Mapping):
        return {k: _bind_attr(v, dims) for k, v in value.items()}
    return value


def bind_attrs_to_sizes(attrs: Mapping[str, Any], dims: Mapping[str, int]) -> Mapping[str, Any]:
    """A node's attributes with their symbolic dims (``reshape(N, T, 8, -1)``) bound to sizes; the
    attributes themselves when they hold none."""
    if not any(_has_dim(v) for v in attrs.values()):
        return attrs
    return {k: _bind_attr(v, dims) for k, v in attrs.items()}


def run(graph: Graph, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray,
        weights: Mapping[str, np.ndarray], dtype: str = "f32", trace: bool = False) -> dict[str, np.ndarray]:
    """Run ``graph``; return ``{output name: array}`` (and every value's array when ``trace``)."""
    floats = [d for d in NUMPY_DTYPES if not is_integer(d) and d != BOOL]
    if dtype not in floats:
        raise NetDSLError(f"the reference backend runs in {' or '.join(floats)}, not {dtype}",
                          hint="pass dtype=\"f32\" or dtype=\"f64\"; fp16 and bf16 run on the Triton backend "
                               "(netdsl.compile(..., dtype=\"fp16\"))")
    np_dtype = NUMPY_DTYPES[dtype]
    weights = match_weights(graph, weights, allow_extra=True)
    arrays = as_input_dict(graph, inputs)
    dims = bind_dims(graph, arrays)
    held = {d: (DTYPES[d] if is_integer(d) or d == BOOL else np.dtype(np_dtype).itemsize) for d in DTYPES}
    check_sizes(graph, dims, held)  # every value, before anything is allocated or run
    check_allocation(sum(tensor_bytes(w.shape, np.dtype(np_dtype).itemsize) for w in weights.values()),
                     f"the weights of `{graph.name}` in {dtype}")
    env: dict[str, np.ndarray] = {v.name: input_array(v, arrays[v.name], np_dtype) for v in graph.inputs}
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_use[v.name] = i
    keep = {v.name for v in graph.outputs}
    cast = {k: np.asarray(w, dtype=np_dtype) for k, w in weights.items()}
    traced: dict[str, np.ndarray] = {}
    for i, node in enumerate(graph.nodes):
        op = REGISTRY[node.op]
        params = {role: cast[name] for role, name in node.params.items()}
        out = op.reference([env[v.name] for v in node.inputs], params, bind_attrs_to_sizes(node.attrs, dims))
        for v, array in zip(node.outputs, out if len(node.outputs) > 1 else (out,), strict=True):
            want = v.type.concrete(dims)
            if np.shape(array) != want:  # a symbolic bound beyond its dim (`pos[:T]` with T above the table's rows)
                raise NetDSLError(f"`{node.op}` gives {'x'.join(map(str, np.shape(array)))} here, but its type "
                                  f"{v.type} is {'x'.join(map(str, want))} at these sizes", node.loc,
                                  hint="a size bound to the inputs is out of the range this call allows")
            out_dtype = v.type.dtype
            env[v.name] = np.asarray(array, dtype=NUMPY_DTYPES[out_dtype] if is_integer(out_dtype) else np_dtype)
            if trace:
                traced[v.name] = env[v.name]
        for v in node.inputs:
            if last_use.get(v.name) == i and v.name not in keep and not trace:
                env.pop(v.name, None)
    result = {name: env[v.name] for name, v in zip(graph.output_names, graph.outputs)}
    if trace:
        result.update(traced)
    return result
