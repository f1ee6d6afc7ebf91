"""The Triton backend, op by op, under Triton's interpreter: every registry op has a lowering, and every
op (unfused, pipeline O0) and every fused op (small graphs that O1 fuses) gives the reference backend's
answer node by node (``netdsl.backends.triton.check``) in fp32, fp16 and bf16, on awkward shapes: sizes
that are not multiples of the blocks, size-1 dims, stride and dilation 2, groups, depthwise with a
channel multiplier, copy-free concat, an (H, W, C)-order flatten feeding a linear, reductions over
a non-channel axis of an NHWC tensor (the layout fix-up path). Kernel launch counts are asserted, and
checked against the launches the wrappers really plan. ``netdsl.compile`` returns an NCHW module.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("NETDSL_QUIET_INTERPRETER", "1")  # this file runs kernels in the interpreter on purpose

import netdsl  # noqa: E402
from netdsl import NetDSLError
from netdsl.backends import reference
from netdsl.backends.triton import LOWERINGS, TritonModule
from netdsl.backends.triton.lower import lowering_of
from netdsl.backends.triton.check import check, format_checks
from netdsl.kernels._host import recording
from netdsl.ops import REGISTRY
from netdsl.ops.activations import ACTIVATIONS
from netdsl.ops.fused import FUSED_OPS
from netdsl.passes import run_pipeline
from netdsl.tolerances import TOLERANCES

DTYPES = ("fp32", "fp16", "bf16")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A tiny network: its source, the pipeline to run, and the ops the lowered graph must contain."""
    src: str
    pipeline: str = "O1"
    expect: tuple[str, ...] = ()  # ops the (fused) graph must contain, in order of first appearance
    n: int = 2  # batch size


def net(body: str, inputs: str) -> str:
    return f"network t {{\n    input {inputs}\n{textwrap.indent(textwrap.dedent(body).strip(), '    ')}\n}}\n"


def build(case: Case):
    graph = netdsl.load_source(case.src, "<test>")
    fused = run_pipeline(graph, case.pipeline, log=lambda _: None)
    return graph, fused


