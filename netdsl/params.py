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
import re
import zipfile
import zlib
from pathlib import Path
from typing import IO, Mapping

import numpy as np

from .errors import NetDSLError, did_you_mean
from .files import check_writable, write_atomically
from .ir.graph import Graph, ParamSpec
from .ir.sizes import INT64_MAX, check_allocation, check_sizes, tensor_bytes
from .ir.types import BOOL, DTYPES, NUMPY_DTYPES, is_integer

Weights = dict[str, np.ndarray]


def check_seed(seed) -> int:
    """``seed`` as an int: a whole number from 0 to 2^63 - 1 (what NumPy's generators take)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= INT64_MAX:
        raise NetDSLError(f"seed {seed!r} is not a whole number from 0 to {INT64_MAX:,}",
                          hint="give a seed such as 0 or 42 (--seed 42)")
    return int(seed)


def parse_seed(text: str | int) -> int:
    """A seed as written on a command line (``--seed 42``): ASCII digits, from 0 to 2^63 - 1; an int is
    checked by ``check_seed``."""
    if not isinstance(text, str):
        return check_seed(text)
    if re.fullmatch(r"[0-9]+", text, re.ASCII) and int(text) <= INT64_MAX:
        return int(text)
    raise NetDSLError(f"bad --seed `{text}`: a seed is a whole number from 0 to {INT64_MAX:,}",
                      hint="write e.g. --seed 0")


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
    check_sizes(graph, dims)  # no value empty or beyond int64 at these sizes
    shapes = {v.name: v.type.concrete(dims) for v in graph.inputs}
    # standard_normal draws float64 before the cast: 12 bytes per float32 element at the peak
    drawn = {v.name: 12 if v.type.dtype.startswith("f") else DTYPES[v.type.dtype] for v in graph.inputs}
    listed = ", ".join(f"{name}: {list(shape)}" for name, shape in shapes.items())
    check_allocation(sum(tensor_bytes(shapes[name], size) for name, size in drawn.items()),
                     f"the random inputs of `{graph.name}` ({listed}; float inputs are drawn in float64, then cast)")
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


# --- files ---------------------------------------------------------------------------------------------

# element types a file may hold, by NumPy kind: booleans, signed and unsigned integers, floats
_NUMERIC_KINDS = "biuf"
_KIND_NAMES = {"c": "complex numbers", "U": "text", "S": "bytes", "O": "Python objects", "V": "records",
               "M": "dates", "m": "time spans"}
# safetensors element types -> bytes; the ones NumPy holds, and bf16, which it does not
_SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                       "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header
_BAD_WEIGHTS = "is it a valid .safetensors / .npz file? `netdsl init -o FILE` writes one"


def _describe_dtype(dtype: np.dtype) -> str:
    if dtype.fields is not None or dtype.kind == "V":
        return f"records ({dtype})"
    return f"{_KIND_NAMES.get(dtype.kind, dtype.name)} ({dtype})"


def _open(path: Path, what: str) -> IO[bytes]:
    """``path`` opened for reading; the reason it cannot be (missing, a directory, no permission, ...)
    is a NetDSLError naming the file. An empty file is one too."""
    try:
        f = open(path, "rb")
        empty = os.fstat(f.fileno()).st_size == 0
    except FileNotFoundError:
        raise NetDSLError(f"{what} `{path}` does not exist", hint="check the file's name") from None
    except OSError as e:
        raise NetDSLError(f"cannot read {what} `{path}`: {e.strerror or e}",
                          hint="check that it is a file you may read") from None
    if empty:
        f.close()
        raise NetDSLError(f"cannot read {what} `{path}`: the file is empty",
                          hint="write it again (numpy.save for an input, `netdsl init` for weights)")
    return f


def _npy_header(f: IO[bytes], where: str, hint: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy header, the file left at the start of the data; nothing else is read."""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read(f)
    except (ValueError, EOFError, OSError, SyntaxError) as e:
        raise NetDSLError(f"cannot read {where}: not a .npy array ({e})", hint=hint) from None
    return tuple(int(d) for d in shape), dtype


def _check_array_header(shape: tuple[int, ...], dtype: np.dtype, where: str, accepted: str) -> int:
    """The array's bytes, once its element type is numeric and its size fits int64 and the budget."""
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.hasobject:
        raise NetDSLError(f"{where} holds {_describe_dtype(dtype)}; {accepted}",
                          hint="convert it first, e.g. `np.save(path, x.astype(np.float32))`"
                               + ("; for complex numbers keep the part you mean (x.real)" if dtype.kind == "c" else ""))
    nbytes = tensor_bytes(shape, dtype.itemsize)
    check_allocation(nbytes, f"{where} (shape {list(shape)}, {dtype})")
    return nbytes


