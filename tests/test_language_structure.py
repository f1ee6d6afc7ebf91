"""Several results bound at once, parameters read as values (declared with `param`, or a layer's by its
label: weight tying), indexing, and imports: what they mean (against torch) and every mistake as a
located NetDSLError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_errors import check, error_of  # the located-error checks of every error test
from test_errors_tensor import check_at, program

import netdsl
from netdsl import NetDSLError
from netdsl.frontend import stdlib_modules


def run(source: str, inputs: dict, weights=None, dtype="f64"):
    graph = netdsl.load_source(source, "m.net")
    weights = netdsl.random_weights(graph, seed=3) if weights is None else weights
    return graph, weights, netdsl.reference.run(graph, inputs, weights, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# meaning
# ---------------------------------------------------------------------------------------------

def test_chunk_binds_three_results_and_underscore_drops_one():
    x = np.random.default_rng(0).standard_normal((2, 5, 12))
    _, _, out = run(program("x: f32[N, T, 12]", "q, _, v = x -> chunk(3, dim=-1)", "output q, v"), {"x": x})
    q, _, v = torch.from_numpy(x).chunk(3, dim=-1)
    np.testing.assert_array_equal(out["q"], q.numpy())
    np.testing.assert_array_equal(out["v"], v.numpy())


def test_a_block_with_two_outputs_is_bound_at_once():
    src = ("block two() {\n    input x\n    output a = x -> relu, b = x -> tanh\n}\n"
           + program("x: f32[N, 4]", "p, q = x -> two", "output p + q"))
    x = np.random.default_rng(1).standard_normal((3, 4))
    _, _, out = run(src, {"x": x})
    np.testing.assert_allclose(out["output0"], np.maximum(x, 0) + np.tanh(x))


def test_declared_parameter_tied_weights_and_indexing_match_torch():
    src = program("ids: i64[N, T]",
                  "param pos.weight: [16, 6] = normal(std=0.02)",
                  "h = (ids -> tok: embedding(11, 6)) + pos.weight[:T]",
                  "output logits = matmul(h, tok.weight -> transpose(0, 1)), first = h[:, 0], last = h[:, -1, 1::2]")
    ids = np.random.default_rng(2).integers(0, 11, (2, 7))
    graph, w, out = run(src, {"ids": ids})
    assert sorted(graph.used_params()) == ["pos.weight", "tok.weight"]  # the head reads the embedding's table
    tok, pos = torch.from_numpy(w["tok.weight"]).double(), torch.from_numpy(w["pos.weight"]).double()
    h = F.embedding(torch.from_numpy(ids), tok) + pos[:7]
    np.testing.assert_allclose(out["logits"], (h @ tok.T).numpy(), rtol=1e-12)
    np.testing.assert_allclose(out["first"], h[:, 0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(out["last"], h[:, -1, 1::2].numpy(), rtol=1e-12)


def test_parameter_initialisers():
    graph = netdsl.load_source(program("x: f32[N, 4]", "param a: [4]", "param b: [4] = ones",
                                       "param c: [400, 50] = normal(std=0.02)", "param d: [300, 4] = uniform(0.5)",
                                       "param e: [4] = const(0.25)", "param f: [30, 40] = xavier",
                                       "output x + a + b + e + (c -> select(0, 0) -> slice(0, 0, 4)) "
                                       "+ (d -> select(0, 1)) + (f -> select(0, 2) -> slice(0, 0, 4))"), "m.net")
    w = netdsl.init_weights(graph, seed=0)
    assert (w["a"] == 0).all() and (w["b"] == 1).all() and (w["e"] == 0.25).all()
    assert abs(w["c"].std() - 0.02) < 0.002 and abs(w["c"].mean()) < 0.002
    assert np.abs(w["d"]).max() <= 0.5 and np.abs(w["d"]).max() > 0.45
    bound = np.sqrt(6 / (40 + 30))  # torch.nn.init.xavier_uniform_: fan_in 40, fan_out 30
    assert np.abs(w["f"]).max() <= bound and np.abs(w["f"]).max() > 0.9 * bound


def test_import_of_the_standard_library_and_of_a_file(tmp_path):
    assert "transformer" in stdlib_modules()
    (tmp_path / "blocks.net").write_text("block twice() {\n    input x\n    output x + x\n}\n")
    (tmp_path / "model.net").write_text('import "blocks.net"\nimport transformer\n'
                                        + program("x: f32[N, T, 8]", "output x -> twice -> att: self_attention(8, 2)"))
    graph = netdsl.load(tmp_path / "model.net")
    assert "att.in_proj_weight" in graph.params and "att.out_proj.weight" in graph.params


def test_stdlib_transformer_is_torch_nn_transformer():
    """The standard library's `transformer` block loads nn.Transformer's state_dict and computes what it does."""
    src = "import transformer\n" + program("src: f32[N, S, 16], tgt: f32[N, T, 16]",
                                           "output src -> tr: transformer(tgt, 16, 4, 2, 1, 24)")
    rng = np.random.default_rng(4)
    s, t = rng.standard_normal((2, 5, 16)), rng.standard_normal((2, 3, 16))
    graph, w, out = run(src, {"src": s, "tgt": t})
    model = torch.nn.Transformer(16, 4, 2, 1, 24, dropout=0.0, batch_first=True).eval().double()
    model.load_state_dict({k[3:]: torch.from_numpy(v).double() for k, v in w.items()})  # strict: the names agree
    with torch.no_grad():
        ref = model(torch.from_numpy(s), torch.from_numpy(t), tgt_mask=model.generate_square_subsequent_mask(
            3, dtype=torch.float64), tgt_is_causal=True)
    np.testing.assert_allclose(out["output0"], ref.numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# mistakes
# ---------------------------------------------------------------------------------------------

def test_results_not_bound():
    check_at(program("x: f32[N, 12]", "output x -> chunk(3, dim=-1) -> relu"), "chunk(",
             "`chunk` gives 3 results (0, 1, 2); bind them to names first", "chunk0, chunk1, chunk2 = ...")
    check(error_of(program("x: f32[N, 12]", "y = x -> chunk(2, dim=-1)", "output y")),
          "`chunk` gives 2 results (0, 1), but 1 name(s) are bound", 3, 5, "`chunk0, chunk1 = ...`")


def test_wrong_number_of_names():
    check(error_of(program("x: f32[N, 12]", "a, b = x -> chunk(3, dim=-1)", "output a")),
          "`chunk` gives 3 results (0, 1, 2), but 2 name(s) are bound", 3, 5, "`_` drops one")
    check(error_of(program("x: f32[N, 12]", "a, b = x -> relu", "output a")),
          "2 names are bound, but the expression gives one value", 3, 5, "rnn(64)")
    check(error_of(program("x: f32[N, 12]", "_ = x -> relu", "output x")), "here it binds nothing", 3, 5)


def test_split_sizes_and_symbolic_dims():
    check_at(program("x: f32[N, 12]", "a, b = x -> split((5, 6), dim=1)", "output a"), "split(",
             "`split` sizes (5, 6) add up to 11, but dim 1 of f32[N, 12] is 12")
    check_at(program("x: f32[N, 12]", "a, b = x -> chunk(2, dim=0)", "output a"), "chunk(",
             "its size `N` is not known", "fixed size")


def test_param_mistakes():
    check(error_of(program("x: f32[N, 4]", "param p: [N, 4]", "output x + p")),
          "a parameter's shape is static, but `N` is a dimension of the inputs", 3, 15)
    check(error_of(program("x: f32[N, 4]", "param p: [0, 4]", "output x")), "positive integers, got 0", 3, 15)
    check(error_of(program("x: f32[N, 4]", "param p: [4] = gaussian", "output x + p")),
          "unknown initialiser `gaussian`", 3, 20)
    check(error_of(program("x: f32[N, 4]", "param p: [4] = normal(std=-1)", "output x + p")),
          "`std` of `normal` must be a positive number, got -1", 3, 31)
    check(error_of(program("x: f32[N, 4]", "param p: [4]", "param p: [4]", "output x + p")),
          "`p` is already defined", 4, 11)
    check(error_of(program("x: f32[N, 4]", "param lin.weight: [3, 4]", "output x -> lin: linear(3)")),
          "parameter `lin.weight` is declared twice", 4, 22)


def test_qualified_name_mistakes():
    check(error_of(program("x: f32[N, 4]", "h = x -> lin: linear(3)", "output matmul(h, lin.wieght)")),
          "layer `lin` has no parameter `wieght`", 4, 22, "did you mean `weight`")
    check(error_of(program("x: f32[N, 4]", "output matmul(x, lin.weight)")), "no parameter `lin.weight`", 3, 22,
          "defined before this line")
    check_at(program("x: f32[N, 4]", "output x -> parameter(4)"), "parameter(", "`parameter` is not a layer",
             "param name")


def test_index_mistakes():
    check(error_of(program("x: f32[N, 4]", "output x[0, 1, 2]")), "3 indices for a tensor of rank 2", 3, 12)
    check(error_of(program("x: f32[N, 4]", "output x[:, x]")), "an index is a number or a dim, not a tensor", 3, 17)


def test_import_mistakes(tmp_path):
    err = error_of('import "nowhere.net"\n' + program("x: f32[N, 4]", "output x"))
    check(err, 'cannot import "nowhere.net"', 1, 8, "relative to the importing file")
    check(error_of("import transfomer\n" + program("x: f32[N, 4]", "output x")),
          "no module `transfomer` in netdsl's standard library", 1, 8, "did you mean `transformer`")
    (tmp_path / "a.net").write_text('import "b.net"\nblock a() {\n    input x\n    output x\n}\n')
    (tmp_path / "b.net").write_text('import "a.net"\nblock b() {\n    input x\n    output x\n}\n')
    with pytest.raises(NetDSLError) as info:
        netdsl.load_source('import "a.net"\n' + program("x: f32[N, 4]", "output x"), str(tmp_path / "m.net"))
    assert "import cycle: a.net -> b.net -> a.net" in info.value.message and info.value.loc.line == 1
    (tmp_path / "c.net").write_text("block relu2() {\n    input x\n    output x\n}\n")
    with pytest.raises(NetDSLError) as info:
        netdsl.load_source('import "c.net"\nblock relu2() {\n    input x\n    output x\n}\n'
                           + program("x: f32[N, 4]", "output x"), str(tmp_path / "m.net"))
    assert "block `relu2` is defined twice" in info.value.message and info.value.notes


def test_a_symbolic_slice_beyond_its_table_is_a_located_run_time_error():
    graph = netdsl.load_source(program("x: f32[N, T, 4]", "param p: [6, 4]", "output x + p[:T]"), "m.net")
    netdsl.reference.run(graph, {"x": np.zeros((1, 6, 4), np.float32)}, netdsl.init_weights(graph))  # T = 6 fits
    with pytest.raises(NetDSLError) as info:
        netdsl.reference.run(graph, {"x": np.zeros((1, 9, 4), np.float32)}, netdsl.init_weights(graph))
    check(info.value, "`slice` gives 6x4 here, but its type f32[T, 4] is 9x4 at these sizes", 4, 18)


def test_heads_that_do_not_divide_the_model_dim():
    with pytest.raises(NetDSLError) as info:
        netdsl.load_source("import transformer\n" + program("x: f32[N, T, 10]", "output x -> att: self_attention(10, 3)"),
                           "m.net")
    err = info.value
    assert "`unflatten` of dim 2 of f32[N, T, 10] into (3, -1)" in err.message
    assert "number of heads must divide the model dim" in err.hint
    assert err.loc.file.endswith("stdlib/transformer.net")
    assert (err.notes[-1][1].file, err.notes[-1][1].line) == ("m.net", 4)  # the user's call, in the last note


def test_boolean_masks():
    src = program("q: f32[N, 2, T, 8], m: bool[N, 1, 1, T]", "output sdpa(q, q, q, m)")
    graph = netdsl.load_source(src, "m.net")
    rng = np.random.default_rng(5)
    q, m = rng.standard_normal((2, 2, 6, 8)), rng.random((2, 1, 1, 6)) < 0.7
    out = netdsl.reference.run(graph, {"q": q, "m": m}, {}, dtype="f64")["output0"]
    t = torch.from_numpy(q)
    np.testing.assert_allclose(out, F.scaled_dot_product_attention(t, t, t, attn_mask=torch.from_numpy(m)).numpy(),
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(NetDSLError, match="expects bool.*a boolean mask"):
        netdsl.reference.run(graph, {"q": q, "m": m.astype(np.float64)}, {}, dtype="f64")
    check_at(program("m: bool[N, 4]", "output m -> relu"), "relu", "`relu` takes a floating-point tensor, got "
             "bool[N, 4]", "attention mask")
    check(error_of(program("m: bool[N, 4]", "output m * 2")), "`*` on a boolean tensor (bool[N, 4]) is not supported",
          3, 12)