def random_inputs(graph, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    return netdsl.params.random_inputs(graph, {**graph.dim_defaults, "N": n}, seed)


def assert_all_ok(fused, weights, inputs, dtype):
    checks = check(fused, weights, inputs, dtype)
    assert len(checks) == sum(len(n.outputs) for n in fused.nodes)  # one check per result
    assert all(c.ok for c in checks), "\n" + format_checks(checks, dtype)
    return checks


def ops_of(graph) -> list[str]:
    return [n.op for n in graph.nodes]


def run_case(case: Case, dtype: str):
    graph, fused = build(case)
    got = ops_of(fused)
    for op in case.expect:
        assert op in got, f"expected `{op}` in the lowered graph, got {got}"
    weights = netdsl.random_weights(graph, seed=1)
    inputs = random_inputs(graph, case.n)
    if dtype == "fp32":  # check() compares against the fused graph: make sure that one means the source
        unfused, fused_ref = reference.run(graph, inputs, weights), reference.run(fused, inputs, weights)
        for k, r in unfused.items():
            assert TOLERANCES["fp32"].error(fused_ref[k], r)[2], f"the passes changed output `{k}`"
    assert_all_ok(fused, weights, inputs, dtype)
    return fused


# ---------------------------------------------------------------------------------------------
# (a) every registry op has a Triton lowering
# ---------------------------------------------------------------------------------------------

def test_every_registry_op_has_a_lowering():
    """Every op lowers: by its own entry, its base's (a derived fused op) or its kind (activations)."""
    missing = sorted(name for name, op in REGISTRY.items() if lowering_of(op) is None)
    assert not missing, f"ops without a Triton lowering: {missing}"
    assert not set(LOWERINGS) - set(REGISTRY), "lowerings for ops that are not in the registry"
    for op in FUSED_OPS:
        assert lowering_of(REGISTRY[op]) is not None


# ---------------------------------------------------------------------------------------------
# (b) single ops, unfused (pipeline O0)
# ---------------------------------------------------------------------------------------------

X4 = "x: f32[N, 5, 7, 9]"
EXAMPLES_DIR = (Path(__file__).resolve().parent.parent / "examples").as_posix()  # 5 channels, 7 x 9 pixels: multiples of no block size

OP_CASES: dict[str, Case] = {
    # conv2d: awkward geometry; groups; depthwise (the direct kernel) with and without a multiplier
    "conv2d": Case(net("output x -> conv2d(6, 3, padding=1)", X4), "O0", ("conv2d",)),
    "conv2d_stride2": Case(net("output x -> conv2d(7, 3, stride=2, padding=1)", "x: f32[N, 4, 9, 11]"), "O0"),
    "conv2d_dilation2": Case(net("output x -> conv2d(5, 3, dilation=2, padding=2)", "x: f32[N, 3, 10, 9]"), "O0"),
    "conv2d_rect": Case(net("output x -> conv2d(4, (3, 1), stride=(2, 1), padding=(1, 0))", X4), "O0"),
    "conv2d_same": Case(net('output x -> conv2d(3, (5, 3), padding="same", bias=false)', X4), "O0"),
    "conv2d_1x1": Case(net("output x -> conv2d(9, 1, bias=false)", "x: f32[N, 17, 5, 3]"), "O0"),
    "conv2d_groups2": Case(net("output x -> conv2d(10, 3, padding=1, groups=2)", "x: f32[N, 6, 7, 7]"), "O0"),
    "conv2d_groups3": Case(net("output x -> conv2d(6, 3, groups=3)", "x: f32[N, 9, 6, 5]"), "O0"),
    "conv2d_depthwise": Case(net("output x -> conv2d(8, 3, padding=1, groups=8)", "x: f32[N, 8, 7, 6]"), "O0"),
    "conv2d_depthwise_mult3": Case(
        net("output x -> conv2d(12, 3, stride=2, padding=1, groups=4)", "x: f32[N, 4, 7, 9]"), "O0"),
    "conv2d_cin1": Case(net("output x -> conv2d(6, 5)", "x: f32[N, 1, 12, 11]"), "O0"),
    "conv2d_1x1_pixels": Case(net("output x -> conv2d(4, 1)", "x: f32[N, 3, 1, 1]"), "O0", n=1),
    "conv2d_batch1_big_k": Case(net("output x -> conv2d(3, 7, stride=2, padding=3)", "x: f32[N, 3, 11, 13]"),
                                "O0", n=1),
    # conv_transpose2d: the decoder's 2x2 stride 2, odd geometry, output_padding, dilation, groups
    "conv_transpose2d": Case(net("output x -> conv_transpose2d(6, 2, stride=2)", X4), "O0", ("conv_transpose2d",)),
    "conv_transpose2d_odd": Case(net("output x -> conv_transpose2d(3, 3, stride=2, padding=1, output_padding=1)",
                                     X4), "O0"),
    "conv_transpose2d_dilation": Case(net(
        "output x -> conv_transpose2d(4, (3, 2), stride=(3, 1), padding=(1, 0), dilation=(2, 3), bias=false)",
        "x: f32[N, 3, 5, 4]"), "O0"),
    "conv_transpose2d_groups": Case(net("output x -> conv_transpose2d(6, 3, stride=2, groups=3)",
                                        "x: f32[N, 6, 4, 5]"), "O0"),
    # upsample: nearest and bilinear, by scale (integer and not) or to a size, align_corners both ways
    "upsample_nearest": Case(net("output x -> upsample(scale_factor=2)", X4), "O0", ("upsample",)),
    "upsample_nearest_size": Case(net("output x -> upsample(size=(10, 4))", X4), "O0"),
    "upsample_bilinear": Case(net('output x -> upsample(scale_factor=1.5, mode="bilinear")', X4), "O0"),
    "upsample_bilinear_corners": Case(
        net('output x -> upsample(size=(13, 5), mode="bilinear", align_corners=true)', X4), "O0"),
    # sequence ops: matmul with batch broadcasting and rank-1 operands, head split/merge, ids, attention
    "matmul": Case(net("output matmul(x, y)", "x: f32[N, 3, 5, 7], y: f32[3, 7, 6]"), "O0", ("matmul",)),
    "matmul_vector": Case(net("output matmul(x, y)", "x: f32[N, 5, 7], y: f32[7]"), "O0"),
    "matmul_transposed": Case(net("output matmul(x, y -> transpose(1, 2))", "x: f32[N, 5, 7], y: f32[N, 9, 7]"),
                              "O0"),
    "reshape_transpose": Case(net("output x -> reshape(N, 5, 3, 6) -> transpose(1, 2) -> reshape(N, 3, 30)",
                                  "x: f32[N, 5, 18]"), "O0", ("reshape", "transpose")),
    "permute_squeeze": Case(net("output x -> unsqueeze(1) -> permute(0, 3, 1, 2) -> squeeze(2)",
                                "x: f32[N, 6, 7]"), "O0", ("unsqueeze", "permute", "squeeze")),
    "reshape_of_conv": Case(net("output x -> conv2d(4, 3, padding=1) -> reshape(N, 4, 63) -> transpose(1, 2)",
                                X4), "O0"),
    "embedding": Case(net("output ids -> embedding(50, 12, padding_idx=0)", "ids: i64[N, 9]"), "O0",
                      ("embedding",)),
    "positional_encoding": Case(net("output x -> positional_encoding", "x: f32[N, 11, 6]"), "O0",
                                ("positional_encoding",)),
    "sdpa": Case(net("output sdpa(q, k, v)", "q: f32[N, 2, 7, 16], k: f32[N, 2, 9, 16], v: f32[N, 2, 9, 8]"),
                 "O0", ("scaled_dot_product_attention",)),
    "sdpa_causal_scale": Case(net("output sdpa(q, k, v, causal=true, scale=0.5)",
                                  "q: f32[N, 5, 32], k: f32[N, 5, 32], v: f32[N, 5, 32]"), "O0"),
    "sdpa_bool_mask": Case(net("output sdpa(q, k, v, m)",  # key padding: true = may attend
                               "q: f32[N, 2, 5, 8], k: f32[N, 2, 7, 8], v: f32[N, 2, 7, 8], m: bool[N, 1, 1, 7]"), "O0"),
    "sdpa_mask": Case(net("output sdpa(q, k, v, m)",
                          "q: f32[N, 3, 6, 16], k: f32[N, 3, 6, 16], v: f32[N, 3, 6, 16], m: f32[N, 1, 1, 6]"), "O0"),
    "affine": Case(net("output 1 - x / 8", X4), "O0", ("affine",)),
    # several results: chunk / split pieces (one on an NHWC map read by a conv); parameters read as values
    "chunk": Case(net("""
        q, k, v = x -> chunk(3, dim=-1)
        output q, k -> relu, v * 2
        """, "x: f32[N, 5, 12]"), "O0", ("chunk",)),
    "split_of_conv": Case(net("""
        a, b = x -> conv2d(5, 3, padding=1) -> split((2, 3), dim=1)
        output a, b -> conv2d(4, 3, padding=1)
        """, X4), "O0", ("split",)),
    "parameter": Case(net("""
        param p: [7, 9] = normal(std=0.5)
        output x + p, matmul(x, p -> transpose(0, 1))
        """, X4), "O0", ("parameter",)),
    "unflatten_expand": Case(net("""
        param cls: [1, 1, 12] = normal
        h = concat(cls -> expand(N, -1, -1), x, dim=1)
        output h -> unflatten(-1, (3, -1)) -> transpose(1, 2) -> relu
        """, "x: f32[N, 5, 12]"), "O0", ("expand", "unflatten")),
    # recurrent layers: an initial state, both directions, two layers, no bias, a head on the sequence
    "rnn": Case(net('y, h = rnn(x, h0, 5, nonlinearity="relu", bidirectional=true)\noutput y, h',
                    "x: f32[N, 4, 3], h0: f32[2, N, 5]"), "O1", ("rnn",)),
    "lstm": Case(net("y, h, c = x -> lstm(33, num_layers=2)\noutput y, h, c", "x: f32[N, 3, 7]"), "O1", ("lstm",)),
    "gru": Case(net("y, h = gru(x, h0, 6, bias=false)\noutput y -> linear(4), h", "x: f32[N, 5, 3], h0: f32[1, N, 6]"),
                "O1", ("gru",)),
    "parameter_tied": Case(net("""
        h = x -> tok: linear(6) -> tanh
        output matmul(h, tok.weight)
        """, "x: f32[N, 4, 9]"), "O1", ("parameter", "matmul")),  # W, not W^T: stays a matmul
    "parameter_linear": Case(net("""
        param w: [6, 9] = normal
        param b: [6] = normal
        h = x -> tok: linear(9)
        output gelu(matmul(x, w -> transpose(0, 1)) + b), matmul(h, tok.weight -> transpose(-1, -2))
        """, "x: f32[N, 4, 9]"), "O1", ("fused_linear", "linear")),  # in_proj + bias + GELU; a tied head
    "broadcast_ranks": Case(net("output (x -> conv2d(4, 3, padding=1)) * y + z",
                                "x: f32[N, 3, 5, 6], y: f32[4, 1, 1], z: f32[6]"), "O0"),
    # linear: rank 2, rank 3 (leading dims), rank 4 (over W: the layout fix-up), no bias
    "linear": Case(net("output x -> linear(19)", "x: f32[N, 37]"), "O0", ("linear",)),
    "linear_rank3": Case(net("output x -> linear(11, bias=false)", "x: f32[N, 3, 21]"), "O0"),
    "linear_rank4": Case(net("output x -> linear(6)", X4), "O0"),
    "linear_k1": Case(net("output x -> linear(5)", "x: f32[N, 1]"), "O0", n=1),
    # norms
    "batchnorm": Case(net("output x -> batchnorm", X4), "O0", ("batchnorm",)),
    "batchnorm_rank2": Case(net("output x -> batchnorm(eps=0.001)", "x: f32[N, 13]"), "O0"),
    "batchnorm_rank3": Case(net("output x -> batchnorm", "x: f32[N, 6, 10]"), "O0"),
    "layernorm": Case(net("output x -> layernorm", "x: f32[N, 37]"), "O0", ("layernorm",)),
    "layernorm_rank3_long": Case(net("output x -> layernorm(eps=0.0001)", "x: f32[N, 3, 45]"), "O0"),
    "layernorm_rank4": Case(net("output x -> layernorm", X4), "O0"),
    "layernorm_no_affine": Case(net("output x -> layernorm(affine=false)", "x: f32[N, 3, 20]"), "O0"),
    "layernorm_last2": Case(net("output x -> layernorm(dims=2)", "x: f32[N, 3, 4, 5]"), "O0"),
    "layernorm_last3_of_conv": Case(net("output x -> conv2d(4, 3, padding=1) -> layernorm(dims=3)", X4), "O0"),
    "groupnorm": Case(net("output x -> groupnorm(3)", "x: f32[N, 6, 5, 7]"), "O0", ("groupnorm",)),
    "groupnorm_big_group": Case(net("output x -> groupnorm(2)", "x: f32[N, 10, 9, 11]"), "O0"),
    "groupnorm_rank2": Case(net("output x -> groupnorm(4)", "x: f32[N, 12]"), "O0"),
    "groupnorm_rank3": Case(net("output x -> groupnorm(2)", "x: f32[N, 6, 10]"), "O0"),
    # pooling
    "maxpool2d": Case(net("output x -> maxpool2d(3, stride=2, padding=1)", X4), "O0", ("maxpool2d",)),
    "maxpool2d_ceil": Case(net("output x -> maxpool2d(3, stride=2, ceil_mode=true)", "x: f32[N, 3, 8, 10]"), "O0"),
    "maxpool2d_dilation2": Case(net("output x -> maxpool2d(2, stride=1, dilation=2)", X4), "O0"),
    "avgpool2d": Case(net("output x -> avgpool2d(3, stride=2, padding=1)", X4), "O0", ("avgpool2d",)),
    "avgpool2d_exclude_pad_ceil": Case(
        net("output x -> avgpool2d(3, stride=2, padding=1, ceil_mode=true, count_include_pad=false)",
            "x: f32[N, 3, 8, 10]"), "O0"),
    "avgpool2d_2": Case(net("output x -> avgpool2d(2)", X4), "O0"),
    "global_avgpool": Case(net("output x -> global_avgpool", "x: f32[N, 19, 6, 7]"), "O0", ("global_avgpool",)),
    "global_maxpool": Case(net("output x -> global_maxpool", "x: f32[N, 19, 6, 7]"), "O0", ("global_maxpool",)),
    "adaptive_avgpool2d": Case(net("output x -> adaptive_avgpool2d((3, 4))", X4), "O0", ("adaptive_avgpool2d",)),
    "adaptive_avgpool2d_divides": Case(net("output x -> adaptive_avgpool2d((2, 3))", "x: f32[N, 3, 8, 9]"), "O0"),
    "adaptive_avgpool2d_symbolic": Case(net("output x -> adaptive_avgpool2d(1) -> flatten",
                                            "x: f32[N, 3, H=5, W=6]"), "O0"),
    # softmax family: last dim, and dim 1 / dim 2 of a rank-4 tensor (an NHWC layout fix-up)
    "softmax": Case(net("output x -> softmax", "x: f32[N, 37]"), "O0", ("softmax",)),
    "softmax_rank4_dim1": Case(net("output x -> softmax(dim=1)", X4), "O0", ("softmax",)),
    "softmax_rank4_last": Case(net("output x -> softmax(dim=-1)", X4), "O0"),
    "softmax_rank4_dim2": Case(net("output x -> softmax(dim=2)", X4), "O0"),
    "softmax_rank3_dim1": Case(net("output x -> softmax(dim=1)", "x: f32[N, 7, 4]"), "O0"),
    "log_softmax": Case(net("output x -> log_softmax", "x: f32[N, 10]"), "O0", ("log_softmax",)),
    "log_softmax_rank4_dim1": Case(net("output x -> log_softmax(dim=1)", X4), "O0"),
    # data movement
    "slice": Case(net("output x -> conv2d(4, 3, padding=1) -> slice(3, 1, -1, step=3)", X4), "O0", ("slice",)),
    "slice_symbolic": Case(net("output (pos -> slice(0, end=T)) + x", "x: f32[N, T=5, 6], pos: f32[16, 6]"), "O0"),
    "select": Case(net("output x -> conv2d(4, 3, padding=1) -> select(1, -1)", X4), "O0", ("select",)),
    "select_symbolic": Case(net("output x -> select(1, T - 1)", "x: f32[N, T=5, 6]"), "O0"),
    "dropout": Case(net("output x -> dropout(0.3) -> relu", X4), "O0", ("dropout",)),
    "flatten_output": Case(net("output x -> flatten", X4), "O0", ("flatten",)),
    "flatten_start2": Case(net("output x -> flatten(2) -> relu", X4), "O0"),
    "flatten_linear": Case(net("output x -> flatten -> linear(7)", X4), "O0"),
    "flatten_two_linears": Case(net("""
        f = x -> flatten
        output (f -> linear(6)) + (f -> linear(6, bias=false))
        """, X4), "O0"),
    "flatten_1x1": Case(net("output x -> global_avgpool -> flatten -> linear(3)", X4), "O0"),
    "concat": Case(net("""
        a = x -> conv2d(3, 1)
        b = x -> conv2d(4, 3, padding=1)
        output concat(a, b, x)
        """, X4), "O0", ("concat",)),
    "concat_fixups": Case(net("""
        a = x -> softmax(dim=2)
        b = x -> layernorm
        c = x -> groupnorm(5)
        g = x -> global_avgpool
        d = x * g -> dropout
        output concat(a, b, c, d, x -> conv2d(3, 3, padding=1, groups=1), x -> conv2d(5, 3, padding=1, groups=5))
        """, X4), "O0"),
    "concat_nested_and_repeated": Case(net("""
        a = x -> relu
        b = x -> conv2d(2, 1)
        output concat(concat(a, b), concat(b, a), x -> maxpool(3, stride=1, padding=1))
        """, X4), "O0"),
    "concat_rank2": Case(net("output concat(x -> linear(5), x -> linear(3))", "x: f32[N, 7]"), "O0"),
    "concat_dim2": Case(net("output concat(x -> relu, x -> sigmoid, dim=2)", X4), "O0"),
    # binary ops, broadcasting
    "add": Case(net("output x + y", f"{X4}, y: f32[N, 5, 7, 9]"), "O0", ("add",)),
    "add_broadcast": Case(net("output x + y", f"{X4}, y: f32[N, 5, 1, 1]"), "O0"),
    "add_broadcast_first": Case(net("output y + x", f"{X4}, y: f32[N, 1, 7, 9]"), "O0"),
    "add_broadcast_both": Case(net("output x + y", "x: f32[N, 5, 7, 1], y: f32[N, 5, 1, 9]"), "O0"),
    "add_rank2_broadcast": Case(net("output x + y", "x: f32[N, 6], y: f32[N, 1]"), "O0"),
    "mul": Case(net("output x * y", f"{X4}, y: f32[N, 5, 7, 9]"), "O0", ("mul",)),
    "mul_per_sample_channel": Case(net("output x * (x -> global_avgpool -> sigmoid)", X4), "O0"),
    "mul_spatial": Case(net("output x * y", f"{X4}, y: f32[N, 1, 7, 9]"), "O0"),
    "mul_batch_broadcast": Case(net("output x * y", f"{X4}, y: f32[1, 5, 1, 1]"), "O0"),
    "mul_per_sample": Case(net("output y * x", f"{X4}, y: f32[N, 1, 1, 1]"), "O0"),
}

# every activation alone, on an NHWC tensor and on a matrix; prelu per channel and shared
for _act in ACTIVATIONS:
    OP_CASES[f"act_{_act.name}"] = Case(net(f"output x -> {_act.name}", X4), "O0", (_act.name,))
OP_CASES["act_leaky_relu_alpha"] = Case(net("output x -> leaky_relu(alpha=0.2)", "x: f32[N, 9]"), "O0")
OP_CASES["act_prelu_shared"] = Case(net("output x -> prelu(shared=true)", X4), "O0")
OP_CASES["act_prelu_rank2"] = Case(net("output x -> prelu", "x: f32[N, 9]"), "O0")
OP_CASES["act_prelu_rank3"] = Case(net("output x -> prelu", "x: f32[N, 4, 9]"), "O0")
OP_CASES["act_gelu_tanh"] = Case(net('output x -> gelu(approximate="tanh")', X4), "O0")
OP_CASES["act_softplus_beta"] = Case(net("output x -> softplus(beta=2, threshold=1.5)", X4), "O0")
OP_CASES["act_elu_alpha"] = Case(net("output x -> elu(alpha=0.5)", "x: f32[N, 3, 17]"), "O0")
OP_CASES["act_rrelu"] = Case(net("output x -> rrelu(lower=0.1, upper=0.3)", X4), "O0")


# ---------------------------------------------------------------------------------------------
# (b) fused ops, from small graphs that O1 fuses
# ---------------------------------------------------------------------------------------------

RESIDUAL_BLOCK = """
block basic(c) {
    input x
    y = x -> conv1: conv2d(c, 3, padding=1, bias=false) -> bn1: batchnorm -> relu
          -> conv2: conv2d(c, 3, padding=1, bias=false) -> bn2: batchnorm
    output relu(y + x)
}
block down(c) {
    input x
    y = x -> conv1: conv2d(c, 3, stride=2, padding=1, bias=false) -> bn1: batchnorm -> relu
          -> conv2: conv2d(c, 3, padding=1, bias=false) -> bn2: batchnorm
    skip = x -> sc: conv2d(c, 1, stride=2, bias=false) -> scbn: batchnorm
    output relu(y + skip)
}
network t {
    input x: f32[N, 3, 9, 11]
    output x -> stem: conv2d(6, 3, padding=1) -> b1: basic(6) -> b2: down(10)
}
"""

INCEPTION = """
block inception(c1, c3r, c3, cp) {
    input x
    b1 = x -> conv2d(c1, 1, bias=false) -> batchnorm -> relu
    b2 = x -> conv2d(c3r, 1) -> relu -> conv2d(c3, 3, padding=1) -> relu
    b3 = x -> maxpool(3, stride=1, padding=1, ceil_mode=true) -> conv2d(cp, 1) -> relu
    output concat(b1, b2, b3)
}
network t {
    input x: f32[N, 6, 7, 9]
    output x -> inception(5, 4, 7, 3) -> inception(4, 3, 5, 2)
}
"""

FUSED_CASES: dict[str, Case] = {
    "conv_bn_relu": Case(net("output x -> conv2d(6, 3, padding=1, bias=false) -> batchnorm -> relu", X4),
                         expect=("fused_conv2d",)),
    "conv_bias_bn_relu6_stride2": Case(
        net("output x -> conv2d(7, 3, stride=2, padding=1) -> batchnorm(eps=0.001) -> relu6", X4),
        expect=("fused_conv2d",)),
    "depthwise_bn_relu6_mult2": Case(
        net("output x -> conv2d(10, 3, stride=2, padding=1, groups=5, bias=false) -> batchnorm -> relu6", X4),
        expect=("fused_conv2d",)),
    "grouped_conv_bn_relu": Case(
        net("output x -> conv2d(6, 3, padding=2, dilation=2, groups=3, bias=false) -> batchnorm -> relu",
            "x: f32[N, 9, 6, 7]"), expect=("fused_conv2d",)),
    "conv_bn_add_relu": Case(RESIDUAL_BLOCK, expect=("fused_conv2d",)),
    "conv_add_input_relu": Case(net("output relu((x -> conv2d(5, 3, padding=1)) + x)", X4),
                                expect=("fused_conv2d",)),
    # conv_transpose2d gets conv's epilogue: bias, a parameterised activation, a residual, a prelu slope
    "conv_transpose_relu_residual": Case(
        net("output relu((x -> conv_transpose2d(5, 2, stride=2) -> leaky_relu(alpha=0.2)) + y)",
            f"{X4}, y: f32[N, 5, 14, 18]"), expect=("fused_conv_transpose2d",)),
    "conv_transpose_prelu": Case(net("output x -> conv_transpose2d(4, 3, stride=2, padding=1) -> prelu", X4),
                                 expect=("fused_conv_transpose2d",)),
    "add_layernorm_last2_relu": Case(net("output (x + y) -> layernorm(dims=2) -> relu",
                                         "x: f32[N, 3, 4, 5], y: f32[N, 3, 4, 5]"), expect=("fused_layernorm",)),
    "linear_gelu": Case(net("output x -> linear(19) -> gelu", "x: f32[N, 37]"), expect=("fused_linear",)),
    "linear_bias_relu_rank3": Case(net("output x -> linear(13) -> relu", "x: f32[N, 3, 22]"),
                                   expect=("fused_linear",)),
    "linear_add_tanh": Case(net("output tanh((x -> linear(9)) + y)", "x: f32[N, 17], y: f32[N, 9]"),
                            expect=("fused_linear",)),
    "linear_bn_relu": Case(net("output x -> linear(12, bias=false) -> batchnorm -> relu", "x: f32[N, 20]"),
                           expect=("fused_linear",)),
    "bn_relu": Case(net("output x -> batchnorm -> relu", X4), expect=("fused_pointwise",)),
    "bn_relu_rank2": Case(net("output x -> batchnorm -> relu", "x: f32[N, 11]"), expect=("fused_pointwise",)),
    "pool_bn_relu_add": Case(net("output relu((x -> maxpool(2) -> batchnorm -> relu) + y)",
                                 "x: f32[N, 5, 8, 10], y: f32[N, 5, 4, 5]"), expect=("fused_pointwise",)),
    "pointwise_chain": Case(net("output x -> relu6 -> sigmoid", X4), expect=("fused_pointwise",)),
    "pointwise_add_chain": Case(net("output (x -> tanh) + y -> silu", f"{X4}, y: f32[N, 5, 7, 9]"),
                                expect=("fused_pointwise",)),
    "layernorm_gelu": Case(net("output x -> layernorm -> gelu", "x: f32[N, 37]"), expect=("fused_layernorm",)),
    "layernorm_relu_rank3": Case(net("output x -> layernorm -> relu", "x: f32[N, 3, 20]"),
                                 expect=("fused_layernorm",)),
    "layernorm_relu_rank4": Case(net("output x -> layernorm -> relu", X4), expect=("fused_layernorm",)),
    "add_layernorm": Case(net("""
        a = x -> linear(24)
        output (a + y) -> layernorm
        """, "x: f32[N, 3, 10], y: f32[N, 3, 24]"), expect=("fused_layernorm",)),
    "add_layernorm_rank4": Case(net("output (x + y) -> layernorm -> relu", f"{X4}, y: f32[N, 5, 7, 9]"),
                                expect=("fused_layernorm",)),
    "groupnorm_silu": Case(net("output x -> groupnorm(3) -> silu", "x: f32[N, 6, 5, 7]"),
                           expect=("fused_groupnorm",)),
    "groupnorm_relu_add": Case(net("output relu((x -> groupnorm(2) -> silu) + y)",
                                   "x: f32[N, 6, 5, 7], y: f32[N, 6, 5, 7]"), expect=("fused_groupnorm",)),
    "conv_prelu_per_channel": Case(net("output x -> conv2d(6, 3, padding=1) -> prelu", X4),
                                   expect=("fused_conv2d",)),
    "conv_prelu_shared": Case(net("output x -> conv2d(6, 3) -> prelu(shared=true)", X4), expect=("fused_conv2d",)),
    "linear_prelu": Case(net("output x -> linear(8) -> prelu", "x: f32[N, 13]"), expect=("fused_linear",)),
    "bn_prelu_add_prelu": Case(net("output (x -> batchnorm -> prelu) + y -> prelu(shared=true)",
                                   f"{X4}, y: f32[N, 5, 7, 9]"), expect=("fused_pointwise",)),
    "conv_leaky_add_elu": Case(
        net("output (x -> conv2d(5, 3, padding=1) -> leaky_relu(alpha=0.2)) + x -> elu(alpha=0.7)", X4),
        expect=("fused_conv2d",)),
    "inception_concat": Case(INCEPTION, expect=("fused_conv2d", "concat")),
    "flatten_hwc_linear": Case(net("output x -> conv2d(4, 3, padding=1) -> relu -> flatten -> linear(10) -> relu",
                                   X4), expect=("fused_conv2d", "flatten", "fused_linear")),
    "se_block": Case(net("""
        y = x -> conv2d(8, 1) -> relu
        s = y -> global_avgpool -> conv2d(3, 1) -> relu -> conv2d(8, 1) -> sigmoid
        output y * s
        """, X4), expect=("fused_conv2d", "global_avgpool", "mul")),
    # the sequence examples' own blocks at small sizes (their networks are 86M-124M parameters): GPT-2's
    # pre-norm layer (Q/K/V as one GEMM, chunk, causal attention, GELU-tanh MLP) and its tied head; the
    # standard library's nn.Transformer (packed in_proj folded into a linear, cross-attention, causal decoder)
    "gpt2_layers_tied_head": Case(f'import "{EXAMPLES_DIR}/gpt2.net"\n' + net("""
        param wpe.weight: [16, 32] = normal(std=0.02)
        x = (ids -> wte: embedding(50, 32)) + wpe.weight[:T]
        y = x -> h: layer(32, 4) * 2 -> ln_f: layernorm
        output matmul(y, wte.weight -> transpose(0, 1))
        """, "ids: i64[N, T=7]"), expect=("scaled_dot_product_attention", "chunk", "fused_linear", "linear")),
    "stdlib_transformer": Case("import transformer\n" + net(
        "output src -> tr: transformer(tgt, 16, 2, 1, 1, 24)", "src: f32[N, S=6, 16], tgt: f32[N, T=5, 16]"),
        expect=("linear", "scaled_dot_product_attention", "split", "fused_layernorm")),
}

# every activation in a conv epilogue (act1), and in a linear epilogue after a residual (act2)
for _act in ACTIVATIONS:
    FUSED_CASES[f"conv_epilogue_{_act.name}"] = Case(
        net(f"output x -> conv2d(6, 3, padding=1) -> {_act.name}", X4), expect=("fused_conv2d",))
    FUSED_CASES[f"linear_residual_{_act.name}"] = Case(
        net(f"output (x -> linear(9) -> relu) + y -> {_act.name}", "x: f32[N, 11], y: f32[N, 9]"),
        expect=("fused_linear",))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OP_CASES))
