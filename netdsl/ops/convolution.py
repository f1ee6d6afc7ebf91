"""conv2d's NumPy reference: im2col + GEMM, and the depthwise conv as a tap loop, both in cache-sized chunks.

A conv with a GEMM in it (any conv but a depthwise one) copies its im2col columns from a strided view of
the padded input into one reused buffer and hands them to BLAS, a chunk of output pixels at a time: whole
images when they are small, bands of output rows of one image when they are large, sized so that the
chunk's columns (C/g * KH * KW rows of them) are still in cache (a few MB: the last level) when the GEMM
reads them back, and wide enough that BLAS runs at full speed. A stride-1 1x1 conv needs no columns:
its input, image by image, is the GEMM's right-hand side.

A depthwise conv has no GEMM to hand to BLAS: each output is a weighted sum of its KH * KW window taps,
with one weight per channel and tap. NumPy has no fused multiply-add, so each tap costs a multiply and an
add over the output; done over the whole [N, C, OH, OW] output, that is 2 * KH * KW passes through main
memory. Here the output is taken a chunk at a time, sized so that the chunk's input, accumulator and
scratch fit in the L2 cache: the input is read from memory once and the tap passes run in cache. A chunk
is some rows (one row: one image's channel) on a large image, some images with their channels last on a
small one (there a row would be too short for NumPy's inner loops; channels last, a weight vector
runs along them).

Two layout tricks keep every tap a contiguous run of memory, so NumPy's inner loops are long and
unit-stride even for a strided or dilated conv on a small image:

- *phases*: with stride s the input is split into its s x s phases (rows and columns i mod s), each
  padded; tap (i, j) of every window then sits in one phase at a fixed offset, read with stride 1;
- *flat rows*: each phase of one channel is a [HQ, WQ] grid read as one flat run, and the output is
  computed on a grid as wide as the phase (WQ >= OW columns): a tap is then ``flat[off : off + OH * WQ]``,
  and the WQ - OW columns on the right of each output row (they read across the end of a row) are
  dropped when the chunk is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .registry import ShapeError

# Bytes of the input phases + accumulator + scratch of one depthwise chunk: half the L2 cache of a current
# core (on MobileNetV2's depthwise layers a quarter was slower, the whole L2 no faster).
CHUNK_BYTES = 1 << 19

# A depthwise conv runs with the channels last when an output channel has at most this many pixels on the
# phase-wide grid (OH * WQ): measured on MobileNetV2's and V3's layers, 14 x 14 and smaller ran 15-40%
# faster that way, 56 x 56 and larger 40-90% slower, 28 x 28 about even.
CHANNELS_LAST_PIXELS = 512

# Bytes of one chunk's im2col columns, and the fewest columns a GEMM gets (BLAS is slow on thin matrices):
# measured on ResNet-18's convs at batch 8 against 1, 4 and 32 MB with 256 to 4096 columns (all within
# noise of each other and of whole images per GEMM on a shared machine; this was the fastest in total).
GEMM_CHUNK_BYTES = 1 << 21
GEMM_MIN_COLUMNS = 1024


Pads = tuple[int, int, int, int]  # (top, left, bottom, right), as ONNX's pads [top, left, bottom, right]


def pads4(padding) -> Pads:
    """(top, left, bottom, right) of an explicit padding: a pair (ph, pw) pads both sides of an axis alike."""
    if len(padding) == 4:
        return tuple(padding)
    ph, pw = padding
    return (ph, pw, ph, pw)


def same_pads(size, k: int, s: int, d: int) -> tuple[int, int]:
    """(begin, end) padding of one axis for ``padding="same"``, as TensorFlow's SAME and ONNX's SAME_UPPER:
    ceil(size / s) outputs, a total of max((ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0), the odd one
    at the end. With stride 1 it is (k - 1) * d whatever the size; otherwise the size must be known."""
    span = (k - 1) * d + 1
    if s == 1:
        total = span - 1
    elif isinstance(size, int):
        total = max((-(-size // s) - 1) * s + span - size, 0)
    else:
        raise ShapeError(f'padding="same" with stride {s} depends on the size `{size}`, unknown here',
                         hint="give the input a static size, or pad explicitly")
    return total // 2, total - total // 2


def window_pads(padding, size_hw, kernel, stride, dilation) -> Pads:
    """(top, left, bottom, right) of a conv or pool's ``padding`` attribute ("valid", "same", a pair or a
    4-tuple) for an input of spatial size ``size_hw``."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        (top, bottom), (left, right) = (same_pads(n, k, s, d) for n, k, s, d in zip(size_hw, kernel, stride, dilation))
        return (top, left, bottom, right)
    return pads4(padding)


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    """Output size along an axis padded by ``p`` in all (both sides together)."""
    return (size + p - d * (k - 1) - 1) // s + 1


