"""Parameters: deterministic default initialisation, and saving/loading weights.

Weights are a plain ``dict[str, np.ndarray]`` keyed by the hierarchical parameter names of the graph
(``layer1.0.conv1.weight``), so they line up with a PyTorch ``state_dict`` built with the same names.
Files are safetensors or ``.npz`` — never pickle — and loading is strict: a missing, extra or wrongly
shaped tensor is a ``NetDSLError`` naming it. A file's header (shapes and element types) is read before
its data, so that a 128-byte file claiming 45 GiB is an error, not an allocation; every array made here
is checked against the memory budget first (``netdsl.ir.sizes.check_allocation``). Files are written to
a temporary file next to the target and renamed into place: a failed write leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable, Mapping

import numpy as np

from .errors import NetDSLError, did_you_mean
from .ir.graph import Graph, ParamSpec
from .ir.sizes import INT64_MAX, check_allocation, format_bytes, tensor_bytes
from .ir.types import BOOL, DTYPES, NUMPY_DTYPES, is_integer

Weights = dict[str, np.ndarray]


def check_seed(seed) -> int:
    """``seed`` as an int: a whole number from 0 to 2^63 - 1 (what NumPy's generators take)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= INT64_MAX:
        raise NetDSLError(f"seed {seed!r} is not a whole number from 0 to {INT64_MAX:,}",
                          hint="give a seed such as 0 or 42 (--seed 42)")
    return int(seed)


def _check_params(graph: Graph, what: str, bytes_per_element: int = 4) -> dict[str, ParamSpec]:
    """The graph's used parameters, once their total size (float32) is known to fit the budget."""
    specs = graph.used_params()
    for name, spec in specs.items():
        if any(int(d) < 1 for d in spec.shape):
            raise NetDSLError(f"parameter `{name}` has an empty shape {tuple(spec.shape)}",
                              hint="every size of a layer must be at least 1")
    check_allocation(sum(tensor_bytes(s.shape, bytes_per_element) for s in specs.values()),
                     f"{what} of `{graph.name}` ({len(specs)} tensors)")
    return specs


def init_param(name: str, spec: ParamSpec, seed: int = 0) -> np.ndarray:
    """One parameter's default value; each name has its own seeded stream, so adding a layer to a
    model does not change the initial values of the others."""
    seed = check_seed(seed)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if spec.init == "kaiming":  # He normal, gain sqrt(2), fan_in mode
        return rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / spec.fan_in))
    if spec.init == "xavier":  # Glorot uniform
        bound = np.float32(np.sqrt(6.0 / (spec.fan_in + spec.fan_out)))
        return (rng.random(spec.shape, dtype=np.float32) * 2 - 1) * bound
    if spec.init == "zeros":
        return np.zeros(spec.shape, np.float32)
    if spec.init == "ones":
        return np.ones(spec.shape, np.float32)
    if spec.init == "const":
        return np.full(spec.shape, spec.value, np.float32)
    if spec.init == "uniform":  # U(-value, value), as torch's recurrent layers and nn.Linear's bias
        return ((rng.random(spec.shape, dtype=np.float32) * 2 - 1) * np.float32(spec.value)).astype(np.float32)
    if spec.init == "normal":  # N(0, std^2) (std 1: nn.Embedding); the padding row (zero_row) zero
        w = rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(spec.std)
        if spec.zero_row is not None:
            w[spec.zero_row] = 0
        return w
    raise ValueError(f"unknown initialiser {spec.init!r}")


def init_weights(graph: Graph, seed: int = 0) -> Weights:
    """Every parameter's default value (``init_param``), once they are known to fit the memory budget."""
    seed = check_seed(seed)
    return {name: init_param(name, spec, seed) for name, spec in _check_params(graph, "the weights").items()}


def random_weights(graph: Graph, seed: int = 0) -> Weights:
    """Weights with every tensor random (batchnorm statistics too), for tests: default initialisation
    leaves biases at zero and norms at identity, which would hide bugs."""
    seed = check_seed(seed)
    out = {}
    for name, spec in _check_params(graph, "the random weights").items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode()), 1])
        if name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 1.5, spec.shape).astype(np.float32)
        elif spec.init in ("kaiming", "xavier", "uniform"):
            out[name] = init_param(name, spec, seed)
        elif spec.init == "const":  # prelu slopes
            out[name] = rng.uniform(0.05, 0.5, spec.shape).astype(np.float32)
        else:
            out[name] = (rng.standard_normal(spec.shape) * 0.2 + (1.0 if spec.init == "ones" else 0.0)).astype(np.float32)
    return out


