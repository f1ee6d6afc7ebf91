"""Host-side plumbing shared by the kernel wrappers.

Every wrapper is split in two: a ``_plan_*`` function that checks shapes, allocates the
output and returns a :class:`Launch` (runtime arguments, host-decided constexprs, grid,
fixed config), and :func:`run`, which launches it. The same ``_plan_*`` function runs on
``device="meta"`` tensors to produce the ahead-of-time specialization of a kernel
(:func:`spec_of`), so the launch on a GPU and the AOT build can never disagree on a
constexpr or an argument type.

A caller that runs the same launches again and again (a compiled model, for one input
shape) lists them once with :func:`capturing` and repeats each with :func:`prepare`: the
grid, the config (the autotuner's pick on a GPU) and the arguments fixed, no checks and no
autotuner key on the way. :func:`recording` (launches listed, not run) holds for those too.

Layout convention: activations are channels-last. A 4-D tensor is [N, H, W, C] and a
2-D tensor is [M, C]; in both the channel stride is 1 and every "row" (pixel) starts
``row_stride`` elements after the previous one. That lets a kernel read from or write
into a channel slice ``buf[..., c0:c1]`` of a bigger buffer (concat without a copy).

Every argument check of a wrapper raises :class:`KernelError`, the one error type callers
(the compiler) catch at their boundary to report a mistake without a traceback.
"""

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import triton
from torch.utils._python_dispatch import _disable_current_modes

INT32_MAX = 2**31 - 1

class KernelError(ValueError, TypeError):
    """A kernel wrapper rejected its arguments: shape, layout, dtype or an unsupported option.

    Subclasses ValueError (shape and option checks) and TypeError (dtype checks), so code
    written against either keeps working; new code catches KernelError.
    """


# I/O dtypes every kernel accepts and their names in Triton signatures.
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


# Integer element types of index and mask tensors (ids, boolean masks viewed as uint8, counters).
INT_TYPE_NAMES = {torch.int32: "i32", torch.int64: "i64", torch.uint8: "u8", torch.int8: "i8"}


# While recording (see :func:`recording`), launches are collected instead of run, and planned
# as on a GPU, whatever this process's interpret mode: that is how a compiler lists the exact
# kernel specializations a whole model needs (running it on "meta" tensors) for an AOT build.
_RECORDED: Optional[list] = None


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    if _RECORDED is not None:
        return False
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def recording():
    """Collect every Launch the wrappers plan (GPU configs) instead of running it; yields the list."""
    global _RECORDED
    saved, _RECORDED = _RECORDED, []
    try:
        yield _RECORDED
    finally:
        _RECORDED = saved


def recording_now() -> bool:
    """Whether launches are being recorded (see :func:`recording`) rather than run."""
    return _RECORDED is not None


def check_io_dtype(t: torch.Tensor, name: str) -> None:
    if t.dtype not in DTYPE_NAMES:
        raise KernelError(f"{name}: dtype {t.dtype} is not one of fp32, fp16, bf16")


def max_offset(t: Optional[torch.Tensor]) -> int:
    """Largest element offset (from data_ptr) that a kernel can touch in view ``t``."""
    if t is None or t.numel() == 0:
        return 0
    return sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))


