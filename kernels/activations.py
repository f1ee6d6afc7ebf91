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
selu, mish
leaky_relu      negative slope (torch default 0.01)      unused
elu             alpha (torch default 1.0)                unused
softplus        beta (torch default 1.0)                 threshold (torch default 20.0)
prelu           unused; ``slope`` is the weight tensor    unused
hardsigmoid     slope a (torch 1/6, ONNX 0.2)            offset c = b / a (torch 3.0, ONNX 2.5)
hardtanh        min_val (torch default -1.0)             max_val (torch default 1.0)
affine          scale (default 1.0)                      offset (default 0.0)
==============  =======================================  ==================================

``hardsigmoid`` is max(0, min(1, a * x + b)) (torch's F.hardsigmoid is a = 1/6, b = 1/2; ONNX's
HardSigmoid has both as attributes), computed as a * (x + c) with c = b / a given instead of b:
x + c is exact near the zero at x = -c, so results near 0 keep their relative accuracy (a * x + b
would cancel there, carrying the rounding of a(x) as an absolute error of |b| * 2^-24). Callers
with a = 0 use ``affine`` (a constant) instead.

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
    "softsign", "softplus", "gelu", "gelu_tanh", "silu", "hardswish", "hardsigmoid", "hardtanh", "mish", "affine",
)

