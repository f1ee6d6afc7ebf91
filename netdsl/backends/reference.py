"""The reference backend: the plain NumPy meaning of any IR graph (before or after the passes).

Runs nodes in order with each op's registry reference, in float32 or float64, dropping every value
after its last use. ``trace=True`` keeps every intermediate value (for `netdsl check`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import NetDSLError
from ..ir.dims import SymDim
from ..ir.graph import Graph
from ..ir.types import NUMPY_DTYPES, TensorType
from ..ops import REGISTRY


def bind_dims(graph: Graph, arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Bind the graph's symbolic input dims from concrete input shapes; a mismatch is a NetDSLError."""
    env: dict[str, int] = {}
    for v in graph.inputs:
        if v.name not in arrays:
            raise NetDSLError(f"no value given for input `{v.name}`")
        shape = np.shape(arrays[v.name])
        t: TensorType = v.type
        if len(shape) != t.rank:
            raise NetDSLError(f"input `{v.name}` expects {t}, got an array of shape {tuple(shape)}")
        for d, got in zip(t.shape, shape):
            if isinstance(d, SymDim):
                (sym,) = d.symbols()
                if env.setdefault(sym, got) != got:
                    raise NetDSLError(f"input `{v.name}`: dimension {sym} is {env[sym]} elsewhere, got {got}")
            elif d != got:
                raise NetDSLError(f"input `{v.name}` expects {t}, got an array of shape {tuple(shape)}")
    return env


def as_input_dict(graph: Graph, inputs) -> dict[str, np.ndarray]:
    if isinstance(inputs, Mapping):
        return dict(inputs)
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    if len(inputs) != len(graph.inputs):
        raise NetDSLError(f"network `{graph.name}` takes {len(graph.inputs)} input(s), got {len(inputs)}")
    return {v.name: x for v, x in zip(graph.inputs, inputs)}


def run(graph: Graph, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray,
        weights: Mapping[str, np.ndarray], dtype: str = "f32", trace: bool = False) -> dict[str, np.ndarray]:
    """Run ``graph``; return ``{output name: array}`` (and every value's array when ``trace``)."""
    np_dtype = NUMPY_DTYPES[dtype]
    arrays = as_input_dict(graph, inputs)
    bind_dims(graph, arrays)
    env: dict[str, np.ndarray] = {v.name: np.asarray(arrays[v.name], dtype=np_dtype) for v in graph.inputs}
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
        out = op.reference([env[v.name] for v in node.inputs], params, node.attrs)
        env[node.output.name] = np.asarray(out, dtype=np_dtype)
        if trace:
            traced[node.output.name] = env[node.output.name]
        for v in node.inputs:
            if last_use.get(v.name) == i and v.name not in keep and not trace:
                env.pop(v.name, None)
    result = {name: env[v.name] for name, v in zip(graph.output_names, graph.outputs)}
    if trace:
        result.update(traced)
    return result
