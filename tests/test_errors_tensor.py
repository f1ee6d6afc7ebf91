"""User mistakes with the tensor ops (netdsl/ops/tensor.py): each is one NetDSLError with file:line:col,
the source line, a caret under the call and a hint; run-time mistakes (an id outside the embedding
table, a sequence longer than max_len) are NetDSLErrors from the reference backend."""

from __future__ import annotations

import numpy as np
import pytest
from test_errors import check, error_of  # the located-error checks of every error test

import netdsl
from netdsl import NetDSLError
from netdsl.ir.dims import SymDim
from netdsl.ir.types import TensorType
from netdsl.ops import REGISTRY, ShapeError
from netdsl.ops.registry import bind_attrs


def program(inputs: str, *lines: str) -> str:
    """A network with ``input <inputs>`` on line 2; ``lines`` start on line 3, indented by 4."""
    return f"network n {{\n    input {inputs}\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


def check_at(source: str, call: str, message: str, hint: str | None = None) -> NetDSLError:
    """The error of ``source``, located at the first ``call`` (e.g. "matmul(") on line 3."""
    line = source.splitlines()[2]
    return check(error_of(source), message, 3, line.index(call) + 1, hint)


# ---------------------------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------------------------

def test_matmul_of_mismatched_inner_dims():
    check_at(program("a: f32[N, 5, 7], b: f32[6, 3]", "output matmul(a, b)"), "matmul(",
             "`matmul` of f32[N, 5, 7] and f32[6, 3]: inner dims 7 and 6 differ", "transpose(-2, -1)")
    check_at(program("a: f32[N, 5, 7], b: f32[5]", "output a -> matmul(b)"), "matmul(", "inner dims 7 and 5 differ",
             "the only dim of a 1-D one")


def test_matmul_of_batch_dims_that_do_not_broadcast():
    check_at(program("a: f32[2, 5, 7], b: f32[3, 7, 4]", "output matmul(a, b)"), "matmul(",
             "the batch dims do not broadcast: dim -1 (counting from the last) is 2 vs 3", "equal or 1")
    check_at(program("a: f32[N, 5, 7], b: f32[2, 7, 4]", "output matmul(a, b)"), "matmul(",
             "is N vs 2", "equal or 1")


def test_matmul_of_rank_0_or_rank_5():
    # a dot product is rank 0; matmul of it is an error
    check_at(program("u: f32[7]", "output matmul(matmul(u, u), u)"), "matmul(",
             "`matmul` takes tensors of rank 1 to 4, its first input is f32[]", "has no dim to contract")
    check_at(program("a: f32[1, 2, 3, 4, 5], b: f32[5, 2]", "output matmul(a, b)"), "matmul(",
             "its first input is f32[1, 2, 3, 4, 5]", "merge leading batch dims")


# ---------------------------------------------------------------------------------------------
# reshape, permute, transpose, squeeze, unsqueeze
# ---------------------------------------------------------------------------------------------

def test_reshape_that_does_not_divide():
    check_at(program("x: f32[N, 3, 8]", "output x -> reshape(N, 5, -1)"), "reshape(",
             "`reshape` of f32[N, 3, 8] to (N, 5, -1): the 24 * N elements do not divide by the other dims (5 * N)",
             "one dim may be -1")
    check_at(program("x: f32[2, 3, 8]", "output x -> reshape(shape=(7, -1))"), "reshape(",
             "the 48 elements do not divide by the other dims (7)")


def test_reshape_to_a_different_element_count():
    check_at(program("x: f32[N, 3, 8]", "output x -> reshape(N, 5, 5)"), "reshape(",
             "24 * N elements cannot take a shape of 25 * N", "exactly the input's elements")
    check_at(program("x: f32[N, T, 8]", "output x -> reshape(T, 8, 2)"), "reshape(",
             "8 * N * T elements cannot take a shape of 16 * T")


def test_reshape_with_two_inferred_dims():
    check_at(program("x: f32[N, 3, 8]", "output x -> reshape(-1, 3, -1)"), "reshape(",
             "`reshape` can infer only one dim, but (-1, 3, -1) has 2 -1s", "give every dim but one")


def test_reshape_with_bad_dims():
    check_at(program("x: f32[N, 3, 8]", "output x -> reshape(N, 0, 24)"), "reshape(",
             "dims must be at least 1 (or -1 for the one inferred dim), got 0")
    check_at(program("x: f32[N, 3, 8]", "output x -> reshape(N, 2.5, -1)"), "reshape(",
             "dims are integers or dims of the input, got 2.5")
    check_at(program("x: f32[N, 3, 8]", 'output x -> reshape(shape="flat")'), "reshape(",
             'attribute `shape` of `reshape` must be a tuple of dims, got "flat"', "reshape(N, T, 8, -1)")