def test_op(name, dtype):
    run_case(OP_CASES[name], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FUSED_CASES))
def test_fused(name, dtype):
    fused = run_case(FUSED_CASES[name], dtype)
    assert any(n.op in FUSED_OPS for n in fused.nodes)


def test_cases_cover_every_op():
    """The cases above lower every registry op at least once (fused ops included)."""
    seen = set()
    for case in [*OP_CASES.values(), *FUSED_CASES.values()]:
        seen.update(ops_of(build(case)[1]))
    assert set(REGISTRY) <= seen, f"ops never tested: {sorted(set(REGISTRY) - seen)}"


def test_every_activation_fuses_into_an_epilogue():
    for _act in ACTIVATIONS:
        _, fused = build(FUSED_CASES[f"conv_epilogue_{_act.name}"])
        (node,) = fused.nodes
        assert node.op == "fused_conv2d" and node.attrs["act1"] == _act.name
        _, fused = build(FUSED_CASES[f"linear_residual_{_act.name}"])
        (node,) = fused.nodes
        assert node.op == "fused_linear" and node.attrs["residual"] and node.attrs["act2"] == _act.name


# ---------------------------------------------------------------------------------------------
# the module's plans: copy-free concat, (H, W, C) flatten, launch counts
# ---------------------------------------------------------------------------------------------