def load_array(path: str | Path, what: str = "input") -> np.ndarray:
    """One array from a .npy file: booleans, integers or floats; its header (shape, element type) is
    checked before any data is read; never a pickle."""
    path = Path(path)
    accepted = "an input must be a .npy array of floats, integers or booleans"
    with _open(path, what) as f:
        if f.read(4) == b"PK\x03\x04":
            raise NetDSLError(f"{what} `{path}` is a .npz archive", hint="give one .npy file per input (np.save)")
        f.seek(0)
        shape, dtype = _npy_header(f, f"{what} `{path}`", "write it with numpy.save (one array, not a pickle)")
        _check_array_header(shape, dtype, f"{what} `{path}`", accepted)
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:  # a header that promises more data than the file holds
            raise NetDSLError(f"cannot read {what} `{path}`: {e}", hint="the file is truncated or corrupt; "
                              "write it again with numpy.save") from None


def _check_safetensors_header(path: Path, f: IO[bytes]) -> None:
    """Every tensor's dtype and shape, from the JSON header, against the budget (nothing else is read)."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    if not 0 < n <= min(size - 8, _MAX_HEADER):
        raise NetDSLError(f"cannot read weights file `{path}`: not safetensors (its header length is "
                          f"{n if n >= 0 else 'missing'} in a file of {size:,} bytes)", hint=_BAD_WEIGHTS)
    try:
        header = json.loads(f.read(n))
        tensors = {k: (str(v["dtype"]), tuple(int(d) for d in v["shape"]))
                   for k, v in header.items() if k != "__metadata__"}
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise NetDSLError(f"cannot read weights file `{path}`: not safetensors (bad header: {e})",
                          hint=_BAD_WEIGHTS) from None
    for name, (dtype, shape) in tensors.items():
        if dtype == "BF16":
            raise NetDSLError(f"weights file `{path}`: tensor `{name}` is bf16, which NumPy cannot hold",
                              hint="save the weights as float32 (e.g. `{k: v.float() for k, v in sd.items()}`)")
        if dtype not in _SAFETENSORS_DTYPES:
            raise NetDSLError(f"weights file `{path}`: tensor `{name}` has element type {dtype}",
                              hint="weights are floating point (F32, F16 or F64)")
    check_allocation(sum(tensor_bytes(s, _SAFETENSORS_DTYPES[d]) for d, s in tensors.values()),
                     f"weights file `{path}` ({len(tensors)} tensors)")


def _check_npz_headers(path: Path, f: IO[bytes]) -> None:
    """Every member's .npy header: a numeric element type, and all of them within the budget."""
    accepted = "weights must be arrays of floats"
    total = 0
    try:
        with zipfile.ZipFile(f) as z:
            for info in z.infolist():
                name = info.filename.removesuffix(".npy")
                with z.open(info) as member:
                    shape, dtype = _npy_header(member, f"weights file `{path}` (tensor `{name}`)", _BAD_WEIGHTS)
                total += _check_array_header(shape, dtype, f"tensor `{name}` of weights file `{path}`", accepted)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        raise NetDSLError(f"cannot read weights file `{path}`: {e}", hint=_BAD_WEIGHTS) from None
    check_allocation(total, f"weights file `{path}`")


