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
