"""conv_transpose2d (sub-pixel implicit GEMM) against torch.nn.functional.conv_transpose2d."""

import pytest
import torch
import torch.nn.functional as F

from kernel_tolerances import (DTYPE_IDS, DTYPES, assert_close, assert_untouched, channel_slice_buffer, nchw, nhwc,
                               rand, torch_act)
from netdsl.kernels import _host
from netdsl.kernels._host import KernelError
from netdsl.kernels.conv_transpose import (_plan_conv_transpose, conv_transpose2d, output_shape,
                                           pack_conv_transpose_weight)
from netdsl.kernels.epilogue import Epilogue

# (N, H, W, C_in, C_out, kernel, stride, padding, output_padding, dilation, groups)
CASES = {
    "k4-s2-p1": (2, 4, 3, 6, 10, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 1),        # the DCGAN / U-Net upsample
    "k3-s2-op1": (1, 4, 3, 5, 7, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1),
    "s3-rect-groups2": (1, 3, 4, 4, 6, (3, 2), (3, 1), (1, 0), (2, 0), (1, 1), 2),
    "dil2-groups3": (1, 4, 5, 6, 9, (3, 3), (1, 1), (2, 1), (0, 0), (2, 2), 3),
    "s2-dil2": (1, 3, 4, 4, 5, (3, 3), (2, 2), (0, 1), (1, 1), (2, 2), 1),         # odd phases have no taps
    "s3-dil2": (1, 3, 3, 3, 4, (3, 2), (3, 3), (1, 2), (1, 2), (2, 2), 1),         # taps skip around (kh*2 mod 3)
    "stride-beyond-kernel": (1, 3, 2, 4, 3, (2, 2), (3, 3), (0, 0), (2, 1), (1, 1), 1),
    "depthwise": (1, 3, 4, 4, 4, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 4),
    "depthwise-x2": (1, 3, 5, 3, 6, (3, 3), (1, 2), (1, 0), (0, 1), (1, 1), 3),
    "wide-channels": (1, 3, 3, 20, 18, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), 1),  # > one K and N block
    "1x1": (1, 3, 5, 6, 4, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1),
    "N1-H1-W1": (1, 1, 1, 5, 7, (2, 3), (2, 2), (0, 1), (0, 1), (1, 1), 1),
    "big-padding": (1, 5, 5, 3, 4, (3, 3), (1, 1), (2, 2), (0, 0), (1, 1), 1),
}


