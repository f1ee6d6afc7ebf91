"""Interpret or compile: netdsl decides, once per process, before Triton is imported.

Triton chooses between its CPU interpreter and real compilation when a function is decorated with
``@triton.jit``, and its own library helpers (``tl.sigmoid``, reductions, ...) are decorated when
``triton`` is first imported. So one process either interprets or compiles. netdsl picks compiled
kernels when a CUDA GPU is present and the interpreter otherwise (slow: for checking only), and the
user never sets an environment variable. Ahead-of-time builds (``netdsl compile``) always run in
worker subprocesses in compile mode (``netdsl.kernels.aot``), so they work from either kind of process.
"""

from __future__ import annotations

import os
import sys
import warnings

from ...errors import NetDSLError

_MODE: str | None = None


def _env_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def select_mode() -> str:
    """Return "cuda" or "interpret", fixing the choice for this process."""
    global _MODE
    if _MODE is not None:
        return _MODE
    import torch

    has_gpu = torch.cuda.is_available()
    if has_gpu and not _env_interpret():
        _MODE = "cuda"
    else:
        if "triton" in sys.modules and not _env_interpret():
            raise NetDSLError(
                "Triton was imported in compile mode before netdsl chose its interpreter, and there is no GPU",
                hint="import netdsl.backends.triton before anything imports triton")
        os.environ["TRITON_INTERPRET"] = "1"
        _MODE = "interpret"
        round_bf16_like_the_hardware()
    return _MODE


_WARNED = False


def warn_if_interpreting() -> None:
    """Once per process, when kernels are about to run in the interpreter (not for meta-tensor planning,
    as ``netdsl compile`` does): say that this is for checking, not for speed."""
    global _WARNED
    import torch

    if select_mode() == "interpret" and not _WARNED and not os.environ.get("NETDSL_QUIET_INTERPRETER"):
        _WARNED = True
        why = "no CUDA GPU" if not torch.cuda.is_available() else "TRITON_INTERPRET=1"
        warnings.warn(f"netdsl: {why}; Triton kernels run in Triton's CPU interpreter "
                      "(correct but very slow: for checking, not for speed)", stacklevel=3)


def device() -> str:
    return "cuda" if select_mode() == "cuda" else "cpu"


def round_bf16_like_the_hardware() -> None:
    """Triton's interpreter converts fp32 to bf16 by truncating the mantissa (and its round-to-nearest
    mode rounds ties up without carrying into the exponent); GPUs round to nearest even. Kernels that store
    bf16 are tested as the hardware runs them: this conversion rounds to nearest even, ties to even, with
    the carry into the exponent (so the largest values round to infinity) and NaN kept a quiet NaN.
    Idempotent; netdsl applies it whenever it chooses the interpreter, so `netdsl check --dtype bf16` on a
    CPU sees the hardware's rounding."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    truncating = interpreter._convert_float
    if getattr(truncating, "rounds_like_the_hardware", False):
        return

    def convert(input, input_dtype, output_dtype, rounding_mode):
        if input_dtype != tl.float32 or output_dtype != tl.bfloat16 or rounding_mode == interpreter._ir.ROUNDING_MODE.RTZ:
            return truncating(input, input_dtype, output_dtype, rounding_mode)
        bits = np.ascontiguousarray(input, dtype=np.float32).view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        nan = (bits & 0x7FFFFFFF) > 0x7F800000
        rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
        return rounded

    convert.rounds_like_the_hardware = True
    interpreter._convert_float = convert
