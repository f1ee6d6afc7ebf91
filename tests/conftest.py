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


if os.environ.get("TRITON_INTERPRET") == "1":
    # bf16 stores round to nearest even, as GPUs do (the interpreter truncates): netdsl's runtime does this
    # whenever it interprets; tests that call kernels directly get it here too
    from netdsl.backends.triton.runtime import round_bf16_like_the_hardware

    round_bf16_like_the_hardware()
