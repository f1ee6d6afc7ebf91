"""linear (tiled matmul + epilogue) against torch.nn.functional.linear."""

import pytest
import torch
import torch.nn.functional as F

from kernel_tolerances import DTYPE_IDS, DTYPES, assert_close, assert_untouched, channel_slice_buffer, rand
from netdsl.kernels.epilogue import Epilogue
from netdsl.kernels.matmul import linear, pack_linear_weight


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("M,K,N", [(37, 45, 29), (1, 16, 5), (20, 1, 33)])
def test_linear_bias_gelu(M, K, N, dtype):
    x, w, b = rand(M, K, dtype=dtype), rand(N, K, dtype=dtype, scale=0.3), rand(N, dtype=dtype)
    y = linear(x, pack_linear_weight(w), epilogue=Epilogue(bias=b, act1="gelu"))
    assert y.dtype == dtype and y.shape == (M, N)
    assert_close(y, F.gelu(F.linear(x.float(), w.float(), b.float())))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_three_d_input_residual_and_act2(dtype):
    x, w, b = rand(2, 5, 24, dtype=dtype), rand(18, 24, dtype=dtype, scale=0.3), rand(18, dtype=dtype)
    r = rand(2, 5, 18, dtype=dtype)
    y = linear(x, pack_linear_weight(w), epilogue=Epilogue(bias=b, act1="silu", residual=r, act2="tanh"))
    assert_close(y, torch.tanh(F.silu(F.linear(x.float(), w.float(), b.float())) + r.float()))


def test_transposed_input_and_column_slice_output():
    xt = rand(40, 23)
    x = xt.t()                               # [23, 40] with column stride 40: no copy needed
    w = rand(17, 40, scale=0.3)
    out_buf, out = channel_slice_buffer((23, 17), 3, 20, torch.float32)
    linear(x, pack_linear_weight(w), out=out, allow_tf32=True)
    assert_close(out, x @ w.t())
    assert_untouched(out_buf, 3, 20)


def test_shape_errors():
    with pytest.raises(ValueError):
        linear(rand(3, 4), pack_linear_weight(rand(5, 6)))
