"""adaptive_avgpool2d against torch (channels last): bins that overlap, outputs bigger than the input,
channel slices in and out, every I/O dtype."""

import pytest
import torch
import torch.nn.functional as F

from kernel_tolerances import DTYPE_IDS, DTYPES, assert_close, assert_untouched, channel_slice_buffer, nchw, nhwc, rand
from netdsl.kernels._host import KernelError
from netdsl.kernels.adaptive_pool import adaptive_avgpool2d, bins, specialization, tile_config

# (input N, H, W, C; output size)
CASES = [((2, 7, 5, 3), (3, 2)),      # bins of 3 rows that overlap by one
         ((2, 13, 11, 20), (4, 3)),   # more channels than one block (in the interpreter)
         ((1, 3, 4, 5), (5, 7)),      # bigger than the input: rows and columns repeat
         ((1, 9, 6, 2), 1),           # one bin: the global mean
         ((2, 6, 1, 4), (4, 1)),      # non-square, a size-1 axis
         ((1, 1, 1, 1), (1, 1)),
         ((1, 3, 40, 8), (3, 3))]     # bins wider than BLOCK_W: a row takes several loads


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape, size", CASES)
def test_adaptive_avgpool(shape, size, dtype):
    x = rand(*shape, dtype=dtype)
    assert_close(adaptive_avgpool2d(x, size), nhwc(F.adaptive_avg_pool2d(nchw(x), size)))


def test_bins_are_torchs():
    assert bins(7, 3) == [(0, 3), (2, 5), (4, 7)]
    assert bins(3, 5) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    assert bins(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_wide_bins_loop_over_loads():
    cfg = tile_config(8, max(e - s for s, e in bins(40, 3)), interpret=True)  # the last case: bins of 14
    assert cfg.kwargs["BLOCK_C"] == 8 and cfg.kwargs["BLOCK_W"] == 8


def test_channel_slices_in_and_out():
    big = rand(2, 7, 9, 11)
    x = big[..., 3:9]
    out_buf, out = channel_slice_buffer((2, 3, 4, 6), 2, 8, torch.float32)
    adaptive_avgpool2d(x, (3, 4), out=out)
    assert_close(out, nhwc(F.adaptive_avg_pool2d(nchw(x), (3, 4))))
    assert_untouched(out_buf, 2, 8)


def test_errors():
    with pytest.raises(KernelError, match="output_size must be positive"):
        adaptive_avgpool2d(rand(1, 4, 4, 2), (0, 2))
    with pytest.raises(KernelError, match="NHWC"):
        adaptive_avgpool2d(rand(4, 4, 2), 2)
    with pytest.raises(KernelError, match="out shape"):
        adaptive_avgpool2d(rand(1, 4, 4, 2), 3, out=torch.empty(1, 2, 2, 2))
    with pytest.raises(KernelError, match="channel stride 1"):
        adaptive_avgpool2d(rand(1, 2, 4, 4).permute(0, 2, 3, 1).contiguous().transpose(1, 3), 2)


def test_specialization():
    spec = specialization((2, 14, 14, 512), torch.float16, (5, 5))
    assert spec["kernel"] == "adaptive_avgpool2d_kernel" and spec["module"].endswith("kernels.adaptive_pool")
    assert spec["constexprs"]["BLOCK_C"] == 64 and spec["constexprs"]["BLOCK_W"] == 4  # bins of 3 or 4 columns
