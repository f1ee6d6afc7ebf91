"""Tensor types: a shape of (possibly symbolic) dimensions and an element type."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .dims import Dim, SymDim, evaluate, format_dim

# dtype names used in .net files -> element size in bytes
DTYPES = {"f32": 4, "f16": 2, "bf16": 2, "f64": 8, "i32": 4, "i64": 8, "bool": 1}
# the integer element types: inputs of token ids (`input ids: i64[N, T]`), read only by ops that take them
INTEGER_DTYPES = frozenset({"i32", "i64"})
NUMPY_DTYPES = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}
# the boolean element type: attention masks (`input m: bool[N, 1, 1, T]`), read only by ops that take them
BOOL = "bool"
# the range of a size, an index or an integer attribute: int64, as in every backend
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def is_integer(dtype: str) -> bool:
    """Whether ``dtype`` (a .net element type name) is an integer type."""
    return dtype in INTEGER_DTYPES


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str = "f32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def concrete(self, env: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(evaluate(d, env) for d in self.shape)

    def symbols(self) -> set[str]:
        out: set[str] = set()
        for d in self.shape:
            if isinstance(d, SymDim):
                out |= d.symbols()
        return out

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(format_dim(d) for d in self.shape)}]"


def numel(shape: tuple[int, ...]) -> int:
    """The number of elements of a concrete shape, exactly (a Python int: int64 arithmetic would wrap around
    for a huge shape, and a size beyond int64 would not convert)."""
    return math.prod(int(d) for d in shape)
