"""Host plumbing: row views, specializations agree with the launches they describe."""

import pytest
import torch

from netdsl.kernels import (_host, attention, bmm, conv, conv_direct, conv_transpose, embedding, matmul, norm,
                            pointwise, pool, softmax, upsample)
from netdsl.kernels.epilogue import Epilogue


def test_kernel_error_is_the_one_wrapper_error():
    """Every wrapper's argument check raises KernelError (a ValueError, and a TypeError for dtypes)."""
    x = torch.zeros(1, 4, 4, 8)
    bad = [
        lambda: conv.conv2d(x, conv.pack_conv_weight(torch.zeros(6, 8, 3, 3), 1), out_channels=7, kernel_size=3),
        lambda: conv_direct.depthwise_conv2d(x, torch.zeros(8, 9, 2), out_channels=8, kernel_size=3),
        lambda: conv_transpose.conv_transpose2d(x, torch.zeros(1, 72, 4), out_channels=4, kernel_size=2),
        lambda: matmul.linear(x, torch.zeros(7, 3)),
        lambda: matmul.pack_linear_weight(torch.zeros(3)),
        lambda: pointwise.pointwise(x, scale=torch.zeros(3)),
        lambda: norm.layernorm(x, torch.zeros(3), None),
        lambda: norm.groupnorm(x, 3, None, None),
        lambda: pool.maxpool2d(x, 2, 1, 2),
        lambda: softmax.softmax(x, out=torch.zeros(2)),
        lambda: bmm.bmm(x[0], x[0]),
        lambda: attention.attention(x, x[..., :3], x),
        lambda: embedding.embedding(torch.zeros(2, dtype=torch.int64), x),
        lambda: upsample.upsample_nearest2d(x),
        lambda: Epilogue(act1="rleu"),
        lambda: Epilogue(act2="prelu"),
        lambda: Epilogue(bias=torch.zeros(3)).kernel_args(x, 16, 8),
        lambda: _host.rows_of(x.transpose(1, 3), "x"),
    ]
    for fn in bad:
        with pytest.raises(_host.KernelError):
            fn()
    with pytest.raises(TypeError):
        pointwise.pointwise(x.to(torch.int32))
    assert issubclass(_host.KernelError, ValueError) and issubclass(_host.KernelError, TypeError)


def test_planned_epilogue_is_an_epilogue_of_meta_tensors():
    ep = Epilogue.planned((2, 5, 5, 12), torch.bfloat16, bias=True, act1="softplus", residual=True, act2="prelu")
    assert isinstance(ep, Epilogue)
    assert ep.bias.device.type == "meta" and tuple(ep.bias.shape) == (12,) and ep.bias.dtype == torch.bfloat16
    assert tuple(ep.residual.shape) == (2, 5, 5, 12) and ep.slope1 is None and tuple(ep.slope2.shape) == (12,)
    assert ep.alpha1 > 0                                   # softplus's beta: torch's default, valid
    args, constexprs = ep.kernel_args(_host.meta_tensor((2, 5, 5, 12), torch.bfloat16), 50, 12)
    assert constexprs == dict(HAS_BIAS=True, ACT1="softplus", HAS_RES=True, ACT2="prelu")
    plain = Epilogue.planned((4, 8), torch.float16)
    assert plain.bias is None and plain.residual is None and plain.act1 == plain.act2 == "none"


def test_rows_of_accepts_channel_slices_and_rejects_non_uniform_views():
    buf = torch.zeros(2, 3, 4, 10)
    assert _host.rows_of(buf[..., 2:7], "x") == (24, 5, 10)
    assert _host.rows_of(torch.zeros(6, 1, 5), "x") == (6, 5, 5)
    with pytest.raises(ValueError):
        _host.rows_of(buf[:, :2], "x")            # rows of a sample are not uniformly strided
    with pytest.raises(ValueError):
        _host.rows_of(buf.transpose(2, 3), "x")   # channel stride is not 1


def test_type_names_follow_the_jit():
    assert _host.type_name(torch.empty(1, dtype=torch.bfloat16)) == "*bf16"
    assert _host.type_name(7) == "i32" and _host.type_name(2**33) == "i64"
    assert _host.type_name(0.5) == "fp32" and _host.type_name(True) == "u1"


def test_int64_is_chosen_from_the_sizes():
    small = torch.empty(10, device="meta")
    huge = torch.empty(2**31 + 5, dtype=torch.float16, device="meta")
    assert not _host.needs_int64(small) and _host.needs_int64(huge)
    spec = pointwise.specialization((1, 2**16, 2**8, 129), torch.float16)
    assert spec["constexprs"]["USE_INT64"]