def random_inputs(graph: Graph, dims: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs at sizes ``dims``: standard normal float32 for float inputs; for integer inputs
    (token ids) uniform ids that every reader can index: below the rows of the smallest table
    (``weight``) of a node reading them; for boolean inputs (attention masks) true with probability 0.8."""
    rng = np.random.default_rng(check_seed(seed))
    shapes = {v.name: v.type.concrete(dims) for v in graph.inputs}
    for v in graph.inputs:
        if any(d < 1 for d in shapes[v.name]):
            raise NetDSLError(f"input `{v.name}`: {v.type} is {'x'.join(map(str, shapes[v.name]))} at these sizes",
                              hint="every size must be at least 1")
    # standard_normal draws float64 before the cast: 12 bytes per float32 element at the peak
    check_allocation(sum(tensor_bytes(shapes[v.name], 12 if v.type.dtype.startswith("f") else DTYPES[v.type.dtype])
                         for v in graph.inputs),
                     f"the random inputs of `{graph.name}` ({', '.join(f'{v.name}: {list(shapes[v.name])}' for v in graph.inputs)})")
    out = {}
    for v in graph.inputs:
        shape = shapes[v.name]
        if is_integer(v.type.dtype):
            rows = [graph.params[n.params["weight"]].shape[0] for n in graph.nodes
                    if "weight" in n.params and any(x.name == v.name for x in n.inputs)]
            out[v.name] = rng.integers(0, min(rows, default=2), shape).astype(NUMPY_DTYPES[v.type.dtype])
        elif v.type.dtype == BOOL:
            out[v.name] = rng.random(shape) < 0.8
        else:
            out[v.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def parameter_count(graph: Graph) -> int:
    """Learned parameters (batchnorm running statistics are buffers, not parameters, as in PyTorch)."""
    return sum(math.prod(s.shape) for n, s in graph.used_params().items()
               if not n.endswith(("running_mean", "running_var")))


def save_weights(path: str | Path, weights: Mapping[str, np.ndarray]) -> None:
    path = Path(path)
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        raise NetDSLError(f"cannot write weights to `{path}`: unknown format",
                          hint="use a .safetensors or .npz file name")


def read_weights(path: str | Path) -> Weights:
    path = Path(path)
    if not path.exists():
        raise NetDSLError(f"weights file `{path}` does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
    except Exception as e:  # corrupt or truncated files raise many different errors
        raise NetDSLError(f"cannot read weights file `{path}`: {e}",
                          hint="is it a valid .safetensors / .npz file?") from None
    raise NetDSLError(f"cannot read weights from `{path}`: unknown format", hint="use .safetensors or .npz")


def check_weights(graph: Graph, weights: Mapping[str, np.ndarray], origin: str = "weights") -> Weights:
    """Strictly match weights to the graph's parameters; return them as float32 arrays."""
    specs = graph.used_params()
    # PyTorch's batchnorm keeps a step counter next to its statistics; it means nothing at inference
    weights = {k: v for k, v in weights.items()
               if not (k.endswith(".num_batches_tracked") and k[: -len("num_batches_tracked")] + "running_mean" in specs)}
    missing = [k for k in specs if k not in weights]
    extra = [k for k in weights if k not in specs]
    if missing:
        hint = did_you_mean(missing[0], extra) if extra else None
        raise NetDSLError(f"{origin}: missing tensor `{missing[0]}`"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                          hint=hint or f"the model has {len(specs)} parameter tensors; `netdsl show` lists them")
    if extra:
        raise NetDSLError(f"{origin}: unexpected tensor `{extra[0]}`"
                          + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""),
                          hint=did_you_mean(extra[0], specs) or "it is not a parameter of this model")
    out = {}
    for name, spec in specs.items():
        w = np.asarray(weights[name])
        if tuple(w.shape) != tuple(spec.shape):
            raise NetDSLError(f"{origin}: tensor `{name}` has shape {tuple(w.shape)}, the model expects "
                              f"{tuple(spec.shape)}")
        if not np.issubdtype(w.dtype, np.floating):
            raise NetDSLError(f"{origin}: tensor `{name}` has element type {w.dtype}, expected floating point")
        out[name] = w.astype(np.float32, copy=False)
    return out


def load_weights(path: str | Path, graph: Graph) -> Weights:
    return check_weights(graph, read_weights(path), origin=str(path))
