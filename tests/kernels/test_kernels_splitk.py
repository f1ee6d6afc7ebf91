"""Split-K conv and linear against torch.nn.functional, the split chooser, the sm_90 configs and the
TMA linear (the interpreter runs tensor descriptors too).

The interpreter runs the partial kernels and the reduction exactly as a GPU would launch them (grid
axis 2 = the K slices); the oracle is torch in fp32 on the same rounded inputs, within the shared bound.
"""

import math

import pytest
import torch
import torch.nn.functional as F
import triton

from kernel_tolerances import (DTYPE_IDS, DTYPES, assert_close, assert_untouched, channel_slice_buffer, nchw, nhwc,
                               rand, torch_act)
from netdsl.kernels import _host, aot, conv, matmul, splitk
from netdsl.kernels.conv_common import HOPPER_CONFIGS
from netdsl.kernels.epilogue import Epilogue


def kernels_of(launches) -> list:
    return [launch.kernel.fn.__name__ for launch in (launches if isinstance(launches, list) else [launches])]


# (N, H, W, C_in, C_out, kernel, stride, padding, groups): K = KH*KW*C_in/groups spans many BLOCK_K steps
CONV_CASES = {
    "3x3": (1, 5, 6, 20, 24, 3, 1, 1, 1),
    "3x3-s2-groups2": (2, 7, 7, 24, 10, 3, 2, 1, 2),
    "1x1-deep": (1, 3, 3, 96, 40, 1, 1, 0, 1),
}


