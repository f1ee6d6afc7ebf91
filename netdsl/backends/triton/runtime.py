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
        if not has_gpu and not os.environ.get("NETDSL_QUIET_INTERPRETER"):
            warnings.warn("netdsl: no CUDA GPU; Triton kernels run in Triton's CPU interpreter "
                          "(correct but very slow: for checking, not for speed)", stacklevel=3)
    return _MODE


def device() -> str:
    return "cuda" if select_mode() == "cuda" else "cpu"
