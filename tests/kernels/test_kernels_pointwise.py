"""Pointwise chains, batchnorm-as-affine, and every activation of the shared table."""

import pytest
import torch
import torch.nn.functional as F

from kernel_tolerances import (DTYPE_IDS, DTYPES, TORCH_ACTS, act_params, assert_close, assert_untouched,
                               channel_slice_buffer, rand, torch_act)
from netdsl.kernels.activations import ACT_DEFAULTS, ACTIVATIONS
from netdsl.kernels.epilogue import Epilogue
from netdsl.kernels.pointwise import add, channel_affine, mul, pointwise


def act_input(dtype=torch.float32):
    # wide range: saturating sigmoid/tanh, softplus above and below its threshold, small values.
    x = torch.cat([torch.linspace(-30, 30, 61), torch.linspace(-3, 3, 41), torch.tensor([0.0, 1e-4, -1e-4])])
    x = torch.cat([x, torch.zeros(5 * 6 * 20 * 2 - x.numel())]).reshape(2, 5, 6, 20)
    return (x + torch.randn(x.shape) * 0.01).to(dtype)


def test_activation_table_matches_the_oracle_list():
    """Every kernel activation has a torch oracle and nothing else does (no count written down)."""
    assert len(set(ACTIVATIONS)) == len(ACTIVATIONS)
    assert set(ACTIVATIONS) | {"none"} == set(TORCH_ACTS) | {"none"}
    for name in ACTIVATIONS:
        alpha, beta = act_params(name)
        torch_act(name, torch.zeros(1, 3), alpha, beta, torch.ones(3))  # every name has an oracle
    assert set(ACT_DEFAULTS) <= set(ACTIVATIONS)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_as_act1(name):
    x = act_input()
    alpha, beta = act_params(name)
    slope = rand(20) if name == "prelu" else None
    y = pointwise(x, epilogue=Epilogue(act1=name, alpha1=alpha, beta1=beta, slope1=slope))
    assert_close(y, torch_act(name, x, alpha, beta, slope))


@pytest.mark.parametrize("name", ["gelu", "mish", "softplus", "prelu", "selu", "hardswish"])
@pytest.mark.parametrize("dtype", DTYPES[1:], ids=DTYPE_IDS[1:])
def test_activation_as_act2_after_residual_half(name, dtype):
    x, r = act_input(dtype), rand(2, 5, 6, 20, dtype=dtype)
    alpha, beta = act_params(name)
    slope = rand(1, dtype=dtype)                     # a shared prelu slope
    ep = Epilogue(residual=r, act2=name, alpha2=alpha, beta2=beta, slope2=slope if name == "prelu" else None)
    y = pointwise(x, epilogue=ep)
    assert y.dtype == dtype
    assert_close(y, torch_act(name, x.float() + r.float(), alpha, beta, slope))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_batchnorm_inference_as_channel_affine(dtype):
    x = rand(2, 5, 7, 20, dtype=dtype)
    mean, var, gamma, beta = torch.randn(20), torch.rand(20) + 0.5, torch.randn(20), torch.randn(20)
    scale = (gamma / torch.sqrt(var + 1e-5)).to(dtype)
    shift = (beta - mean * gamma / torch.sqrt(var + 1e-5)).to(dtype)
    y = channel_affine(x, scale, shift, Epilogue(act1="relu"))
    assert_close(y, F.relu(x.float() * scale.float() + shift.float()))
    ref = F.relu(F.batch_norm(x.float().permute(0, 3, 1, 2), mean, var, gamma, beta, False, 0.0, 1e-5))
    if dtype == torch.float32:
        assert_close(y, ref.permute(0, 2, 3, 1))


def test_full_chain_with_bias_residual_and_second_act():
    x, r = rand(3, 17), rand(3, 17)
    s, t, b = rand(17), rand(17), rand(17)
    y = pointwise(x, scale=s, shift=t, epilogue=Epilogue(bias=b, act1="tanh", residual=r, act2="relu6"))
    assert_close(y, F.relu6(torch.tanh(x * s + t + b) + r))


def test_per_sample_scale_is_a_squeeze_excitation_gate():
    x, gate = rand(2, 4, 3, 9), torch.sigmoid(rand(2, 1, 1, 9))
    assert_close(mul(x, gate), x * gate)
    assert_close(pointwise(x, scale=gate.reshape(2, 9), shift=rand(2, 9) * 0), x * gate)


def test_add_and_mul_elementwise_on_channel_slices():
    buf_a = rand(2, 3, 4, 12)
    a = buf_a[..., 2:9]
    b = rand(2, 3, 4, 7)
    out_buf, out = channel_slice_buffer((2, 3, 4, 7), 1, 8, torch.float32)
    add(a, b, act="leaky_relu", alpha=0.2, out=out)
    assert_close(out, F.leaky_relu(a + b, 0.2))
    assert_untouched(out_buf, 1, 8)
    assert_close(mul(a, b), a * b)


def test_in_place_residual_add():
    x, r = rand(2, 5, 5, 6), rand(2, 5, 5, 6)
    expected = F.silu(x + r)
    out = pointwise(x, epilogue=Epilogue(residual=r, act2="silu"), out=r)
    assert out is r
    assert_close(r, expected)


def test_size_one_dims_and_single_channel():
    for shape in [(1, 1, 1, 1), (1, 1, 7, 1), (3, 1)]:
        x = rand(*shape)
        assert_close(pointwise(x, epilogue=Epilogue(act1="elu", alpha1=1.0)), F.elu(x))


def test_bad_arguments_are_reported():
    x = rand(2, 3, 3, 4)
    with pytest.raises(ValueError):
        pointwise(x, scale=rand(5))
    with pytest.raises(ValueError):
        Epilogue(act1="prelu")
    with pytest.raises(ValueError):
        Epilogue(act1="swish")
    with pytest.raises(ValueError):
        pointwise(x.permute(0, 3, 1, 2))  # channel stride must be 1
