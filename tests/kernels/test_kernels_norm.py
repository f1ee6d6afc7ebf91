"""layernorm, groupnorm (and the batchnorm affine, tested with pointwise) against torch."""

import pytest
import torch
import torch.nn.functional as F

from kernel_tolerances import (DTYPE_IDS, DTYPES, assert_close, assert_untouched, channel_slice_buffer, nchw, nhwc,
                               rand)
from netdsl.kernels.epilogue import Epilogue
from netdsl.kernels.norm import channel_affine, groupnorm, layernorm  # noqa: F401  (re-export exists)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("C", [20, 50], ids=["one-block", "chunked"])
def test_layernorm_add_and_norm(C, dtype):
    # a large common offset: the statistics must not lose the variance to cancellation.
    x, r = rand(13, C, dtype=dtype, scale=2.0, offset=40.0), rand(13, C, dtype=dtype)
    w, b = rand(C, dtype=dtype), rand(C, dtype=dtype)
    s = torch.empty_like(x)
    y = layernorm(x, w, b, 1e-5, residual_before=r, sum_out=s, epilogue=Epilogue(act1="gelu_tanh"))
    total = x.float() + r.float()
    assert_close(s, total)
    assert_close(y, F.gelu(F.layer_norm(total, (C,), w.float(), b.float(), 1e-5), approximate="tanh"))


@pytest.mark.parametrize("C", [1, 7, 50])
def test_layernorm_plain_no_affine_3d(C):
    x = rand(2, 3, C)
    assert_close(layernorm(x, None, None, 1e-6), F.layer_norm(x, (C,), eps=1e-6))


def test_layernorm_slices_and_epilogue_residual():
    big = rand(9, 40)
    x = big[:, 5:38]                                   # rows with stride 40
    w, b, r = rand(33), rand(33), rand(9, 33)
    out_buf, out = channel_slice_buffer((9, 33), 1, 34, torch.float32)
    layernorm(x, w, b, 1e-5, epilogue=Epilogue(act1="relu", residual=r, act2="none"), out=out)
    assert_close(out, F.relu(F.layer_norm(x, (33,), w, b, 1e-5)) + r)
    assert_untouched(out_buf, 1, 34)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("groups", [3, 1, 12])
def test_groupnorm(groups, dtype):
    x = rand(2, 7, 9, 12, dtype=dtype, scale=3.0, offset=20.0)
    w, b = rand(12, dtype=dtype), rand(12, dtype=dtype)
    y = groupnorm(x, groups, w, b, 1e-5, epilogue=Epilogue(act1="silu"))
    assert y.dtype == dtype
    assert_close(y, nhwc(F.silu(F.group_norm(nchw(x), groups, w.float(), b.float(), 1e-5))))


def test_groupnorm_no_affine_slices_residual():
    big = rand(1, 5, 4, 20)
    x = big[..., 2:18]
    r = rand(1, 5, 4, 16)
    out_buf, out = channel_slice_buffer((1, 5, 4, 16), 2, 18, torch.float32)
    groupnorm(x, 4, None, None, 1e-5, epilogue=Epilogue(residual=r, act2="relu"), out=out)
    assert_close(out, F.relu(nhwc(F.group_norm(nchw(x), 4, eps=1e-5)) + r))
    assert_untouched(out_buf, 2, 18)


def test_groupnorm_single_pixel():
    x = rand(3, 1, 1, 8)
    assert_close(groupnorm(x, 2, None, None, 1e-5), nhwc(F.group_norm(nchw(x), 2, eps=1e-5)))
