"""Embedding lookup: out[i, :] = weight[ids[i], :], torch.nn.functional.embedding's forward.

A gather, bandwidth bound: each program copies a BLOCK_R x BLOCK_D tile, BLOCK_R looked-up
rows by BLOCK_D channels. Every selected weight row is read once and every output row is
written once, each a contiguous run along D (16-byte vectors when the row strides allow);
the ids are read once per column block (BLOCK_R of them, a tiny fraction of the traffic).
A repeated id is read repeatedly, mostly from L2.

Ids outside [0, V) (the contract): they never cause an out-of-bounds read. The kernel masks
their load, writes a row of zeros for them, and, when counting is on, adds the number of
such ids to an int32 counter on the device (one atomic per program that saw any). The
wrapper either reads the counter back after the launch and raises :class:`KernelError`
naming how many ids were bad (``check_ids=True``, the default: torch raises on such ids
too; this costs a host synchronisation), or leaves a caller-owned counter (``bad_ids``) for
the caller to check whenever it likes (no synchronisation, and one counter can accumulate
over many launches). With neither, bad ids silently give zero rows.
"""

import torch
import triton
import triton.language as tl

from ._host import (INT32_MAX, KernelError, Launch, check_io_dtype, check_writable_rows, interpreting, meta_tensor,
                    needs_int64, run, spec_of)

# A tile of about TILE_ELEMS elements, at most MAX_BLOCK_D channels wide (one contiguous run per
# row); under the interpreter small tiles, so that row and channel masking are exercised.
TILE_ELEMS, MAX_BLOCK_D, NUM_WARPS = 4096, 256, 4
INTERPRET_TILE_ELEMS, INTERPRET_MAX_BLOCK_D = 64, 16


@triton.jit
def embedding_kernel(
    ids_ptr,                    # [N] int32 or int64 ids, contiguous
    w_ptr, w_stride,            # weight [V, D], row stride (channel stride 1)
    out_ptr, out_stride,        # output rows [N, D], row stride (channel stride 1)
    bad_ptr,                    # *i32 [1]: ids outside [0, V) are added here (iff COUNT_BAD)
    N, V, D,                    # ids, vocabulary size, embedding dim
    COUNT_BAD: tl.constexpr,    # count the bad ids
    USE_INT64: tl.constexpr,    # 64-bit offsets
    BLOCK_R: tl.constexpr,      # ids (output rows) per program
    BLOCK_D: tl.constexpr,      # channels per program
):
    pid_r = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    in_rows = rows < N
    in_cols = cols < D
    if USE_INT64:
        rows = rows.to(tl.int64)

    # BLOCK_R ids; a bad id is replaced by row 0 and its load masked off: no out-of-bounds address.
    ids = tl.load(ids_ptr + rows, mask=in_rows, other=0)
    good = (ids >= 0) & (ids < V)
    src = tl.where(good, ids, 0)
    if USE_INT64:
        src = src.to(tl.int64)
    else:
        src = src.to(tl.int32)
    # the gather: BLOCK_R weight rows, BLOCK_D contiguous channels each; zeros for bad ids.
    vals = tl.load(w_ptr + (src[:, None] * w_stride + cols[None, :]), mask=(good & in_rows)[:, None] & in_cols[None, :],
                   other=0.0)
    tl.store(out_ptr + (rows[:, None] * out_stride + cols[None, :]), vals.to(out_ptr.dtype.element_ty),
             mask=in_rows[:, None] & in_cols[None, :])
    if COUNT_BAD:
        # counted once per row block (by its first column block), with one atomic if any.
        n_bad = tl.sum((in_rows & (good == 0)).to(tl.int32), axis=0)
        tl.atomic_add(bad_ptr, n_bad, mask=(pid_d == 0) & (n_bad > 0))


