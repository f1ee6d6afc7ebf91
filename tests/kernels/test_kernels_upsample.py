"""upsample_nearest2d and upsample_bilinear2d against torch.nn.functional.interpolate (channels last)."""

import pytest
import torch
import torch.nn.functional as F

from kernel_tolerances import DTYPE_IDS, DTYPES, assert_close, assert_untouched, channel_slice_buffer, nchw, nhwc, rand
from netdsl.kernels import _host
from netdsl.kernels._host import KernelError
from netdsl.kernels.upsample import _plan_upsample, output_size, upsample_bilinear2d, upsample_nearest2d

# (N, H, W, C) -> (OH, OW): odd ratios, torch's copy (OH == H) and 2x special cases, downsampling, size-1 dims.
SIZES = {
    "odd": ((2, 3, 5, 5), (7, 11)),
    "2x": ((1, 4, 3, 20), (8, 6)),
    "same-H": ((1, 5, 3, 3), (5, 7)),
    "down": ((1, 6, 7, 4), (3, 4)),
    "from-1x1": ((2, 1, 1, 3), (3, 2)),
    "to-1x1": ((1, 2, 3, 5), (1, 1)),
}
MODES = {"nearest": None, "bilinear": False, "bilinear-align": True}


def torch_interpolate(x, mode, **kwargs):
    name, corners = ("nearest", None) if mode == "nearest" else ("bilinear", MODES[mode])
    return nhwc(F.interpolate(nchw(x), mode=name, align_corners=corners, **kwargs))


def kernel(x, mode, size=None, scale_factor=None, out=None):
    if mode == "nearest":
        return upsample_nearest2d(x, size, scale_factor, out=out)
    return upsample_bilinear2d(x, size, MODES[mode], scale_factor, out=out)


def check(y, expected, mode):
    if mode == "nearest":   # a gather: bit-exact in every dtype
        assert y.shape == expected.shape and torch.equal(y.float(), expected.float())
    else:
        assert_close(y, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sizes", SIZES.values(), ids=SIZES.keys())
def test_upsample_to_a_size(sizes, mode, dtype):
    x_shape, size = sizes
    x = rand(*x_shape, dtype=dtype)
    y = kernel(x, mode, size)
    assert y.dtype == dtype
    check(y, torch_interpolate(x, mode, size=size), mode)


# scale factors as the user wrote them: torch maps indices with 1/scale_factor, not H/OH.
SCALES = [(1.7, 1.3), (2.0, 2.0), (3.1, 0.7), (2.5, 1.0), (1.1, 1.5)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", SCALES, ids=[f"{a}x{b}" for a, b in SCALES])
def test_upsample_with_scale_factor(scale, mode, dtype):
    x = rand(1, 4, 5, 6, dtype=dtype)
    expected = torch_interpolate(x, mode, scale_factor=scale)
    assert output_size((4, 5), scale) == tuple(expected.shape[1:3])
    check(kernel(x, mode, scale_factor=scale), expected, mode)                       # size from the scales
    check(kernel(x, mode, size=tuple(expected.shape[1:3]), scale_factor=scale), expected, mode)


def test_nearest_source_index_rounds_like_torch():
    """floor(oh * fp32 scale) over many ratios, with and without the user's scale factor."""
    x = torch.arange(9 * 2, dtype=torch.float32).reshape(1, 9, 2, 1).repeat(1, 1, 1, 2)
    for H in (2, 3, 5, 9):
        xh = x[:, :H].contiguous()
        for s in (1.1, 1.3, 1.5, 1.7, 2.1, 2.7, 3.0, 3.1, 0.6, 0.75):
            expected = torch_interpolate(xh, "nearest", scale_factor=(s, 1.0))
            if expected.shape[1] == 0:
                continue
            assert torch.equal(upsample_nearest2d(xh, scale_factor=(s, 1.0)), expected), (H, s)
            size = tuple(expected.shape[1:3])
            assert torch.equal(upsample_nearest2d(xh, size), torch_interpolate(xh, "nearest", size=size)), (H, s)


@pytest.mark.parametrize("mode", MODES)
def test_channel_slices_in_and_out(mode):
    """A decoder's upsample: read a channel slice, write straight into a concat buffer's slice."""
    big = rand(2, 3, 4, 11, dtype=torch.float16)
    x = big[..., 2:9]
    expected = torch_interpolate(x, mode, size=(6, 7))
    out_buf, out = channel_slice_buffer(expected.shape, 3, 10, torch.float16)
    y = kernel(x, mode, (6, 7), out=out)
    assert y.data_ptr() == out.data_ptr()
    check(out, expected, mode)
    assert_untouched(out_buf, 3, 10)


def test_int64_offsets_compute_the_same():
    x = rand(2, 3, 5, 6)
    for mode, corners in (("nearest", False), ("bilinear", False), ("bilinear", True)):
        out, launch = _plan_upsample(x, (7, 8), None, mode, corners, None, True)
        launch.constexprs["USE_INT64"] = True
        _host.run(launch)
        expected = nhwc(F.interpolate(nchw(x), (7, 8), mode=mode, align_corners=corners if mode != "nearest" else None))
        assert_close(out, expected)


def test_argument_errors():
    x = rand(1, 3, 3, 4)
    with pytest.raises(KernelError, match="size"):
        upsample_nearest2d(x)                                            # neither size nor scale factor
    with pytest.raises(KernelError, match="positive"):
        upsample_bilinear2d(x, scale_factor=-2.0)
    with pytest.raises(KernelError, match="scale_factor"):
        upsample_nearest2d(x, scale_factor=(2.0, 2.0, 2.0))
    with pytest.raises(KernelError, match="empty"):
        upsample_nearest2d(x, (0, 4))
    with pytest.raises(KernelError, match="out shape"):
        upsample_bilinear2d(x, (6, 6), out=torch.empty(1, 6, 5, 4))
    with pytest.raises(KernelError, match="NHWC"):
        upsample_nearest2d(x[0], (6, 6))
    with pytest.raises(KernelError, match="mode"):
        _plan_upsample(x, (6, 6), None, "bicubic", False, None, True)
    with pytest.raises(KernelError, match="align_corners"):
        _plan_upsample(x, (6, 6), None, "nearest", True, None, True)
    with pytest.raises(TypeError):                                       # dtype errors are TypeErrors too
        upsample_nearest2d(x.to(torch.int64), (6, 6))