def pad_nchw(x, pads: Pads, fill=0):
    """``x`` [N, C, H, W] copied once into a buffer with ``pads`` (top, left, bottom, right) rows/columns of
    ``fill`` around it; ``x`` itself when there is no padding."""
    top, left, bottom, right = pads
    if not any(pads):
        return x
    n, c, h, w = x.shape
    xp = np.empty((n, c, top + h + bottom, left + w + right), dtype=x.dtype)
    xp[:, :, :top] = fill
    xp[:, :, top + h:] = fill
    xp[:, :, top:top + h, :left] = fill
    xp[:, :, top:top + h, left + w:] = fill
    xp[:, :, top:top + h, left:left + w] = x
    return xp


def conv2d_reference(x, weight, bias, stride, padding, dilation, groups):
    """conv2d in NCHW as im2col + GEMM (no Python loop over pixels or channels); a depthwise conv as
    ``depthwise_conv2d``.

    A stride-1 1x1 conv is one GEMM per image (and group) on the input as it is, written straight into
    the NCHW result. Any other conv pads the input once into a fresh buffer and takes the output pixels
    a chunk at a time (about ``GEMM_CHUNK_BYTES`` of columns): whole images [b * OH * OW] when an image
    is smaller than that, else bands of output rows of one image. A chunk's columns
    [g, C/g * KH * KW, pixels] are copied from a strided view of the padded input into one reused
    buffer, and one GEMM per group writes [OC, pixels] into the NCHW result (straight into it for one
    whole image; through a small buffer for a band, or with one block transpose for b > 1)."""
    n, c, h, w = x.shape
    oc, cg, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    pads = pads4(padding)
    if cg == 1 and groups == c:  # depthwise (any channel multiplier): no GEMM, a tap loop in cache
        return depthwise_conv2d(x, weight, bias, stride, pads, dilation)
    oh, ow = _conv_out(h, kh, sh, pads[0] + pads[2], dh), _conv_out(w, kw, sw, pads[1] + pads[3], dw)
    dtype = np.result_type(x, weight)
    g, ocg, k, hw = groups, oc // groups, cg * kh * kw, oh * ow
    wm = weight.reshape(g, ocg, k).astype(dtype, copy=False)
    result = np.empty((n, oc, oh, ow), dtype=dtype)
    if kh == kw == 1 and not any(pads) and (sh, sw) == (1, 1):  # the input is the columns: no copy
        np.matmul(wm, x.reshape(n, g, cg, hw), out=result.reshape(n, g, ocg, hw))  # one GEMM per image
        if bias is not None:
            result += bias.reshape(oc, 1, 1)
        return result
    if g == 1:  # plain 2-D GEMMs
        wm = wm[0]
    xp = pad_nchw(x, pads)
    columns = max(GEMM_MIN_COLUMNS, GEMM_CHUNK_BYTES // (g * k * xp.dtype.itemsize))
    nb = max(1, min(n, columns // hw))  # images per GEMM
    band = oh if nb > 1 or hw <= columns else max(1, columns // ow)  # output rows per GEMM (of one image)
    buf = np.empty(g * k * nb * band * ow, dtype=xp.dtype)
    part = np.empty((oc, band * ow), dtype=dtype) if band < oh else None  # a band's GEMM result
    s0, s1, s2, s3 = xp.strides
    for n0 in range(0, n, nb):
        b = min(nb, n - n0)
        for y0 in range(0, oh, band):  # one band of a large image, or all the rows of the b images
            rows = min(band, oh - y0)
            px = b * rows * ow
            view = as_strided(xp[n0:, :, y0 * sh:], (g, cg, kh, kw, b, rows, ow),
                              (cg * s1, s1, s2 * dh, s3 * dw, s0, s2 * sh, s3 * sw), writeable=False)
            cols = buf[:g * k * px].reshape(g, cg, kh, kw, b, rows, ow)
            cols[...] = view
            cols = cols.reshape(g, k, px)
            if g == 1:
                cols = cols[0]
            if b > 1:  # [OC, b * HW] -> the b images' [OC, HW] blocks of the result
                out = np.matmul(wm, cols).reshape(oc, b, hw).transpose(1, 0, 2)
                dst, channel = result[n0:n0 + b].reshape(b, oc, hw), (oc, 1)
            elif part is None:  # one whole image: straight into the result
                out = dst = result[n0].reshape(oc, hw)
                np.matmul(wm, cols, out=dst if g == 1 else dst.reshape(g, ocg, px))
                channel = (oc, 1)
            else:  # a band of rows: through ``part`` into its rows of the image
                out = part[:, :px]
                np.matmul(wm, cols, out=out if g == 1 else out.reshape(g, ocg, px))
                out, dst, channel = out.reshape(oc, rows, ow), result[n0, :, y0:y0 + rows], (oc, 1, 1)
            if bias is not None:
                np.add(out, bias.reshape(channel), out=dst)
            elif out is not dst:
                dst[...] = out
    return result


@dataclass(frozen=True)
class _Phases:
    """Where a depthwise conv's taps are: the input split into its stride phases, each a padded
    [HQ, WQ] grid, and tap (i, j) of every window at one offset of one phase's flattened grid."""

    taps: list[tuple[int, int]]  # per tap (i, j), row-major: (phase index, flat offset)
    count: int  # phases used
    hq: int
    wq: int
    copies: list[tuple]  # (phase index, its interior rows, cols) <- (input rows, cols)

    @classmethod
    def plan(cls, h: int, w: int, oh: int, ow: int, kernel, stride, padding, dilation) -> "_Phases":
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        # tap (i, j) reads padded row sh * r + i * dh: phase row (i * dh) % sh, at row r + (i * dh) // sh
        where = [((i * dh % sh, j * dw % sw), i * dh // sh, j * dw // sw) for i in range(kh) for j in range(kw)]
        index = {p: k for k, p in enumerate(sorted({p for p, _, _ in where}))}
        wq = ow + max(oj for _, _, oj in where)  # phase width: a real output's taps stay inside its row
        hq = oh + max(oi for _, oi, _ in where) + 1  # + 1 row: the dropped columns of the last row read past it
        copies = []
        for (a, b), k in index.items():
            q0, q1 = max(0, -((a - ph) // sh)), min(hq, (h - 1 + ph - a) // sh + 1)
            p0, p1 = max(0, -((b - pw) // sw)), min(wq, (w - 1 + pw - b) // sw + 1)
            if q1 > q0 and p1 > p0:
                copies.append((k, slice(q0, q1), slice(p0, p1),
                               slice(a + sh * q0 - ph, a + sh * (q1 - 1) - ph + 1, sh),
                               slice(b + sw * p0 - pw, b + sw * (p1 - 1) - pw + 1, sw)))
        return cls([(index[p], oi * wq + oj) for p, oi, oj in where], len(index), hq, wq, copies)


def depthwise_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int],
                     padding, dilation: tuple[int, int]) -> np.ndarray:
    """conv2d with groups = C_in (a depthwise conv, any channel multiplier M = C_out / C_in) in NCHW.

    ``weight`` is [C * M, 1, KH, KW]; output channel c * M + k reads input channel c (torch's order).
    ``padding`` is (ph, pw) or (top, left, bottom, right): the phases are placed by the top/left padding,
    and the bottom/right padding only sets the output size (the phase grids' borders are zeros).
    A large image runs channel by channel (``_depthwise_rows``); a small one, whose rows would make
    NumPy's inner loops short, with the channels last (``_depthwise_channels_last``)."""
    n, c, h, w = x.shape
    oc, _, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    top, left, bottom, right = pads4(padding)
    oh, ow = _conv_out(h, kh, sh, top + bottom, dh), _conv_out(w, kw, sw, left + right, dw)
    dtype = np.result_type(x, weight)
    phases = _Phases.plan(h, w, oh, ow, (kh, kw), stride, (top, left), dilation)
    wt = weight.reshape(c, oc // c, kh * kw).astype(dtype, copy=False)  # [C, M, taps]
    run = _depthwise_channels_last if oh * phases.wq <= CHANNELS_LAST_PIXELS else _depthwise_rows
    out = run(x, wt, phases, oh, ow, dtype)
    if bias is not None:
        out += bias.reshape(oc, 1, 1).astype(dtype, copy=False)
    return out


def _depthwise_rows(x, wt, phases: _Phases, oh: int, ow: int, dtype) -> np.ndarray:
    """One row per image and channel: a tap is a [rows, 1, OH * WQ] run times a weight per row."""
    n, c, h, w = x.shape
    m = wt.shape[1]
    hq, wq, length, rows = phases.hq, phases.wq, oh * phases.wq, n * c
    step = max(1, min(rows, CHUNK_BYTES // ((phases.count * hq * wq + 2 * m * length) * dtype.itemsize)))
    buf = np.zeros((phases.count, step, hq, wq), dtype=dtype)  # the borders stay 0: only interiors are written
    flat = buf.reshape(phases.count, step, hq * wq)
    xs = x.reshape(rows, h, w)
    out = np.empty((rows, m, oh, ow), dtype=dtype)
    acc = np.empty((step, m, length), dtype=dtype)
    tmp = np.empty_like(acc)
    for r0 in range(0, rows, step):
        b = min(rows, r0 + step) - r0
        for k, qs, ps, rs, cs in phases.copies:
            buf[k, :b, qs, ps] = xs[r0:r0 + b, rs, cs]
        wb = wt[np.arange(r0, r0 + b) % c]  # [b, M, taps]: each row's channel's weights
        a, t = acc[:b], tmp[:b]
        for tap, (k, off) in enumerate(phases.taps):
            view = flat[k, :b, None, off:off + length]
            if tap == 0:
                np.multiply(view, wb[:, :, tap:tap + 1], out=a)
            else:
                np.multiply(view, wb[:, :, tap:tap + 1], out=t)
                a += t
        out[r0:r0 + b] = a.reshape(b, m, oh, wq)[..., :ow]
    return out.reshape(n, c * m, oh, ow)


def _depthwise_channels_last(x, wt, phases: _Phases, oh: int, ow: int, dtype) -> np.ndarray:
    """The channels last: a tap is an [OH * WQ, C, 1] block times one weight vector [C, M], so the inner
    loops run along the channels. Costs a transposing copy in and out; pays on small images."""
    n, c, h, w = x.shape
    m = wt.shape[1]
    hq, wq, length = phases.hq, phases.wq, oh * phases.wq
    step = max(1, min(n, CHUNK_BYTES // ((phases.count * hq * wq + 2 * m * length) * c * dtype.itemsize)))
    buf = np.zeros((phases.count, step, hq, wq, c), dtype=dtype)  # the borders stay 0
    flat = buf.reshape(phases.count, step, hq * wq, c, 1)
    wl = np.ascontiguousarray(wt.transpose(2, 0, 1))  # [taps, C, M]
    out = np.empty((n, c * m, oh, ow), dtype=dtype)
    acc = np.empty((step, length, c, m), dtype=dtype)
    tmp = np.empty_like(acc)
    for n0 in range(0, n, step):
        b = min(n, n0 + step) - n0
        for k, qs, ps, rs, cs in phases.copies:
            buf[k, :b, qs, ps] = x[n0:n0 + b, :, rs, cs].transpose(0, 2, 3, 1)
        a, t = acc[:b], tmp[:b]
        for tap, (k, off) in enumerate(phases.taps):
            view = flat[k, :b, off:off + length]
            if tap == 0:
                np.multiply(view, wl[tap], out=a)
            else:
                np.multiply(view, wl[tap], out=t)
                a += t
        out[n0:n0 + b] = a.reshape(b, oh, wq, c * m)[:, :, :ow].transpose(0, 3, 1, 2)
    return out
