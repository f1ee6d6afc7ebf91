"""bmm (batched matmul of two activations + epilogue) against torch.matmul."""

import pytest
import torch

from kernel_tolerances import (DTYPE_IDS, DTYPES, act_params, assert_close, assert_untouched, channel_slice_buffer,
                               rand, torch_act)
from netdsl.kernels import _host
from netdsl.kernels import bmm as bmm_module
from netdsl.kernels.bmm import bmm
from netdsl.kernels.epilogue import Epilogue


def ref(a, b):
    return torch.matmul(a.float(), b.float())


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("B,M,K,N", [(3, 37, 45, 29), (1, 1, 16, 5), (2, 20, 1, 33), (4, 17, 70, 16)])
def test_matches_matmul(B, M, K, N, dtype):
    a, b = rand(B, M, K, dtype=dtype), rand(B, K, N, dtype=dtype, scale=0.3)
    y = bmm(a, b)
    assert y.dtype == dtype and y.shape == (B, M, N)
    assert_close(y, ref(a, b))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_transposed_views_cost_nothing(dtype):
    """Transposed operands are strides only, no copy (attention's q @ k^T, and a^T @ b)."""
    x, y = rand(2, 21, 19, dtype=dtype), rand(2, 27, 21, dtype=dtype)
    a = x.transpose(1, 2)                                      # [2, 19, 21], stride 1 along M
    b = y.transpose(1, 2)                                      # [2, 21, 27], stride 1 along K
    assert_close(bmm(a, b), ref(a, b))
    q, k = rand(2, 17, 32, dtype=dtype), rand(2, 23, 32, dtype=dtype)
    assert_close(bmm(q, k.transpose(1, 2)), ref(q, k.transpose(1, 2)))


def test_batch_broadcast():
    a, b = rand(1, 13, 24), rand(4, 24, 18)
    assert_close(bmm(a, b), ref(a, b))                        # a size-1 batch dim broadcasts
    x, w = rand(3, 13, 24), rand(24, 18)
    assert_close(bmm(x, w.expand(3, 24, 18)), ref(x, w))      # an expanded weight: batch stride 0


@pytest.mark.parametrize("name", ["relu", "gelu", "prelu", "affine", "softplus"])
def test_every_epilogue_piece(name):
    B, M, K, N = 2, 19, 23, 21
    a, b = rand(B, M, K), rand(B, K, N, scale=0.3)
    bias, r = rand(N), rand(B, M, N)
    alpha, beta = act_params(name)
    slope = rand(N)
    ep = Epilogue(bias=bias, act1=name, alpha1=alpha, beta1=beta, slope1=slope if name == "prelu" else None,
                  residual=r, act2="tanh")
    y = bmm(a, b, epilogue=ep)
    assert_close(y, torch.tanh(torch_act(name, ref(a, b) + bias, alpha, beta, slope) + r))


@pytest.mark.parametrize("dtype", DTYPES[1:], ids=DTYPE_IDS[1:])
def test_residual_slice_and_output_slice_half(dtype):
    B, M, K, N = 2, 18, 40, 20
    a, b = rand(B, M, K, dtype=dtype), rand(B, N, K, dtype=dtype, scale=0.3).transpose(1, 2)
    r_big = rand(B, M, N + 6, dtype=dtype)
    r = r_big[..., 3:3 + N]                                     # residual with its own row stride
    out_buf, out = channel_slice_buffer((B, M, N), 1, 1 + N, dtype)
    bmm(a, b, epilogue=Epilogue(act1="silu", residual=r, act2="relu6"), out=out)
    assert_close(out, torch.nn.functional.relu6(torch.nn.functional.silu(ref(a, b)) + r.float()))
    assert_untouched(out_buf, 1, 1 + N)


def test_tf32_and_int64_paths():
    a, b = rand(2, 20, 33), rand(2, 33, 17)
    # TF32 is not emulated by the interpreter: this checks the plumbing (the GPU rounds operands to 10 bits).
    assert_close(bmm(a, b, allow_tf32=True), ref(a, b))
    out, launch = bmm_module._plan_bmm(a.transpose(1, 2).contiguous().transpose(1, 2), b, Epilogue(), None, False,
                                       True)
    launch.constexprs["USE_INT64"] = True
    _host.run(launch)
    assert_close(out, ref(a, b))


def test_empty_dims():
    assert bmm(rand(0, 3, 4), rand(0, 4, 5)).shape == (0, 3, 5)
    y = bmm(rand(2, 3, 0), rand(2, 0, 5))                       # K = 0: zeros, as torch
    assert (y == 0).all() and y.shape == (2, 3, 5)


def test_argument_errors():
    a, b = rand(2, 3, 4), rand(2, 4, 5)
    bad = [
        lambda: bmm(a[0], b[0]),
        lambda: bmm(a, rand(2, 5, 5)),                         # K mismatch
        lambda: bmm(a, rand(3, 4, 5)),                         # batch mismatch
        lambda: bmm(a, b.half()),                              # dtypes differ
        lambda: bmm(a.to(torch.int32), b.to(torch.int32)),
        lambda: bmm(a, b, out=torch.empty(2, 3, 6)),
        lambda: bmm(a, b, out=torch.empty(1, 3, 5).expand(2, 3, 5)),   # broadcast output
        lambda: bmm(a, b, epilogue=Epilogue(residual=rand(2, 3, 4))),
    ]
    for fn in bad:
        with pytest.raises(_host.KernelError):
            fn()


def test_specialization_of_transposed_operands():
    spec = bmm_module.specialization((4, 128, 64), torch.float16, 96, transpose_a=True, transpose_b=True, b_batch=1)
    assert spec["signature"]["sam"] == "constexpr" and spec["signature"]["sbk"] == "constexpr"
    assert "sbb" in spec["divisible_by_16"]                     # batch stride 0
    fp32 = bmm_module.specialization((4, 128, 64), torch.float32, 96, config="all")
    assert all(s["constexprs"]["BLOCK_M"] * s["constexprs"]["BLOCK_N"] <= 64 * 32 for s in fp32)