def needs_int64(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether any offset into these views can exceed int32 (then kernels use int64 math)."""
    return any(max_offset(t) > INT32_MAX for t in tensors)


def rows_of(t: torch.Tensor, name: str) -> tuple[int, int, int]:
    """View ``t`` ([..., C], channel stride 1) as [M, C] rows; return (M, C, row_stride).

    Raises if the leading dimensions are not uniformly strided (then no single row stride
    exists). Channel slices of contiguous buffers always qualify.
    """
    if t.dim() < 1:
        raise KernelError(f"{name}: expected at least 1 dimension, got a scalar")
    C = t.shape[-1]
    if C > 1 and t.stride(-1) != 1:
        raise KernelError(f"{name}: the channel (last) dimension must have stride 1, got {t.stride()}")
    lead = [(s, st) for s, st in zip(t.shape[:-1], t.stride()[:-1]) if s != 1]
    M = 1
    for s, _ in lead:
        M *= s
    if not lead:
        return M, C, C
    row_stride = lead[-1][1]
    for (s_outer, st_outer), (s_inner, st_inner) in zip(lead[:-1], lead[1:]):
        if st_outer != st_inner * s_inner:
            raise KernelError(f"{name}: leading dims {tuple(t.shape[:-1])} with strides "
                              f"{tuple(t.stride()[:-1])} are not one uniform row stride")
    return M, C, row_stride


def check_writable_rows(t: torch.Tensor, name: str) -> tuple[int, int, int]:
    """rows_of for an output: rows must not overlap."""
    M, C, row_stride = rows_of(t, name)
    if M > 1 and row_stride < C:
        raise KernelError(f"{name}: rows overlap (row stride {row_stride} < {C} channels)")
    return M, C, row_stride


def rows_in_out(x: torch.Tensor, out: Optional[torch.Tensor]):
    """Check x and an output of x's shape (allocated when None) for a row kernel.

    Returns (out, M, C, x_row_stride, out_row_stride)."""
    check_io_dtype(x, "x")
    M, C, x_stride = rows_of(x, "x")
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    check_io_dtype(out, "out")
    if tuple(out.shape) != tuple(x.shape):
        raise KernelError(f"out shape {tuple(out.shape)} != x shape {tuple(x.shape)}")
    _, _, out_stride = check_writable_rows(out, "out")
    return out, M, C, x_stride, out_stride


def type_name(value) -> str:
    """The Triton signature string the JIT gives this runtime argument."""
    if isinstance(value, torch.Tensor):
        return "*" + DTYPE_NAMES.get(value.dtype, INT_TYPE_NAMES.get(value.dtype))
    if isinstance(value, bool):
        return "u1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value <= INT32_MAX else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton signature type for {type(value).__name__}")


def aligned16(value) -> bool:
    """The JIT's divisibility specialization: pointers 16-byte aligned, ints multiple of 16."""
    if isinstance(value, torch.Tensor):
        if value.device.type == "meta":   # planned from shapes: assume a fresh allocation
            return value.storage_offset() * value.element_size() % 16 == 0
        return value.data_ptr() % 16 == 0
    return isinstance(value, int) and not isinstance(value, bool) and value % 16 == 0


@dataclass
class Launch:
    """Everything needed to launch one kernel; produced by a wrapper's ``_plan_*``."""
    kernel: object                      # the @triton.jit function
    tuned: object                       # triton.autotune wrapper of the same function, or None
    args: dict                          # runtime arguments by name (tensors, ints, floats)
    constexprs: dict                    # constexprs decided by the host (not by autotuning)
    grid: Callable[[dict], tuple]       # meta-parameters -> launch grid
    config: triton.Config               # used under the interpreter and when tuned is None
    configs: tuple = ()                 # the autotuning configs (for AOT builds of each)


# While capturing (see :func:`capturing`), every launch :func:`run` makes is also listed, with
# the config it ran with, so that a caller can repeat it later without planning it again.
_CAPTURED: Optional[list] = None


@contextlib.contextmanager
def capturing():
    """List every launch :func:`run` makes (as ``(launch, config, tuned)``) while it still runs them.

    ``config`` is the one the launch ran with: the fixed config, or the autotuner's pick
    (known only once it has run). Launches run outside any torch dispatch mode the caller set,
    so that a caller watching its own torch ops does not see the interpreter's.
    """
    global _CAPTURED
    saved, _CAPTURED = _CAPTURED, []
    try:
        yield _CAPTURED
    finally:
        _CAPTURED = saved


def autotuned(kernel, configs, **kwargs):
    """Triton's autotuner of ``kernel`` over ``configs``, its choice kept on disk (Triton's cache,
    ``TRITON_CACHE_DIR``) per GPU architecture, kernel source and tuning key, so a model autotunes once
    per machine and shape, not once per process."""
    return triton.autotune(configs, cache_results=True, **kwargs)(kernel)


def run(launch: Launch) -> None:
    """Launch: the fixed config under the interpreter (or when not tuned), else autotune."""
    if _RECORDED is not None:
        _RECORDED.append(launch)
        if _CAPTURED is not None:
            _CAPTURED.append((launch, launch.config, False))
        return
    if _CAPTURED is None:
        _launch(launch)
        return
    with _disable_current_modes():
        tuned = _launch(launch)
    _CAPTURED.append((launch, launch.tuned.best_config if tuned else launch.config, tuned))


def _launch(launch: Launch) -> bool:
    """Run ``launch``; True when the autotuner chose its config."""
    if launch.tuned is None or interpreting():
        cfg = launch.config
        meta = {**launch.constexprs, **cfg.kwargs}
        launch.kernel[launch.grid(meta)](**launch.args, **meta, num_warps=cfg.num_warps,
                                         num_stages=cfg.num_stages)
        return False
    launch.tuned[launch.grid](**launch.args, **launch.constexprs)
    return True


def prepare(launch: Launch, config: triton.Config, tuned: bool) -> Callable[[], None]:
    """A call that repeats ``launch`` with ``config``: the grid computed and the arguments merged
    once, the autotuner (its key) and the wrapper's checks skipped. Under :func:`recording` it
    records the launch instead, as :func:`run` does. ``tuned``: the autotuner picked ``config``
    (then it is passed as the autotuner passes it)."""
    meta = {**launch.constexprs, **config.kwargs}
    launcher = launch.kernel[launch.grid(meta)]
    options = config.all_kwargs() if tuned else {**config.kwargs, "num_warps": config.num_warps,
                                                   "num_stages": config.num_stages}
    kwargs = {**launch.args, **launch.constexprs, **options}

    def call() -> None:
        if _RECORDED is not None:
            _RECORDED.append(launch)
            return
        launcher(**kwargs)

    return call


def spec_of(launch: Launch, config=None) -> dict:
    """The AOT specialization of ``launch`` under ``config``.

    ``config``: None (the GPU default: the first autotuning config, or the fixed config of
    an untuned kernel), an index into the autotuning configs, a triton.Config, or "all"
    (a list: one spec per config the autotuner may pick for these arguments).

    Returns {"module", "kernel", "signature", "constexprs", "divisible_by_16", "num_warps",
    "num_stages"}, the inputs of ``aot.build``/``aot.build_many``. It mirrors what the JIT
    would compile for these arguments: integer arguments equal to 1 become constexprs and
    16-aligned pointers / multiples of 16 get the divisibility hint.
    """
    if isinstance(config, str) and config == "all":
        return [spec_of(launch, c) for c in (launch.configs or (launch.config,))]
    if config is None:
        config = launch.config if launch.tuned is None else launch.configs[0]
    elif isinstance(config, int):
        config = (launch.configs or (launch.config,))[config]
    fn = launch.kernel.fn
    constexprs = {**launch.constexprs, **config.kwargs}
    signature, divisible = {}, []
    for name in launch.kernel.arg_names:
        if name in launch.args:
            value = launch.args[name]
            if isinstance(value, int) and not isinstance(value, bool) and value == 1:
                signature[name] = "constexpr"
                constexprs[name] = 1
                continue
            signature[name] = type_name(value)
            if aligned16(value):
                divisible.append(name)
        elif name in constexprs:
            signature[name] = "constexpr"
        else:
            raise KeyError(f"{fn.__name__}: argument {name!r} is neither a runtime arg nor a constexpr")
    return {
        "module": fn.__module__,
        "kernel": fn.__name__,
        "signature": signature,
        "constexprs": constexprs,
        "divisible_by_16": divisible,
        "num_warps": config.num_warps,
        "num_stages": config.num_stages,
    }


def meta_tensor(shape, dtype) -> torch.Tensor:
    """A storage-less tensor used to plan launches for AOT builds."""
    return torch.empty(tuple(shape), dtype=dtype, device="meta")
