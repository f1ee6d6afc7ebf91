"""Tolerances, per dtype, written down once.

A result passes when ``max|got - ref| <= atol + rtol * max|ref|`` (errors are measured against the
output's scale, since fp16/bf16 kernels round every stored value). fp32 assumes exact-fp32 (IEEE)
dot products — TF32 is not "fp32" for checking. fp16 has a 10-bit mantissa (unit roundoff u = 4.9e-4),
bf16 a 7-bit one (u = 3.9e-3). A node's kernel reads inputs already in its dtype and accumulates in fp32, so
its error is the rounding of what it stores plus the roundings of what it packs ahead of time (a weight
with a batchnorm folded into it) or keeps in the dtype between its stages (attention's probabilities):
a few units of u relative to the output's scale. ``TOLERANCES`` holds the dtype-wide budgets (4 u: fp16
2e-3, bf16 1.6e-2) for whole outputs; ``node_tolerance`` is one node's own bound, derived from its
reduction length k: two roundings (its output, and what it packs or keeps in the dtype) plus fp32
summation over k terms, 2 u + (2 k + 4) 2^-24. Measured over every backend test case the worst node is
1.0 u in fp16 and 1.2 u in bf16 (tests run bf16 stores rounded to nearest even, as GPUs do:
tests/conftest.py), so a rounding or accumulation defect fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def error(self, got: np.ndarray, ref: np.ndarray) -> tuple[float, float, bool]:
        """(max abs error, error relative to max|ref|, within tolerance)."""
        got = np.asarray(got, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if got.shape != ref.shape:
            return float("inf"), float("inf"), False
        if got.size == 0:
            return 0.0, 0.0, True
        abs_err = float(np.max(np.abs(got - ref)))
        scale = float(np.max(np.abs(ref)))
        if not np.isfinite(abs_err):
            return float("inf"), float("inf"), False
        return abs_err, abs_err / max(scale, 1e-30), abs_err <= self.atol + self.rtol * scale


TOLERANCES = {
    "f64": Tolerance(rtol=1e-10, atol=1e-12),
    "fp32": Tolerance(rtol=1e-4, atol=1e-6),
    "f32": Tolerance(rtol=1e-4, atol=1e-6),
    "fp16": Tolerance(rtol=2e-3, atol=1e-4),
    "bf16": Tolerance(rtol=1.6e-2, atol=1e-3),
}


# unit roundoff (the relative error of one round-to-nearest) of the storage dtypes
UNIT_ROUNDOFF = {"fp16": 2.0**-11, "bf16": 2.0**-8}
NODE_ROUNDINGS = 2  # a node's output, and one rounding of what its kernel packs or keeps in the dtype


def node_tolerance(dtype: str, reduction: int = 1) -> Tolerance:
    """The bound one node's kernel must meet against the reference fed the same inputs: for fp16/bf16,
    ``NODE_ROUNDINGS`` units of u plus fp32 summation order over ``reduction`` terms; fp32 and f64 keep
    their dtype-wide tolerance."""
    base = TOLERANCES[dtype]
    u = UNIT_ROUNDOFF.get(dtype)
    if u is None:
        return base
    return Tolerance(rtol=NODE_ROUNDINGS * u + (2 * max(1, reduction) + 4) * 2.0**-24, atol=base.atol)
