"""Test session set-up.

Triton decides interpret-or-compile when a kernel is decorated, so the interpreter must be chosen
before anything imports triton: by default this whole test session runs kernels under
TRITON_INTERPRET=1 on CPU tensors. Ahead-of-time GPU builds run in worker subprocesses (see
netdsl.kernels.aot).

NETDSL_TEST_DEVICE=cuda runs the session on a GPU instead: kernels compiled (not interpreted), new
tensors made on the GPU (torch's default device; arrays converted from NumPy stay on the CPU, and a
compiled module copies its inputs to its device), TF32 off in torch's matmuls and convolutions so
that fp32 means fp32 on both sides of a comparison. Without a CUDA GPU that setting is an error,
never a quiet fall-back to the interpreter.
"""

import os

import pytest

TEST_DEVICE = os.environ.get("NETDSL_TEST_DEVICE", "cpu").strip().lower() or "cpu"
if TEST_DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def pytest_configure(config) -> None:
    if TEST_DEVICE == "cpu":
        return
    if TEST_DEVICE != "cuda":
        pytest.exit(f"NETDSL_TEST_DEVICE={TEST_DEVICE}: expected cpu (the interpreter, the default) or cuda",
                    returncode=4)
    import torch

    if not torch.cuda.is_available():
        pytest.exit("NETDSL_TEST_DEVICE=cuda, but torch sees no CUDA GPU: unset it to run the kernels in "
                    "Triton's interpreter", returncode=4)
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on"):
        pytest.exit("NETDSL_TEST_DEVICE=cuda with TRITON_INTERPRET=1: unset TRITON_INTERPRET to compile the "
                    "kernels", returncode=4)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_default_device("cuda")


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
