"""The recurrent layers (kernels/recurrence.py: projection GEMM + persistent recurrence) against
torch.nn.RNN / LSTM / GRU on CPU, in fp32, fp16 and bf16: one and several steps, batch 1 and 5, hidden
sizes 5, 16 and 33 (not multiples of 16: masked lanes), input sizes 3 and 20, bidirectional, two layers,
with and without an initial state; both variants of the recurrence (W_hh resident on chip, streamed)."""

import pytest
import torch
from kernel_tolerances import DTYPE_IDS, DTYPES, assert_close

from netdsl.kernels import recurrence as R
from netdsl.kernels._host import KernelError

MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def torch_layer(cell, input_size, hidden, layers=1, bidirectional=False, act="tanh", bias=True):
    kw = {"nonlinearity": act} if cell == "rnn" else {}
    return MODULES[cell](input_size, hidden, num_layers=layers, bidirectional=bidirectional, bias=bias,
                         batch_first=True, **kw)


def run_stack(cell, module, x, dtype, h0=None, c0=None, act="tanh", resident=None):
    """Every layer of ``module`` through recurrent_layer, with the module's weights rounded to ``dtype``;
    the final states are written into slices of one [layers * D, N, H] tensor each."""
    sd = {k: v.detach().to(dtype) for k, v in module.state_dict().items()}
    D = 2 if module.bidirectional else 1
    N, H, layers = x.shape[0], module.hidden_size, module.num_layers
    h_n = torch.full((layers * D, N, H), 7.0, dtype=dtype)
    c_n = torch.full((layers * D, N, H), 7.0, dtype=dtype) if cell == "lstm" else None
    seq = x
    for k in range(layers):
        sfx = ("", "_reverse")[:D]
        biases = [[sd[f"bias_{w}_l{k}{s}"] for s in sfx] for w in ("ih", "hh")] if module.bias else [None, None]
        layer = R.pack_layer(cell, [sd[f"weight_ih_l{k}{s}"] for s in sfx], [sd[f"weight_hh_l{k}{s}"] for s in sfx],
                             *biases)
        sl = slice(k * D, (k + 1) * D)
        seq, _, _ = R.recurrent_layer(seq, layer, act=act, h0=None if h0 is None else h0[sl],
                                      c0=None if c0 is None else c0[sl], h_n=h_n[sl],
                                      c_n=None if c_n is None else c_n[sl], resident=resident)
    return (seq, h_n, c_n) if cell == "lstm" else (seq, h_n)


def oracle(cell, module, x, dtype, h0=None, c0=None):
    """torch in fp32 on the same rounded weights and inputs."""
    ref = torch_layer(cell, module.input_size, module.hidden_size, module.num_layers, module.bidirectional,
                      getattr(module, "nonlinearity", "tanh"), module.bias)
    ref.load_state_dict({k: v.detach().to(dtype).float() for k, v in module.state_dict().items()})
    with torch.no_grad():
        if cell == "lstm":
            y, (h, c) = ref(x.float(), None if h0 is None else (h0.float(), c0.float()))
            return y, h, c
        return ref(x.float(), None if h0 is None else h0.float())


def check(cell, N, T, I, H, dtype, layers=1, bidirectional=False, initial=False, act="tanh", resident=None,
          bias=True, scale=1.0):
    module = torch_layer(cell, I, H, layers, bidirectional, act, bias)
    D = 2 if bidirectional else 1
    x = (torch.randn(N, T, I) * scale).to(dtype)
    h0 = torch.randn(layers * D, N, H).to(dtype) if initial else None
    c0 = torch.randn(layers * D, N, H).to(dtype) if initial and cell == "lstm" else None
    got = run_stack(cell, module, x, dtype, h0, c0, act, resident)
    expected = oracle(cell, module, x, dtype, h0, c0)
    # intermediates kept in the I/O dtype: each layer's input projection (one GEMM over all steps) and
    # the sequence the next layer reads; streamed, the state is re-read from the output at every step
    stages = layers * (T + 1) if resident is False else 2 * layers - 1
    for ours, theirs in zip(got, expected):
        assert_close(ours, theirs, dtype, stages=stages)
    return got


