"""softmax / log_softmax over the last dim, one block or online (chunked), against torch."""

import pytest
import torch

from kernel_tolerances import DTYPE_IDS, DTYPES, assert_close, assert_untouched, channel_slice_buffer, rand
from netdsl.kernels.softmax import log_softmax, softmax


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("C", [1, 20, 50, 200], ids=["C1", "one-block", "chunked", "many-chunks"])
def test_softmax_and_log_softmax(C, dtype):
    x = rand(7, C, dtype=dtype, scale=4.0)
    assert_close(softmax(x), torch.softmax(x.float(), -1))
    assert_close(log_softmax(x), torch.log_softmax(x.float(), -1))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # numpy warns on the all -inf row's NaN
@pytest.mark.parametrize("C", [20, 70])
def test_stability_large_values_and_minus_inf(C):
    x = rand(4, C, scale=1e4)
    x[1, : C // 2] = float("-inf")        # the online pass starts with all -inf chunks
    x[2, 3] = float("-inf")
    x[3, :] = float("-inf")               # torch gives NaN for a row of -inf
    assert_close(softmax(x), torch.softmax(x, -1))
    assert_close(log_softmax(x), torch.log_softmax(x, -1))


def test_three_d_and_slices():
    big = rand(2, 3, 60)
    x = big[..., 5:45]
    out_buf, out = channel_slice_buffer((2, 3, 40), 2, 42, torch.float32)
    softmax(x, out=out)
    assert_close(out, torch.softmax(x, -1))
    assert_untouched(out_buf, 2, 42)