def module_of(case: Case, dtype="fp32") -> TritonModule:
    graph, fused = build(case)
    return TritonModule(fused, netdsl.random_weights(graph, 1), dtype=dtype)


def planned_launches(module: TritonModule, n: int = 2) -> int:
    """Kernel launches the wrappers really plan for one forward call (recorded on meta tensors)."""
    graph = module.graph
    meta = TritonModule(graph, _meta_weights(module), dtype=module.dtype_name, device="meta")
    inputs = {v.name: torch.empty(v.type.concrete({"N": n}), device="meta") for v in graph.inputs}
    with recording() as launches:
        meta.run(inputs)
    return len(launches)


def _meta_weights(module):
    return {name: np.zeros(spec.shape, np.float32) for name, spec in module.graph.used_params().items()}


def test_concat_is_copy_free():
    m = module_of(FUSED_CASES["inception_concat"])
    concats = [n for n in m.graph.nodes if n.op == "concat"]
    assert len(concats) == 2
    for node in concats:  # every branch writes straight into its slice of the concat's buffer
        assert all(v.name in m.concat_slices for v in node.inputs)
        starts = sorted(m.concat_slices[v.name][1:] for v in node.inputs)
        assert starts[0][0] == 0 and starts[-1][1] == node.output.type.shape[1]
        assert all(a[1] == b[0] for a, b in zip(starts, starts[1:]))
    # the concats themselves launch nothing
    assert m.launches == sum(s.launches for s in m.steps if s.node.op != "concat")


