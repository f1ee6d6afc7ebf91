"""The benchmarks' code paths on tiny inputs, so that they do not rot between the runs that measure:
the cost report of the sequence models (benchmarks/sequence_cost.py), the reference against PyTorch
(benchmarks/reference_vs_torch.py) for one run of a small sequence model with several integer inputs,
and the CPU-runnable parts of benchmarks/triton_vs_torch.py (its PyTorch twin of any graph against the
reference backend, and its message on a machine without a GPU). Nothing here is timed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import netdsl

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import host_overhead  # noqa: E402
import reference_vs_torch  # noqa: E402
import sequence_cost  # noqa: E402
import triton_vs_torch  # noqa: E402


def test_sequence_cost_report_of_the_encoder():
    lines = []
    graph = netdsl.load(sequence_cost.EXAMPLES / "transformer_encoder.net")
    dims = sequence_cost.model_dims(graph, batch=1, seq=16)
    assert dims == {"N": 1, "T": 16}
    out = sequence_cost.report("transformer_encoder", dims, log=lambda *a, flush=False: lines.append(" ".join(a)))
    s = out["summary"]
    assert s.fused.bytes <= s.unfused.bytes and s.fused.launches <= s.unfused.launches
    text = "\n".join(lines)
    assert "scaled_dot_product_attention" in text and "matmul -> softmax -> matmul" in text


def test_unfused_attention_moves_the_scores_four_times():
    """matmul -> softmax -> matmul writes the L x S scores, reads and writes them in the softmax and
    reads them again: 4 x 4 bytes per score in f32, on top of q, k, v and the output."""
    q, k = (2, 4, 8, 16), (2, 4, 32, 16)
    cost = sequence_cost.unfused_attention_cost(q, k, k)
    scores = 2 * 4 * 8 * 32
    qkvo = 4 * (np.prod(q) + 2 * np.prod(k) + np.prod(q))
    assert cost.launches == 3
    assert cost.bytes == qkvo + 4 * 4 * scores


def test_sequence_cost_main_on_rnn(capsys):
    assert sequence_cost.main(["--model", "rnn", "--seq", "4"]) == 0
    out = capsys.readouterr().out
    assert "rnn at N=1, T=4" in out and "no attention nodes" in out


def test_reference_vs_torch_on_a_two_input_sequence_model(capsys):
    assert reference_vs_torch.main(["--model", "seq2seq", "--batch", "1", "--seq", "3", "--runs", "1",
                                    "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "src 1x3 int64, tgt 1x3 int64" in out
    assert "ratio reference / torch" in out
    diff = float(out.split("max |diff| / max |out| = ")[1].split()[0])
    assert diff < 1e-4


def test_built_once_reuses_a_module_and_its_weights():
    reuse = reference_vs_torch.BuiltOnce(torch.nn, ("GRU",))
    with reuse:
        a = torch.nn.GRU(2, 3)
        b = torch.nn.GRU(2, 3)  # a second module in the same run is another module
        reuse.next_run()
        assert torch.nn.GRU(2, 3) is a and torch.nn.GRU(2, 3) is b
    assert torch.nn.GRU(2, 3) is not a  # restored on exit


@pytest.mark.parametrize("name", ["transformer_encoder", "seq2seq", "rnn"])
def test_torch_graph_twin_of_sequence_models(name, capsys):
    assert triton_vs_torch.main(["--selfcheck", "--model", name, "--seq", "5"]) == 0
    assert "OK" in capsys.readouterr().out


def test_triton_vs_torch_without_a_gpu(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert triton_vs_torch.main(["--model", "gpt2", "--seq", "8", "--batch", "1"]) == 0
    assert "needs a CUDA GPU" in capsys.readouterr().out


def test_triton_vs_torch_inputs_and_sizes():
    graph = netdsl.load(triton_vs_torch.EXAMPLES / "transformer.net")
    dims = triton_vs_torch.model_dims(graph, batch=2, seq=6, dims_text="S=4")
    assert dims == {"N": 2, "S": 4, "T": 6}
    src, tgt = triton_vs_torch.example_inputs(graph, dims, "cpu", torch.float16)
    assert src.shape == (2, 4) and tgt.shape == (2, 6) and src.dtype == tgt.dtype == torch.int64


def test_triton_vs_torch_setup_runs_both_sides(monkeypatch):
    """The three sides' setup with two token-id inputs, netdsl's kernels under Triton's interpreter."""
    monkeypatch.setenv("NETDSL_QUIET_INTERPRETER", "1")
    graph = netdsl.load(triton_vs_torch.EXAMPLES / "seq2seq.net")
    dims = triton_vs_torch.model_dims(graph, batch=1, seq=2)
    ours, eager, inputs = triton_vs_torch.setup("seq2seq", "fp32", dims, "cpu")
    with torch.inference_mode():
        assert triton_vs_torch._max_rel_diff(ours(*inputs), eager(*inputs)) < 1e-4


def test_triton_vs_torch_agreement_rule():
    """netdsl passes when no further from PyTorch fp32 than twice PyTorch's own error in the dtype, or
    within netdsl's tolerance; fails otherwise."""
    exact = torch.linspace(-1, 1, 101)
    close = exact + 5e-5
    ours, theirs, ok = triton_vs_torch.agreement(exact + 1.5e-2, exact + 1e-2, exact, "bf16")
    assert ok and abs(ours - 1.5e-2) < 1e-6 and abs(theirs - 1e-2) < 1e-6
    assert triton_vs_torch.agreement(close, exact, exact, "fp32")[2]  # within fp32's tolerance
    assert not triton_vs_torch.agreement(exact + 5e-2, exact + 1e-3, exact, "fp16")[2]


def test_host_overhead_runs_a_small_model(capsys):
    """The host-overhead benchmark's whole path (recording mode, first call, steady state, the eager
    peer) on LeNet-5, once."""
    host_overhead.main(["--models", "lenet5", "--repeat", "1"])
    assert "lenet5" in capsys.readouterr().out
