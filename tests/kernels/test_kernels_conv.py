"""conv2d (implicit GEMM) and depthwise_conv2d (direct) against torch.nn.functional.conv2d."""

import pytest
import torch
import torch.nn.functional as F

from kernel_tolerances import (DTYPE_IDS, DTYPES, act_params, assert_close, assert_untouched, channel_slice_buffer,
                               nchw, nhwc, rand, torch_act)
from netdsl.kernels.activations import ACTIVATIONS
from netdsl.kernels.conv import conv2d, pack_conv_weight
from netdsl.kernels.conv_direct import depthwise_conv2d
from netdsl.kernels.epilogue import Epilogue

# (N, H, W, C_in, C_out, kernel, stride, padding, dilation, groups)
CASES = {
    "3x3-s2": (2, 7, 9, 6, 10, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    "groups3-dil2": (2, 8, 7, 6, 9, (3, 3), (1, 1), (2, 2), (2, 2), 3),
    "groups2-rect": (1, 6, 5, 4, 6, (3, 1), (2, 1), (1, 0), (1, 1), 2),
    "1x1-wide": (2, 5, 5, 20, 12, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    "H1-N1": (1, 1, 9, 5, 7, (1, 3), (1, 2), (0, 1), (1, 1), 1),
    "depthwise": (2, 7, 7, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 8),
    "depthwise-x2-s2": (2, 6, 6, 3, 6, (3, 3), (2, 2), (1, 1), (1, 1), 3),
    "depthwise-5x5-d2": (1, 9, 8, 5, 5, (5, 5), (1, 1), (4, 4), (2, 2), 5),
}


def make(case, dtype):
    N, H, W, C, OC, k, s, p, d, g = case
    x = rand(N, H, W, C, dtype=dtype)
    w = rand(OC, C // g, *k, dtype=dtype, scale=0.5)
    b = rand(OC, dtype=dtype)
    kwargs = dict(out_channels=OC, kernel_size=k, stride=s, padding=p, dilation=d, groups=g)
    ref = lambda bias=b: nhwc(F.conv2d(nchw(x), w.float(), None if bias is None else bias.float(), s, p, d, g))
    return x, w, b, kwargs, ref


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_conv2d_bias_relu(case, dtype):
    x, w, b, kwargs, ref = make(case, dtype)
    y = conv2d(x, pack_conv_weight(w, kwargs["groups"]), epilogue=Epilogue(bias=b, act1="relu"), **kwargs)
    assert y.dtype == dtype
    assert_close(y, F.relu(ref()))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_conv2d_every_activation(name):
    x, w, b, kwargs, ref = make(CASES["groups2-rect"], torch.float32)
    alpha, beta = act_params(name)
    slope = rand(6)
    y = conv2d(x, pack_conv_weight(w, 2), **kwargs,
               epilogue=Epilogue(bias=b, act1=name, alpha1=alpha, beta1=beta, slope1=slope))
    assert_close(y, torch_act(name, ref(), alpha, beta, slope))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", ["3x3-s2", "depthwise-x2-s2"])
def test_residual_and_second_activation(case, dtype):
    x, w, b, kwargs, ref = make(CASES[case], dtype)
    OC = kwargs["out_channels"]
    r = rand(*ref().shape, dtype=dtype)
    slope = rand(OC, dtype=dtype)
    ep = Epilogue(bias=b, act1="gelu", residual=r, act2="prelu", slope2=slope)
    y = conv2d(x, pack_conv_weight(w, kwargs["groups"]), epilogue=ep, **kwargs)
    assert_close(y, torch_act("prelu", F.gelu(ref()) + r.float(), slope=slope))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", ["groups3-dil2", "depthwise"])
def test_channel_slices_in_and_out(case, dtype):
    """Read a channel slice of a concat buffer, write into another, residual from a third."""
    _, w, b, kwargs, _ = make(CASES[case], dtype)
    N, H, W, C = CASES[case][:4]
    big_x = rand(N, H, W, C + 5, dtype=dtype)
    x = big_x[..., 3:3 + C]
    ref = nhwc(F.conv2d(nchw(x), w.float(), b.float(), kwargs["stride"], kwargs["padding"], kwargs["dilation"],
                        kwargs["groups"]))
    OC = kwargs["out_channels"]
    big_r = rand(*ref.shape[:-1], OC + 4, dtype=dtype)
    r = big_r[..., 4:]
    out_buf, out = channel_slice_buffer(ref.shape, 2, 2 + OC, dtype)
    y = conv2d(x, pack_conv_weight(w, kwargs["groups"]), epilogue=Epilogue(bias=b, residual=r, act2="relu"),
               out=out, **kwargs)
    assert y.data_ptr() == out.data_ptr()
    assert_close(out, F.relu(ref + r.float()))
    assert_untouched(out_buf, 2, 2 + OC)


def test_in_place_residual():
    x, w, b, kwargs, ref = make(CASES["1x1-wide"], torch.float32)
    r = rand(*ref().shape)
    expected = F.relu(ref() + r)
    conv2d(x, pack_conv_weight(w, 1), epilogue=Epilogue(bias=b, residual=r, act2="relu"), out=r, **kwargs)
    assert_close(r, expected)


def test_tf32_flag_and_no_bias():
    x, w, _, kwargs, ref = make(CASES["3x3-s2"], torch.float32)
    y = conv2d(x, pack_conv_weight(w, 1), allow_tf32=True, **kwargs)
    assert_close(y, ref(bias=None))   # the interpreter computes TF32 dots in full fp32


def test_depthwise_entry_point_matches_conv2d_dispatch():
    x, w, b, kwargs, ref = make(CASES["depthwise-x2-s2"], torch.float16)
    packed = pack_conv_weight(w, 3)
    kw = {k: v for k, v in kwargs.items() if k != "groups"}
    assert_close(depthwise_conv2d(x, packed, epilogue=Epilogue(bias=b), **kw), ref())


def test_pack_layout_is_k_major_over_kh_kw_ic():
    w = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)   # OC=2, IC=3, 2x2
    packed = pack_conv_weight(w, 1)
    assert packed.shape == (1, 12, 2)
    # K index = (kh * KW + kw) * ICg + ic
    assert packed[0, (1 * 2 + 0) * 3 + 2, 1] == w[1, 2, 1, 0]


def test_shape_errors():
    x = rand(1, 5, 5, 4)
    w = pack_conv_weight(rand(6, 4, 3, 3), 1)
    with pytest.raises(ValueError):
        conv2d(x, w, out_channels=8, kernel_size=3)
    with pytest.raises(ValueError):
        conv2d(x, w, out_channels=6, kernel_size=3, out=torch.empty(1, 5, 5, 6))
    with pytest.raises(ValueError):
        conv2d(x.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)[..., :3], w, out_channels=6, kernel_size=3)
