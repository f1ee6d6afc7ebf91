"""The language foundations for sequence models: integer inputs (token ids), arithmetic between a tensor
and a number (one `affine` node), the network's input dims named in attribute expressions (with ops
that take a variable number of attribute arguments), and NumPy broadcasting across ranks for add/mul.

Results are checked against torch (float64 on CPU), types against the shapes torch gives, and every
error path for its message, file:line:col, source line, caret and hint (as tests/test_errors.py does)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_errors import check, error_of  # the located-error checks of every error test

import netdsl
from netdsl import NetDSLError
from netdsl.backends import reference
from netdsl.frontend import ast, parse
from netdsl.ir.dims import SymDim
from netdsl.ir.printer import format_graph
from netdsl.ir.types import DTYPES, NUMPY_DTYPES, TensorType
from netdsl.ops import REGISTRY
from netdsl.ops.printing import attr_defaults
from netdsl.ops.registry import Attr, OpDef, OpKind, ShapeError, register
from netdsl.ops.verify import verify

N, T, D = SymDim.symbol("N"), SymDim.symbol("T"), SymDim.symbol("D")
TOL = {"f32": {"rtol": 2e-6, "atol": 2e-6}, "f64": {"rtol": 1e-12, "atol": 1e-12}}


def load(source: str):
    return verify(netdsl.load_source(source, "m.net"))


def seq(*lines: str, inputs: str = "x: f32[N, T, 16]") -> str:
    """A network over ``inputs``; ``lines`` start on line 3."""
    return "network s {\n" + f"    input {inputs}\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


def rand(shape, dtype="f64", seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(NUMPY_DTYPES[dtype])


def assert_torch(got: np.ndarray, expected: torch.Tensor, dtype: str):
    assert got.dtype == NUMPY_DTYPES[dtype]
    assert got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got, expected.numpy(), **TOL[dtype])


def t64(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, np.float64))


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------

def test_floor_division_parses_with_the_precedence_of_division():
    (net,) = parse(seq("output x -> toy(D // 8 * 2, 1 - T // 2)")).networks.values()
    call = net.body[-1].items[0].value.stages[0].body
    first, second = call.args
    assert isinstance(first, ast.BinOp) and first.op == "*"
    assert isinstance(first.left, ast.BinOp) and first.left.op == "//"
    assert second.op == "-" and second.right.op == "//"


def test_floor_division_in_syntax_errors():
    check(error_of(seq("output x // // 2")), "unexpected `//`", 3, 17, "expected `(`", width=2)
    check(error_of(seq("output x -> linear(4 //)")), "unexpected `)`", 3, 28)


def test_arithmetic_on_tensors_parses_as_binops():
    (net,) = parse(seq("y = -x * 0.125 + 1", "output y")).networks.values()
    e = net.body[1].value
    assert e.op == "+" and e.left.op == "*" and isinstance(e.left.left, ast.Neg)


def test_integer_element_types_are_known():
    assert DTYPES["i32"] == 4 and DTYPES["i64"] == 8
    assert NUMPY_DTYPES["i32"] is np.int32 and NUMPY_DTYPES["i64"] is np.int64


# ---------------------------------------------------------------------------------------------
# integer inputs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["i32", "i64"])
def test_integer_input_type_and_reference_run(dtype):
    g = load(seq("output ids", inputs=f"ids: {dtype}[N, T]"))
    assert g.inputs[0].type == TensorType((N, T), dtype)
    ids = np.arange(6).reshape(2, 3)
    out = reference.run(g, {"ids": ids}, {})["ids"]
    assert out.dtype == NUMPY_DTYPES[dtype]  # kept as integers, never cast to float
    np.testing.assert_array_equal(out, ids)
    small = reference.run(g, {"ids": ids.astype(np.uint8)}, {}, dtype="f64")["ids"]
    assert small.dtype == NUMPY_DTYPES[dtype]


def test_reference_rejects_a_float_array_for_an_integer_input():
    g = load(seq("output ids", inputs="ids: i64[N, T]"))
    with pytest.raises(NetDSLError, match=r"input `ids` expects i64\[N, T\] \(integers\), got an array of float32") as e:
        reference.run(g, {"ids": np.zeros((2, 3), np.float32)}, {})
    assert "astype(np.int64)" in e.value.hint
    with pytest.raises(NetDSLError, match="got an array of bool"):
        reference.run(g, {"ids": np.zeros((2, 3), bool)}, {})
    g32 = load(seq("output ids", inputs="ids: i32[N]"))
    with pytest.raises(NetDSLError, match="its values do not fit a i32") as e:
        reference.run(g32, {"ids": np.array([1, 2**40])}, {})
    assert "declare the input i64" in e.value.hint


def test_reference_rejects_an_integer_array_for_a_float_input():
    g = load(seq("output x -> relu"))
    with pytest.raises(NetDSLError, match=r"input `x` expects f32\[N, T, 16\] \(floating point\), got an array of "
                                          r"int64") as e:
        reference.run(g, {"x": np.zeros((2, 3, 16), np.int64)}, {})
    assert "astype(np.float32)" in e.value.hint and "i64[...]" in e.value.hint
    with pytest.raises(NetDSLError, match="runs in f32 or f64, not i64"):
        reference.run(g, {"x": np.zeros((2, 3, 16), np.float32)}, {}, dtype="i64")


def test_float_ops_reject_integer_tensors_at_elaboration():
    src = seq("output ids -> relu", inputs="ids: i64[N, T]")
    check(error_of(src), "`relu` takes a floating-point tensor, got i64[N, T]", 3, 19, "embedding(", width=4)
    src = seq("output ids -> fc: linear(4)", inputs="ids: i32[N, T]")
    check(error_of(src), "`linear` takes a floating-point tensor, got i32[N, T]", 3, 23, "token ids")
    src = seq("output x + ids", inputs="x: f32[N, T], ids: i64[N, T]")
    check(error_of(src), "`add` takes a floating-point tensor, got i64[N, T]", 3, 12, width=7)
    src = seq("output ids * 2", inputs="ids: i64[N, T]")
    check(error_of(src), "`*` on an integer tensor (i64[N, T]) is not supported", 3, 12, "embedding(")
    src = seq("output -ids", inputs="ids: i64[N, T]")
    check(error_of(src), "`-` on an integer tensor", 3, 12)


def test_unknown_element_type_lists_the_integer_types():
    err = check(error_of(seq("output x", inputs="x: u8[N]")), "unknown element type `u8`", 2, 14)
    assert "i32" in err.hint and "i64" in err.hint


def test_embedding_takes_integer_ids():
    g = load(seq("output ids -> emb: embedding(50, 8)", inputs="ids: i64[N, T]"))
    (node,) = g.nodes
    assert node.output.type == TensorType((N, T, 8), "f32")
    weight = rand((50, 8), seed=1)
    ids = np.random.default_rng(0).integers(0, 50, (2, 5))
    out = reference.run(g, {"ids": ids}, {node.params["weight"]: weight}, dtype="f64")["output0"]
    assert_torch(out, F.embedding(torch.from_numpy(ids), t64(weight)), "f64")


# ---------------------------------------------------------------------------------------------
# tensor (+ - * /) number: one affine node
# ---------------------------------------------------------------------------------------------

AFFINE_FORMS = [
    ("x * 0.125", 0.125, 0.0), ("x / 8", 0.125, 0.0), ("x + 1", 1.0, 1.0), ("x - 1", 1.0, -1.0),
    ("1 - x", -1.0, 1.0), ("2 * x", 2.0, 0.0), ("-x", -1.0, 0.0), ("0.5 + x", 1.0, 0.5), ("x * -3", -3.0, 0.0),
    ("x / 2.5", 0.4, 0.0), ("x - 1.5e-3", 1.0, -1.5e-3),
]


@pytest.mark.parametrize("expr,scale,shift", AFFINE_FORMS, ids=[f[0] for f in AFFINE_FORMS])
def test_tensor_and_number_is_one_affine_node(expr, scale, shift):
    g = load(seq(f"output y = {expr}"))
    (node,) = g.nodes
    assert node.op == "affine" and node.inputs == g.inputs
    assert node.attrs == {"scale": pytest.approx(scale), "shift": pytest.approx(shift)}
    assert all(isinstance(v, float) for v in node.attrs.values())
    assert node.output.type == g.inputs[0].type
    assert (node.loc.line, node.loc.col) == (3, 16)


def test_block_parameters_scale_tensors():
    src = ("block attn_scale(d, bias=0) {\n    input x\n    output x * (1 / d) + bias\n}\n"
           + seq("output x -> attn_scale(64, bias=2)"))
    g = load(src)
    assert [(n.op, n.attrs) for n in g.nodes] == [("affine", {"scale": 1 / 64, "shift": 0.0}),
                                                   ("affine", {"scale": 1.0, "shift": 2.0})]
    assert [n.name for n in g.nodes] == ["attn_scale_0.affine_0", "attn_scale_0.affine_1"]


def test_affine_prints_its_non_default_attributes():
    text = format_graph(load(seq("output y = 1 - x / 8")), attr_defaults=attr_defaults)
    assert "affine(%x) {scale=0.125} : f32[N, T, 16]" in text
    assert "affine(%affine_0) {scale=-1.0, shift=1.0} : f32[N, T, 16]" in text


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_arithmetic_matches_torch(dtype):
    g = load(seq("q = x * 0.125", "y = (1 - q / 3) * 2 + -x", "output q, y", inputs="x: f32[N, T, 16]"))
    x = rand((2, 5, 16), dtype)
    out = reference.run(g, {"x": x}, {}, dtype=dtype)
    tx = t64(x)
    assert_torch(out["q"], tx * 0.125, dtype)
    assert_torch(out["y"], (1 - tx * 0.125 / 3) * 2 + -tx, dtype)


def test_affine_after_a_linear_fuses_into_its_epilogue():
    from netdsl.passes import run_pipeline

    g = load(seq("output y = (x -> fc: linear(8)) * 0.125 - 1"))
    fused = run_pipeline(g, "O1", log=lambda _: None)
    (lin,) = [n for n in fused.nodes if n.op == "fused_linear"]
    assert lin.attrs["act1"] == "affine" and lin.attrs["act1_attrs"] == {"scale": 0.125, "shift": 0.0}
    assert REGISTRY["affine"].kernel_act({"scale": 0.125, "shift": -1.0}) == ("affine", 0.125, -1.0)
    w = netdsl.random_weights(g, seed=0)
    x = rand((2, 3, 16))
    expected = F.linear(t64(x), t64(w["fc.weight"]), t64(w["fc.bias"])) * 0.125 - 1
    assert_torch(reference.run(g, {"x": x}, w, dtype="f64")["y"], expected, "f64")
    assert_torch(reference.run(fused, {"x": x}, w, dtype="f64")["y"], expected, "f64")


def test_affine_errors():
    check(error_of(seq("output x / 0")), "division of a tensor by zero", 3, 12, "non-zero", width=5)
    check(error_of(seq("output x / (2 - 2.0)")), "division of a tensor by zero", 3, 12)
    check(error_of(seq("output 8 / x")), "`/` of a number by a tensor is not supported", 3, 12,
          "`8 / x` is not an affine map of x", width=5)
    check(error_of(seq("output x // 2")), "`//` between a tensor and a number is not supported", 3, 12, "x / 8")
    check(error_of(seq('output x * "a"')), '`*` between a tensor and "a" is not supported', 3, 12, "x * 0.125")
    check(error_of(seq("output x + true")), "`+` between a tensor and true is not supported", 3, 12)
    check(error_of(seq("output x * (1, 2)")), "`*` between a tensor and (1, 2) is not supported", 3, 12)
    check(error_of(seq("output x * T")), "`*` between a tensor and the dimension `T` is not supported", 3, 12,
          "dimensions are for attributes")
    check(error_of(seq("output x * 1e400")), "`*` with a number that is not finite (inf, 0.0", 3, 12, "too large")
    check(error_of(seq("output x - 1e300 * 1e300")), "`-` with a number that is not finite (1.0, -inf", 3, 12)
    check(error_of(seq("output x * " + "9" * 400)), "attribute `scale` must be a number that fits a float", 3, 12)
    check(error_of(seq("output -true")), "unary `-` applies to numbers and tensors, not true", 3, 12)
    check(error_of(seq("output x - x")), "`-` between tensors is not supported", 3, 12)
    # `-x` is a tensor now: as an argument of conv2d it is a second tensor input
    check(error_of("network n {\n    input x: f32[N, 3, 8, 8]\n    output x -> conv2d(-x, 3)\n}\n"),
          "`conv2d` takes 1 tensor input(s), got 2 (including the one from `->`)", 3, 17)


# ---------------------------------------------------------------------------------------------
# symbolic dims in attribute expressions, and ops with a variable number of attribute arguments
# ---------------------------------------------------------------------------------------------

def _view_infer(types, attrs):
    shape = attrs["shape"]
    if not isinstance(shape, tuple) or -1 in shape:
        raise ShapeError(f"toy_view needs a full shape, got {shape!r}", hint="no -1 in a toy", arg="shape")
    return types[0].with_shape(shape)


# ``toy_view(shape..., scale=1)``: x reshaped to ``shape`` (all of it given), times ``scale``; its first
# attribute has type "shape", so it takes its shape as varargs, like reshape and permute
_TOY = OpDef("toy_view", OpKind.INJECTIVE, _view_infer, lambda xs, p, a: xs[0].reshape(a["shape"]) * a["scale"],
             lambda ins, out, a: 0, (Attr("shape", "shape"), Attr("scale", "float", 1.0)))


@pytest.fixture
def toy_view():
    """``toy_view`` registered for one test."""
    op = register(_TOY)
    try:
        yield op
    finally:
        del REGISTRY["toy_view"]


@pytest.mark.parametrize("call", ["toy_view(N, T * 2, 8)", "toy_view((N, T * 2, 8))", "toy_view(shape=(N, 2 * T, 8))",
                                  "toy_view(N, T + T, D // 2)", "toy_view(N, -(-T - T), 16 // 2)"])
def test_input_dims_in_attributes(toy_view, call):
    g = load(seq(f"output y = x -> {call}", inputs="x: f32[N, T, D=16]"))
    (node,) = g.nodes
    shape = node.attrs["shape"]
    assert shape[:2] == (N, 2 * T) and node.output.type.shape == shape
    x = rand((2, 3, 16))
    out = reference.run(g, {"x": x}, {}, dtype="f64")["y"]  # the dims are bound to 2, 3 and 16
    assert_torch(out, t64(x).reshape(2, 6, 8), "f64")


def test_varargs_take_every_positional_argument_and_keywords_after_them(toy_view):
    g = load(seq("output x -> toy_view(N, T, 4, 4, scale=0.5)"))
    (node,) = g.nodes
    assert node.attrs == {"shape": (N, T, 4, 4), "scale": 0.5}
    assert load(seq("output x -> toy_view(16)", inputs="x: f32[4, 4]")).nodes[0].attrs["shape"] == (16,)


def test_dims_in_attributes_are_printed_symbolically(toy_view):
    text = format_graph(load(seq("output x -> toy_view(N, T * 2, 8)")), attr_defaults=attr_defaults)
    assert "toy_view(%x) {shape=(N, 2*T, 8)} : f32[N, 2*T, 8]" in text


def test_block_parameters_come_before_dims_and_dims_reach_into_blocks(toy_view):
    src = ("block split(T, heads=2) {\n    input x\n    output x -> toy_view(N, T, heads, D // heads)\n}\n"
           + seq("output x -> split(3)", inputs="x: f32[N, 3, D]"))
    (node,) = load(src).nodes
    assert node.attrs["shape"] == (N, 3, 2, D // 2)  # T is the block's parameter, N and D the input's dims


def test_a_value_named_like_a_dim_comes_first():
    g = load(seq("N2 = x -> relu", "output N2 -> tanh", inputs="x: f32[N2, 4]"))
    assert [n.op for n in g.nodes] == ["relu", "tanh"]


def test_gathered_arguments_are_located_together():
    from netdsl.errors import SourceLoc
    from netdsl.frontend.elaborate import _gather_shape_args

    src = "    output x -> reshape(N, T, 8, -1)\n"
    locs = {0: SourceLoc("m.net", 1, 24, 1, src), 1: SourceLoc("m.net", 1, 27, 1, src),
            2: SourceLoc("m.net", 1, 30, 1, src), 3: SourceLoc("m.net", 1, 33, 2, src), "scale": None}
    args, gathered = _gather_shape_args(REGISTRY.get("reshape") or _TOY, [N, T, 8, -1], locs)
    assert args == [(N, T, 8, -1)]
    assert gathered == {0: SourceLoc("m.net", 1, 24, 11, src), "scale": None}  # `N, T, 8, -1`
    assert _gather_shape_args(_TOY, [(N, -1)], {0: locs[0]}) == ([(N, -1)], {0: locs[0]})  # one tuple: as it is
    assert _gather_shape_args(REGISTRY["linear"], [4], {0: locs[0]}) == ([4], {0: locs[0]})  # no "shape" attr


def test_errors_of_a_gathered_shape_point_at_the_call(toy_view):
    err = check(error_of(seq("output x -> toy_view(N, T, -1)")), "toy_view needs a full shape", 3, 17,
                "no -1", width=len("toy_view(N, T, -1)"))
    assert err.message.endswith("(N, T, -1)")


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_reshape_and_permute_with_dims_match_torch(dtype):
    g = load(seq("heads = x -> reshape(N, T, 4, -1) -> permute(0, 2, 1, 3)",
                 "flat = heads -> reshape(N * 4, T * 3 // 3, -1)", "output heads, flat", inputs="x: f32[N, T, 12]"))
    reshape, permute, flat = g.nodes
    assert reshape.attrs["shape"] == (N, T, 4, -1) and permute.attrs["dims"] == (0, 2, 1, 3)
    assert g.outputs[0].type.shape == (N, 4, T, 3)
    assert flat.attrs["shape"] == (4 * N, T, -1) and g.outputs[1].type.shape == (4 * N, T, 3)
    x = rand((2, 5, 12), dtype)
    out = reference.run(g, {"x": x}, {}, dtype=dtype)  # the dims are bound to N=2, T=5
    expected = t64(x).reshape(2, 5, 4, 3).permute(0, 2, 1, 3)
    assert_torch(out["heads"], expected, dtype)
    assert_torch(out["flat"], expected.reshape(8, 5, -1), dtype)


def test_dim_errors():
    check(error_of(seq("output x -> linear(TT)")), "undefined name `TT`", 3, 24, "did you mean `T`?", width=2)
    src = "block b(heads) {\n    input x\n    output x -> linear(head)\n}\n" + seq("output x -> b(2)")
    check(error_of(src), "undefined name `head`", 3, 24, "did you mean `heads`?")
    check(error_of(seq("output x -> linear(T)")), "attribute `out_features` must be an integer, got T", 3, 24)
    check(error_of(seq("output x -> linear(T * T)")), "the product of two dimensions (`T` and `T`) is not supported",
          3, 24, "multiplied by an integer", width=5)
    check(error_of(seq("output x -> linear(T / 2)")), "`/` on a dimension is not supported", 3, 24, "D // 8")
    check(error_of(seq("output x -> linear(T * 0.5)")), "dimensions combine with integers only", 3, 24, "T * 2")
    check(error_of(seq('output x -> linear(T + "a")')), '`+` needs numbers, got T and "a"', 3, 24)
    check(error_of(seq("output x -> linear(T // 0)")), "division by zero", 3, 24)
    check(error_of(seq("output x -> linear(T // -2)")), "a dimension divides only by a positive integer, not -2", 3, 24)
    check(error_of(seq("output x -> linear(16 // T)")), "a dimension divides only by a positive integer, not T", 3, 24)
    check(error_of(seq("output N")), "an output must be a tensor", 3, 12)
    check(error_of(seq("output N -> relu")), "a chain starts from a tensor", 3, 12)
    check(error_of(seq("output x -> relu * T")), "a repetition count must be a positive integer, got T", 3, 24)


def test_floor_division_of_numbers():
    g = load(seq("output x -> linear(17 // 4 * 2)"))
    assert g.nodes[0].attrs["out_features"] == 8
    check(error_of(seq("output x -> linear(3 // 0)")), "division by zero", 3, 24)
    check(error_of(seq("output x -> linear(7.5 // 2)")), "attribute `out_features` must be an integer, got 3.0", 3, 24)


# ---------------------------------------------------------------------------------------------
# broadcasting across ranks (add, mul)
# ---------------------------------------------------------------------------------------------

BROADCASTS = [
    ("x: f32[N, T, 16], b: f32[16]", "x + b", (N, T, 16), [(2, 3, 16), (16,)]),
    ("x: f32[N, T, 16], b: f32[16]", "b * x", (N, T, 16), [(2, 3, 16), (16,)]),
    ("x: f32[N, 1, 16], m: f32[T, 1]", "x + m", (N, T, 16), [(2, 1, 16), (5, 1)]),
    ("x: f32[N, T, 16], g: f32[1, 16]", "x * g", (N, T, 16), [(2, 3, 16), (1, 16)]),
    ("x: f32[2, 3, 4, 5], b: f32[4, 1]", "b + x", (2, 3, 4, 5), [(2, 3, 4, 5), (4, 1)]),
    ("x: f32[7], s: f32[1]", "x * s", (7,), [(7,), (1,)]),
]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("inputs,expr,shape,sizes", BROADCASTS, ids=[b[1] + " " + b[0] for b in BROADCASTS])
def test_broadcasting_across_ranks_matches_torch(inputs, expr, shape, sizes, dtype):
    g = load(seq(f"output y = {expr}", inputs=inputs))
    (node,) = g.nodes
    assert node.output.type.shape == shape
    arrays = {v.name: rand(s, dtype, seed=i) for i, (v, s) in enumerate(zip(g.inputs, sizes))}
    out = reference.run(g, arrays, {}, dtype=dtype)["y"]
    tensors = [t64(arrays[v.name]) for v in node.inputs]
    expected = tensors[0] + tensors[1] if node.op == "add" else tensors[0] * tensors[1]
    assert_torch(out, expected, dtype)
    # the registry's shape rule gives torch's shape on the concrete sizes too
    static = REGISTRY[node.op].infer([TensorType(tuple(a.shape)) for a in (arrays[v.name] for v in node.inputs)], {})
    assert static.shape == tuple(expected.shape)


def test_broadcasting_errors_stay_located():
    err = check(error_of(seq("output x + b", inputs="x: f32[N, T, 16], b: f32[8]")),
                "`add` of tensors whose shapes differ in dim -1 (counting from the last)", 3, 12,
                "aligned at their last dims", width=5)
    assert "f32[N, T, 16] and f32[8]" in err.message
    check(error_of(seq("output b * x", inputs="x: f32[N, T, 16], b: f32[4, 16]")),
          "`mul` of tensors whose shapes differ in dim -2 (counting from the last)", 3, 12,
          "or one of them is 1")
    # equal ranks: as before
    check(error_of(seq("output x + b", inputs="x: f32[N, T, 16], b: f32[N, 4, 16]")),
          "`add` of tensors whose shapes differ in dim 1: f32[N, T, 16] and f32[N, 4, 16]", 3, 12,
          "a residual needs both branches to have the same shape")
