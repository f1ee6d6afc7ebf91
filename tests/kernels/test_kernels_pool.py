"""maxpool2d, avgpool2d, global_avgpool and global_maxpool against torch (channels last)."""

import pytest
import torch
import torch.nn.functional as F

from kernel_tolerances import DTYPE_IDS, DTYPES, assert_close, assert_untouched, channel_slice_buffer, nchw, nhwc, rand
from netdsl.kernels.pool import avgpool2d, global_avgpool, global_maxpool, maxpool2d

# (kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [((3, 3), (2, 2), (1, 1), (1, 1), True), ((3, 2), (1, 2), (1, 1), (2, 1), False),
             ((2, 2), (2, 2), (0, 0), (1, 1), True), ((1, 1), (3, 3), (0, 0), (1, 1), False)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", MAX_CASES)
def test_maxpool(case, dtype):
    k, s, p, d, ceil = case
    x = rand(2, 9, 8, 20, dtype=dtype)
    assert_close(maxpool2d(x, k, s, p, d, ceil), nhwc(F.max_pool2d(nchw(x), k, s, p, d, ceil)))


def test_maxpool_propagates_nan_and_writes_a_slice():
    x = rand(1, 6, 6, 5)
    x[0, 2, 3, 1] = float("nan")
    out_buf, out = channel_slice_buffer((1, 3, 3, 5), 1, 6, torch.float32)
    maxpool2d(x, 2, 2, 0, out=out)
    assert_close(out, nhwc(F.max_pool2d(nchw(x), 2, 2)))
    assert torch.isnan(out[0, 1, 1, 1])
    assert_untouched(out_buf, 1, 6)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avgpool(count_include_pad, ceil, dtype):
    x = rand(2, 9, 8, 6, dtype=dtype)
    y = avgpool2d(x, (3, 3), (2, 2), (1, 1), ceil, count_include_pad)
    assert_close(y, nhwc(F.avg_pool2d(nchw(x), 3, 2, 1, ceil, count_include_pad)))


def test_avgpool_divisor_override_and_channel_slice_input():
    big = rand(1, 7, 7, 9)
    x = big[..., 2:7]
    y = avgpool2d(x, (2, 3), (1, 2), (1, 1), divisor_override=4)
    assert_close(y, nhwc(F.avg_pool2d(nchw(x), (2, 3), (1, 2), (1, 1), divisor_override=4)))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_global_avgpool(dtype):
    x = rand(2, 7, 9, 20, dtype=dtype, offset=3.0)
    y = global_avgpool(x)
    assert y.shape == (2, 20)
    assert_close(y, x.float().mean((1, 2)))
    out = torch.empty(2, 1, 1, 20, dtype=dtype)
    global_avgpool(x, out=out)
    assert_close(out, x.float().mean((1, 2), keepdim=True))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(2, 7, 9, 20), (1, 1, 1, 3), (3, 13, 11, 37)])
def test_global_maxpool(shape, dtype):
    x = rand(*shape, dtype=dtype, offset=-3.0)  # all negative: a padded lane read as 0 would win
    want = nhwc(F.adaptive_max_pool2d(nchw(x), 1))
    y = global_maxpool(x)
    assert y.shape == (shape[0], shape[3])
    torch.testing.assert_close(y.float(), want.reshape(shape[0], shape[3]), rtol=0, atol=0)  # a max is exact
    out = torch.empty(shape[0], 1, 1, shape[3], dtype=dtype)
    global_maxpool(x, out=out)
    torch.testing.assert_close(out.float(), want, rtol=0, atol=0)


def test_global_maxpool_propagates_nan_and_reads_a_channel_slice():
    big = rand(2, 5, 6, 9)
    x = big[..., 1:8]
    x[1, 4, 2, 3] = float("nan")
    x[0, 0, 0, 5] = float("inf")
    y = global_maxpool(x)
    want = F.adaptive_max_pool2d(nchw(x), 1).reshape(2, 7)
    assert torch.isnan(y[1, 3]) and torch.isnan(want[1, 3]) and y[0, 5] == float("inf")
    torch.testing.assert_close(y, want, rtol=0, atol=0, equal_nan=True)

def test_pool_errors():
    with pytest.raises(ValueError):
        maxpool2d(rand(1, 4, 4, 2), 2, 1, 2)      # padding above half the kernel
    with pytest.raises(ValueError):
        global_maxpool(rand(4, 4, 2))             # not NHWC
