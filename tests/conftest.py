"""Test session set-up.

Triton decides interpret-or-compile when a kernel is decorated, so the interpreter must be chosen
before anything imports triton: this whole test session runs kernels under TRITON_INTERPRET=1 on
CPU tensors. Ahead-of-time GPU builds run in worker subprocesses (see netdsl.kernels.aot).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