SPECS = {
    "conv": lambda: conv.specialization((2, 9, 9, 16), torch.float16, (1, 9 * 16, 32), 32, 3, 1, 1, 1, 1,
                                        Epilogue.planned((2, 9, 9, 32), torch.float16, bias=True, act1="relu")),
    "conv-depthwise": lambda: conv.specialization((2, 9, 9, 16), torch.float16, (16, 9, 1), 16, 3, 1, 1, 1, 16),
    "depthwise": lambda: conv_direct.specialization((2, 9, 9, 16), torch.float32, 32, 3, 1, 1, 1),
    "linear": lambda: matmul.specialization((8, 32), torch.bfloat16, 48,
                                            Epilogue.planned((8, 48), torch.bfloat16, residual=True)),
    "pointwise": lambda: pointwise.specialization((2, 4, 4, 8), torch.float16, scale_shape=(2, 8)),
    "layernorm": lambda: norm.layernorm_specialization((8, 32), torch.float32),
    "maxpool": lambda: pool.specialization((2, 8, 8, 16), torch.float16, "max"),
    "conv_transpose": lambda: conv_transpose.specialization(
        (2, 9, 9, 16), torch.float16, 32, 4, 2, 1, 0, 1, 1,
        Epilogue.planned((2, 18, 18, 32), torch.float16, bias=True, act1="prelu", residual=True, act2="softplus")),
    "upsample": lambda: upsample.specialization((2, 8, 8, 16), torch.bfloat16, (16, 16), "bilinear"),
    "softmax": lambda: softmax.specialization((8, 100), torch.float16),
    "bmm": lambda: bmm.specialization((3, 8, 32), torch.bfloat16, 48,
                                      Epilogue.planned((3, 8, 48), torch.bfloat16, bias=True, residual=True),
                                      transpose_b=True),
    "attention": lambda: attention.specialization((2, 4, 33, 80), torch.float16, 40, mask_shape=(33, 40),
                                                  causal=True),
    "embedding": lambda: embedding.specialization((3, 5), torch.int32, 100, 64, torch.float32),
}


@pytest.mark.parametrize("name", SPECS)
def test_specialization_covers_every_kernel_argument(name):
    spec = SPECS[name]()
    fn = getattr(__import__(spec["module"], fromlist=[spec["kernel"]]), spec["kernel"])
    assert list(spec["signature"]) == list(fn.arg_names)
    for arg, ty in spec["signature"].items():
        assert (ty == "constexpr") == (arg in spec["constexprs"]), arg
    assert set(spec["divisible_by_16"]) <= {a for a, t in spec["signature"].items() if t != "constexpr"}
    assert spec["num_warps"] in (1, 2, 4, 8, 16)


def test_conv_dispatches_depthwise_to_the_direct_kernel():
    assert SPECS["conv-depthwise"]()["kernel"] == "depthwise_conv2d_kernel"
    assert SPECS["conv"]()["kernel"] == "conv2d_kernel"


def test_config_all_lists_every_eligible_config():
    specs = conv.specialization((2, 9, 9, 16), torch.float16, (1, 144, 32), 32, 3, 1, 1, 1, 1, config="all")
    assert len(specs) == len(conv.CONFIGS) - 1          # the fast tier: every config but the medium/fma-only one
    fp32 = matmul.specialization((8, 32), torch.float32, 48, config="all")
    assert all(s["constexprs"]["BLOCK_M"] * s["constexprs"]["BLOCK_N"] <= 64 * 32 for s in fp32)


def test_groupnorm_specialization_lists_its_three_launches():
    names = [s["kernel"] for s in norm.groupnorm_specialization((2, 8, 8, 32), torch.float16, 4)]
    assert names == ["groupnorm_stats_kernel", "groupnorm_affine_kernel", "pointwise_kernel"]


def test_interpreter_launch_and_gpu_specialization_share_the_plan():
    """The wrapper's plan on real tensors and the AOT plan on meta tensors agree (but the tile)."""
    x = torch.randn(2, 9, 9, 16, dtype=torch.float16)
    w = conv.pack_conv_weight(torch.randn(32, 16, 3, 3, dtype=torch.float16), 1)
    ep = Epilogue(bias=torch.randn(32, dtype=torch.float16), act1="relu")
    _, launch = conv._plan_conv(x, w, 32, 3, 1, 1, 1, 1, ep, None, False, False)
    real = _host.spec_of(launch)
    meta = SPECS["conv"]()
    assert real["signature"] == meta["signature"] and real["constexprs"] == meta["constexprs"]


def _forced_int64(plan_and_run):
    """Run a planned launch with USE_INT64 forced on (tensors > 2**31 elements do not fit in a test)."""
    out, launches = plan_and_run
    for launch in launches if isinstance(launches, list) else [launches]:
        if "USE_INT64" in launch.constexprs:
            launch.constexprs["USE_INT64"] = True
        _host.run(launch)
    return out