def test_reshape_inferring_a_product_of_symbolic_dims():
    check_at(program("x: f32[N, T, 8]", "output x -> reshape(-1, 8)"), "reshape(",
             "the inferred dim would be N * T, a product of symbolic dims", "keep those dims apart")


def test_bad_permutations():
    check_at(program("x: f32[N, 3, 8]", "output x -> permute(0, 0, 1)"), "permute(",
             "`permute` dims (0, 0, 1) are not a permutation of the 3 dims of f32[N, 3, 8]: dim 0 appears twice",
             "every dim of the input exactly once")
    check_at(program("x: f32[N, 3, 8]", "output x -> permute(0, 2)"), "permute(",
             "`permute` dims (0, 2) name 2 dim(s), but f32[N, 3, 8] has 3", "exactly once")
    check_at(program("x: f32[N, 3, 8]", "output x -> permute(0, 3, 1)"), "permute(",
             "`permute` dims=3 is out of range for f32[N, 3, 8] (dims -3..2)", "negative dim counts from the end")
    check_at(program("x: f32[N, 3, 8]", "output x -> permute(0, -1, -3)"), "permute(", "dim 0 appears twice")


def test_transpose_and_unsqueeze_out_of_range():
    check_at(program("x: f32[N, 3, 8]", "output x -> transpose(0, 3)"), "transpose(",
             "`transpose` dim1=3 is out of range for f32[N, 3, 8] (dims -3..2)")
    check_at(program("x: f32[N, 3, 8]", "output x -> unsqueeze(-5)"), "unsqueeze(",
             "`unsqueeze` dim=-5 is out of range for f32[N, 3, 8] (dims -4..3)")


def test_squeeze_of_a_dim_that_is_not_1():
    check_at(program("x: f32[N, 3, 8]", "output x -> squeeze(1)"), "squeeze(",
             "`squeeze` of dim 1 of f32[N, 3, 8]: its size is 3, not 1",
             "torch.squeeze would silently return the tensor unchanged")
    check_at(program("x: f32[N, 3, 8]", "output x -> squeeze(0)"), "squeeze(",
             "its size N is not known to be 1", "hides a shape bug")


# ---------------------------------------------------------------------------------------------
# scaled_dot_product_attention
# ---------------------------------------------------------------------------------------------

QKV = "q: f32[N, 4, T, 8], k: f32[N, 4, S, 8], v: f32[N, 4, S, 6]"


def test_sdpa_heads_that_do_not_match():
    check_at(program("q: f32[N, 4, T, 8], k: f32[N, 4, T, 6], v: f32[N, 4, T, 6]", "output sdpa(q, k, v)"),
             "sdpa(", "q f32[N, 4, T, 8] and k f32[N, 4, T, 6] differ in the head dim E (8 vs 6)",
             "q and k share the head dim E")
    check_at(program("q: f32[N, 4, T, 8], k: f32[N, 4, T, 8], v: f32[N, 4, S, 8]",
                     "output scaled_dot_product_attention(q, k, v)"),
             "scaled_dot_product_attention(", "differ in the length S (T vs S)", "k and v the length S")
    check_at(program("q: f32[N, 4, T, 8], k: f32[N, 2, T, 8], v: f32[N, 2, T, 8]", "output sdpa(q, k, v)"),
             "sdpa(", "the batch dims do not broadcast: dim -1 (counting from the last) is 4 vs 2 vs 2")


def test_sdpa_mask_of_the_wrong_shape():
    check_at(program("q: f32[2, 4, 5, 8], k: f32[2, 4, 7, 8], v: f32[2, 4, 7, 8], m: f32[5, 6]",
                     "output sdpa(q, k, v, m)"), "sdpa(",
             "mask f32[5, 6] does not broadcast to the attention weights [2, 4, 5, 7] ([..., L, S])",
             "true = may attend")
    check_at(program(QKV + ", m: f32[3, 1, T, S]", "output sdpa(q, k, v, m)"), "sdpa(",
             "mask f32[3, 1, T, S] does not broadcast to the attention weights [N, 4, T, S]")
    check_at(program(QKV + ", m: f32[S]", "output sdpa(q, k, v, m)"), "sdpa(", "mask f32[S] does not broadcast",
             "a mask has rank >= 2")


def test_sdpa_causal_with_a_mask():
    check_at(program(QKV + ", m: f32[T, S]", "output sdpa(q, k, v, m, causal=true)"), "sdpa(",
             "`scaled_dot_product_attention` takes a mask or causal=true, not both", "fold it into your mask")


def test_sdpa_with_too_few_or_too_many_tensors():
    check_at(program(QKV, "output sdpa(q, k)"), "sdpa(", "takes 3 or 4 tensors (q, k, v and an optional mask), got 2",
             "sdpa(q, k, v, mask)")
    check_at(program("q: f32[8]", "output sdpa(q, q, q)"), "sdpa(", "expects q of rank >= 2")