# torch's defaults for the activations that take (alpha, beta) (affine's: the identity); the
# others ignore both.
ACT_DEFAULTS = {
    "leaky_relu": (0.01, 0.0),
    "elu": (1.0, 0.0),
    "softplus": (1.0, 20.0),
    "hardsigmoid": (1.0 / 6.0, 3.0),
    "hardtanh": (-1.0, 1.0),
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


# Accuracy. Every formula below keeps a few fp32 ulps of relative error over the whole range,
# tails included (tests/kernels/test_kernels_activation_accuracy.py), with whatever faithfully
# rounded exp2/log/division the target has: no difference of nearly equal numbers (1 - exp(-2|x|)
# near 0, 1 + erf(x) or 1 + tanh(x) far below 0, log(1 + tiny)), and no large argument whose
# rounding is multiplied by |x| inside an exp. On a GPU ``tl.exp(x)`` is ``ex2.approx(x * log2 e)``:
# the rounded product alone is an error of up to |x| * 2^-24 in the exponent (11 ulps at x = -40),
# hence :func:`_exp`.
#
# Compensated steps use explicit ``tl.fma`` for every error term, so a compiler contracting a
# mul and an add into an fma elsewhere can only make them more accurate.

# log2(e) and ln(2) as an fp32 head and the rest.
LOG2E_HI = tl.constexpr(1.4426950216293335)
LOG2E_LO = tl.constexpr(1.92596298909109e-08)
LN2 = tl.constexpr(0.6931471805599453)
# gelu_tanh's 2 * sqrt(2 / pi) and 0.044715, as fp32 head + rest.
GELU_K_HI = tl.constexpr(1.5957691669464111)
GELU_K_LO = tl.constexpr(-4.534068032135963e-08)
GELU_A_HI = tl.constexpr(0.044714998453855515)
GELU_A_LO = tl.constexpr(1.5461444832776117e-09)
# gelu: erfc(z) = exp(-z^2) * t * Q(t), t = 1 / (1 + z / 2); Q a degree-10 least-squares fit of
# erfc(z) exp(z^2) / t in relative error over 0 <= z <= 10.5 (fit error < 0.07 * 2^-24; beyond,
# gelu underflows fp32).
ERFC_Q = (0.282089528, 0.282228353, 0.245425706, 0.184163852, 0.0600963124, 0.0228838013,
          -0.00187872232, -0.310904501, 0.395785233, -0.196601289, 0.0367117306)
ERFC_Q0, ERFC_Q1, ERFC_Q2, ERFC_Q3 = (tl.constexpr(c) for c in ERFC_Q[:4])
ERFC_Q4, ERFC_Q5, ERFC_Q6, ERFC_Q7 = (tl.constexpr(c) for c in ERFC_Q[4:8])
ERFC_Q8, ERFC_Q9, ERFC_Q10 = (tl.constexpr(c) for c in ERFC_Q[8:])
INV_SQRT8 = tl.constexpr(0.3535533905932738)   # (1 / 2) / sqrt(2): t = 1 / (1 + |x| / sqrt(8))


@triton.jit
def _exp(x, x_lo):
    """exp(x + x_lo) for fp32 ``x`` and a small correction ``x_lo`` (a rounding error, or 0.0).

    2^y with y = x log2(e) carried as a head and an exact tail (an fma), the tail applied to
    first order: accurate to the exp2's own error for any |x|, where plain tl.exp is not.
    """
    y = x * LOG2E_HI
    y_lo = tl.fma(x, LOG2E_HI, -y) + (x * LOG2E_LO + x_lo * LOG2E_HI)
    y_lo = tl.where(tl.abs(y) < 256.0, y_lo, 0.0)    # y = +-inf or nan: no inf - inf in the tail
    p = tl.exp2(y)
    return tl.fma(p, y_lo * LN2, p)


@triton.jit
def _exp_finite(x, x_lo):
    """:func:`_exp` for finite ``x`` only (x = -inf gives nan): three fewer instructions, which keeps
    the heaviest GEMM epilogues (mish after gelu) free of spills."""
    y = x * LOG2E_HI
    y_lo = tl.fma(x, LOG2E_HI, -y) + (x * LOG2E_LO + x_lo * LOG2E_HI)
    p = tl.exp2(y)
    return tl.fma(p, y_lo * LN2, p)


@triton.jit
def _expm1(x, e):
    """exp(x) - 1, given ``e`` = exp(x). Near 0 the difference loses every bit of x, so for |x| < 1
    a Taylor polynomial (degree 11: truncation under 0.7 * 2^-24 relative); beyond, e - 1 scales
    e's relative error by e / |e - 1| <= 1.6."""
    p = tl.fma(x, 2.505210838544172e-08, 2.755731922398589e-07)    # 1/11!, 1/10!
    p = tl.fma(x, p, 2.755731922398589e-06)                         # 1/9!
    p = tl.fma(x, p, 2.48015873015873e-05)                          # 1/8!
    p = tl.fma(x, p, 0.0001984126984126984)                         # 1/7!
    p = tl.fma(x, p, 0.001388888888888889)                          # 1/6!
    p = tl.fma(x, p, 0.008333333333333333)                          # 1/5!
    p = tl.fma(x, p, 0.041666666666666664)                          # 1/4!
    p = tl.fma(x, p, 0.16666666666666666)                           # 1/3!
    p = tl.fma(x, p, 0.5)
    small = tl.fma(x * x, p, x)
    return tl.where(tl.abs(x) < 1.0, small, e - 1.0)


@triton.jit
def _log1p_unit(u):
    """log(1 + u) for 0 <= u <= 1 without a log: 2 atanh(s), s = u / (2 + u) <= 1/3, whose odd
    series (to s^15) converges fast; exact to a few ulps for u as small as it gets."""
    s = u / (2.0 + u)
    s2 = s * s
    p = tl.fma(s2, 0.06666666666666667, 0.07692307692307693)        # 1/15, 1/13
    p = tl.fma(s2, p, 0.09090909090909091)                           # 1/11
    p = tl.fma(s2, p, 0.1111111111111111)                            # 1/9
    p = tl.fma(s2, p, 0.14285714285714285)                           # 1/7
    p = tl.fma(s2, p, 0.2)
    p = tl.fma(s2, p, 0.3333333333333333)
    return 2.0 * tl.fma(s * s2, p, s)


@triton.jit
def _sigmoid(x):
    # exp of a non-positive number only: no overflow; e / (1 + e) keeps relative accuracy far below 0.
    e = _exp(-tl.abs(x), 0.0)
    p = 1.0 / (1.0 + e)
    return tl.where(x >= 0, p, e * p)


@triton.jit
def _tanh(x):
    # |x| < 0.55: the odd Taylor series to x^17 (truncation < 0.1 * 2^-24): (1 - e) / (1 + e) would
    # lose every bit near 0. Beyond: 1 - 2e / (1 + e), e = exp(-2|x|) <= 1/3, no cancellation.
    a = tl.abs(x)
    a2 = a * a
    p = tl.fma(a2, 0.0005900274409455859, -0.0014558343870513183)    # 6404582/10854718875, -929569/638512875
    p = tl.fma(a2, p, 0.003592128036572481)                           # 21844/6081075
    p = tl.fma(a2, p, -0.008863235529902197)                          # -1382/155925
    p = tl.fma(a2, p, 0.021869488536155203)                           # 62/2835
    p = tl.fma(a2, p, -0.05396825396825397)                           # -17/315
    p = tl.fma(a2, p, 0.13333333333333333)                            # 2/15
    p = tl.fma(a2, p, -0.3333333333333333)
    small = tl.fma(a * a2, p, a)
    e = _exp(-2.0 * a, 0.0)
    large = 1.0 - 2.0 * e / (1.0 + e)
    t = tl.where(a < 0.55, small, large)
    return tl.where(x >= 0, t, -t)


@triton.jit
def _softplus(x, beta, threshold):
    # log1p(exp(b*x)) / b = max(bx, 0) + log1p(exp(-|bx|)), exp of a non-positive number only; the
    # log1p keeps exp(bx) itself far below 0 (where log(1 + e) is 0). b*x is rounded, so its
    # rounding error goes into the exp; linear above the threshold exactly as torch does.
    bx = x * beta
    bx_lo = tl.fma(x, beta, -bx)
    e = _exp(-tl.abs(bx), tl.where(bx >= 0, -bx_lo, bx_lo))
    soft = (tl.maximum(bx, 0.0) + _log1p_unit(e)) * (1.0 / beta)
    return tl.where(bx > threshold, x, soft)


@triton.jit
def _elu(x, alpha):
    xn = tl.minimum(x, 0.0)
    return tl.where(x > 0, x, alpha * _expm1(xn, _exp(xn, 0.0)))


@triton.jit
def _gelu(x):
    # exact gelu: x * Phi(x) with Phi(x) = q for x < 0 and 1 - q for x >= 0, q = erfc(|x| / sqrt(2)) / 2
    # <= 1/2 from the fit above: neither 1 + erf(x / sqrt(2)) (which cancels for x << 0) nor a
    # rounded |x| / sqrt(2) (whose error is multiplied by x^2 in the tail): exp(-x^2 / 2) takes
    # x^2 as an exact head + tail. Known limit: plain tl.exp, not _exp (its compensation makes the
    # heaviest conv_transpose epilogue spill), so on a GPU the tail below x = -4 carries tl.exp's
    # argument rounding (up to 2.6e-6 relative where gelu underflows, x = -13).
    a = tl.minimum(tl.abs(x), 15.0)          # gelu(x) underflows fp32 below -14.9
    t = 1.0 / tl.fma(a, INV_SQRT8, 1.0)
    q = tl.fma(t, ERFC_Q10, ERFC_Q9)
    q = tl.fma(t, q, ERFC_Q8)
    q = tl.fma(t, q, ERFC_Q7)
    q = tl.fma(t, q, ERFC_Q6)
    q = tl.fma(t, q, ERFC_Q5)
    q = tl.fma(t, q, ERFC_Q4)
    q = tl.fma(t, q, ERFC_Q3)
    q = tl.fma(t, q, ERFC_Q2)
    q = tl.fma(t, q, ERFC_Q1)
    q = tl.fma(t, q, ERFC_Q0)
    a2 = a * a
    # x first: x * Phi(x) is a normal number down to x = -13.2, Phi(x) alone is not below -13.0.
    # Then exp(-(a2 + a2_lo) / 2) = exp(-a2 / 2) (1 - a2_lo / 2), a2_lo = a^2 - a2 exactly. (This
    # order, not the other, keeps the heaviest conv_transpose epilogues free of spills.)
    tail = tl.exp(-0.5 * a2) * (x * (0.5 * t * q))
    tail = tl.fma(tail, -0.5 * tl.fma(a, a, -a2), tail)
    return tl.where(x < 0, tail, x - tail)


@triton.jit
def _gelu_tanh(x):
    # 0.5 x (1 + tanh(v)) = x * sigmoid(2v), v = sqrt(2/pi) (x + 0.044715 x^3): 1 + tanh(v)
    # cancels for v << 0. sigmoid(2v) there is exp(2v), so 2v = K x (1 + A x^2) is carried as
    # head + tail (each rounding recovered by an fma) and the tail goes into the exp.
    x2 = x * x
    x2_lo = tl.fma(x, x, -x2)
    g = tl.fma(GELU_A_HI, x2, 1.0)                       # 1 + A x^2, >= 1
    g_lo = tl.fma(GELU_A_HI, x2, 1.0 - g) + (GELU_A_HI * x2_lo + GELU_A_LO * x2)
    u = x * g
    u_lo = tl.fma(x, g, -u) + x * g_lo
    v = GELU_K_HI * u
    v_lo = tl.fma(GELU_K_HI, u, -v) + (GELU_K_HI * u_lo + GELU_K_LO * u)
    v_lo = tl.where(tl.abs(v) < 1e30, v_lo, 0.0)         # |x| ~ 1e13 and beyond: inf - inf
    e = _exp(-tl.abs(v), tl.where(v >= 0, -v_lo, v_lo))  # exp(-|2v|)
    p = 1.0 / (1.0 + e)
    return x * tl.where(v >= 0, p, e * p)


@triton.jit
def _mish(x):
    # tanh(softplus(x)) = n / (n + 2) with n = e^x (e^x + 2): one exp, no cancellation, and no tanh
    # of a rounded softplus (far below 0 both are e^x, which softplus rounded to 0 there).
    # Above x = 20 the quotient is 1 in fp32, below -104 it is 0 (exp underflows): the clamp keeps
    # n and the exp's argument finite (mish(+-inf) = x * 1 or x * 0: inf, nan, as torch's).
    u = _exp_finite(tl.minimum(tl.maximum(x, -104.0), 20.0), 0.0)
    n = u * (u + 2.0)
    return x * (n / (n + 2.0))


@triton.jit
def _hardsigmoid(x, alpha, offset):
    # alpha * (x + offset), clamped to [0, 1]: x + offset is exact near the zero (Sterbenz), so the
    # product keeps its relative accuracy there; one more rounding than torch's (x + 3) / 6.
    return tl.minimum(tl.maximum((x + offset) * alpha, 0.0), 1.0)


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
        y = x * _hardsigmoid(x, 0.16666666666666666, 3.0)
    elif ACT == "hardsigmoid":
        y = _hardsigmoid(x, alpha, beta)
    elif ACT == "hardtanh":
        y = tl.minimum(tl.maximum(x, alpha), beta)
    elif ACT == "mish":
        y = _mish(x)
    elif ACT == "affine":
        y = tl.fma(x, alpha, beta)       # one rounding, also next to the zero at -beta / alpha
    else:
        tl.static_assert(False, "unknown activation")
    return y
