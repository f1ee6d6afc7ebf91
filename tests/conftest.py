"""Test session set-up.

Triton decides interpret-or-compile when a kernel is decorated, so the interpreter must be chosen
before anything imports triton: this whole test session runs kernels under TRITON_INTERPRET=1 on
CPU tensors. Ahead-of-time GPU builds run in worker subprocesses (see netdsl.kernels.aot).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def _round_bf16_like_the_hardware() -> None:
    """Triton's interpreter converts fp32 to bf16 by truncating the mantissa (and its round-to-nearest
    mode rounds ties up without carrying into the exponent); GPUs round to nearest even. Kernels that store
    bf16 are tested as the hardware runs them: this conversion rounds to nearest even, ties to even, with
    the carry into the exponent (so the largest values round to infinity) and NaN kept a quiet NaN."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    truncating = interpreter._convert_float

    def convert(input, input_dtype, output_dtype, rounding_mode):
        if input_dtype != tl.float32 or output_dtype != tl.bfloat16 or rounding_mode == interpreter._ir.ROUNDING_MODE.RTZ:
            return truncating(input, input_dtype, output_dtype, rounding_mode)
        bits = np.ascontiguousarray(input, dtype=np.float32).view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        nan = (bits & 0x7FFFFFFF) > 0x7F800000
        rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
        return rounded

    interpreter._convert_float = convert


if os.environ.get("TRITON_INTERPRET") == "1":
    _round_bf16_like_the_hardware()