def make(case, dtype):
    N, H, W, C, OC, k, s, p, op, d, g = case
    x = rand(N, H, W, C, dtype=dtype)
    w = rand(C, OC // g, *k, dtype=dtype, scale=0.5)
    b = rand(OC, dtype=dtype)
    kwargs = dict(out_channels=OC, kernel_size=k, stride=s, padding=p, output_padding=op, dilation=d, groups=g)
    ref = lambda bias=b, xx=x: nhwc(F.conv_transpose2d(nchw(xx), w.float(), None if bias is None else bias.float(),
                                                       s, p, op, g, d))
    return x, w, b, kwargs, ref


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_conv_transpose2d_bias_relu(case, dtype):
    x, w, b, kwargs, ref = make(case, dtype)
    y = conv_transpose2d(x, pack_conv_transpose_weight(w, kwargs["groups"]), epilogue=Epilogue(bias=b, act1="relu"),
                         **kwargs)
    assert y.dtype == dtype
    assert tuple(y.shape) == output_shape(x.shape, kwargs["out_channels"], kwargs["kernel_size"], kwargs["stride"],
                                          kwargs["padding"], kwargs["output_padding"], kwargs["dilation"])
    assert_close(y, F.relu(ref()))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", ["k4-s2-p1", "s3-rect-groups2", "depthwise-x2"])
def test_every_epilogue_piece(case, dtype):
    """bias -> elu(alpha) -> + residual -> prelu (per channel), and shared-slope prelu -> softplus(beta, threshold)."""
    x, w, b, kwargs, ref = make(CASES[case], dtype)
    OC = kwargs["out_channels"]
    packed = pack_conv_transpose_weight(w, kwargs["groups"])
    r = rand(*ref().shape, dtype=dtype)
    slope = rand(OC, dtype=dtype)
    ep = Epilogue(bias=b, act1="elu", alpha1=0.7, residual=r, act2="prelu", slope2=slope)
    y = conv_transpose2d(x, packed, epilogue=ep, **kwargs)
    assert_close(y, torch_act("prelu", F.elu(ref(), 0.7) + r.float(), slope=slope))

    shared = rand(1, dtype=dtype)
    ep = Epilogue(act1="prelu", slope1=shared, act2="softplus", alpha2=1.5, beta2=4.0)
    y = conv_transpose2d(x, packed, epilogue=ep, **kwargs)
    assert_close(y, F.softplus(torch_act("prelu", ref(bias=None), slope=shared), beta=1.5, threshold=4.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", ["k3-s2-op1", "dil2-groups3"])
def test_channel_slices_in_and_out(case, dtype):
    """Read a channel slice of a concat buffer, write into another, residual from a third."""
    _, w, b, kwargs, _ = make(CASES[case], dtype)
    N, H, W, C = CASES[case][:4]
    big_x = rand(N, H, W, C + 5, dtype=dtype)
    x = big_x[..., 3:3 + C]
    ref = nhwc(F.conv_transpose2d(nchw(x), w.float(), b.float(), kwargs["stride"], kwargs["padding"],
                                  kwargs["output_padding"], kwargs["groups"], kwargs["dilation"]))
    OC = kwargs["out_channels"]
    big_r = rand(*ref.shape[:-1], OC + 4, dtype=dtype)
    r = big_r[..., 4:]
    out_buf, out = channel_slice_buffer(ref.shape, 2, 2 + OC, dtype)
    y = conv_transpose2d(x, pack_conv_transpose_weight(w, kwargs["groups"]), out=out,
                         epilogue=Epilogue(bias=b, residual=r, act2="relu6"), **kwargs)
    assert y.data_ptr() == out.data_ptr()
    assert_close(out, F.relu6(ref + r.float()))
    assert_untouched(out_buf, 2, 2 + OC)


def test_in_place_residual():
    x, w, b, kwargs, ref = make(CASES["k4-s2-p1"], torch.float32)
    r = rand(*ref().shape)
    expected = F.relu(ref() + r)
    conv_transpose2d(x, pack_conv_transpose_weight(w, 1), epilogue=Epilogue(bias=b, residual=r, act2="relu"), out=r,
                     **kwargs)
    assert_close(r, expected)


def test_tf32_flag_and_no_bias():
    x, w, _, kwargs, ref = make(CASES["k3-s2-op1"], torch.float32)
    y = conv_transpose2d(x, pack_conv_transpose_weight(w, 1), allow_tf32=True, **kwargs)
    assert_close(y, ref(bias=None))   # the interpreter computes TF32 dots in full fp32


def test_int_arguments_and_int64_offsets():
    """Plain ints for every pair argument; the 64-bit offset path computes the same."""
    x, w = rand(2, 3, 4, 6), rand(6, 3, 3, 3)
    r = rand(2, 6, 8, 9)
    ep = Epilogue(bias=rand(9), act1="relu", residual=r, act2="tanh")
    out, launch = _plan_conv_transpose(x, pack_conv_transpose_weight(w, 3), 9, 3, 2, 1, 1, 1, 3, ep, None, False,
                                       True)
    launch.constexprs["USE_INT64"] = True
    _host.run(launch)
    expected = torch.tanh(F.relu(nhwc(F.conv_transpose2d(nchw(x), w, ep.bias, 2, 1, 1, 3))) + r)
    assert_close(out, expected)


def test_pack_layout_is_k_major_over_kh_kw_ic():
    w = torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).reshape(4, 3, 2, 2)   # C_in=4, OC/G=3, 2x2, 2 groups
    packed = pack_conv_transpose_weight(w, 2)
    assert packed.shape == (2, 2 * 2 * 2, 3)
    # packed[g, (kh * KW + kw) * ICg + ic, oc] = w[g * ICg + ic, oc, kh, kw]
    assert packed[1, (1 * 2 + 0) * 2 + 1, 2] == w[1 * 2 + 1, 2, 1, 0]


def test_argument_errors():
    x = rand(1, 4, 4, 4)
    w = rand(4, 6, 3, 3)
    packed = pack_conv_transpose_weight(w, 1)
    kw = dict(out_channels=6, kernel_size=3, stride=2)
    with pytest.raises(KernelError, match="output_padding"):
        conv_transpose2d(x, packed, output_padding=2, **kw)              # >= max(stride, dilation)
    with pytest.raises(KernelError, match="pack_conv_transpose_weight"):
        conv_transpose2d(x, pack_conv_transpose_weight(rand(4, 5, 3, 3), 1), **kw)
    with pytest.raises(KernelError, match="out shape"):
        conv_transpose2d(x, packed, out=torch.empty(1, 8, 8, 6), **kw)
    with pytest.raises(KernelError, match="groups"):
        conv_transpose2d(x, packed, groups=3, **kw)
    with pytest.raises(KernelError, match="channel stride"):
        conv_transpose2d(x.transpose(1, 3), packed, **kw)
    with pytest.raises(KernelError, match="kernel_size"):
        conv_transpose2d(x, packed, **{**kw, "kernel_size": "3x3"})
    with pytest.raises(KernelError, match="empty"):
        conv_transpose2d(x, packed, padding=6, **kw)
    with pytest.raises(TypeError):                                      # a KernelError is a TypeError for dtypes
        conv_transpose2d(x.to(torch.int32), packed, **kw)
    with pytest.raises(KernelError):
        pack_conv_transpose_weight(w, 3)
