"""Parameters: deterministic default initialisation, and saving/loading weights.

Weights are a plain ``dict[str, np.ndarray]`` keyed by the hierarchical parameter names of the graph
(``layer1.0.conv1.weight``), so they line up with a PyTorch ``state_dict`` built with the same names.
Files are safetensors or ``.npz`` — never pickle — and loading is strict: a missing, extra or wrongly
shaped tensor is a ``NetDSLError`` naming it.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import NetDSLError, did_you_mean
from .ir.graph import Graph, ParamSpec
from .ir.types import BOOL, NUMPY_DTYPES, is_integer

Weights = dict[str, np.ndarray]


def init_param(name: str, spec: ParamSpec, seed: int = 0) -> np.ndarray:
    """One parameter's default value; each name has its own seeded stream, so adding a layer to a
    model does not change the initial values of the others."""
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
    return {name: init_param(name, spec, seed) for name, spec in graph.used_params().items()}


def random_weights(graph: Graph, seed: int = 0) -> Weights:
    """Weights with every tensor random (batchnorm statistics too), for tests: default initialisation
    leaves biases at zero and norms at identity, which would hide bugs."""
    out = {}
    for name, spec in graph.used_params().items():
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
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        shape = v.type.concrete(dims)
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
    return sum(int(np.prod(s.shape)) for n, s in graph.used_params().items()
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