def test_concat_copies_what_it_must():
    """A graph input (no producer) is copied into the buffer; a value with a second reader is written
    into its slice all the same (U-Net's skips), and the other reader reads it there."""
    m = module_of(OP_CASES["concat"])
    (node,) = [n for n in m.graph.nodes if n.op == "concat"]
    a, b, x = node.inputs
    assert a.name in m.concat_slices and b.name in m.concat_slices and x.name not in m.concat_slices
    assert m.launches == 3  # two convs + one copy of x
    assert planned_launches(m) == 3
    shared = Case(net("""
        a = x -> conv2d(3, 1)
        output concat(a, x -> conv2d(2, 1)), a -> relu
        """, X4), "O0")
    m = module_of(shared)
    (node,) = [n for n in m.graph.nodes if n.op == "concat"]
    assert node.inputs[0].name in m.concat_slices and node.inputs[1].name in m.concat_slices
    assert m.launches == 3  # two convs and the relu, no copy
    for dtype in ("fp32", "fp16"):
        run_case(shared, dtype)


def test_flatten_feeding_linear_is_an_hwc_view():
    m = module_of(FUSED_CASES["flatten_hwc_linear"])
    (flat,) = [n for n in m.graph.nodes if n.op == "flatten"]
    assert m.hwc_flatten == {flat.output.name: (4, 7, 9)}
    step = next(s for s in m.steps if s.node is flat)
    assert step.launches == 0
    assert m.launches == 2 == planned_launches(m)
    # a flatten that is an output (or feeds something else) is a real layout copy
    assert not module_of(OP_CASES["flatten_output"]).hwc_flatten


