"""Every example model end to end on the Triton backend, under Triton's interpreter: the fused graph's
kernels agree with the reference backend node by node (``netdsl.backends.triton.check``) within the
dtype's tolerance, in fp32, fp16 and bf16, and each model launches the number of kernels it should.

Sizes: batch 2; 32 x 32 images for the ResNets, MobileNetV2 and GoogLeNet (every layer still has at
least one pixel), LeNet-5's fixed 32 x 32, the MLP's 28 x 28, and AlexNet's and VGG-11's designed
224 x 224 (their classifiers are sized for it).

Interpreter tiles. Under the interpreter a kernel costs a few milliseconds of Python per program and
loop step, whatever its tile holds, so the small default interpreter tiles (chosen to exercise the
masking paths, which tests/test_triton_backend.py does op by op on awkward shapes) would take many
minutes on these models. Here every conv / linear / depthwise launch gets a tile fitted to its
problem (the whole K and N extent up to 512, as many rows as keep a tile near 256K elements), and the
pointwise and pool kernels tiles of 256K elements. Only the tile sizes change; the kernels, their
arguments and the plan of the model are the ones a GPU runs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("NETDSL_QUIET_INTERPRETER", "1")  # this file runs kernels in the interpreter on purpose

import netdsl  # noqa: E402
import triton  # noqa: E402
from netdsl.backends.triton import TritonModule  # noqa: E402
from netdsl.backends.triton.check import check, format_checks  # noqa: E402
from netdsl.compiler import prepare  # noqa: E402
from netdsl.kernels import _host, conv_direct, conv_transpose, pointwise, pool, splitk  # noqa: E402
from netdsl.passes import run_pipeline  # noqa: E402
from netdsl.passes.cost import node_costs, total  # noqa: E402
from netdsl.kernels._host import recording  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DTYPES = ("fp32", "fp16", "bf16")
# AlexNet and VGG-11 run at 224x224 (their classifiers fix the size), which costs minutes in the
# interpreter; they are checked in fp32 and fp16 — their ops run in bf16 in the other examples.
LARGE = {"alexnet", "vgg11"}

# image side per example (batch 2 throughout)
SIZES = {
    "lenet5": 32,
    "mlp": 28,
    "alexnet": 224,
    "vgg11": 224,
    "googlenet": 32,
    "resnet18": 32,
    "resnet50": 32,
    "mobilenet_v2": 32,
    "mobilenet_v3_small": 16,
    "unet": 64,  # its input size is fixed: the decoder's sizes must equal the skips'
    "transformer_encoder": None,  # token ids [N, T=16]
    "gpt2": None,  # token ids [N, T]: T = 16 (SEQUENCE_DIMS)
    "vit_b16": None,  # 224 x 224 fixed
    "transformer": None,  # source and target ids [N, S], [N, T]
    "rnn": None,  # [N, T, 256]
    "lstm_lm": None,
    "seq2seq": None,
}
SEQUENCE_DIMS = {"gpt2": {"T": 16}, "transformer": {"S": 12, "T": 10}, "rnn": {"T": 5}, "lstm_lm": {"T": 5},
                 "seq2seq": {"S": 5, "T": 4}}  # short sequences: the interpreter runs each step
# Full-size sequence models (86M to 124M parameters, 768-dim GEMMs): their kernels' numbers are checked on
# small cases (tests/test_triton_backend.py) and the models against their torch twins on the reference
# backend (tests/test_examples.py); here their plans and launches (on the meta device: no kernel runs).
# Running them through the interpreter would take many minutes per dtype.
PLAN_ONLY = {"gpt2", "vit_b16", "transformer"}
BATCH = 2

# Triton kernel launches of one forward call (the O1 pipeline): each fused node is one launch, except
# views (a flatten of a 1x1 map or in (H, W, C) order, dropout) and copy-free concats (none).
LAUNCHES = {
    "lenet5": 7,  # 2 conv+tanh, 2 avgpool, 3 linear (the flatten is an (H, W, C) view)
    "mlp": 3,  # 3 linear (+relu); flatten is a view, dropout is gone
    "alexnet": 11,  # 5 conv+relu, 3 maxpool, 3 linear (the flatten is an (H, W, C) view)
    "vgg11": 16,  # 8 conv+relu, 5 maxpool, 3 linear
    "googlenet": 72,  # 57 conv+bn+relu, 13 maxpool, global pool, fc; the 9 concats copy nothing
    "resnet18": 23,  # 20 conv+bn(+residual)+relu, maxpool, global pool, fc
    "resnet50": 56,  # 53 conv+bn(+residual)+relu, maxpool, global pool, fc
    "mobilenet_v2": 54,  # 52 conv+bn(+relu6 / +residual), global pool, fc
    "mobilenet_v3_small": 73,  # 52 conv+bn(+relu / hardswish / hardsigmoid / +residual), 10 global pools (9 SE
    # squeezes, the head), 9 SE channel gates (mul), classifier.0 (+hardswish), classifier.3
    "unet": 21,  # 14 conv+bn+relu, 3 maxpool, 3 conv_transpose, the 1x1 head; the 3 concats copy nothing
    # embedding, * sqrt(d), positions; per layer 4 projections, attention, 2 add & norm, 2 FFN linears; the
    # head; the head-split transposes are strided views, the merge transposes torch copies
    "transformer_encoder": 22,
    # per layer: c_attn (+bias), attention, c_proj (+residual), ln_1, ln_2, c_fc (+bias+GELU), c_proj
    # (+residual); embedding, position add, ln_f, the tied head (a bmm): 7 x 12 + 4. The chunks and the head
    # merges are torch copies, the head splits strided views
    "gpt2": 88,
    # patchify conv, class-token concat copy, position add; per layer ln_1, in_proj (a linear, its bias
    # fused: fold_parameter_linear), attention, out_proj (+residual), ln_2, mlp.0 (+GELU), mlp.3
    # (+residual): 7 x 12; encoder.ln, head
    "vit_b16": 88,
    # embeddings, * sqrt(d) and positions (2 x 3); encoder layers 6 x 7, decoder layers 6 x 13 (the
    # cross-attention's projections of a split in_proj stay matmul + bias add), two final norms, the generator
    "transformer": 135,
    # recurrent layers: per layer one input-projection GEMM and one persistent recurrence launch
    "rnn": 3,  # the rnn (2), the head
    "lstm_lm": 6,  # embedding, 2 layers (4), the head
    "seq2seq": 7,  # 2 embeddings, encoder GRU (2), decoder GRU (2), the head
}


def test_every_example_is_covered():
    assert sorted(p.stem for p in EXAMPLES.glob("*.net")) == sorted(SIZES)


# ---------------------------------------------------------------------------------------------
# interpreter tiles fitted to each problem (see the module docstring)
# ---------------------------------------------------------------------------------------------

TILE_ELEMS, MAX_K, MAX_N = 262144, 512, 512


def _p2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def fitted_config(launch: _host.Launch) -> _host.Launch:
    """``launch`` with an interpreter tile fitted to its problem (GEMMs and the depthwise kernel)."""
    name, a = launch.kernel.fn.__name__, launch.args
    if name in ("conv2d_kernel", "linear_kernel", "conv_transpose2d_kernel"):
        m, n, k = {"conv2d_kernel": ("M", "OCg", "ICg"), "linear_kernel": ("M", "N", "K"),
                   "conv_transpose2d_kernel": ("Mq", "OCg", "ICg")}[name]
        m, n, k = a[m], a[n], a[k]
        bk, bn = _p2(k, 16, MAX_K), _p2(n, 16, MAX_N)
        tile = {"BLOCK_M": _p2(m, 16, max(16, TILE_ELEMS // bk)), "BLOCK_N": bn, "BLOCK_K": bk}
    elif name == "depthwise_conv2d_kernel":
        bc = _p2(a["C_out"], 8, MAX_N)
        tile = {"BLOCK_M": _p2(a["M"], 16, max(16, TILE_ELEMS // bc)), "BLOCK_C": bc}
    else:
        return launch
    config = launch.config
    return dataclasses.replace(launch, config=triton.Config({**config.kwargs, **tile}, num_warps=config.num_warps,
                                                            num_stages=config.num_stages))


@pytest.fixture(scope="module", autouse=True)
def fitted_interpreter_tiles():
    with pytest.MonkeyPatch.context() as mp:
        for module in (splitk, conv_direct, conv_transpose):  # the modules that launch these (conv and linear: splitk.run_all)
            mp.setattr(module, "run", lambda launch: _host.run(fitted_config(launch)))
        for module in (pointwise, pool):  # bandwidth kernels: one big tile of whole channel runs
            mp.setattr(module, "INTERPRET_TILE_ELEMS", TILE_ELEMS)
            mp.setattr(module, "INTERPRET_MAX_BLOCK_C", 1024)
        yield


# ---------------------------------------------------------------------------------------------
# the models
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)  # one model at a time: VGG-11's weights are half a gigabyte
def example(name: str):
    """(graph, fused graph, random weights, inputs) of an example at its test size."""
    graph, fused, _ = prepare(EXAMPLES / f"{name}.net")
    weights = netdsl.random_weights(graph, seed=0)
    return graph, fused, weights, netdsl.params.random_inputs(graph, example_dims(graph, name), seed=0)


def example_dims(graph, name: str) -> dict[str, int]:
    side = SIZES[name]
    return {**graph.dim_defaults, "N": BATCH, **({"H": side, "W": side} if side else {}),
            **SEQUENCE_DIMS.get(name, {})}


@pytest.mark.parametrize("name,dtype", [(n, d) for n in SIZES for d in DTYPES
                                        if not (n in LARGE and d == "bf16") and n not in PLAN_ONLY])
def test_example_matches_reference(name, dtype):
    _, fused, weights, inputs = example(name)
    checks = check(fused, weights, inputs, dtype)
    assert len(checks) == sum(len(n.outputs) for n in fused.nodes)  # one check per result
    assert all(c.ok for c in checks), "\n" + format_checks(checks, dtype)


@pytest.mark.parametrize("name", list(SIZES))
def test_example_launch_count(name):
    graph, fused, weights, inputs = example(name)
    meta_weights = {k: np.zeros(w.shape, np.float32) for k, w in weights.items()}
    module = TritonModule(fused, meta_weights, dtype="fp16", device="meta")
    with recording() as launches:
        module.run({k: torch.empty(x.shape, device="meta") for k, x in inputs.items()})
    assert module.launches == len(launches) == LAUNCHES[name]
    concats = [n for n in fused.nodes if n.op == "concat" and n.output.type.rank == 4]  # channels of NHWC maps
    assert all(v.name in module.concat_slices for n in concats for v in n.inputs)  # copy-free everywhere


@pytest.mark.parametrize("name", list(SIZES))
def test_example_runs_the_plan(name):
    """The module runs the passes' plans: the bytes it allocates (one arena reused across calls, plus
    the output storages) are the memory plan's peak, in fp32 exactly the peak ``show`` reports, and
    the kernels it launches are the cost report's."""
    graph, fused, weights, inputs = example(name)
    dims = {k: v for k, v in example_dims(graph, name).items() if any(k in x.type.symbols() for x in graph.inputs)}
    planned = run_pipeline(graph, "O1", dims=dims).annotations["memory"]
    meta_weights = {k: np.zeros(w.shape, np.float32) for k, w in weights.items()}
    for dtype in ("fp32", "fp16"):
        module = TritonModule(fused, meta_weights, dtype=dtype, device="meta")
        with recording() as launches:
            module.run({k: torch.empty(x.shape, device="meta") for k, x in inputs.items()})
        plan = module.plan_for(dims)
        assert module.allocated_bytes == plan.peak > 0
        if dtype == "fp32":
            assert plan == planned, "the module planned memory differently from the pipeline"
            assert len(launches) == total(node_costs(fused, dims)).launches == LAUNCHES[name]
