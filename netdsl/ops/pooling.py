"""Pooling: ``maxpool2d``, ``avgpool2d``, ``global_avgpool``, ``global_maxpool`` and ``adaptive_avgpool2d``,
as torch and ONNX define them (padding p, (ph, pw), (top, left, bottom, right), "same" or "valid"; each side up to the
kernel size minus 1, as ONNX allows). References reduce over the window's taps in cache-sized chunks of
rows, in the dtype of their input.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..ir.types import TensorType, numel
from .convolution import Pads, window_pads
from .nn import check_rank, window_output
from .registry import Attr, OpDef, OpKind, ShapeError, register


def pool_pads(attrs: Mapping[str, Any], size_hw) -> Pads:
    """A pool's (top, left, bottom, right) padding on an input of spatial size ``size_hw``. Each side may pad
    up to the kernel size minus 1, as ONNX allows (torch allows half the kernel)."""
    k, s, _, d = _pool_geometry(attrs)
    pads = window_pads(attrs["padding"], size_hw, k, s, d)
    if any(p >= k[i % 2] for i, p in enumerate(pads)):
        raise ShapeError(f"pool padding (top, left, bottom, right) = {pads} must be smaller than the kernel size {k}",
                         hint="a window must reach the input: pad each side by at most the kernel size - 1",
                         arg="padding")
    return pads


def _pool_geometry(attrs):
    """(kernel, stride, padding attribute, dilation); the stride defaults to the kernel size."""
    k = attrs["kernel_size"]
    s = attrs["stride"] if attrs["stride"] is not None else k
    if isinstance(s, int):
        s = (s, s)
    return k, s, attrs["padding"], attrs.get("dilation", (1, 1))


def _pool_infer(types, attrs):
    (t,) = types
    check_rank(t, (4,), "pooling", "[N, C, H, W]")
    k, s, _, d = _pool_geometry(attrs)
    if attrs["padding"] != "same" or all(isinstance(n, int) for n in t.shape[2:]) or s == (1, 1):
        pool_pads(attrs, t.shape[2:])  # (the limit; "same" with stride > 1 on a symbolic size: when run)
    return t.with_shape(t.shape[:2] + window_output(t, attrs, k, s, d, attrs["ceil_mode"]))


def _tap_range(size: int, out: int, tap: int, s: int, p: int, d: int) -> tuple[int, int, int]:
    """For one window tap along one axis: the outputs [lo, hi) whose tap falls inside the input (not in
    the padding), and the input index that output ``lo`` reads."""
    offset = tap * d - p  # input index read by output 0
    lo = -(offset // s) if offset < 0 else 0  # ceil(-offset / s): the first output past the padding
    hi = min(out, (size - 1 - offset) // s + 1) if size - 1 - offset >= 0 else 0
    return lo, max(lo, hi), offset + lo * s


# Bytes of the accumulator of one chunk of pooling rows: it stays in the L2 cache while every tap is folded in.
POOL_CHUNK_BYTES = 1 << 19


def _pool_reduce(x, k, s, p, d, out_hw, init, combine):
    """Fold the KH * KW taps of every pooling window into ``init`` with ``combine(acc, view, out=acc)``;
    ``p`` is the (top, left) padding. Taps in the padding are skipped (the padding is never materialised):
    max pooling starts from -inf, sum pooling from 0, which is what padding with those values would give.
    The rows (one image's channel) are taken a chunk at a time, so that the accumulator stays in cache
    across the taps. Returns the result and, per output row and column, whether any tap reads the input."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    taps = []  # (output rows, output cols) <- (input rows, input cols) of each tap that reads the input
    rows_hit, cols_hit = np.zeros(oh, bool), np.zeros(ow, bool)
    for i in range(k[0]):
        r0, r1, xr = _tap_range(h, oh, i, s[0], p[0], d[0])
        rows_hit[r0:r1] = True
        for j in range(k[1]):
            c0, c1, xc = _tap_range(w, ow, j, s[1], p[1], d[1])
            cols_hit[c0:c1] = True
            if r1 > r0 and c1 > c0:
                taps.append((slice(r0, r1), slice(c0, c1), slice(xr, xr + (r1 - r0 - 1) * s[0] + 1, s[0]),
                             slice(xc, xc + (c1 - c0 - 1) * s[1] + 1, s[1])))
    rows = x.reshape(n * c, h, w)
    acc = np.full((n * c, oh, ow), init, dtype=x.dtype)
    step = max(1, POOL_CHUNK_BYTES // (oh * ow * x.dtype.itemsize))
    for a in range(0, n * c, step):
        for rs, cs, xr, xc in taps:
            dst = acc[a:a + step, rs, cs]
            combine(dst, rows[a:a + step, xr, xc], out=dst)
    return acc.reshape(n, c, oh, ow), np.outer(rows_hit, cols_hit)


def _pool_setup(x, attrs):
    k, s, _, d = _pool_geometry(attrs)
    pads = pool_pads(attrs, x.shape[2:])
    out_hw = window_output(TensorType(x.shape), attrs, k, s, d, attrs["ceil_mode"])
    return k, s, pads, d, out_hw


def _maxpool_ref(xs, params, attrs):
    """A window wholly in the padding (a dilated one, or with ONNX's large pads) has no input to take the max
    of: it gives the dtype's lowest finite number, as onnxruntime does (torch's padding rule never forms one)."""
    x = xs[0]
    k, s, pads, d, out_hw = _pool_setup(x, attrs)
    out, hit = _pool_reduce(x, k, s, pads[:2], d, out_hw, -np.inf, np.maximum)
    if not hit.all():
        out[:, :, ~hit] = np.finfo(x.dtype).min
    return out


def _avg_divisor(size, out, k, s, begin, end, include_pad):
    """Per output position along an axis: the window clipped to the padded input (``include_pad``) or to the
    input; never 0 (a window wholly in the padding sums nothing: 0 / 1)."""
    start = np.arange(out) * s - begin
    stop = np.minimum(start + k, size + end)
    if include_pad:
        return stop - start
    return np.maximum(np.minimum(stop, size) - np.maximum(start, 0), 1)


def _avgpool_ref(xs, params, attrs):
    x = xs[0]
    k, s, pads, d, (oh, ow) = _pool_setup(x, attrs)
    total, _ = _pool_reduce(x, k, s, pads[:2], d, (oh, ow), 0, np.add)
    inc = attrs["count_include_pad"]
    div = np.outer(_avg_divisor(x.shape[2], oh, k[0], s[0], pads[0], pads[2], inc),
                   _avg_divisor(x.shape[3], ow, k[1], s[1], pads[1], pads[3], inc))
    return (total / div.astype(x.dtype)).astype(x.dtype)


def _pool_flops(ins, out, attrs):
    return numel(out) * attrs["kernel_size"][0] * attrs["kernel_size"][1]


POOL_ATTRS = (
    Attr("kernel_size", "pair", positive=True),
    Attr("stride", "pair", None, positive=True, doc="defaults to the kernel size"),
    Attr("padding", "padding", 0, doc='padding: p, (ph, pw), (top, left, bottom, right), "same" or "valid"'),
)
register(OpDef("maxpool2d", OpKind.REDUCE, _pool_infer, _maxpool_ref, _pool_flops,
               POOL_ATTRS + (Attr("dilation", "pair", 1, positive=True), Attr("ceil_mode", "bool", False)), axis=1),
         aliases=("maxpool",))
register(OpDef("avgpool2d", OpKind.REDUCE, _pool_infer, _avgpool_ref, _pool_flops,
               POOL_ATTRS + (Attr("ceil_mode", "bool", False), Attr("count_include_pad", "bool", True)), axis=1),
         aliases=("avgpool",))


def _global_infer(op: str):
    def infer(types, attrs):
        (t,) = types
        check_rank(t, (4,), op, "[N, C, H, W]")
        return t.with_shape(t.shape[:2] + (1, 1))
    return infer


register(OpDef("global_avgpool", OpKind.REDUCE, _global_infer("global_avgpool"),
               lambda xs, p, a: xs[0].mean(axis=(2, 3), keepdims=True),
               lambda ins, out, a: numel(ins[0]), doc="mean over H and W; output [N, C, 1, 1]", axis=1))
# NaN propagates (NumPy's max, torch's adaptive_max_pool2d): a channel holding a NaN gives NaN
register(OpDef("global_maxpool", OpKind.REDUCE, _global_infer("global_maxpool"),
               lambda xs, p, a: xs[0].max(axis=(2, 3), keepdims=True),
               lambda ins, out, a: numel(ins[0]),
               doc="max over H and W (F.adaptive_max_pool2d(x, 1)); output [N, C, 1, 1]", axis=1))


def _adaptive_infer(types, attrs):
    (t,) = types
    check_rank(t, (4,), "adaptive_avgpool2d", "[N, C, H, W]")
    return t.with_shape(t.shape[:2] + tuple(attrs["output_size"]))  # any H, W: the bins follow the input


def adaptive_bins(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive pooling bins along one axis: bin i is [floor(i * size / out), ceil((i + 1) * size / out)),
    so bins overlap when ``out`` does not divide ``size`` (and repeat inputs when ``out`` > ``size``)."""
    i = np.arange(out)
    return (i * size) // out, -(-(i + 1) * size // out)


def adaptive_avgpool2d_reference(x, output_size):
    """F.adaptive_avg_pool2d on NCHW: each bin's sum, as 0/1 bin matrices on both sides of x (one matmul per
    axis, no loop over bins), divided by the bin's size."""
    n, c, h, w = x.shape
    rows, cols = (_bin_matrix(size, out, x.dtype) for size, out in zip((h, w), output_size))
    sums = rows @ x @ cols.T  # [OH, H] @ [N, C, H, W] @ [W, OW]
    return (sums / np.outer(rows.sum(axis=1), cols.sum(axis=1))).astype(x.dtype, copy=False)


def _bin_matrix(size: int, out: int, dtype) -> np.ndarray:
    start, end = adaptive_bins(size, out)
    j = np.arange(size)
    return ((j >= start[:, None]) & (j < end[:, None])).astype(dtype)  # [out, size]: 1 where input j is in bin i


def _adaptive_flops(ins, out, attrs):
    # an add per input element of each bin (bins may overlap), a divide per output
    n, c, h, w = ins[0]
    (hs, he), (ws, we) = adaptive_bins(h, out[2]), adaptive_bins(w, out[3])
    return n * c * int((he - hs).sum()) * int((we - ws).sum()) + numel(out)


register(OpDef("adaptive_avgpool2d", OpKind.REDUCE, _adaptive_infer,
               lambda xs, p, a: adaptive_avgpool2d_reference(xs[0], a["output_size"]), _adaptive_flops,
               (Attr("output_size", "pair", positive=True, doc="the output size: n or (oh, ow)"),),
               doc="F.adaptive_avg_pool2d: means over torch's bins of H and W; output [N, C, oh, ow]", axis=1),
         aliases=("adaptive_avgpool",))
