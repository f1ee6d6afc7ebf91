"""Run the kernel tests under Triton's CPU interpreter.

Triton decides "interpret or compile" when a function is decorated, and decorates its own
library helpers when it is first imported, so TRITON_INTERPRET=1 must be in the environment
before anything imports triton. This conftest sets it at import time; if triton was already
imported in compiled mode (e.g. by a conftest or plugin loaded earlier), the kernel tests
fail with an explanation instead of with obscure interpreter errors.
"""

import os
import sys

import pytest

_TRITON_PREIMPORTED = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
os.environ["TRITON_INTERPRET"] = "1"

sys.path.insert(0, os.path.dirname(__file__))  # for kernel_tolerances


@pytest.fixture(autouse=True)
def _triton_interpreter():
    if _TRITON_PREIMPORTED:
        pytest.fail("triton was imported before tests/kernels/conftest.py could set TRITON_INTERPRET=1; "
                    "set TRITON_INTERPRET=1 in the environment (or in tests/conftest.py before importing triton)")
    yield


@pytest.fixture(autouse=True)
def _seed():
    import torch
    torch.manual_seed(0)
    yield