@pytest.mark.parametrize("name, reduced", [("softmax_rank4_dim1", 5), ("softmax_rank4_dim2", 7),
                                           ("softmax_rank4_last", 9), ("log_softmax_rank4_dim1", 5),
                                           ("layernorm_rank4", 9), ("linear_rank4", 9)])
def test_reductions_over_an_nhwc_axis(name, reduced):
    """An op along IR axis d of a rank-4 tensor runs its kernel along the buffer's last axis: channels
    (d = 1) are last already; H or W (d = 2, 3) are moved there and back by a layout fix-up. One launch
    either way, whose rows have the length of the reduced axis (C = 5, H = 7, W = 9 here)."""
    m = module_of(OP_CASES[name])
    with recording() as launches:
        TritonModule(m.graph, _meta_weights(m), device="meta").run({"x": torch.empty((2, 5, 7, 9), device="meta")})
    (launch,) = launches
    assert launch.args.get("C", launch.args.get("K")) == reduced
    assert m.launches == 1


LAUNCHES = {
    # case: kernel launches of one forward call
    "conv_bn_relu": 1,
    "conv_bn_add_relu": 6,  # stem, 2 per basic block (the residual add rides in the epilogue), 3 in down
    "bn_relu": 1,
    "groupnorm_silu": 3,  # statistics, merge into an affine table, apply + silu
    "layernorm_gelu": 1,
    "add_layernorm": 2,  # the linear, then add & norm
    "se_block": 5,  # conv, global pool, 2 convs (the sigmoid fused), the per-(sample, channel) mul
    "flatten_hwc_linear": 2,  # the flatten is a free view
    "inception_concat": 2 * 5,  # per block: 4 convs + 1 pool; the concat copies nothing
}