def read_weights(path: str | Path) -> Weights:
    """The tensors of a .safetensors or .npz file, once its header is known to hold numeric tensors
    within the memory budget."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".npz"):
        raise NetDSLError(f"cannot read weights from `{path}`: unknown format", hint="use .safetensors or .npz")
    with _open(path, "weights file") as f:
        if path.suffix == ".safetensors":
            _check_safetensors_header(path, f)
        else:
            _check_npz_headers(path, f)
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except NetDSLError:
        raise
    except Exception as e:  # corrupt or truncated files raise many different errors
        raise NetDSLError(f"cannot read weights file `{path}`: {e}", hint=_BAD_WEIGHTS) from None


def save_weights(path: str | Path, weights: Mapping[str, np.ndarray]) -> None:
    """Write ``weights`` to a .safetensors or .npz file, atomically (``write_atomically``)."""
    path = check_writable(path, "weights file")
    if path.suffix not in (".safetensors", ".npz"):
        raise NetDSLError(f"cannot write weights to `{path}`: unknown format",
                          hint="use a .safetensors or .npz file name")
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}

    def write(tmp: str) -> None:
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file(arrays, tmp)
        else:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    write_atomically(path, write, "weights file")


def check_arrays_target(path: str | Path, names, what: str = "arrays") -> Path:
    """``path``, once ``save_arrays`` can write arrays ``names`` there: a .npz file for any number of
    arrays, a .npy file for one."""
    path = check_writable(path, "output file")
    names = list(names)
    if path.suffix not in (".npy", ".npz"):
        raise NetDSLError(f"cannot save {what} to `{path}`: unknown format",
                          hint=f"name a .npz file (`{path.with_suffix('.npz')}`), or a .npy file for one array")
    if path.suffix != ".npz" and len(names) != 1:
        raise NetDSLError(f"cannot save the {len(names)} {what} ({', '.join(names)}) to the .npy file `{path}`",
                          hint=f"name a .npz file (`{path.with_suffix('.npz')}`): each is saved under its name")
    return path


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays atomically: one array to a .npy file; any number (to a path ending in .npz) to a .npz
    file, each under its name."""
    path = check_arrays_target(path, arrays)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            if path.suffix == ".npz":
                np.savez(f, **arrays)
            else:
                np.save(f, next(iter(arrays.values())), allow_pickle=False)

    write_atomically(path, write, "output file")


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def match_weights(graph: Graph, weights: Mapping[str, np.ndarray], origin: str = "weights",
                  allow_extra: bool = False) -> dict[str, np.ndarray]:
    """The graph's used parameters from ``weights`` as arrays, each checked by name, shape and element
    type (real numbers); a missing tensor (and, unless ``allow_extra``, an extra one) is a NetDSLError
    that names them, with the closest name as a hint; a wrong shape names the parameter, both shapes
    and the layer that uses it."""
    if not isinstance(weights, Mapping):
        raise NetDSLError(f"{origin} must be a dict of arrays keyed by parameter name, not {type(weights).__name__}",
                          hint="e.g. netdsl.init_weights(graph), or netdsl.load_weights(path, graph)")
    specs = graph.used_params()
    # PyTorch's batchnorm keeps a step counter next to its statistics; it means nothing at inference
    weights = {k: v for k, v in weights.items()
               if not (k.endswith(".num_batches_tracked") and k[: -len("num_batches_tracked")] + "running_mean" in specs)}
    missing = [k for k in specs if k not in weights]
    extra = [k for k in weights if k not in specs]
    if missing:
        hint = did_you_mean(missing[0], extra) if extra else None
        raise NetDSLError(f"{origin}: missing tensor{'s' if len(missing) > 1 else ''} {_names(missing)}"
                          + (f"; unexpected: {_names(extra)}" if extra else ""),
                          hint=hint or f"the model has {len(specs)} parameter tensors; `netdsl show` lists them")
    if extra and not allow_extra:
        raise NetDSLError(f"{origin}: unexpected tensor{'s' if len(extra) > 1 else ''} {_names(extra)}",
                          hint=did_you_mean(extra[0], specs) or "it is not a parameter of this model")
    users = {p: n for n in reversed(graph.nodes) for p in n.params.values()}
    out = {}
    for name, spec in specs.items():
        w = weights[name]
        shape = tuple(np.shape(w))
        if shape != tuple(spec.shape):
            raise NetDSLError(f"{origin}: tensor `{name}` has shape {shape}, the model expects {tuple(spec.shape)}",
                              users[name].loc, hint="are these the weights of this model (and of this version of it)?")
        w = np.asarray(w)
        if w.dtype.kind not in "fiu":
            raise NetDSLError(f"{origin}: tensor `{name}` has element type {w.dtype}, expected floating point",
                              users[name].loc, hint="convert it, e.g. `w.astype(np.float32)`")
        out[name] = w
    return out


def check_weights(graph: Graph, weights: Mapping[str, np.ndarray], origin: str = "weights") -> Weights:
    """Strictly match weights to the graph's parameters; return them as float32 arrays."""
    matched = match_weights(graph, weights, origin)
    for name, w in matched.items():
        if not np.issubdtype(w.dtype, np.floating):
            raise NetDSLError(f"{origin}: tensor `{name}` has element type {w.dtype}, expected floating point",
                              hint="convert it, e.g. `w.astype(np.float32)`")
    check_allocation(sum(tensor_bytes(w.shape, 4) for w in matched.values() if w.dtype != np.float32),
                     f"{origin}: the float32 copy of the weights")
    for name, w in matched.items():
        finite = np.isfinite(w)
        if not finite.all():
            bad = w.size - int(np.count_nonzero(finite))
            raise NetDSLError(f"{origin}: tensor `{name}` holds {bad:,} NaN or infinite value(s)",
                              hint="every output would be NaN; the file is damaged, or the training that "
                                   "wrote it diverged")
    return {name: w.astype(np.float32, copy=False) for name, w in matched.items()}


def load_weights(path: str | Path, graph: Graph) -> Weights:
    return check_weights(graph, read_weights(path), origin=str(path))
