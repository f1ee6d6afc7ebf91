"""Tolerances (written once) and small helpers shared by the kernel tests.

Every kernel runs on inputs already rounded to the I/O dtype; the oracle is torch in fp32 on
those same rounded values. So the only differences are fp32 summation order and the final
rounding of the output to its dtype, which these tolerances cover. A kernel that needs more
has a bug: do not loosen them.
"""

import torch
import torch.nn.functional as F

TOLERANCES = {
    torch.float32: dict(rtol=1e-4, atol=1e-4),   # exact-fp32 ("ieee") dots
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DTYPE_IDS = ("fp32", "fp16", "bf16")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype = None):
    """Compare a kernel result (any I/O dtype) with an fp32 oracle."""
    dtype = dtype or actual.dtype
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    torch.testing.assert_close(actual.float(), expected.float(), equal_nan=True, **TOLERANCES[dtype])


def rand(*shape, dtype=torch.float32, scale=1.0, offset=0.0) -> torch.Tensor:
    """Random values rounded to ``dtype`` (the oracle then uses exactly these values)."""
    return (torch.randn(*shape) * scale + offset).to(dtype)


def nchw(x_nhwc: torch.Tensor) -> torch.Tensor:
    return x_nhwc.float().permute(0, 3, 1, 2)


def nhwc(x_nchw: torch.Tensor) -> torch.Tensor:
    return x_nchw.permute(0, 2, 3, 1)


def channel_slice_buffer(shape, c0, c1, dtype, fill=7.0):
    """A bigger buffer [..., C + extra] filled with ``fill`` and its channel slice [..., c0:c1]."""
    *lead, _ = shape
    buf = torch.full((*lead, c1 + 3), fill, dtype=dtype)
    return buf, buf[..., c0:c1]


def assert_untouched(buf: torch.Tensor, c0: int, c1: int, fill=7.0):
    """Everything outside channels [c0, c1) of ``buf`` still holds ``fill``."""
    mask = torch.ones(buf.shape[-1], dtype=torch.bool)
    mask[c0:c1] = False
    assert bool((buf[..., mask].float() == fill).all()), "kernel wrote outside its channel slice"


# the torch meaning of each kernel activation: f(x, alpha, beta, slope), channels last
TORCH_ACTS = {
    "none": lambda t, a, b, s: t,
    "prelu": lambda t, a, b, s: F.prelu(t.movedim(-1, 1), s.float()).movedim(1, -1),
    "relu": lambda t, a, b, s: F.relu(t), "relu6": lambda t, a, b, s: F.relu6(t),
    "leaky_relu": lambda t, a, b, s: F.leaky_relu(t, a), "elu": lambda t, a, b, s: F.elu(t, a),
    "selu": lambda t, a, b, s: F.selu(t), "sigmoid": lambda t, a, b, s: torch.sigmoid(t),
    "tanh": lambda t, a, b, s: torch.tanh(t), "softsign": lambda t, a, b, s: F.softsign(t),
    "softplus": lambda t, a, b, s: F.softplus(t, beta=a, threshold=b), "gelu": lambda t, a, b, s: F.gelu(t),
    "gelu_tanh": lambda t, a, b, s: F.gelu(t, approximate="tanh"), "silu": lambda t, a, b, s: F.silu(t),
    "hardswish": lambda t, a, b, s: F.hardswish(t), "hardsigmoid": lambda t, a, b, s: F.hardsigmoid(t),
    "mish": lambda t, a, b, s: F.mish(t), "affine": lambda t, a, b, s: t * a + b,
}


def torch_act(name: str, x: torch.Tensor, alpha: float = 0.0, beta: float = 0.0, slope=None) -> torch.Tensor:
    """The oracle for activations.ACTIVATIONS, channels last (slope is per channel or shared)."""
    return TORCH_ACTS[name](x, alpha, beta, slope)


def act_params(name: str):
    """(alpha, beta) to test an activation with: torch's defaults, or non-trivial values."""
    return {"leaky_relu": (0.1, 0.0), "elu": (0.7, 0.0), "softplus": (1.5, 4.0), "affine": (-0.375, 1.25)}.get(
        name, (0.0, 0.0))
