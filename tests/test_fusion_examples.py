"""Every example under O1: fused == unfused on the reference backend, kernel counts, cost ratios.

Kernel counts are written down per example (``KERNEL_COUNTS``) and per block: a change in what fuses
shows up here as a changed number. An example without an entry still gets every other check.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

import netdsl
from netdsl.backends import reference
from netdsl.ops import REGISTRY, OpKind
from netdsl.passes import run_pipeline
from netdsl.passes.cost import node_costs, summarize

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.net"))

# example: (fused nodes, kernel launches, node count per op); unfused launches in the comment
KERNEL_COUNTS = {
    "lenet5": (8, 7, {"fused_conv2d": 2, "avgpool2d": 2, "flatten": 1, "fused_linear": 2, "linear": 1}),  # 11
    "mlp": (4, 3, {"flatten": 1, "fused_linear": 2, "linear": 1}),  # 5
    "alexnet": (12, 11, {"fused_conv2d": 5, "maxpool2d": 3, "flatten": 1, "fused_linear": 2, "linear": 1}),  # 18
    "vgg11": (17, 16, {"fused_conv2d": 8, "maxpool2d": 5, "flatten": 1, "fused_linear": 2, "linear": 1}),  # 26
    "resnet18": (24, 23, {"fused_conv2d": 20, "maxpool2d": 1, "global_avgpool": 1, "flatten": 1, "linear": 1}),  # 68
    "resnet50": (57, 56, {"fused_conv2d": 53, "maxpool2d": 1, "global_avgpool": 1, "flatten": 1, "linear": 1}),  # 174
    "mobilenet_v2": (55, 54, {"fused_conv2d": 52, "global_avgpool": 1, "flatten": 1, "linear": 1}),  # 151
    "mobilenet_v3_small": (74, 73, {"fused_conv2d": 52, "global_avgpool": 10, "mul": 9, "flatten": 1,
                                    "fused_linear": 1, "linear": 1}),  # 155
    # 9 concats cost no launch: their inputs are written into slices of their buffers
    "googlenet": (82, 72, {"fused_conv2d": 57, "maxpool2d": 13, "concat": 9, "global_avgpool": 1, "flatten": 1,
                           "linear": 1}),  # 195
    "unet": (24, 21, {"fused_conv2d": 14, "maxpool2d": 3, "conv_transpose2d": 3, "concat": 3, "conv2d": 1}),  # 55
    # per layer: q/k/v/out projections, attention, add & norm twice, linear+relu, linear; the head splits
    # (reshape, transpose) are views, the merges a view and a torch copy: 0 launches
    "transformer_encoder": (38, 22, {"embedding": 1, "affine": 1, "positional_encoding": 1, "linear": 11,
                                     "reshape": 8, "transpose": 8, "scaled_dot_product_attention": 2,
                                     "fused_layernorm": 4, "fused_linear": 2}),  # 28
}
# the sequence examples' fused/ideal bytes (test_cost_ratios, measured 1.147 at N=8), and why they are
# above the CNN target: the ideal keeps linear2's output on chip through the residual add into the
# layernorm (a GEMM with a row-wise layernorm epilogue, which no kernel does yet), and the embedding's
# * sqrt(d) and positions in its gather. (The head split and merge transposes move nothing in both.)
# The base Transformer (1.108 at N=8): its cross-attention slices nn.MultiheadAttention's packed in_proj
# into the query's and the memory's rows, so those two projections stay a matmul and a bias add (the
# ideal keeps the bias on chip). ViT-B/16 (1.010) and GPT-2 (1.010) are under the CNN target.
SEQUENCE_RATIOS = {"transformer_encoder": 1.15, "transformer": 1.11}
# recurrent examples: every node is a GEMM, a recurrence or an embedding: nothing to fuse (fused == unfused)
NOTHING_TO_FUSE = {"rnn", "lstm_lm", "seq2seq"}


def _block_of(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def _per_block(graph, prefix: str, depth: int) -> dict[str, int]:
    return dict(collections.Counter(_block_of(n.name, depth) for n in graph.nodes if n.name.startswith(prefix)))


# example: (node-name prefix, scope depth of a block, expected nodes per block)
BLOCK_COUNTS = {
    # basic block: conv+bn+relu, conv+bn+add+relu; the first of layers 2-4 adds its 1x1 projection
    "resnet18": ("layer", 2, {f"layer{i}.{j}": 3 if j == 0 and i > 1 else 2 for i in range(1, 5) for j in range(2)}),
    # bottleneck: three convs (the last with the add and relu); the first of each layer projects
    "resnet50": ("layer", 2, {f"layer{i}.{j}": 4 if j == 0 else 3
                              for i, n in zip(range(1, 5), (3, 4, 6, 3)) for j in range(n)}),
    # inverted residual: expand, depthwise, project(+ add); block 1 has no expansion
    "mobilenet_v2": ("features", 2, {f"features.{k}": 1 if k in (0, 18) else 2 if k == 1 else 3 for k in range(19)}),
    "mobilenet_v3_small": ("features", 2, {f"features.{k}": 1 if k in (0, 12) else 6 if k == 1 else 3 if k in (2, 3)
                                           else 7 for k in range(13)}),
    # inception: six convs, a max pool and a free concat
    "googlenet": ("inception", 1, {f"inception{b}": 8 for b in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")}),
}


def _dims(graph) -> dict[str, int]:
    """Small inputs: 64x64 where the size is symbolic; fixed-size inputs (AlexNet/VGG: 224) at batch 1."""
    big = any(isinstance(d, int) and d >= 128 for v in graph.inputs for d in v.type.shape)
    return {**graph.dim_defaults, "N": 1 if big else 2, "H": 64, "W": 64}


@pytest.fixture(scope="module", params=EXAMPLES, ids=[p.stem for p in EXAMPLES])
def example(request):
    graph = netdsl.load(request.param)
    return request.param.stem, graph, run_pipeline(graph, "O1", verify="full")


def _close(a: np.ndarray, b: np.ndarray, tol: float) -> None:
    scale = max(1.0, float(np.abs(a).max()))
    err = float(np.abs(a - b).max())
    assert err <= tol * scale, f"max abs error {err:.3g} > {tol:g} x {scale:.3g}"


def test_fused_equals_unfused(example):
    name, graph, fused = example
    env = _dims(graph)
    inputs = netdsl.params.random_inputs(graph, env, seed=0)
    weights = netdsl.random_weights(graph, seed=1)  # random batchnorm statistics: folding is really tested
    for dtype, tol in (("f64", 1e-9), ("f32", 1e-4)):
        want = reference.run(graph, inputs, weights, dtype=dtype)
        got = reference.run(fused, inputs, weights, dtype=dtype)
        for k in want:
            _close(want[k], got[k], tol)


def test_kernel_counts(example):
    name, graph, fused = example
    launches = sum(c.launches for c in node_costs(fused, {"N": 1, **graph.dim_defaults, "H": 224, "W": 224}).values())
    assert launches <= sum(c.launches for c in node_costs(graph, {"N": 1, **graph.dim_defaults, "H": 224,
                                                                  "W": 224}).values())
    if name not in KERNEL_COUNTS:
        return  # a new example: the other tests still check it; write its numbers down above
    nodes, want_launches, per_op = KERNEL_COUNTS[name]
    assert (len(fused.nodes), launches) == (nodes, want_launches)
    assert dict(collections.Counter(n.op for n in fused.nodes)) == per_op


def test_block_counts(example):
    name, graph, fused = example
    if name not in BLOCK_COUNTS:
        return
    prefix, depth, want = BLOCK_COUNTS[name]
    assert _per_block(fused, prefix, depth) == want


def test_every_conv_is_one_launch_with_its_bn_activation_and_residual(example):
    name, graph, fused = example
    n_convs = sum(n.op == "conv2d" for n in graph.nodes)
    assert sum(n.op in ("conv2d", "fused_conv2d") for n in fused.nodes) == n_convs
    if any(n.op == "batchnorm" for n in graph.nodes):  # the torchvision-style nets: nothing pointwise is left
        assert not {"batchnorm", "relu", "relu6", "add"} & {n.op for n in fused.nodes}
        # a conv stays a plain conv2d only when nothing pointwise follows it (U-Net's 1x1 head)
        users = {v.name: [] for n in fused.nodes for v in n.outputs}
        for n in fused.nodes:
            for v in n.inputs:
                users.setdefault(v.name, []).append(n)
        for n in fused.nodes:
            if n.op == "conv2d":
                assert all(REGISTRY[u.op].kind not in (OpKind.ELEMENTWISE, OpKind.BINARY, OpKind.NORM)
                           for u in users[n.output.name]), n.name


def test_cost_ratios(example):
    name, graph, fused = example
    for n in (1, 8):
        s = summarize(graph, fused, {**graph.dim_defaults, "N": n, "H": 224, "W": 224})
        assert s.fused_over_ideal <= SEQUENCE_RATIOS.get(name, 1.10)
        assert s.ideal.bytes <= s.fused.bytes <= s.unfused.bytes
        assert (s.fused.bytes == s.unfused.bytes) == (name in NOTHING_TO_FUSE)


def test_resnet50_targets():
    graph = netdsl.load(Path(__file__).parent.parent / "examples" / "resnet50.net")
    fused = run_pipeline(graph, "O1")
    at_8 = summarize(graph, fused, {"N": 8, "H": 224, "W": 224})
    assert at_8.fused_over_unfused <= 0.45 and at_8.fused_over_ideal <= 1.10
    # at batch 1 the 102 MB of weights (read once by both graphs) are half the traffic
    at_1 = summarize(graph, fused, {"N": 1, "H": 224, "W": 224})
    assert 0.50 < at_1.fused_over_unfused < 0.51 and at_1.fused_over_ideal <= 1.10
    assert at_1.fused.launches == 56  # 53 convs (each with its bn, relu, residual) + maxpool, avgpool, fc