def conv_case(name, dtype):
    N, H, W, C, OC, k, s, p, g = CONV_CASES[name]
    x = rand(N, H, W, C, dtype=dtype)
    w = rand(OC, C // g, k, k, dtype=dtype, scale=0.3)
    b = rand(OC, dtype=dtype)
    kwargs = dict(out_channels=OC, kernel_size=k, stride=s, padding=p, groups=g)
    ref = nhwc(F.conv2d(nchw(x), w.float(), b.float(), s, p, 1, g))
    return x, conv.pack_conv_weight(w, g), b, kwargs, ref, k * k * C // g


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("split", [2, 3, 7])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_split_k_bias_gelu(case, split, dtype):
    x, packed, b, kwargs, ref, K = conv_case(case, dtype)
    y = conv.conv2d(x, packed, epilogue=Epilogue(bias=b, act1="gelu"), split_k=split, **kwargs)
    assert y.dtype == dtype
    assert_close(y, F.gelu(ref), k=K)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_conv_split_k_residual_prelu_into_a_channel_slice(dtype):
    x, packed, b, kwargs, ref, K = conv_case("3x3-s2-groups2", dtype)
    OC = kwargs["out_channels"]
    r = rand(*ref.shape, dtype=dtype)
    slope = rand(OC, dtype=dtype)
    out_buf, out = channel_slice_buffer(ref.shape, 2, 2 + OC, dtype)
    ep = Epilogue(bias=b, act1="silu", residual=r, act2="prelu", slope2=slope)
    y = conv.conv2d(x, packed, epilogue=ep, out=out, split_k=4, **kwargs)
    assert y.data_ptr() == out.data_ptr()
    assert_close(out, torch_act("prelu", F.silu(ref) + r.float(), slope=slope), k=K)
    assert_untouched(out_buf, 2, 2 + OC)


def test_conv_split_k_in_place_residual():
    x, packed, b, kwargs, ref, K = conv_case("1x1-deep", torch.float16)
    r = rand(*ref.shape, dtype=torch.float16)
    expected = F.relu(ref + r.float())
    conv.conv2d(x, packed, epilogue=Epilogue(bias=b, residual=r, act2="relu"), out=r, split_k=3, **kwargs)
    assert_close(r, expected, k=K)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("M,K,N,split", [(1, 300, 40, 4), (5, 129, 33, 2), (37, 200, 20, 13)])
def test_linear_split_k_bias_tanh(M, K, N, split, dtype):
    x, w, b = rand(M, K, dtype=dtype), rand(N, K, dtype=dtype, scale=0.2), rand(N, dtype=dtype)
    y = matmul.linear(x, matmul.pack_linear_weight(w), epilogue=Epilogue(bias=b, act1="tanh"), split_k=split)
    assert y.dtype == dtype and y.shape == (M, N)
    assert_close(y, torch.tanh(F.linear(x.float(), w.float(), b.float())), k=K)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_linear_split_k_residual_into_a_column_slice(dtype):
    x, w = rand(2, 3, 160, dtype=dtype), rand(18, 160, dtype=dtype, scale=0.2)
    r = rand(2, 3, 18, dtype=dtype)
    out_buf, out = channel_slice_buffer((2, 3, 18), 1, 19, dtype)
    ep = Epilogue(act1="relu6", residual=r, act2="mish")
    matmul.linear(x, matmul.pack_linear_weight(w), epilogue=ep, out=out, split_k=5)
    assert_close(out, F.mish(F.relu6(F.linear(x.float(), w.float())) + r.float()), k=160)
    assert_untouched(out_buf, 1, 19)


def test_each_slice_sums_its_own_block_of_k():
    """The workspace holds, per slice, the product over exactly that slice's BLOCK_K steps: no gap, no overlap."""
    x, w = rand(6, 100), rand(12, 100)
    split = 3
    _, (partial, reduce) = matmul._plan_linear(x, matmul.pack_linear_weight(w), Epilogue(), None, False, True,
                                               split_k=split)
    _host.run(partial)
    ws = partial.args["ws_ptr"]
    block_k = partial.config.kwargs["BLOCK_K"]
    steps = math.ceil(100 / block_k)
    for s in range(split):
        ks = slice(s * steps // split * block_k, min((s + 1) * steps // split * block_k, 100))
        assert_close(ws[s], x[:, ks] @ w[:, ks].t(), k=100)
    assert reduce.kernel.fn.__name__ == "splitk_reduce_kernel" and reduce.args["splits"] == split
    # the reduction adds the slices in order 0, 1, 2 in fp32: bit for bit, run after run
    _host.run(reduce)
    in_order = ws[0].clone()
    for s in range(1, split):
        in_order += ws[s]
    assert torch.equal(reduce.args["out_ptr"], in_order)


def test_split_k_64_bit_offsets_compute_the_same():
    """USE_INT64 (chosen for tensors past 2**31 elements, too big for a test) forced on both launches."""
    x, packed, b, kwargs, ref, K = conv_case("3x3-s2-groups2", torch.float32)
    r = rand(*ref.shape)
    ep = Epilogue(bias=b, residual=r, act2="tanh")
    geo = (kwargs["out_channels"], 3, 2, 1, 1, 2)
    out, launches = conv._plan_conv(x, packed, *geo, ep, None, False, True, split_k=3)
    for launch in launches:
        launch.constexprs["USE_INT64"] = True
        _host.run(launch)
    assert_close(out, torch.tanh(ref + r), k=K)
    a, w = rand(9, 150), rand(7, 150)
    out, launches = matmul._plan_linear(a, matmul.pack_linear_weight(w), Epilogue(), None, False, True, split_k=2)
    for launch in launches:
        launch.constexprs["USE_INT64"] = True
        _host.run(launch)
    assert_close(out, a @ w.t(), k=150)


def test_split_one_is_the_fused_kernel_unchanged():
    x, packed, b, kwargs, ref, K = conv_case("3x3", torch.float16)
    ep = Epilogue(bias=b, act1="relu")
    geo = (kwargs["out_channels"], 3, 1, 1, 1, 1)
    _, plain = conv._plan_conv(x, packed, *geo, ep, None, False, True)
    _, one = conv._plan_conv(x, packed, *geo, ep, None, False, True, split_k=1)
    _, auto = conv._plan_conv(x, packed, *geo, ep, None, False, True, split_k=None)   # no GPU: no SM count
    assert kernels_of(plain) == kernels_of(one) == kernels_of(auto) == ["conv2d_kernel"]
    assert _host.spec_of(one) == _host.spec_of(plain) == _host.spec_of(auto)
    a, wl = rand(9, 300), matmul.pack_linear_weight(rand(7, 300))
    plain, one = (matmul._plan_linear(a, wl, ep_l, None, False, True, **kw)[1]
                  for ep_l, kw in ((Epilogue(), {}), (Epilogue(), dict(split_k=1))))
    assert kernels_of(plain) == kernels_of(one) == ["linear_kernel"] and _host.spec_of(plain) == _host.spec_of(one)
    y1 = conv.conv2d(x, packed, epilogue=ep, split_k=1, **kwargs)
    y = conv.conv2d(x, packed, epilogue=ep, **kwargs)
    assert torch.equal(y, y1)
    assert_close(y, F.relu(ref), k=K)


# ----------------------------------------------------------------------------- the chooser

FAST = [c for c, tiers in conv.TIERED_CONFIGS if "fast" in tiers]   # 64x64 first; most parallel 64x32


def fills(config, m, n, groups=1):
    return math.ceil(m / config.kwargs["BLOCK_M"]) * math.ceil(n / config.kwargs["BLOCK_N"]) * groups


@pytest.mark.parametrize("sm_count", [108, 132])
def test_chooser_splits_exactly_when_the_grid_is_short_and_k_is_long(sm_count):
    for m in (1, 49, 196, 784, 3136, 12544):
        for n in (64, 256, 1000, 2048):
            for k in (27, 64, 256, 511, 512, 1152, 4608):
                config, split = splitk.choose_split(m, n, k, FAST, sm_count)
                short = max(fills(c, m, n) for c in FAST) < sm_count
                long = k // splitk.MIN_K_PER_SPLIT >= 2
                assert (split > 1) == (short and long), (m, n, k, config, split)
                if split == 1:
                    assert config is FAST[0]                      # the autotuner still picks the tile
                    continue
                limit = min(splitk.MAX_SPLIT, k // splitk.MIN_K_PER_SPLIT)
                assert split <= limit
                assert split <= math.ceil(k / config.kwargs["BLOCK_K"])   # every slice gets a K step
                if limit >= math.ceil(sm_count / fills(config, m, n)):
                    assert fills(config, m, n) * split >= sm_count    # K allows it: the machine is covered


def test_chooser_examples_at_batch_one():
    # ResNet-50 layer4's 3x3 conv: 49 pixels x 512 channels, K = 9 * 512: 8 tiles of 64x64 -> split
    config, split = splitk.choose_split(49, 512, 512, FAST, 132, taps=9)
    assert split > 1 and fills(config, 49, 512) * split >= 132
    # its classifier: 1 x 1000 over K = 2048: 32 tiles of 64x32 in 5 slices rather than 16 of 64x64 in 8
    config, split = splitk.choose_split(1, 1000, 2048, matmul.CONFIGS, 132)
    assert (config.kwargs["BLOCK_N"], split) == (32, 5)
    # the stem at 224x224: 12544 pixels fill the machine; LeNet's fc3: K = 84 is too short to cut
    assert splitk.choose_split(12544, 64, 3, FAST, 132, taps=49)[1] == 1
    assert splitk.choose_split(1, 10, 84, matmul.CONFIGS, 132)[1] == 1
    # no SM count (no GPU): never
    assert splitk.choose_split(49, 512, 512, FAST, None, taps=9) == (FAST[0], 1)
    # groups multiply the tiles: 32 groups of 49 x 16 fill 132 SMs with no split
    assert splitk.choose_split(49, 16, 512, FAST, 132, taps=9, groups=32)[1] > 1
    assert splitk.choose_split(196, 64, 512, FAST, 132, taps=9, groups=64)[1] == 1


def test_plan_splits_for_a_given_sm_count():
    x = rand(1, 7, 7, 64, dtype=torch.float16)
    packed = conv.pack_conv_weight(rand(64, 64, 3, 3, dtype=torch.float16), 1)
    _, launches = conv._plan_conv(x, packed, 64, 3, 1, 1, 1, 1, Epilogue(), None, False, False, split_k=None,
                                  sm_count=132)
    assert kernels_of(launches) == ["conv2d_splitk_kernel", "splitk_reduce_kernel"]
    partial = launches[0]
    assert partial.grid({**partial.constexprs, **partial.config.kwargs})[2] == partial.args["splits"] > 1
    assert kernels_of(conv._plan_conv(x, packed, 64, 3, 1, 1, 1, 1, Epilogue(), None, False, False,
                                      split_k=None, sm_count=1)[1]) == ["conv2d_kernel"]


# ----------------------------------------------------------------------------- sm_90 configs

def test_hopper_configs_only_for_sm90_and_pruned_by_shape():
    args = lambda n, **ep: matmul._plan_linear(
        _host.meta_tensor((512, 1024), torch.float16), _host.meta_tensor((1024, n), torch.float16),
        Epilogue.planned((512, n), torch.float16, **ep), None, False, False)[1]
    def tiles(n, cc, **ep):
        launch = args(n, **ep)
        return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"])
                for c in matmul.eligible_configs({**launch.args, **launch.constexprs}, cc)}
    assert all(bk == 32 or (bm, bn) == (32, 64) for bm, bn, bk in tiles(1024, 80))
    assert (128, 256, 64) in tiles(1024, 90) and (128, 128, 64) in tiles(1024, 90)
    assert not any(bn > 64 for _, bn, bk in tiles(64, 90) if bk == 64)           # N = 64: no wider tile
    assert (128, 256, 64) not in tiles(1024, 90, residual=True)                 # would spill
    assert (128, 128, 64) in tiles(1024, 90, residual=True)
    assert not any(bk == 64 for *_, bk in tiles(1024, 90, act1="gelu", residual=True, act2="mish"))


def test_hopper_configs_fit_sm90_shared_memory():
    for c in HOPPER_CONFIGS:
        kw = c.kwargs
        stage = (kw["BLOCK_M"] + kw["BLOCK_N"]) * kw["BLOCK_K"] * 2
        assert c.num_stages * stage <= aot.SHARED_LIMIT[90], c


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tma_linear_matches_the_oracle(dtype):
    """The TMA kernel's boxes are zero-filled past every edge: M, N and K all off the tile sizes."""
    x, w, b = rand(37, 56, dtype=dtype), rand(40, 56, dtype=dtype, scale=0.3), rand(40, dtype=dtype)
    r = rand(37, 40, dtype=dtype)
    out_buf, out = channel_slice_buffer((37, 40), 8, 48, dtype)
    ep = Epilogue(bias=b, act1="gelu", residual=r, act2="relu")
    launch = matmul._plan_linear(x, matmul.pack_linear_weight(w), ep, out, False, True, tma=True)[1]
    assert launch.kernel.fn.__name__ == "linear_tma_kernel"
    matmul.linear(x, matmul.pack_linear_weight(w), epilogue=ep, out=out, tma=True)
    assert_close(out, F.relu(F.gelu(F.linear(x.float(), w.float(), b.float())) + r.float()), k=56)
    assert_untouched(out_buf, 8, 48)


def test_tma_needs_aligned_rows():
    with pytest.raises(_host.KernelError, match="TMA"):
        matmul.linear(rand(5, 45, dtype=torch.float16), matmul.pack_linear_weight(rand(8, 45, dtype=torch.float16)),
                      tma=True)
    with pytest.raises(_host.KernelError, match="TMA"):
        matmul.linear(rand(45, 8).t(), matmul.pack_linear_weight(rand(8, 45)), tma=True)


@pytest.fixture(scope="module")
def built():
    """Split-K partial and reduction kernels (fp16 with the residual epilogue, fp32 exact) for sm_80 and
    sm_90, and the largest sm_90 tile of each GEMM for sm_90 (reports cached across runs)."""
    F16, F32 = torch.float16, torch.float32
    ep = lambda shape, dt: Epilogue.planned(shape, dt, bias=True, act1="relu", residual=True, act2="silu")
    both = [*conv.specialization((1, 7, 7, 512), F16, (1, 9 * 512, 512), 512, 3, 1, 1, 1, 1,
                                 ep((1, 7, 7, 512), F16), split_k=None, sm_count=132),
            *matmul.specialization((1, 2048), F16, 1000, ep((1, 1000), F16), split_k=None, sm_count=132),
            *matmul.specialization((3, 700), F32, 50, ep((3, 50), F32), split_k=2)]
    big = triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3)
    plain = lambda shape: Epilogue.planned(shape, F16, bias=True, act1="relu")
    hopper = [conv.specialization((2, 28, 28, 256), F16, (1, 9 * 256, 256), 256, 3, 1, 1, 1, 1,
                                  plain((2, 28, 28, 256)), config=big, cc=90),
              matmul.specialization((512, 1024), F16, 1024, plain((512, 1024)), config=big, cc=90),
              matmul.specialization((512, 1024), F16, 1024, plain((512, 1024)), config=big, tma=True),
              matmul.specialization((4, 77, 1024), F16, 1024, ep((4, 77, 1024), F16), tma=True)]
    jobs = aot.jobs(both, ccs=(80, 90)) + aot.jobs(hopper, ccs=(90,))
    return list(zip(jobs, aot.build_many(jobs, max_workers=2)))


def test_split_k_and_sm90_kernels_build_without_spills(built):
    assert {r.name for _, r in built} >= {"conv2d_splitk_kernel", "linear_splitk_kernel", "splitk_reduce_kernel",
                                          "linear_tma_kernel"}
    for job, r in built:
        assert r.spills == 0 and r.fits_shared and r.registers <= aot.MAX_REGISTERS, (job["kernel"], r)
        if r.name != "splitk_reduce_kernel" and "fp32" not in str(job["signature"]["x_ptr"]):
            assert r.mma == ("HGMMA" if r.cc == 90 else "HMMA"), (job["kernel"], r.cc, r.mma)
