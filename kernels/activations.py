"""The one table of activations shared by every netdsl kernel.

Every kernel that ends in an activation (conv, matmul, norms, pointwise) calls
``apply_act(x, ACT, alpha, beta, slope)`` with ``ACT`` a ``tl.constexpr`` string, so
the branch is resolved at compile time and the activation costs nothing but its math.
All math is fp32: kernels upcast before calling and cast once when storing.

The meaning of each entry is exactly torch's (``torch.nn.functional``):

==============  =======================================  ==================================
name            alpha                                    beta
==============  =======================================  ==================================
none, relu,     unused                                   unused
relu6, sigmoid,
tanh, softsign,
gelu, gelu_tanh,
silu, hardswish,
hardsigmoid,
selu, mish
leaky_relu      negative slope (torch default 0.01)      unused
elu             alpha (torch default 1.0)                unused
softplus        beta (torch default 1.0)                 threshold (torch default 20.0)
prelu           unused; ``slope`` is the weight tensor    unused
affine          scale (default 1.0)                      offset (default 0.0)
==============  =======================================  ==================================

``affine`` (not a torch function) is y = alpha * x + beta: the language's tensor-with-number
arithmetic (``x * 0.125`` is alpha = 0.125, beta = 0; ``x + 1`` is alpha = 1, beta = 1;
``x - 1`` and ``x / 8`` likewise; a division becomes a product with the reciprocal, within
an ulp of torch's ``x / c``), fused into the producer's epilogue like any activation. Its
parameters have no useful zero: an ``Epilogue``'s alpha defaults to 0.0 for every
activation, so pass them (``ACT_DEFAULTS["affine"]`` is the identity).

``slope`` is only read by ``prelu``: an already-loaded fp32 tensor that broadcasts
against ``x`` (one value per channel, or a single shared value). Other activations
ignore it, so callers pass ``0.0``.

rrelu at inference is leaky_relu with ``alpha = (lower + upper) / 2``; the compiler maps
it, so it has no entry here. ``ACT_DEFAULTS`` lists torch's default (alpha, beta) for the
entries that take parameters, for callers and tests.
"""

import triton
import triton.language as tl

from ._host import KernelError

ACTIVATIONS = (
    "none", "relu", "relu6", "leaky_relu", "prelu", "elu", "selu", "sigmoid", "tanh",
    "softsign", "softplus", "gelu", "gelu_tanh", "silu", "hardswish", "hardsigmoid", "mish", "affine",
)

# torch's defaults for the activations that take (alpha, beta) (affine's: the identity); the
# others ignore both.
ACT_DEFAULTS = {
    "leaky_relu": (0.01, 0.0),
    "elu": (1.0, 0.0),
    "softplus": (1.0, 20.0),
    "affine": (1.0, 0.0),
}

# torch.nn.SELU's constants.
SELU_ALPHA = tl.constexpr(1.6732632423543772848170429916717)
SELU_SCALE = tl.constexpr(1.0507009873554804934193349852946)


def check_activation(name: str) -> str:
    """Host-side guard: raise a clear error for an unknown activation name."""
    if name not in ACTIVATIONS:
        raise KernelError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")
    return name


@triton.jit
def _sigmoid(x):
    # exp of a non-positive number only: no overflow for large |x|.
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _tanh(x):
    # tanh(|x|) = (1 - e) / (1 + e) with e = exp(-2|x|) <= 1, then restore the sign.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def _softplus(x, beta, threshold):
    # log1p(exp(b*x)) / b written as max(bx, 0) + log(1 + exp(-|bx|)) so exp never overflows;
    # linear above the threshold exactly as torch does.
    bx = x * beta
    soft = (tl.maximum(bx, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(bx)))) / beta
    return tl.where(bx > threshold, x, soft)


@triton.jit
def _elu(x, alpha):
    return tl.where(x > 0, x, alpha * (tl.exp(tl.minimum(x, 0.0)) - 1.0))


@triton.jit
def _gelu(x):
    # exact gelu: x * Phi(x), Phi through erf.
    return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))


@triton.jit
def _gelu_tanh(x):
    # tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    return 0.5 * x * (1.0 + _tanh(inner))


@triton.jit
def _hardsigmoid(x):
    return tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0


@triton.jit
def apply_act(x, ACT: tl.constexpr, alpha, beta, slope):
    """Apply activation ``ACT`` (a name from ACTIVATIONS) to the fp32 tensor ``x``.

    x     : fp32 tensor (any shape)
    ACT   : constexpr activation name; resolved at compile time
    alpha : fp32 scalar parameter (see the module docstring)
    beta  : fp32 scalar parameter (see the module docstring)
    slope : prelu weight, an fp32 tensor broadcastable to x (ignored otherwise)
    """
    if ACT == "none":
        y = x
    elif ACT == "relu":
        y = tl.maximum(x, 0.0)
    elif ACT == "relu6":
        y = tl.minimum(tl.maximum(x, 0.0), 6.0)
    elif ACT == "leaky_relu":
        y = tl.where(x > 0, x, x * alpha)
    elif ACT == "prelu":
        y = tl.where(x >= 0, x, x * slope)
    elif ACT == "elu":
        y = _elu(x, alpha)
    elif ACT == "selu":
        y = SELU_SCALE * _elu(x, SELU_ALPHA)
    elif ACT == "sigmoid":
        y = _sigmoid(x)
    elif ACT == "tanh":
        y = _tanh(x)
    elif ACT == "softsign":
        y = x / (1.0 + tl.abs(x))
    elif ACT == "softplus":
        y = _softplus(x, alpha, beta)
    elif ACT == "gelu":
        y = _gelu(x)
    elif ACT == "gelu_tanh":
        y = _gelu_tanh(x)
    elif ACT == "silu":
        y = x * _sigmoid(x)
    elif ACT == "hardswish":
        y = x * _hardsigmoid(x)
    elif ACT == "hardsigmoid":
        y = _hardsigmoid(x)
    elif ACT == "mish":
        y = x * _tanh(_softplus(x, 1.0, 20.0))
    elif ACT == "affine":
        y = x * alpha + beta
    else:
        tl.static_assert(False, "unknown activation")
    return y
