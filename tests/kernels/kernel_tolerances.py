"""The error bound of a kernel test, derived once, and small helpers shared by the kernel tests.

Every kernel runs on inputs already rounded to its I/O dtype; the oracle is torch in fp32 (or wider) on
those same values. A kernel accumulates in fp32 and rounds what it stores to nearest even (GPUs do; the
test harness makes the interpreter do it too: tests/conftest.py). So, element by element,

    |kernel - oracle| <= u * |oracle|                       the final rounding (u: the unit roundoff)
                       + stages * u * max|oracle|            each intermediate the kernel keeps in the
                                                             I/O dtype (attention's probabilities, a
                                                             recurrent layer's projected inputs)
                       + (2 k + 4) * 2^-24 * max|oracle|     fp32 summation order over a reduction of
                                                             length k, and a few fp32 ulps of exp/erf

Measured over every kernel test (fp16 and bf16), single-stage kernels (conv, matmul, norms, pooling,
softmax, pointwise) stay within the first term alone; the worst case needing stages is a 2-layer
bidirectional RNN at 0.7 u * max|oracle|. A truncating store (an error of up to 2u) or a half-precision
accumulator fails. fp32 kernels reach 204 * 2^-24 of max|oracle| (a groupnorm of inputs offset by
20 sigma: the mean's rounding, amplified by 1/sigma) against a bound of 516 * 2^-24 at the default k.
"""

import torch
import torch.nn.functional as F

# unit roundoff of each I/O dtype (half an ulp at 1): the relative error of one round-to-nearest
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DTYPE_IDS = ("fp32", "fp16", "bf16")
DEFAULT_K = 256  # the reduction length a test is assumed to have unless it says (its shapes are smaller)


def error_bound(expected: torch.Tensor, dtype: torch.dtype, k: int = DEFAULT_K, stages: int = 0) -> torch.Tensor:
    """The largest error allowed for each element of a kernel's result (see the module's docstring)."""
    u = UNIT_ROUNDOFF[dtype]
    ref = expected.double().abs()
    finite = torch.isfinite(ref)
    scale = float(ref[finite].max()) if finite.any() else 0.0
    return u * ref + (stages * u + (2 * k + 4) * 2.0**-24) * scale


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype = None, *,
                 k: int = DEFAULT_K, stages: int = 0):
    """Compare a kernel result (any I/O dtype) with an fp32 oracle, within ``error_bound``; NaN and inf
    must be where the oracle has them."""
    dtype = dtype or actual.dtype
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    got, ref = actual.double(), expected.double()
    same = (got == ref) | (torch.isnan(got) & torch.isnan(ref))
    finite = torch.isfinite(ref)
    assert bool((same | finite).all()), "NaN or inf where the oracle has another value"
    err = torch.where(finite, (got - ref).abs(), torch.zeros_like(ref))
    err = torch.where(torch.isnan(err), torch.full_like(err, float("inf")), err)
    bound = torch.where(finite, error_bound(expected, dtype, k, stages), torch.zeros_like(ref))
    if not bool((err <= bound).all()):
        i = int(torch.argmax(err - bound))
        u = UNIT_ROUNDOFF[dtype]
        scale = float(ref[finite].abs().max())
        raise AssertionError(
            f"{int((err > bound).sum())} of {err.numel()} elements beyond the bound ({dtype}, k={k}, "
            f"stages={stages}); worst at flat index {i}: got {got.reshape(-1)[i].item():.9g}, expected "
            f"{ref.reshape(-1)[i].item():.9g}, error {err.reshape(-1)[i].item():.3g} = "
            f"{err.reshape(-1)[i].item() / (u * max(scale, 1e-300)):.3f} u of max|expected| "
            f"(bound {bound.reshape(-1)[i].item():.3g})")


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
    "hardswish": lambda t, a, b, s: F.hardswish(t),
    "hardsigmoid": lambda t, a, b, s: torch.clamp(a * (t + b), 0.0, 1.0),  # (alpha, beta / alpha): F.hardsigmoid
    "hardtanh": lambda t, a, b, s: F.hardtanh(t, a, b),                     # at (1/6, 3)
    "mish": lambda t, a, b, s: F.mish(t), "affine": lambda t, a, b, s: t * a + b,
}


def torch_act(name: str, x: torch.Tensor, alpha: float = 0.0, beta: float = 0.0, slope=None) -> torch.Tensor:
    """The oracle for activations.ACTIVATIONS, channels last (slope is per channel or shared)."""
    return TORCH_ACTS[name](x, alpha, beta, slope)


def act_params(name: str):
    """(alpha, beta) to test an activation with: torch's defaults, or non-trivial values."""
    return {"leaky_relu": (0.1, 0.0), "elu": (0.7, 0.0), "softplus": (1.5, 4.0), "affine": (-0.375, 1.25),
            "hardsigmoid": (0.2, 2.5), "hardtanh": (-2.5, 0.75)}.get(
        name, (0.0, 0.0))