def tile_config(D: int, interpret: bool) -> triton.Config:
    """(BLOCK_R, BLOCK_D) for an embedding dim D: full channel runs, about TILE_ELEMS elements."""
    tile, max_d = (INTERPRET_TILE_ELEMS, INTERPRET_MAX_BLOCK_D) if interpret else (TILE_ELEMS, MAX_BLOCK_D)
    block_d = min(triton.next_power_of_2(max(D, 1)), max_d)
    return triton.Config({"BLOCK_R": max(tile // block_d, 1), "BLOCK_D": block_d}, num_warps=NUM_WARPS,
                         num_stages=1)


def _plan_embedding(ids, weight, out, counter, interpret):
    if ids.dtype not in (torch.int32, torch.int64):
        raise KernelError(f"ids: dtype {ids.dtype} is not int32 or int64")
    if not ids.is_contiguous():
        raise KernelError("ids must be contiguous")
    check_io_dtype(weight, "weight")
    if weight.dim() != 2:
        raise KernelError(f"weight must be [V, D], got shape {tuple(weight.shape)}")
    V, D = weight.shape
    if D > 1 and weight.stride(1) != 1:
        raise KernelError(f"weight: the embedding (last) dim must have stride 1, got strides {tuple(weight.stride())}")
    if V > INT32_MAX:
        raise KernelError(f"weight has {V} rows; at most {INT32_MAX} are supported")
    shape = (*ids.shape, D)
    if out is None:
        out = torch.empty(shape, dtype=weight.dtype, device=weight.device)
    check_io_dtype(out, "out")
    if tuple(out.shape) != shape:
        raise KernelError(f"out shape {tuple(out.shape)} != {shape}")
    N, _, out_stride = check_writable_rows(out, "out")
    if counter is not None and (counter.dtype != torch.int32 or counter.numel() != 1):
        raise KernelError(f"bad_ids must be a one-element int32 tensor, got {counter.dtype} {tuple(counter.shape)}")
    args = dict(ids_ptr=ids, w_ptr=weight, w_stride=weight.stride(0), out_ptr=out, out_stride=out_stride,
                bad_ptr=counter if counter is not None else ids, N=N, V=V, D=D)
    constexprs = dict(COUNT_BAD=counter is not None, USE_INT64=needs_int64(ids, weight, out))
    cfg = tile_config(D, interpret)
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_R"]), triton.cdiv(D, meta["BLOCK_D"]))
    launch = Launch(embedding_kernel, None, args, constexprs, grid, cfg)
    return out, (launch if N > 0 and D > 0 else None)


def embedding(ids, weight, *, out=None, check_ids=True, bad_ids=None):
    """out[..., :] = weight[ids[...], :]; returns ``out`` ([*ids.shape, D]).

    ids       : int32 or int64 ids of any shape, contiguous
    weight    : [V, D] fp32/fp16/bf16, channel stride 1 (any row stride)
    out       : optional [*ids.shape, D] output (channel stride 1, one uniform row stride: may be a
                channel slice of a bigger buffer; any I/O dtype); weight's dtype when allocated
    check_ids : after the launch, read the bad-id count back (a host sync) and raise KernelError if
                it is nonzero. ``out`` is written first (zero rows for the bad ids).
    bad_ids   : optional one-element int32 tensor on ids' device: the kernel adds the number of ids
                outside [0, V) to it (no sync). With ``check_ids`` it is the counter checked (so a
                count left from earlier launches raises too); without, a fresh one is used.

    Ids outside [0, V) are never read from: their output rows are zeros.
    """
    counter = bad_ids
    if counter is None and check_ids:
        counter = torch.zeros(1, dtype=torch.int32, device=ids.device)
    out, launch = _plan_embedding(ids, weight, out, counter, interpreting())
    if launch is None:
        return out
    run(launch)
    if check_ids and counter.device.type != "meta":
        bad = int(counter.item())
        if bad:
            raise KernelError(f"embedding: {bad} id(s) outside [0, {weight.shape[0]}) "
                              f"(their output rows were written as zeros)")
    return out


def specialization(ids_shape, ids_dtype, num_embeddings, dim, dtype, *, count_bad=True) -> dict:
    """AOT specialization of :func:`embedding` for contiguous ids of ``ids_shape`` and a [V, D] weight."""
    counter = meta_tensor((1,), torch.int32) if count_bad else None
    _, launch = _plan_embedding(meta_tensor(ids_shape, ids_dtype), meta_tensor((num_embeddings, dim), dtype), None,
                                counter, False)
    return spec_of(launch)