@pytest.mark.parametrize("name", list(LAUNCHES))
def test_launch_counts(name):
    m = module_of(FUSED_CASES[name])
    expected = LAUNCHES[name]
    assert m.launches == expected, [(s.node.op, s.launches) for s in m.steps]
    assert planned_launches(m) == expected


def test_lenet5_launches():
    graph = netdsl.load(EXAMPLES / "lenet5.net")
    fused = run_pipeline(graph, "O1", log=lambda _: None)
    m = TritonModule(fused, netdsl.init_weights(graph))
    assert len(fused.nodes) == 8
    assert m.launches == 7 == planned_launches(m)  # the flatten is a free (H, W, C) view


def test_groups1_conv_uses_the_implicit_gemm():
    """A conv with groups=1 is a GEMM even with one input channel (LeNet's first layer); only
    groups == C_in > 1 goes to the depthwise direct kernel."""
    m = module_of(OP_CASES["conv2d_cin1"])
    with recording() as launches:
        meta = TritonModule(m.graph, _meta_weights(m), device="meta")
        meta.run({"x": torch.empty((2, 1, 12, 11), device="meta")})
    assert [launch.kernel.fn.__name__ for launch in launches] == ["conv2d_kernel"]
    m = module_of(OP_CASES["conv2d_depthwise_mult3"])
    with recording() as launches:
        meta = TritonModule(m.graph, _meta_weights(m), device="meta")
        meta.run({"x": torch.empty((2, 4, 7, 9), device="meta")})
    assert [launch.kernel.fn.__name__ for launch in launches] == ["depthwise_conv2d_kernel"]


