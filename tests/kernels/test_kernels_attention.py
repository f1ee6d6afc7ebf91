"""attention (FlashAttention-style forward) against torch's scaled_dot_product_attention on CPU."""

import pytest
import torch
import torch.nn.functional as F

import kernel_tolerances
from kernel_tolerances import DTYPE_IDS, DTYPES, rand


def assert_close(actual, expected, **kw):
    """The probabilities are rounded to the I/O dtype for the P @ V dot (as FlashAttention does): one stage."""
    kernel_tolerances.assert_close(actual, expected, stages=1, **kw)
from netdsl.kernels import _host
from netdsl.kernels import attention as attention_module
from netdsl.kernels.attention import attention

# The interpreter's query tile: masking, tail tiles and causal skipping below are sized from it.
BLOCK_M = attention_module.INTERPRET_CONFIG.kwargs["BLOCK_M"]
BLOCK_N = attention_module.INTERPRET_CONFIG.kwargs["BLOCK_N"]


def qkv(B, H, L, S, E, Ev=None, dtype=torch.float32):
    return rand(B, H, L, E, dtype=dtype), rand(B, H, S, E, dtype=dtype), rand(B, H, S, Ev or E, dtype=dtype)


def sdpa(q, k, v, mask=None, causal=False, scale=None):
    """The oracle: torch in fp32 on the same (rounded) values."""
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.float()
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal,
                                          scale=scale)