# (cell, N, T, I, H, layers, bidirectional, initial state, nonlinearity)
CASES = [
    ("rnn", 5, 7, 3, 5, 1, False, False, "tanh"),
    ("rnn", 1, 1, 20, 16, 1, False, True, "relu"),
    ("rnn", 5, 7, 20, 33, 2, True, True, "tanh"),
    ("lstm", 5, 7, 3, 5, 1, False, False, "tanh"),
    ("lstm", 1, 7, 20, 16, 1, True, True, "tanh"),
    ("lstm", 5, 1, 3, 33, 2, False, False, "tanh"),
    ("lstm", 2, 7, 20, 33, 2, True, True, "tanh"),
    ("gru", 5, 7, 3, 5, 1, False, False, "tanh"),
    ("gru", 1, 7, 20, 16, 1, True, True, "tanh"),
    ("gru", 5, 1, 20, 33, 2, False, True, "tanh"),
    ("gru", 2, 7, 3, 33, 2, True, False, "tanh"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "{}-N{}-T{}-I{}-H{}-L{}{}{}-{}".format(
    c[0], *c[1:6], "-bi" if c[6] else "", "-h0" if c[7] else "", c[8]))
def test_recurrent_layers_match_torch(case, dtype):
    cell, N, T, I, H, layers, bidirectional, initial, act = case
    check(cell, N, T, I, H, dtype, layers, bidirectional, initial, act)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", sorted(MODULES))
def test_streamed_recurrence_matches_torch(cell, dtype):
    """W_hh streamed from memory, the previous state re-read from the output sequence: several column
    tiles and reduction chunks (16 wide under the interpreter) over H = 33."""
    check(cell, 5, 7, 20, 33, dtype, bidirectional=True, initial=True, act="relu" if cell == "rnn" else "tanh",
          resident=False)
    check(cell, 2, 3, 3, 33, dtype, resident=False)


@pytest.mark.parametrize("cell", sorted(MODULES))
def test_without_bias_and_with_saturating_inputs(cell):
    """bias=false, and inputs large enough to saturate every sigmoid and tanh: no overflow, no NaN."""
    y = check(cell, 3, 5, 3, 16, torch.float32, bias=False, scale=100.0)[0]
    assert torch.isfinite(y).all()
    check(cell, 3, 5, 3, 33, torch.float32, bias=False, scale=100.0, resident=False)


def test_the_output_may_be_a_column_slice():
    """A direction writes its half of the features; the sequence may be a slice of a wider buffer."""
    module = torch_layer("gru", 4, 6, bidirectional=True)
    x = torch.randn(3, 5, 4)
    sd = module.state_dict()
    layer = R.pack_layer("gru", [sd["weight_ih_l0"], sd["weight_ih_l0_reverse"]],
                         [sd["weight_hh_l0"], sd["weight_hh_l0_reverse"]],
                         [sd["bias_ih_l0"], sd["bias_ih_l0_reverse"]], [sd["bias_hh_l0"], sd["bias_hh_l0_reverse"]])
    buf = torch.full((3, 5, 15), 7.0)
    y, h, _ = R.recurrent_layer(x, layer, out=buf[..., 2:14])
    with torch.no_grad():
        y_ref, h_ref = module(x)
    assert_close(buf[..., 2:14], y_ref)
    assert_close(h, h_ref)
    assert bool((buf[..., :2] == 7).all() and (buf[..., 14:] == 7).all())


def test_residency_follows_the_size_and_dtype():
    assert R.is_resident("rnn", 128, torch.float16) and not R.is_resident("rnn", 129, torch.float16)
    assert R.is_resident("lstm", 64, torch.bfloat16) and not R.is_resident("lstm", 65, torch.bfloat16)
    assert R.is_resident("gru", 33, torch.float32) and not R.is_resident("rnn", 128, torch.float32)


def test_bad_arguments_are_kernel_errors():
    module = torch_layer("lstm", 4, 6)
    sd = module.state_dict()
    layer = R.pack_layer("lstm", [sd["weight_ih_l0"]], [sd["weight_hh_l0"]], [sd["bias_ih_l0"]], [sd["bias_hh_l0"]])
    x = torch.randn(2, 3, 4)
    with pytest.raises(KernelError, match=r"h0 must be \(1, 2, 6\)"):
        R.recurrent_layer(x, layer, h0=torch.zeros(1, 3, 6))
    with pytest.raises(KernelError, match="x must be"):
        R.recurrent_layer(x[0], layer)
    with pytest.raises(KernelError, match="share a dtype"):
        R.recurrent_layer(x.half(), layer)
    with pytest.raises(KernelError, match="w_hh must be"):
        R.pack_layer("gru", [sd["weight_ih_l0"]], [sd["weight_hh_l0"]])
    with pytest.raises(KernelError, match="only an lstm takes c0"):
        gru = torch_layer("gru", 4, 6).state_dict()
        R.recurrent_layer(x, R.pack_layer("gru", [gru["weight_ih_l0"]], [gru["weight_hh_l0"]]),
                          c0=torch.zeros(1, 2, 6))


def test_builds_for_sm80_and_sm90_without_spills():
    """Both variants build ahead of time with 0 spills (the full set: tests/kernels/aot_sweep.py):
    W_hh resident (fp16 lstm, bf16 rnn at its largest H, unaligned fp32 gru) and streamed (fp32 lstm,
    fp16 gru), and a resident bf16 lstm with 64-bit offsets."""
    from netdsl.kernels import aot

    def int64(spec):
        return {**spec, "constexprs": {**spec["constexprs"], "USE_INT64": True}}

    specs = [R.specialization("lstm", 64, 35, 256, 64, torch.float16, bidirectional=True, initial_state=True)[1],
             R.specialization("rnn", 64, 35, 256, 128, torch.bfloat16)[1],
             R.specialization("gru", 64, 35, 256, 33, torch.float32, initial_state=True)[1],
             R.specialization("lstm", 64, 35, 256, 200, torch.float32, bidirectional=True, initial_state=True)[1],
             R.specialization("gru", 64, 35, 256, 200, torch.float16, bidirectional=True, initial_state=True)[1],
             int64(R.specialization("lstm", 64, 35, 256, 64, torch.bfloat16, initial_state=True)[1])]
    assert [s["constexprs"]["RESIDENT"] for s in specs] == [True, True, True, False, False, True]
    reports = aot.build_many(aot.jobs(specs, ccs=(80, 90)), max_workers=2)
    for r in reports:
        assert r.spills == 0 and r.registers <= aot.MAX_REGISTERS and r.fits_shared, aot.format_reports([r])
    # fp16/bf16 dots run on tensor cores (16-row tiles: HMMA on sm_90 too), exact fp32 on CUDA cores
    assert [r.mma for r in reports] == ["HMMA"] * 4 + ["", ""] * 2 + ["HMMA"] * 4


def test_streamed_tiles_shrink_with_64_bit_offsets():
    """A sequence of more than 2^31 elements needs 64-bit offsets, which cost registers: the fp16/bf16 GRU and
    LSTM stream W_hh in column tiles of 32 instead of 64 (64 spills on sm_80; 0 spills either way on sm_90).
    The specializations are built for both targets by tests/kernels/aot_sweep.py."""
    for cell in ("gru", "lstm"):
        big = R.specialization(cell, 65536, 128, 64, 200, torch.float16, bidirectional=True)[1]
        small = R.specialization(cell, 64, 35, 64, 200, torch.float16, bidirectional=True)[1]
        assert big["constexprs"]["USE_INT64"] and not small["constexprs"]["USE_INT64"]
        assert (big["constexprs"]["BLOCK_H"], small["constexprs"]["BLOCK_H"]) == (32, 64)