# ---------------------------------------------------------------------------------------------
# running the module without tracing (liveness release, returned layouts)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["inception_concat", "conv_bn_add_relu", "se_block", "flatten_hwc_linear"])
def test_untraced_run_matches_reference(name):
    case = FUSED_CASES[name]
    graph, fused = build(case)
    weights = netdsl.random_weights(graph, 1)
    inputs = random_inputs(graph, case.n)
    module = TritonModule(fused, weights, dtype="fp32")
    got = module.run({k: torch.from_numpy(x) for k, x in inputs.items()})
    ref = reference.run(fused, inputs, weights)
    assert list(got) == list(ref)
    for k in ref:
        assert tuple(got[k].shape) == ref[k].shape
        _, _, ok = TOLERANCES["fp32"].error(got[k].cpu().numpy(), ref[k])
        assert ok, k


def test_several_outputs():
    case = Case(net("""
        y = x -> conv2d(4, 3, padding=1) -> relu
        output feat = y, probs = y -> global_avgpool -> flatten -> linear(3) -> softmax
        """, X4))
    graph, fused = build(case)
    weights = netdsl.random_weights(graph, 1)
    inputs = random_inputs(graph, 2)
    module = TritonModule(fused, weights)
    feat, probs = module(torch.from_numpy(inputs["x"]))
    ref = reference.run(fused, inputs, weights)
    assert feat.shape == (2, 4, 7, 9) and probs.shape == (2, 3)
    np.testing.assert_allclose(feat.cpu().numpy(), ref["feat"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probs.cpu().numpy(), ref["probs"], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# netdsl.compile
# ---------------------------------------------------------------------------------------------

SMALL = net("output x -> conv2d(4, 3, padding=1, bias=false) -> batchnorm -> relu -> maxpool(2)",
            "x: f32[N, 3, 10, 12]")


def test_compile_returns_an_nchw_module(tmp_path):
    path = tmp_path / "small.net"
    path.write_text(SMALL)
    model = netdsl.compile(path, dtype="fp32", seed=3)
    assert isinstance(model, torch.nn.Module)
    x = torch.randn(2, 3, 10, 12)
    y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 4, 5, 6) and y.dtype == torch.float32
    graph = netdsl.load(path)
    ref = reference.run(graph, {"x": x.numpy()}, netdsl.init_weights(graph, 3))[graph.output_names[0]]
    np.testing.assert_allclose(y.contiguous().cpu().numpy(), ref, rtol=1e-4, atol=1e-5)


def test_compile_lenet5_fp16_and_a_graph():
    model = netdsl.compile(EXAMPLES / "lenet5.net", dtype="fp16")
    y = model(torch.randn(2, 1, 32, 32))
    assert y.shape == (2, 10) and y.dtype == torch.float16
    graph = netdsl.load_source(SMALL)
    assert netdsl.compile(graph)(torch.randn(1, 3, 10, 12)).shape == (1, 4, 5, 6)


def test_compile_rejects_wrong_inputs():
    model = netdsl.compile(netdsl.load_source(SMALL))
    with pytest.raises(NetDSLError, match="expects"):
        model(torch.randn(2, 3, 10, 11))
    with pytest.raises(NetDSLError, match="expects"):
        model(torch.randn(3, 10, 12))
    with pytest.raises(NetDSLError, match="input"):
        model(torch.randn(2, 3, 10, 12), torch.randn(2, 3, 10, 12))
    with pytest.raises(NetDSLError, match="dtype"):
        netdsl.compile(netdsl.load_source(SMALL), dtype="fp8")
    with pytest.raises(NetDSLError, match="backend"):
        netdsl.compile(netdsl.load_source(SMALL), backend="cuda")


def test_a_kernel_error_is_a_located_netdsl_error(monkeypatch):
    """A kernel wrapper that refuses its arguments (KernelError) reaches the user as a NetDSLError at
    the node's source line, never as a traceback."""
    from netdsl.errors import NetDSLError
    from netdsl.kernels import _host, pointwise

    def refuse(*args, **kwargs):
        raise _host.KernelError("x: rows overlap")

    graph, fused = build(Case(net("output x -> relu", X4), "O0"))
    module = TritonModule(fused, {}, dtype="fp32")
    monkeypatch.setattr(pointwise, "pointwise", refuse)
    with pytest.raises(NetDSLError) as info:
        module.run(random_inputs(graph, 2))
    text = str(info.value)
    assert "`relu` cannot run on these inputs: x: rows overlap" in text and "<test>:3:" in text


def test_qkv_of_one_gemm_cost_no_copy():
    """GPT-2's `q, k, v = x -> c_attn: linear(3 * d) -> chunk(3, dim=-1)`, each piece split into heads before
    attention: the pieces are strided views of the GEMM's output (nothing copied, nothing planned for them),
    while a chunk whose pieces feed a pointwise kernel copies."""
    m = module_of(FUSED_CASES["gpt2_layers_tied_head"])
    chunks = [n for n in m.graph.nodes if n.op == "chunk"]
    assert len(chunks) == 2 and {n.outputs[0].name for n in chunks} == set(m.layout.split_views)
    plan = m.plan_for({"N": 2, "T": 7})
    for node in chunks:
        (src,) = node.inputs
        assert all(plan.storage[v.name] == plan.storage[src.name] for v in node.outputs)
    copied = module_of(OP_CASES["chunk"])
    assert not copied.layout.split_views
