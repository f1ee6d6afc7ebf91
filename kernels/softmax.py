"""Row-wise softmax and log-softmax over the last dimension.

Numerically stable: every exponent is ``x - max(row)`` <= 0. One program per row.

* Rows that fit in one block (C <= MAX_BLOCK_C) are read once into registers: max, exp,
  sum and the normalised write all come from that read, so the kernel moves exactly one
  read and one write of the row, as the fused-softmax tutorial does.
* Longer rows use the online softmax: a first streaming pass keeps a running maximum m
  and a running sum d of exp(x - m), rescaling d by exp(m_old - m_new) when the maximum
  grows; a second pass writes exp(x - m) / d (or x - m - log d). That is two reads and one
  write of the row, with no limit on its length.

A row of all -inf gives NaN, as in torch. Statistics are fp32; the output has the output
tensor's dtype.
"""

import triton
import triton.language as tl

from ._host import Launch, interpreting, meta_tensor, needs_int64, rows_in_out, run, spec_of

# Rows up to MAX_BLOCK_C elements are held in registers; longer rows stream in CHUNK_C chunks.
MAX_BLOCK_C, CHUNK_C = 8192, 4096
INTERPRET_MAX_BLOCK_C, INTERPRET_CHUNK_C = 32, 16


@triton.jit
def softmax_kernel(
    x_ptr, x_stride,                # input rows [M, C], channel stride 1
    out_ptr, out_stride,            # output rows [M, C]
    C,                              # row length
    LOG: tl.constexpr,              # log_softmax instead of softmax
    SINGLE_BLOCK: tl.constexpr,     # the whole row fits in BLOCK_C
    USE_INT64: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    row = tl.program_id(0)
    if USE_INT64:
        row = row.to(tl.int64)
    x_row = x_ptr + row * x_stride
    out_row = out_ptr + row * out_stride
    offs = tl.arange(0, BLOCK_C)
    if SINGLE_BLOCK:
        mask = offs < C
        # the one read of the row: C elements.
        x = tl.load(x_row + offs, mask=mask, other=float("-inf")).to(tl.float32)
        m = tl.max(x, axis=0)
        e = tl.exp(x - m)
        d = tl.sum(tl.where(mask, e, 0.0), axis=0)
        if LOG:
            y = x - m - tl.log(d)
        else:
            y = e / d
        # the one write: C elements.
        tl.store(out_row + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        # pass 1 (reads C): running max m and running sum d of exp(x - m).
        m = tl.full((), float("-inf"), dtype=tl.float32)
        d = tl.zeros((), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + offs
            x = tl.load(x_row + cols, mask=cols < C, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, axis=0))
            # while everything so far is -inf, use 0 as the reference: exp(-inf) = 0, no NaN.
            ref = tl.where(m_new == float("-inf"), 0.0, m_new)
            d = d * tl.exp(m - ref) + tl.sum(tl.exp(x - ref), axis=0)
            m = m_new
        # pass 2 (reads C, writes C).
        log_d = tl.log(d)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + offs
            mask = cols < C
            x = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
            if LOG:
                y = x - m - log_d
            else:
                y = tl.exp(x - m) / d
            tl.store(out_row + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def softmax_config(C: int, interpret: bool) -> triton.Config:
    max_block, chunk = (INTERPRET_MAX_BLOCK_C, INTERPRET_CHUNK_C) if interpret else (MAX_BLOCK_C, CHUNK_C)
    single = C <= max_block
    block_c = triton.next_power_of_2(max(C, 1)) if single else chunk
    num_warps = 4 if block_c <= 2048 else (8 if block_c <= 4096 else 16)
    return triton.Config({"SINGLE_BLOCK": single, "BLOCK_C": block_c}, num_warps=num_warps, num_stages=1)


def _plan_softmax(x, log, out, interpret):
    out, M, C, x_stride, out_stride = rows_in_out(x, out)
    args = dict(x_ptr=x, x_stride=x_stride, out_ptr=out, out_stride=out_stride, C=C)
    constexprs = dict(LOG=log, USE_INT64=needs_int64(x, out))
    return out, Launch(softmax_kernel, None, args, constexprs, lambda meta: (M,), softmax_config(C, interpret))


def softmax(x, *, out=None):
    """softmax over the last dim of x ([M, C] or [..., C], channel stride 1)."""
    out, launch = _plan_softmax(x, False, out, interpreting())
    run(launch)
    return out


def log_softmax(x, *, out=None):
    """log_softmax over the last dim of x ([M, C] or [..., C], channel stride 1)."""
    out, launch = _plan_softmax(x, True, out, interpreting())
    run(launch)
    return out


def specialization(x_shape, dtype, *, log=False) -> dict:
    """AOT specialization of :func:`softmax` / :func:`log_softmax` for a contiguous x."""
    _, launch = _plan_softmax(meta_tensor(x_shape, dtype), log, None, False)
    return spec_of(launch)