# ---------------------------------------------------------------------------------------------
# positional_encoding, embedding
# ---------------------------------------------------------------------------------------------

def test_positional_encoding_of_an_odd_model_dim():
    check_at(program("x: f32[N, T, 7]", "output x -> positional_encoding"), "positional_encoding",
             "`positional_encoding` of f32[N, T, 7]: the model dim D=7 is odd", "D must be even")


def test_positional_encoding_of_a_sequence_longer_than_max_len():
    check_at(program("x: f32[N, 9, 8]", "output x -> positional_encoding(max_len=8)"), "positional_encoding(",
             "9 positions exceed max_len=8", "raise max_len")
    graph = netdsl.load_source(program("x: f32[N, T, 8]", "output x -> positional_encoding(max_len=8)"), "m.net")
    netdsl.reference.run(graph, {"x": np.zeros((1, 8, 8), np.float32)}, {})
    with pytest.raises(NetDSLError, match="9 positions, more than max_len=8"):
        netdsl.reference.run(graph, {"x": np.zeros((1, 9, 8), np.float32)}, {})


def test_positional_encoding_other_errors():
    check_at(program("x: f32[N, 3, T, 8]", "output x -> positional_encoding"), "positional_encoding",
             "expects an input [N, T, D] (or [T, D]), got f32[N, 3, T, 8]")
    check_at(program("x: f32[N, T, D]", "output x -> positional_encoding"), "positional_encoding",
             "needs a static model dim D, but it is `D`")
    check_at(program("x: f32[N, T, 8]", "output x -> positional_encoding(dropout=1.5)"), "positional_encoding(",
             "dropout=1.5 is not a probability")


def test_embedding_of_a_float_tensor():
    check_at(program("x: f32[N, T]", "output x -> embedding(100, 16)"), "embedding(",
             "`embedding` looks up integer ids, got f32[N, T]", "input ids: i64[N, T]")


def test_embedding_padding_idx_out_of_range():
    check_at(program("ids: i64[N, T]", "output ids -> embedding(10, 16, padding_idx=10)"), "embedding(",
             "`embedding` padding_idx=10 is out of range for num_embeddings=10", "-10 <= padding_idx < 10")


def test_embedding_of_an_id_outside_the_table():
    graph = netdsl.load_source(program("ids: i64[N, T]", "output ids -> embedding(10, 4)"), "m.net")
    weights = netdsl.random_weights(graph)
    ok = netdsl.reference.run(graph, {"ids": np.array([[0, 9, 3]])}, weights)
    assert next(iter(ok.values())).shape == (1, 3, 4)
    for bad in (10, -1):
        with pytest.raises(NetDSLError, match=rf"`embedding` of id {bad}, outside the table's rows \[0, 10\)") as info:
            netdsl.reference.run(graph, {"ids": np.array([[0, bad, 3]])}, weights)
        assert "0 <= id < num_embeddings = 10" in info.value.hint


def test_embedding_reference_rejects_float_ids():
    op = REGISTRY["embedding"]
    with pytest.raises(NetDSLError, match="looks up integer ids, got an array of float32"):
        op.reference([np.zeros((2, 3), np.float32)], {"weight": np.zeros((4, 2), np.float32)},
                     bind_attrs(op, [4, 2], {}))


# ---------------------------------------------------------------------------------------------
# through the registry (shapes the language cannot write yet)
# ---------------------------------------------------------------------------------------------

def shape_error(name: str, shapes, kwargs, dtypes=None) -> ShapeError:
    op = REGISTRY[name]
    types = [TensorType(s, d) for s, d in zip(shapes, dtypes or ["f32"] * len(shapes))]
    with pytest.raises(ShapeError) as info:
        op.infer(types, bind_attrs(op, [], kwargs))
    return info.value


def test_registry_errors():
    assert "rank-0 tensor has no dim to contract" in shape_error("matmul", [(), (3,)], {}).hint
    err = shape_error("reshape", [(SymDim.symbol("N"), 6)], {"shape": (SymDim.symbol("T"), -1)})
    assert "do not divide by the other dims (T)" in err.message
    err = shape_error("scaled_dot_product_attention", [(5, 8), (7, 8), (7, 8), (5, 7)], {}, ["f32"] * 3 + ["f64"])
    assert "mask must be boolean or of q's element type f32, got f64[5, 7]" in err.message


def test_layernorm_over_more_dims_than_the_input_has():
    check_at(program("x: f32[N, 7]", "output x -> layernorm(dims=3)"), "layernorm(",
             "`layernorm` over the last 3 dims of a rank-2 input f32[N, 7]", "normalized_shape")
    check_at(program("x: f32[N, T, 7]", "output x -> layernorm(dims=2)"), "layernorm(",
             "a normalised dimension of a layernorm input must be a static size", "fixed size")
