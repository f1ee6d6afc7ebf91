"""Tolerances, per dtype, written down once.

A result passes when ``max|got - ref| <= atol + rtol * max|ref|`` (errors are measured against the
output's scale, since fp16/bf16 kernels round every stored value). fp32 assumes exact-fp32 (IEEE)
dot products — TF32 is not "fp32" for checking. fp16 has a 10-bit mantissa (unit roundoff u = 4.9e-4),
bf16 a 7-bit one (u = 3.9e-3). A node's kernel reads inputs already in its dtype and accumulates in fp32, so
its error is the rounding of what it stores plus the roundings of what it packs ahead of time (a weight
with a batchnorm folded into it) or keeps in the dtype between its stages (attention's probabilities):
a few units of u relative to the output's scale. The budgets are 4 u (fp16 2e-3, bf16 1.6e-2). Measured
over the backend test cases, the worst node seen is 2.9 u in fp16 and 2.7 u in bf16: MobileNetV2's 1x1
expansion convs, whose packed weights carry a folded batchnorm rounded to the dtype (those roundings add
up over the reduction, relative to the sum of |w x| rather than to the output). Tests run bf16 stores rounded to nearest even, as GPUs do (tests/conftest.py).
Kernel tests bound each element instead: tests/kernels/kernel_tolerances.py.
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