def test_int64_offset_paths_compute_the_same():
    import torch.nn.functional as F
    from kernel_tolerances import assert_close, nchw, nhwc, rand

    x, w = rand(2, 6, 7, 6), rand(9, 2, 3, 3)
    r = rand(2, 3, 4, 9)
    ep = Epilogue(bias=rand(9), act1="relu", residual=r, act2="tanh")
    y = _forced_int64(conv._plan_conv(x, conv.pack_conv_weight(w, 3), 9, 3, 2, 1, 1, 3, ep, None, False, True))
    assert_close(y, torch.tanh(F.relu(nhwc(F.conv2d(nchw(x), w, ep.bias, 2, 1, 1, 3))) + r))

    wd = rand(12, 1, 3, 3)
    y = _forced_int64(conv._plan_conv(x, conv.pack_conv_weight(wd, 6), 12, 3, 1, 1, 1, 6, Epilogue(), None, False,
                                      True))
    assert_close(y, nhwc(F.conv2d(nchw(x), wd, None, 1, 1, 1, 6)))

    a, wl = rand(9, 20), rand(7, 20)
    y = _forced_int64(matmul._plan_linear(a, matmul.pack_linear_weight(wl), Epilogue(), None, False, True))
    assert_close(y, a @ wl.t())

    s = rand(6)
    y = _forced_int64(pointwise._plan_pointwise(x, s, None, None, Epilogue(act1="gelu"), None, True))
    assert_close(y, F.gelu(x * s))

    for C in (20, 50):
        xl = rand(5, C)
        y = _forced_int64(norm._plan_layernorm(xl, None, None, 1e-5, xl, None, Epilogue(), None, True))
        assert_close(y, F.layer_norm(2 * xl, (C,), eps=1e-5))

    y = _forced_int64(norm._plan_groupnorm(x, 3, None, None, 1e-5, Epilogue(), None, True))
    assert_close(y, nhwc(F.group_norm(nchw(x), 3, eps=1e-5)))

    y = _forced_int64(pool._plan_pool(x, 3, 2, 1, 1, True, True, True, None, None, True))
    assert_close(y, nhwc(F.max_pool2d(nchw(x), 3, 2, 1, 1, True)))
    y = _forced_int64(pool._plan_global_pool(x, None, True))
    assert_close(y, x.mean((1, 2)))
    y = _forced_int64(pool._plan_global_pool(x, None, True, is_max=True))
    assert_close(y, x.amax((1, 2)))

    for C in (20, 50):
        xs = rand(4, C)
        assert_close(_forced_int64(softmax._plan_softmax(xs, True, None, True)), torch.log_softmax(xs, -1))


def test_bf16_stores_round_to_nearest_even_like_the_hardware():
    """Under the interpreter netdsl makes fp32 -> bf16 round to nearest even, as GPUs do (Triton's
    interpreter truncates): ties to even, values past the midpoint up, the carry into the exponent, NaN
    kept. torch's CPU conversion (round to nearest even) is the oracle."""
    import triton
    import triton.language as tl

    from netdsl.backends.triton.runtime import round_bf16_like_the_hardware

    @triton.jit
    def store_bf16(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask).to(tl.bfloat16), mask=mask)

    round_bf16_like_the_hardware()  # idempotent: the session already applied it
    x = torch.tensor([1 + 2**-8, 1 + 3 * 2**-9, 1 + 2**-7 + 2**-8, -(1 + 3 * 2**-9), 3.3895e38, 1e-40,
                      float("inf"), float("nan"), 0.1, -7.77], dtype=torch.float32)
    y = torch.empty(x.shape, dtype=torch.bfloat16)
    store_bf16[(1,)](x, y, x.numel(), BLOCK=16)
    expected = x.to(torch.bfloat16)
    assert torch.equal(y.view(torch.int16)[~x.isnan()], expected.view(torch.int16)[~x.isnan()])
    assert torch.isnan(y[x.isnan()]).all()
    assert y[1].item() != 1.0  # truncation would give 1.0


def test_autotuning_choices_are_kept_on_disk_when_compiling():
    """Every autotuned kernel keeps its choice in Triton's cache (per GPU architecture and tuning key) when
    kernels are compiled; the interpreter tunes nothing. Checked in a process that compiles."""
    import os
    import subprocess
    import sys

    code = ("from netdsl.kernels import attention, bmm, conv, conv_direct, conv_transpose, matmul\n"
            "tuned = [attention.attention_fwd_kernel_tuned, bmm.bmm_kernel_tuned, conv.conv2d_kernel_tuned,\n"
            "         conv_direct.depthwise_conv2d_kernel_tuned, conv_transpose.conv_transpose2d_kernel_tuned,\n"
            "         matmul.linear_kernel_tuned, matmul.linear_tma_kernel_tuned]\n"
            "print(all(t.cache_results for t in tuned), len(tuned))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["True", "7"], out.stderr