# (B, H, L, S, E, Ev): a single query and key, L and S not multiples of the tiles (L = 127 spans
# eight query tiles, S = 33 ends in a one-key tile), L < S and L > S, one head / batch 1, every
# head dim tier (80 runs padded to a 128 block), Ev != E.
SHAPES = {
    "L1-S1-E32": (1, 1, 1, 1, 32, 32),
    "L127-S33-E64": (1, 2, 127, 33, 64, 64),
    "L20-S45-E80": (2, 1, 20, 45, 80, 80),
    "L40-S23-E128": (1, 1, 40, 23, 128, 128),
    "E32-Ev48-batch2": (2, 3, 17, 29, 32, 48),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_sdpa(shape, dtype):
    B, H, L, S, E, Ev = SHAPES[shape]
    q, k, v = qkv(B, H, L, S, E, Ev, dtype)
    y = attention(q, k, v)
    assert y.dtype == dtype and y.shape == (B, H, L, Ev)
    assert_close(y, sdpa(q, k, v))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("L,S", [(37, 37), (40, 23), (19, 50)], ids=["L=S", "L>S", "L<S"])
def test_causal_is_top_left_aligned(L, S, dtype):
    q, k, v = qkv(1, 2, L, S, 64, dtype=dtype)
    assert_close(attention(q, k, v, causal=True), sdpa(q, k, v, causal=True))


def test_causal_never_reads_key_tiles_above_the_diagonal():
    """Keys past the last query tile's diagonal are skipped, not masked: NaNs there never reach the output."""
    L, S = 20, 70
    q, k, v = qkv(1, 1, L, S, 32)
    first_skipped = -(-L // BLOCK_M) * BLOCK_M             # no query of the last tile sees these keys
    k_nan, v_nan = k.clone(), v.clone()
    k_nan[..., first_skipped:, :] = float("nan")
    v_nan[..., first_skipped:, :] = float("nan")
    y = attention(q, k_nan, v_nan, causal=True)
    assert torch.isfinite(y).all()
    assert_close(y, sdpa(q, k, v, causal=True))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_key_padding_bool_mask(dtype):
    B, H, L, S = 2, 2, 21, 37
    q, k, v = qkv(B, H, L, S, 32, dtype=dtype)
    lengths = torch.tensor([37, 13])
    mask = (torch.arange(S)[None, :] < lengths[:, None])[:, None, None, :]     # [B, 1, 1, S]
    assert_close(attention(q, k, v, mask=mask), sdpa(q, k, v, mask))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_full_bool_mask_with_fully_masked_rows_gives_zeros(dtype):
    """A query row with no key left is all zeros, as torch 2.13 gives (not NaN)."""
    L, S = 23, 35
    q, k, v = qkv(2, 2, L, S, 64, dtype=dtype)
    mask = torch.rand(L, S) > 0.4
    mask[3] = False
    mask[L - 1] = False
    ref = sdpa(q, k, v, mask)
    assert (ref[..., 3, :] == 0).all()                        # the torch behaviour matched
    y = attention(q, k, v, mask=mask)
    assert_close(y, ref)
    assert (y[..., 3, :] == 0).all() and (y[..., L - 1, :] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_additive_mask(dtype):
    L, S = 18, 41
    q, k, v = qkv(1, 3, L, S, 32, dtype=dtype)
    mask = rand(L, S, dtype=dtype, scale=2.0)
    mask[:, 30:] = -1e4                                       # "large negative" padding
    mask[5, :] = float("-inf")                                # a fully masked row: zeros, as torch
    mask[7, 3] = float("-inf")
    y = attention(q, k, v, mask=mask)
    assert_close(y, sdpa(q, k, v, mask))
    assert (y[..., 5, :] == 0).all()


def test_mask_and_causal_combine_and_mask_strides():
    """A per-(batch, head) mask given as a transposed view (any strides), together with causal."""
    B, H, L, S = 2, 2, 25, 25
    q, k, v = qkv(B, H, L, S, 32)
    mask = (torch.rand(B, H, S, L) > 0.3).transpose(2, 3)     # [B, H, L, S], stride 1 along L
    assert mask.stride(-1) != 1
    causal = torch.ones(L, S, dtype=torch.bool).tril()
    assert_close(attention(q, k, v, mask=mask, causal=True), sdpa(q, k, v, mask & causal))
    add = rand(B, 1, L, 1, scale=3.0)                         # broadcast along heads and keys
    assert_close(attention(q, k, v, mask=add, causal=True), sdpa(q, k, v, add.expand(B, H, L, S).masked_fill(
        ~causal, float("-inf"))))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_scale(dtype):
    q, k, v = qkv(1, 2, 19, 26, 64, dtype=dtype)
    assert_close(attention(q, k, v, scale=0.3), sdpa(q, k, v, scale=0.3))
    assert_close(attention(q, k, v, scale=1.0, causal=True), sdpa(q, k, v, causal=True, scale=1.0))


def test_strided_inputs_broadcast_and_output_into_a_bigger_buffer():
    """q, k, v as views of a packed [B, L, 3, H, E] projection; k/v shared across the batch; the output
    written straight into a [B, L, H, Ev] slice of a wider buffer (the layout the next linear reads)."""
    B, H, L, E = 2, 3, 21, 32
    qkv_buf = rand(B, L, 3, H, E)
    q = qkv_buf[:, :, 0].transpose(1, 2)                      # [B, H, L, E], non-contiguous
    k = qkv_buf[:1, :, 1].transpose(1, 2).expand(B, H, L, E)  # batch stride 0
    v = qkv_buf[:1, :, 2].transpose(1, 2)                     # batch dim of size 1: broadcast
    buf = torch.full((B, L, H, E + 5), 7.0)
    out = buf[..., 2:2 + E].transpose(1, 2)                   # [B, H, L, E] with its own strides
    y = attention(q, k, v, out=out, causal=True)
    assert y is out
    assert_close(out, sdpa(q, k.contiguous(), v.expand(B, H, L, E).contiguous(), causal=True))
    assert (buf[..., :2] == 7.0).all() and (buf[..., 2 + E:] == 7.0).all()


def test_int64_offsets_compute_the_same():
    q, k, v = qkv(1, 2, 20, 19, 32, dtype=torch.float16)
    mask = torch.rand(20, 19) > 0.3
    out, launch = attention_module._plan_attention(q, k, v, mask, True, None, None, False, True)
    launch.constexprs["USE_INT64"] = True
    _host.run(launch)
    assert_close(out, sdpa(q, k, v, mask & torch.ones(20, 19, dtype=torch.bool).tril()))


def test_empty_and_keyless():
    q, k, v = qkv(1, 2, 0, 5, 16)
    assert attention(q, k, v).shape == (1, 2, 0, 16)
    q, k, v = qkv(1, 2, 3, 0, 16)
    y = attention(q, k, v)                                    # no key at all: zeros, as torch
    assert_close(y, sdpa(q, k, v))
    assert (y == 0).all()


def test_argument_errors():
    q, k, v = qkv(1, 2, 8, 9, 32)
    bad = [
        lambda: attention(q[0], k[0], v[0]),                                  # 3-D
        lambda: attention(q, k[..., :16], v),                                 # E mismatch
        lambda: attention(q, k, v[:, :, :5]),                                 # S mismatch
        lambda: attention(q, k.half(), v),                                    # dtypes differ
        lambda: attention(q.to(torch.int32), k, v),                           # not a float dtype
        lambda: attention(*qkv(1, 1, 4, 4, 160)),                             # head dim too wide
        lambda: attention(q, k, v, mask=torch.ones(8, 5, dtype=torch.bool)),  # mask does not broadcast
        lambda: attention(q, k, v, mask=torch.ones(8, 9, dtype=torch.int32)), # mask dtype
        lambda: attention(q, k, v, out=torch.empty(1, 2, 8, 31)),             # out shape
        lambda: attention(q.transpose(2, 3).contiguous().transpose(2, 3), k, v),  # head dim not contiguous
        lambda: attention(q.expand(2, 2, 8, 32), k.expand(3, 2, 9, 32), v),   # batch dims do not broadcast
        lambda: attention(q, k, v, scale=float("inf")),
    ]
    for fn in bad:
        with pytest.raises(_host.KernelError):
            fn()


def test_specialization_follows_the_tiers():
    spec = attention_module.specialization((2, 8, 1024, 80), torch.float16, causal=True, mask_shape=(2, 1, 1, 1024))
    c = spec["constexprs"]
    assert (c["BLOCK_E"], c["HEAD_DIM"], c["MASK_KIND"], c["MASK_2D"], c["CAUSAL"]) == (128, 80, 1, False, True)
    assert spec["signature"]["mask_ptr"] == "*u8"
    per_row = attention_module.specialization((2, 8, 64, 64), torch.bfloat16, mask_shape=(64, 64),
                                              mask_dtype=torch.bfloat16)
    assert per_row["constexprs"]["MASK_2D"] and per_row["constexprs"]["MASK_KIND"] == 2
    every = attention_module.specialization((2, 8, 1024, 128), torch.float32, config="all")
    assert every and all(s["constexprs"]["BLOCK_M"] * s["constexprs"]["BLOCK_N"] <= 32 * 32 for s in every)


def test_row_alignment_hints_are_proven_by_the_strides():
    """QKV_ALIGN tells the compiler every row starts at a multiple of it: it must divide every stride."""
    align = attention_module.row_alignment
    assert align(torch.empty(2, 3, 77, 40)) == 8                       # E = 40: 16-byte fp16 rows
    assert align(torch.empty(2, 3, 77, 36)) == 4
    assert align(torch.empty(2, 3, 77, 64)) == 16
    assert align(torch.empty(1, 1, 1, 37)) == 16                       # size-1 dims are never stepped
    assert align(torch.empty(2, 1, 1, 37)) == 1
    packed = torch.empty(2, 21, 3, 5, 40)                              # [B, L, 3, H, E] projection
    q = packed[:, :, 0].transpose(1, 2)
    assert align(q) == 8 and all(s % 8 == 0 for s in q.stride()[:-1])
    assert align(q, torch.empty(1, 1, 9, 33)) == 1                      # the weakest tensor decides
    assert align(torch.empty(3, 5, 16).transpose(1, 2)) == 1            # a stride of 1 in a leading dim
    assert align(torch.empty(1, 16).expand(4, 3, 16)) == 16             # broadcast (stride 0) dims
    spec = attention_module.specialization((2, 3, 77, 36), torch.float16, 93)
    assert spec["constexprs"]["QKV_ALIGN"] == 4
    _, launch = attention_module._plan_attention(*qkv(1, 1, 4, 4, 36, dtype=torch.float16), None, False, None,
                                                 None, False, False)
    assert attention_module.attention_tier({**launch.args, **launch.constexprs}) == "half-narrow"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_narrow_head_dims(dtype):
    q, k, v = qkv(1, 2, 22, 19, 36, 20, dtype)
    assert_close(attention(q, k, v, causal=True), sdpa(q, k, v, causal=True))
