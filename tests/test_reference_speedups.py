"""The reference backend's fast paths against torch.nn.functional (the independent oracle, in float64).

The conv, pooling and batchnorm references work in chunks sized for the cache
(``netdsl/ops/convolution.py``; ``_pool_reduce`` in ``netdsl/ops/pooling.py``, ``channel_affine`` in ``netdsl/ops/nn.py``): whole
images or bands of rows per GEMM, phases and flat rows in the depthwise tap loop (one row per image and
channel, or the channels last). Each case runs at the real chunk sizes and again with the sizes shrunk
so that a small input spans many chunks, a partial last one and bands of a single image. Start-up:
importing the front end, the ops and the passes does not import scipy (it costs a third of a second;
only some activations' references need it, and they import it when they run).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netdsl.ops import REGISTRY
from netdsl.ops import convolution, nn, pooling
from netdsl.ops.registry import bind_attrs
from netdsl.tolerances import TOLERANCES

DTYPES = {"f32": np.float32, "f64": np.float64}


def _assert_close(got: np.ndarray, ref: np.ndarray, dtype: str, what: str) -> None:
    assert got.dtype == DTYPES[dtype], f"{what}: computed in {got.dtype}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, torch {ref.shape}"
    abs_err, rel_err, ok = TOLERANCES[dtype].error(got, ref)
    assert ok, f"{what}: max |error| {abs_err:.3g} ({rel_err:.3g} of max |torch|)"


@pytest.fixture(params=["real", "tiny"])
def chunks(request, monkeypatch):
    """The real chunk sizes, or sizes so small that every case spans several chunks and bands. (The two
    runs of a case take different random data: an output element the code forgot to write would
    otherwise find the right value left in recycled memory by the other run.)"""
    if request.param == "tiny":
        monkeypatch.setattr(convolution, "CHUNK_BYTES", 1 << 10)
        monkeypatch.setattr(convolution, "GEMM_CHUNK_BYTES", 1 << 9)
        monkeypatch.setattr(convolution, "GEMM_MIN_COLUMNS", 4)
        monkeypatch.setattr(pooling, "POOL_CHUNK_BYTES", 1 << 7)
        monkeypatch.setattr(nn, "AFFINE_CHUNK_BYTES", 1 << 6)
    return request.param


def _conv_case(shape, attrs, dtype, seed):
    """conv2d's registry reference and F.conv2d (float64) on the same random input and weights."""
    op = REGISTRY["conv2d"]
    rng = np.random.default_rng(seed)
    bound = bind_attrs(op, [], attrs)
    x = rng.standard_normal(shape).astype(DTYPES[dtype])
    c, g, oc = shape[1], bound["groups"], bound["out_channels"]
    weight = rng.standard_normal((oc, c // g, *bound["kernel_size"])).astype(DTYPES[dtype])
    params = {"weight": weight}
    if bound["bias"]:
        params["bias"] = rng.standard_normal(oc).astype(DTYPES[dtype])
    got = op.reference([x], params, bound)
    t = {k: torch.from_numpy(v.astype(np.float64)) for k, v in params.items()}
    ref = F.conv2d(torch.from_numpy(x.astype(np.float64)), t["weight"], t.get("bias"), bound["stride"],
                   nn.conv_padding(bound), bound["dilation"], g).numpy()
    return got, ref


DEPTHWISE = [  # (input shape, attrs): groups = channels, so conv2d takes the depthwise tap loop
    ((2, 3, 9, 11), {"out_channels": 3, "kernel_size": 3, "groups": 3, "padding": 1}),
    ((2, 4, 9, 11), {"out_channels": 4, "kernel_size": 3, "groups": 4, "stride": 2, "padding": 1}),
    ((1, 5, 13, 7), {"out_channels": 5, "kernel_size": 3, "groups": 5, "stride": 2}),  # odd sizes, no padding
    ((2, 3, 12, 10), {"out_channels": 3, "kernel_size": 3, "groups": 3, "dilation": 2, "padding": 2}),
    ((1, 2, 15, 14), {"out_channels": 2, "kernel_size": 3, "groups": 2, "dilation": (3, 2), "stride": 2,
                      "padding": (1, 3)}),
    ((2, 3, 7, 8), {"out_channels": 6, "kernel_size": 3, "groups": 3, "padding": 1}),  # multiplier 2
    ((1, 2, 11, 9), {"out_channels": 6, "kernel_size": 3, "groups": 2, "stride": 2, "padding": 1,
                     "bias": False}),  # multiplier 3, stride 2
    ((3, 4, 9, 9), {"out_channels": 8, "kernel_size": 5, "groups": 4, "stride": 3, "padding": 2,
                    "dilation": 2}),
    ((2, 3, 8, 13), {"out_channels": 3, "kernel_size": (3, 5), "groups": 3, "stride": (1, 2),
                     "padding": (1, 2)}),
    ((2, 3, 1, 1), {"out_channels": 3, "kernel_size": 3, "groups": 3, "padding": 1}),  # every tap but one in padding
    ((1, 2, 4, 4), {"out_channels": 2, "kernel_size": 4, "groups": 2, "stride": 4}),  # stride = kernel
    ((2, 6, 6, 5), {"out_channels": 6, "kernel_size": 1, "groups": 6, "stride": 2}),  # 1x1 depthwise
    ((1, 3, 5, 6), {"out_channels": 3, "kernel_size": 3, "groups": 3, "padding": "same", "dilation": 2}),
]


@pytest.mark.parametrize("layout", ["rows", "channels_last"])
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("index", range(len(DEPTHWISE)))
def test_depthwise_conv2d_matches_torch(index, dtype, layout, chunks, monkeypatch):
    """Both ways the tap loop runs: one row per image and channel, or the channels last."""
    monkeypatch.setattr(convolution, "CHANNELS_LAST_PIXELS", 0 if layout == "rows" else 1 << 30)
    shape, attrs = DEPTHWISE[index]
    got, ref = _conv_case(shape, attrs, dtype, seed=index + 1000 * (chunks == "tiny") + 2000 * (layout == "rows"))
    _assert_close(got, ref, dtype, f"depthwise {shape} {attrs} {dtype} ({layout}, {chunks} chunks)")


GEMM = [  # convs with a GEMM: whole images per GEMM, or bands of rows of one image
    ((3, 4, 17, 13), {"out_channels": 5, "kernel_size": 3, "padding": 1}),
    ((2, 4, 19, 11), {"out_channels": 6, "kernel_size": (3, 2), "stride": (2, 1), "padding": (0, 1),
                      "dilation": (2, 1), "groups": 2}),
    ((2, 3, 23, 21), {"out_channels": 4, "kernel_size": 5, "stride": 2, "padding": 2, "bias": False}),
    ((3, 6, 9, 7), {"out_channels": 9, "kernel_size": 1, "groups": 3}),
    ((2, 5, 16, 15), {"out_channels": 7, "kernel_size": 1}),  # stride-1 1x1: the GEMM reads the input in place
    ((2, 4, 12, 12), {"out_channels": 8, "kernel_size": 1, "stride": 2, "bias": False}),
]


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("index", range(len(GEMM)))
def test_gemm_conv2d_in_chunks_matches_torch(index, dtype, chunks):
    shape, attrs = GEMM[index]
    got, ref = _conv_case(shape, attrs, dtype, seed=100 + index + 1000 * (chunks == "tiny"))
    _assert_close(got, ref, dtype, f"conv2d {shape} {attrs} {dtype} ({chunks} chunks)")


POOLS = [
    ("maxpool2d", (2, 5, 13, 11), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("maxpool2d", (1, 3, 9, 10), {"kernel_size": 3, "stride": 2, "dilation": 2, "ceil_mode": True}),
    ("avgpool2d", (2, 4, 11, 9), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("avgpool2d", (3, 2, 8, 7), {"kernel_size": 2, "ceil_mode": True, "count_include_pad": False}),
]


def _torch_pool(name, x, a):
    stride = a["stride"] if a["stride"] is not None else a["kernel_size"]
    if name == "maxpool2d":
        return F.max_pool2d(x, a["kernel_size"], stride, a["padding"], a["dilation"], a["ceil_mode"])
    return F.avg_pool2d(x, a["kernel_size"], stride, a["padding"], a["ceil_mode"], a["count_include_pad"])


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("index", range(len(POOLS)))
def test_pooling_in_chunks_matches_torch(index, dtype, chunks):
    name, shape, attrs = POOLS[index]
    op = REGISTRY[name]
    bound = bind_attrs(op, [], attrs)
    x = np.random.default_rng(index + 1000 * (chunks == "tiny")).standard_normal(shape).astype(DTYPES[dtype])
    ref = _torch_pool(name, torch.from_numpy(x.astype(np.float64)), bound).numpy()
    _assert_close(op.reference([x], {}, bound), ref, dtype, f"{name} {shape} {attrs} {dtype} ({chunks} chunks)")


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("shape", [(2, 5, 13, 11), (3, 4, 7), (4, 6), (2, 3, 2, 3, 4)])
def test_batchnorm_in_chunks_matches_torch(shape, dtype, chunks):
    op = REGISTRY["batchnorm"]
    rng = np.random.default_rng(len(shape) + 1000 * (chunks == "tiny"))
    c = shape[1]
    x = rng.standard_normal(shape).astype(DTYPES[dtype])
    params = {"weight": rng.standard_normal(c), "bias": rng.standard_normal(c), "running_mean": rng.standard_normal(c),
              "running_var": rng.uniform(0.5, 1.5, c)}
    params = {k: v.astype(DTYPES[dtype]) for k, v in params.items()}
    t = {k: torch.from_numpy(v.astype(np.float64)) for k, v in params.items()}
    ref = F.batch_norm(torch.from_numpy(x.astype(np.float64)), t["running_mean"], t["running_var"], t["weight"],
                       t["bias"], training=False, eps=1e-5).numpy()
    got = op.reference([x], params, bind_attrs(op, [], {}))
    _assert_close(got, ref, dtype, f"batchnorm {shape} {dtype} ({chunks} chunks)")


def test_importing_the_compiler_does_not_import_scipy():
    code = ("import sys, netdsl.frontend, netdsl.ops, netdsl.passes; "
            "print(sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"scipy modules imported at start-up: {out.strip()}"


@pytest.mark.parametrize("name", ["gelu", "sigmoid", "silu"])
def test_activations_that_import_scipy_when_they_run_match_torch(name):
    """The activations whose references import scipy lazily still compute what torch does."""
    op = REGISTRY[name]
    x = np.random.default_rng(0).standard_normal((3, 7)) * 4
    oracle = {"gelu": F.gelu, "sigmoid": torch.sigmoid, "silu": F.silu}[name]
    ref = oracle(torch.from_numpy(x)).numpy()
    _assert_close(op.reference([x], {}, bind_attrs(op, [], {})), ref, "f64", name)
