"""The Triton backend: each fused node of the IR lowers to one Triton kernel launch.

Importing this package fixes, for the process, whether kernels are compiled (a CUDA GPU is present)
or run in Triton's interpreter (no GPU: correct but slow, for checking); see ``runtime``.
"""

from .runtime import device, select_mode

select_mode()  # before anything below imports triton

from .lower import LOWERINGS, TORCH_DTYPES  # noqa: E402
from .module import TritonModule  # noqa: E402

__all__ = ["TritonModule", "LOWERINGS", "TORCH_DTYPES", "select_mode", "device"]
