"""maxpool2d, avgpool2d and global_avgpool against torch (channels last)."""

import pytest
import torch
import torch.nn.functional as F

from kernel_tolerances import DTYPE_IDS, DTYPES, assert_close, assert_untouched, channel_slice_buffer, nchw, nhwc, rand
from netdsl.kernels.pool import avgpool2d, global_avgpool, maxpool2d

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


def test_pool_errors():
    with pytest.raises(ValueError):
        maxpool2d(rand(1, 4, 4, 2), 2, 1, 2)      # padding above half the kernel
