"""The sequence layers, as in PyTorch: ``embedding`` (``F.embedding``: integer ids -> rows),
``positional_encoding`` (the sinusoidal table of "Attention Is All You Need", added) and
``scaled_dot_product_attention`` (alias ``sdpa``: ``F.scaled_dot_product_attention`` with boolean or
additive masks and causal attention). One registry entry each; vectorised NumPy references that compute in
the dtype of their float inputs.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import NetDSLError
from ..ir.dims import SymDim
from ..ir.graph import ParamSpec
from ..ir.printer import format_attr as _show
from ..ir.types import INTEGER_DTYPES, TensorType, numel
from .registry import Attr, OpDef, OpKind, ShapeError, register
from .tensor import _broadcast, _is_int

# ---------------------------------------------------------------------------------------------
# embedding
# ---------------------------------------------------------------------------------------------

def _padding_row(attrs) -> int | None:
    """``padding_idx`` checked (as nn.Embedding: -num <= padding_idx < num) and made non-negative."""
    p, num = attrs["padding_idx"], attrs["num_embeddings"]
    if p is None:
        return None
    if not -num <= p < num:
        raise ShapeError(f"`embedding` padding_idx={p} is out of range for num_embeddings={num}",
                         hint=f"padding_idx names a row of the table: {-num} <= padding_idx < {num}",
                         arg="padding_idx")
    return p % num


def _embedding_infer(types, attrs):
    (t,) = types
    _padding_row(attrs)
    if t.dtype not in INTEGER_DTYPES:
        raise ShapeError(f"`embedding` looks up integer ids, got {t}",
                         hint="declare the token ids as integers, e.g. `input ids: i64[N, T]`")
    return TensorType(tuple(t.shape) + (attrs["embedding_dim"],), "f32")


def _embedding_params(types, attrs):
    num, dim = attrs["num_embeddings"], attrs["embedding_dim"]
    # nn.Embedding: weight [num, dim] ~ N(0, 1), the padding_idx row zero (torch's fans: in = dim, out = num)
    pad = attrs["padding_idx"]
    return {"weight": ParamSpec((num, dim), "normal", fan_in=dim, fan_out=num,
                                zero_row=None if pad is None else pad % num)}


def embedding_reference(ids: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """F.embedding: row ``ids[...]`` of ``weight`` [num, dim] for every id; an id outside [0, num) is a
    NetDSLError. (``padding_idx`` changes only the initial table and training, not the lookup.)"""
    ids = np.asarray(ids)
    num = weight.shape[0]
    if not np.issubdtype(ids.dtype, np.integer):
        raise NetDSLError(f"`embedding` looks up integer ids, got an array of {ids.dtype}",
                          hint="pass the token ids as an integer array (e.g. `ids.astype(np.int64)`)")
    if ids.size:
        lo, hi = ids.min(), ids.max()
        if lo < 0 or hi >= num:
            bad = lo if lo < 0 else hi
            raise NetDSLError(f"`embedding` of id {bad}, outside the table's rows [0, {num})",
                              hint=f"ids index rows of the embedding table: 0 <= id < num_embeddings = {num}")
    return weight.take(ids, axis=0)


register(OpDef("embedding", OpKind.INJECTIVE, _embedding_infer,
               lambda xs, p, a: embedding_reference(xs[0], p["weight"]), lambda ins, out, a: 0,
               (Attr("num_embeddings", "int", positive=True, doc="rows of the table (the vocabulary size)"),
                Attr("embedding_dim", "int", positive=True, doc="the size of each embedding vector"),
                Attr("padding_idx", "int", None, doc="a row initialised to zero (as nn.Embedding)")),
               int_inputs=(0,), params=_embedding_params,
               doc="nn.Embedding: integer ids [...] -> rows of the table weight [num, dim], output [..., dim]"))


# ---------------------------------------------------------------------------------------------
# positional_encoding
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _table(length: int, d: int, dtype: str) -> np.ndarray:
    table = sinusoidal_table(length, d).astype(dtype)
    table.flags.writeable = False
    return table


def sinusoidal_table(length: int, d: int) -> np.ndarray:
    """The [length, d] table of "Attention Is All You Need" in float64 (``d`` even):
    PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(t / 10000^(2i/d))."""
    position = np.arange(length, dtype=np.float64)[:, None]
    angle = position * np.exp(np.arange(0, d, 2, dtype=np.float64) * (-math.log(10000.0) / d))
    table = np.empty((length, d), dtype=np.float64)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle)
    return table


def _pe_infer(types, attrs):
    (t,) = types
    if t.rank not in (2, 3):
        raise ShapeError(f"`positional_encoding` expects an input [N, T, D] (or [T, D]), got {t}")
    length, d = t.shape[-2], t.shape[-1]
    if isinstance(d, SymDim):
        raise ShapeError(f"`positional_encoding` needs a static model dim D, but it is `{d}`",
                         hint="give the last dimension a fixed size")
    if d % 2:
        raise ShapeError(f"`positional_encoding` of {t}: the model dim D={d} is odd",
                         hint="the sinusoidal table pairs a sin and a cos per frequency, so D must be even")
    if _is_int(length) and length > attrs["max_len"]:
        raise ShapeError(f"`positional_encoding` of {t}: {length} positions exceed max_len={attrs['max_len']}",
                         hint="raise max_len to the longest sequence", arg="max_len")
    if not 0.0 <= attrs["dropout"] <= 1.0:
        raise ShapeError(f"`positional_encoding` dropout={attrs['dropout']} is not a probability",
                         hint="0 <= dropout <= 1 (it is the identity at inference)", arg="dropout")
    return t


def positional_encoding_reference(x: np.ndarray, max_len: int = 5000) -> np.ndarray:
    """x [..., T, D] + the sinusoidal table's first T rows, in x's dtype (dropout: identity at inference)."""
    length, d = x.shape[-2:]
    if length > max_len:
        raise NetDSLError(f"`positional_encoding` of {length} positions, more than max_len={max_len}",
                          hint="raise max_len to the longest sequence")
    return x + _table(length, d, x.dtype.str)


register(OpDef("positional_encoding", OpKind.INJECTIVE, _pe_infer,
               lambda xs, p, a: positional_encoding_reference(xs[0], a["max_len"]),
               lambda ins, out, a: numel(out),
               (Attr("max_len", "int", 5000, positive=True, doc="the longest sequence (the table's length)"),
                Attr("dropout", "float", 0.0, doc="dropout after the sum (identity at inference)")),
               doc='x [N, T, D] + the sinusoidal positional encoding of "Attention Is All You Need" (no parameters)',
               pointwise=True))


# ---------------------------------------------------------------------------------------------
# scaled_dot_product_attention
# ---------------------------------------------------------------------------------------------

SDPA = "scaled_dot_product_attention"
SDPA_HINT = "q [..., L, E], k [..., S, E], v [..., S, Ev]: q and k share the head dim E, k and v the length S"


def _sdpa_infer(types, attrs):
    if len(types) not in (3, 4):
        raise ShapeError(f"`{SDPA}` takes 3 or 4 tensors (q, k, v and an optional mask), got {len(types)}",
                         hint="write `sdpa(q, k, v)` or `sdpa(q, k, v, mask)`")
    q, k, v = types[:3]
    for t, name in ((q, "q"), (k, "k"), (v, "v")):
        if t.rank < 2:
            raise ShapeError(f"`{SDPA}` expects {name} of rank >= 2 ([..., length, dim]), got {t}", hint=SDPA_HINT)
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"`{SDPA}`: q {q} and k {k} differ in the head dim E ({_show(q.shape[-1])} vs "
                         f"{_show(k.shape[-1])})", hint=SDPA_HINT)
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"`{SDPA}`: k {k} and v {v} differ in the length S ({_show(k.shape[-2])} vs "
                         f"{_show(v.shape[-2])})", hint=SDPA_HINT)
    batch = _broadcast([q.shape[:-2], k.shape[:-2], v.shape[:-2]], f"`{SDPA}` of q {q}, k {k} and v {v}",
                       "batch dims (all but the last two) must be equal or 1, e.g. q, k, v all [N, heads, ., .]")
    if len(types) == 4:
        mask = types[3]
        if attrs["causal"]:
            raise ShapeError(f"`{SDPA}` takes a mask or causal=true, not both",
                             hint="causal=true is the lower-triangular mask; fold it into your mask instead "
                                  "(as torch: an explicit attn_mask must not be set with is_causal)", arg="causal")
        if mask.dtype not in ("bool", q.dtype):
            raise ShapeError(f"`{SDPA}` mask must be boolean or of q's element type {q.dtype}, got {mask}")
        # q k^T: the batch dims of q and k only (as torch, which adds the mask to it in place)
        weights = _broadcast([q.shape[:-2], k.shape[:-2]], "", "") + (q.shape[-2], k.shape[-2])
        ok = 2 <= mask.rank <= len(weights) and all(m == 1 or m == w for m, w in zip(mask.shape[::-1], weights[::-1]))
        if not ok:
            raise ShapeError(f"`{SDPA}` mask {mask} does not broadcast to the attention weights "
                             f"[{', '.join(_show(d) for d in weights)}] ([..., L, S])",
                             hint="a mask has rank >= 2, e.g. [L, S] or [N, heads, L, S], each dim equal to the "
                                  "weights' or 1: boolean (true = may attend) or added to the scores (0 or -inf)")
    return q.with_shape(batch + (q.shape[-2], v.shape[-1]))


def sdpa_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
                   causal: bool = False, scale: float | None = None) -> np.ndarray:
    """F.scaled_dot_product_attention (no dropout): softmax(q k^T * scale + bias) v, with scale 1/sqrt(E)
    by default; a boolean mask keeps the scores where it is true (the others become -inf), a float mask is
    added; causal keeps key j <= query i (top-left aligned). The softmax subtracts each row's max, and a
    row with every score -inf gives zeros (torch's safe softmax). Computes in q's dtype."""
    dt = q.dtype
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = np.matmul(q, np.swapaxes(k, -1, -2))
    scores *= dt.type(s)
    neg_inf = dt.type(-np.inf)
    if causal:
        scores = np.where(np.tri(q.shape[-2], k.shape[-2], dtype=bool), scores, neg_inf)
    elif mask is not None:
        if mask.dtype == np.bool_:
            scores = np.where(mask, scores, neg_inf)
        else:
            scores = scores + mask.astype(dt, copy=False)
    top = scores.max(axis=-1, keepdims=True)
    top[top == neg_inf] = 0  # a fully masked row: exp(-inf - 0) = 0 everywhere, then zeros below
    p = np.exp(scores - top)
    total = p.sum(axis=-1, keepdims=True)
    total[total == 0] = 1
    p /= total
    return np.matmul(p, v)


def _sdpa_ref(xs, params, attrs):
    return sdpa_reference(xs[0], xs[1], xs[2], xs[3] if len(xs) == 4 else None, attrs["causal"], attrs["scale"])


def _sdpa_flops(ins, out, attrs):
    # per batch entry: q k^T (2 L S E), the softmax over [L, S] (scale, mask, max-subtract + exp, sum,
    # divide: 5 L S) and p v (2 L S Ev)
    q, k = ins[0], ins[1]
    length, s, e, ev = q[-2], k[-2], q[-1], out[-1]
    return numel(out[:-2]) * (2 * length * s * e + 5 * length * s + 2 * length * s * ev)


register(OpDef(SDPA, OpKind.REDUCE, _sdpa_infer, _sdpa_ref, _sdpa_flops,
               (Attr("causal", "bool", False, doc="attend only to keys j <= query i (top-left aligned)"),
                Attr("scale", "float", None, doc="multiplies q k^T; default 1/sqrt(E)")),
               arity=None,
               doc="F.scaled_dot_product_attention(q, k, v[, mask]): softmax(q k^T * scale + mask) v",
               axis=-1, strided_inputs=True, strided_output=True, bool_inputs=(3,)), aliases=("sdpa",))
