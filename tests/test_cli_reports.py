"""The command line's habits: one --dtype vocabulary for every command, `--json` reports (show --cost,
check, compile) whose numbers are the cost model's, the checker's and the AOT builds' computed
directly, and `compile -o DIR` writing the reports with every kernel's cubin and PTX."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NETDSL_QUIET_INTERPRETER", "1")

from netdsl import reference  # noqa: E402
from netdsl.cli import DTYPE_NAMES, JSON_SCHEMA_VERSION, main, parse_dtype  # noqa: E402
from netdsl.errors import NetDSLError  # noqa: E402
from netdsl.tolerances import TOLERANCES  # noqa: E402

SMALL = """\
network small {
    input x: f32[N, 3, H=8, W=8]
    y = x -> c1: conv2d(4, 3) -> relu -> global_avgpool -> flatten -> fc: linear(5)
    output y
}
"""

TWINS = """\
network twins {
    input x: f32[N, 8]
    y = x -> a: linear(8) -> b: linear(8)
    output y
}
"""


@pytest.fixture
def small(tmp_path) -> Path:
    path = tmp_path / "small.net"
    path.write_text(SMALL)
    return path


def cli(capsys, *argv, rc: int = 0) -> tuple[str, str]:
    assert main([str(a) for a in argv]) == rc
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return out, err


def report(capsys, *argv, rc: int = 0) -> dict:
    """A --json report: stdout is one JSON object and nothing else."""
    out, _ = cli(capsys, *argv, "--json", rc=rc)
    doc = json.loads(out)
    assert doc["schema_version"] == JSON_SCHEMA_VERSION == 1 and doc["netdsl"]
    return doc


# --------------------------------------------------------------------------- the dtype vocabulary

@pytest.mark.parametrize("names, canonical", [(("fp32", "f32", "float32", "FP32", " Float32 "), "fp32"),
                                              (("fp16", "f16", "half", "float16"), "fp16"),
                                              (("bf16", "bfloat16", "BF16"), "bf16"),
                                              (("fp64", "f64", "float64", "double"), "fp64")])
def test_every_spelling_means_one_dtype(names, canonical):
    for name in names:
        for command in ("run", "check", "compile"):
            try:
                assert parse_dtype(name, command) == canonical
            except NetDSLError as e:  # a dtype the command does not run in: the message says which it does
                assert canonical not in {"run": ("fp32", "fp64")}.get(command, ("fp32", "fp16", "bf16"))
                assert "invalid choice" in str(e) and e.hint
    assert set(DTYPE_NAMES.values()) == {"fp32", "fp16", "bf16", "fp64"}


def test_tolerances_have_every_canonical_triton_dtype():
    for command in ("check", "compile"):
        for name in ("fp32", "fp16", "bf16"):
            assert parse_dtype(name, command) in TOLERANCES


@pytest.mark.parametrize("spelling, expected", [("float64", np.float64), ("f64", np.float64), ("double", np.float64),
                                                ("float32", np.float32), ("FP32", np.float32)])
def test_run_takes_the_vocabulary(small, tmp_path, capsys, spelling, expected):
    from netdsl.compiler import prepare
    from netdsl.ir.sizes import concrete_dims
    from netdsl.params import random_inputs

    out = tmp_path / "y.npy"
    cli(capsys, "run", small, "--dtype", spelling, "--output", out)
    graph, _, weights = prepare(small, pipeline="O0")
    x = random_inputs(graph, concrete_dims(graph, {}), 0)
    want = reference.run(graph, x, weights, dtype="f64" if expected is np.float64 else "f32")["y"]
    got = np.load(out)
    assert got.dtype == expected
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("argv, words", [
    (("run", "--dtype", "half"), ("`netdsl run`", "fp32 or fp64", "netdsl check --dtype fp16")),
    (("run", "--dtype", "bf16"), ("`netdsl run`", "fp32 or fp64")),
    (("check", "--dtype", "float64"), ("`netdsl check`", "fp32, fp16 or bf16", "netdsl run --dtype fp64")),
    (("compile", "--dtype", "f64"), ("`netdsl compile`", "fp32, fp16 or bf16")),
    (("check", "--dtype", "fp8"), ("`fp8`", "not a dtype", "fp32, fp16 or bf16")),
])
def test_a_dtype_the_command_does_not_run_is_an_error_naming_those_it_does(small, tmp_path, capsys, argv, words):
    before = sorted(tmp_path.iterdir())
    _, err = cli(capsys, argv[0], small, *argv[1:], rc=2)
    assert err.startswith("error: ") and "\nhint: " in err
    for word in words:
        assert word in err, err
    assert sorted(tmp_path.iterdir()) == before


# --------------------------------------------------------------------------- show --cost --json

def test_show_cost_json_is_the_cost_model(small, capsys):
    from netdsl.frontend import load
    from netdsl.passes import run_pipeline
    from netdsl.passes.cost import node_costs, summarize

    doc = report(capsys, "show", small, "--cost", "--dims", "N=2")
    assert doc["schema"] == "netdsl.cost" and doc["network"] == "small" and doc["dims"] == {"H": 8, "N": 2, "W": 8}
    graph = load(small)
    env = {"N": 2, "H": 8, "W": 8}
    fused = run_pipeline(graph, "O1", log=lambda _: None, dims=env)
    costs = node_costs(fused, env)
    assert [n["name"] for n in doc["nodes"]] == [n.outputs[0].name for n in fused.nodes]
    for row in doc["nodes"]:
        c = costs[row["name"]]
        assert (row["flops"], row["read"], row["written"], row["launches"]) == (c.flops, c.read, c.written, c.launches)
    # by hand: conv 3->4, 3x3, 6x6 output, N=2: 2 FLOPs per multiply-add, a bias add and a relu per output
    conv = doc["nodes"][0]
    outputs = 2 * 4 * 6 * 6
    assert conv["parts"] == ["c1", "relu_0"] and conv["op"] == "fused_conv2d"
    assert conv["flops"] == 2 * outputs * 27 + outputs + outputs
    assert conv["read"] == 4 * (2 * 3 * 8 * 8 + 4 * 27 + 4) and conv["written"] == 4 * outputs
    assert conv["unfused"]["launches"] == 2 and conv["unfused"]["written"] == 2 * 4 * outputs
    s = summarize(graph, fused, env)
    totals = doc["totals"]
    assert totals["unfused"]["bytes"] == s.unfused.bytes and totals["unfused"]["nodes"] == s.unfused_nodes == 5
    assert totals["fused"]["launches"] == s.fused.launches and totals["ideal"]["bytes"] == s.ideal.bytes
    assert doc["fused_over_unfused_bytes"] == pytest.approx(s.fused_over_unfused)
    assert doc["fused_over_ideal_bytes"] == pytest.approx(s.fused_over_ideal)
    if hasattr(s, "floor"):  # the traffic no schedule avoids: weights, the input and the output, once each
        weights = 4 * (4 * 27 + 4 + 5 * 4 + 5)
        assert totals["floor"]["read"] == s.floor.read == 4 * 2 * 3 * 8 * 8 + weights
        assert totals["floor"]["written"] == 4 * 2 * 5
        assert doc["fused_over_floor_bytes"] == pytest.approx(s.fused_over_floor)


@pytest.mark.parametrize("argv, word", [(("--json",), "--cost"), (("--cost", "--json", "--dump-after", "all"), "--dump-after")])
def test_show_json_needs_the_cost_report_alone(small, capsys, argv, word):
    out, err = cli(capsys, "show", small, *argv, rc=2)
    assert out == "" and word in err and "\nhint: " in err


# --------------------------------------------------------------------------- check --json

def test_check_json_is_the_checkers_result(small, capsys):
    from netdsl.backends.triton.check import check
    from netdsl.compiler import prepare
    from netdsl.ir.sizes import concrete_dims
    from netdsl.params import random_inputs

    doc = report(capsys, "check", small, "--dtype", "bfloat16", "--seed", "3")
    assert doc["schema"] == "netdsl.check" and doc["dtype"] == "bf16" and doc["seed"] == 3
    assert doc["tolerance"] == {"atol": TOLERANCES["bf16"].atol, "rtol": TOLERANCES["bf16"].rtol}
    graph, fused, weights = prepare(small, seed=3)
    inputs = random_inputs(graph, concrete_dims(graph, {}), 3)
    assert doc["inputs"] == {"x": [1, 3, 8, 8]} and doc["fused_nodes"] == len(fused.nodes) == 4
    direct = check(fused, weights, inputs, dtype="bf16")
    assert [n["name"] for n in doc["nodes"]] == [c.name for c in direct]
    for row, c in zip(doc["nodes"], direct):
        assert (row["op"], tuple(row["shape"]), row["ok"]) == (c.op, c.shape, c.ok)
        assert (row["abs_err"], row["rel_err"], row["drift"]) == (c.abs_err, c.rel_err, c.drift)
    assert doc["ok"] is True and doc["first_divergent"] is None and doc["divergent"] == 0
    assert any(row["abs_err"] > 0 for row in doc["nodes"])  # bf16 rounds: the errors are real numbers


def test_check_report_names_the_first_divergent_node_and_nulls_what_is_not_finite():
    from netdsl.backends.triton.check import NodeCheck, check_report

    checks = [NodeCheck("a", "linear", (2, 3), 1e-7, 1e-7, True), NodeCheck("b", "relu", (2, 3), float("inf"),
              float("nan"), False, 0.5), NodeCheck("c", "add", (2, 3), 1.0, 0.5, False)]
    doc = check_report(checks, "fp32")
    assert doc["ok"] is False and doc["first_divergent"] == "b" and doc["divergent"] == 2
    assert doc["nodes"][1] == {"name": "b", "op": "relu", "shape": [2, 3], "abs_err": None, "rel_err": None,
                               "ok": False, "drift": 0.5}
    json.dumps(doc, allow_nan=False)  # valid JSON: no Infinity, no NaN


# --------------------------------------------------------------------------- compile --json, -o DIR

def _direct_reports(model: Path, ccs=(90,), dtype="fp16"):
    """The kernels and reports of the model, from the AOT module's own functions."""
    from netdsl.backends.triton.aot import model_kernels
    from netdsl.compiler import prepare
    from netdsl.ir.sizes import concrete_dims
    from netdsl.kernels import aot

    graph, fused, _ = prepare(model)
    kernels = model_kernels(fused, None, concrete_dims(graph, {}), dtype)
    return fused, kernels, aot.build_many(aot.jobs([k.spec for k in kernels], ccs))


def test_compile_json_and_output_dir(small, tmp_path, capsys):
    from netdsl.kernels import aot

    folder = tmp_path / "build"
    doc = report(capsys, "compile", small, "--target", "sm_90", "--dtype", "half", "-o", folder)
    assert doc["schema"] == "netdsl.compile" and doc["dtype"] == "fp16" and doc["targets"] == ["sm_90"]
    assert json.loads((folder / "report.json").read_text()) == doc
    fused, kernels, direct = _direct_reports(small)
    assert [k["name"] for k in doc["kernels"]] == [r.name for r in direct] == \
        ["conv2d_kernel", "global_avgpool_kernel", "linear_kernel"]
    for row, r in zip(doc["kernels"], direct):
        for field in ("cc", "num_warps", "num_stages", "registers", "spills", "shared_bytes", "mma", "constexprs"):
            assert row[field] == getattr(r, field), field
    ops = {n.outputs[0].name: n.op for n in fused.nodes}
    served = {row["name"]: row["nodes"] for row in doc["kernels"]}
    assert served == {"conv2d_kernel": ["relu_0"], "global_avgpool_kernel": ["global_avgpool_0"], "linear_kernel": ["fc"]}
    assert ops["relu_0"] == "fused_conv2d" and ops["fc"] == "linear"  # the fused IR's own names for them
    summary = doc["summary"]
    assert summary["kernels"] == 3 and summary["spills"] == sum(r.spills for r in direct) == 0
    assert summary["with_mma"] == sum(r.uses_mma for r in direct) and doc["ok"] is True
    names = {p.name for p in folder.iterdir()}
    assert names == {"report.json", "report.txt"} | {row[k] for row in doc["kernels"] for k in ("cubin", "ptx")}
    for row in doc["kernels"]:
        cubin, ptx = (folder / row["cubin"]).read_bytes(), (folder / row["ptx"]).read_text()
        assert cubin[:4] == b"\x7fELF"
        assert ".target sm_90" in ptx and f".entry {row['name']}" in ptx
        key = aot.KernelReport(**{k: v for k, v in row.items() if k not in ("target", "nodes", "cubin", "ptx")})
        assert cubin == aot.artifact(key, "cubin").read_bytes()
    text = (folder / "report.txt").read_text()
    assert any(line.startswith("conv2d_kernel") and "relu_0" in line for line in text.splitlines())
    out, _ = cli(capsys, "compile", small, "--target", "sm_90", "--dtype", "fp16")  # the text report, as printed
    same = [line for line in out.splitlines() if not line.startswith("built ")]
    assert same == [line for line in text.splitlines() if not line.startswith("built ")]


def test_one_kernel_serving_two_nodes_names_both(tmp_path):
    model = tmp_path / "twins.net"
    model.write_text(TWINS)
    from netdsl.backends.triton.aot import model_kernels
    from netdsl.compiler import prepare
    from netdsl.ir.sizes import concrete_dims

    graph, fused, _ = prepare(model)
    assert [n.outputs[0].name for n in fused.nodes] == ["a", "b"]
    kernels = model_kernels(fused, None, concrete_dims(graph, {}), "fp16")
    assert len(kernels) == 1 and kernels[0].nodes == ("a", "b") and kernels[0].spec["kernel"] == "linear_kernel"


def test_build_many_reports_each_finished_build(small):
    from netdsl.kernels import aot

    _, kernels, _ = _direct_reports(small)  # built (or cached) once
    seen = []
    reports = aot.build_many(aot.jobs([k.spec for k in kernels], (90,)), on_done=lambda n, r: seen.append((n, r)))
    assert [n for n, _ in seen] == [1, 2, 3] and [r for _, r in seen] == reports


@pytest.mark.parametrize("where, words", [("missing/build", ("no directory",)), ("afile", ("it is a file",))])
def test_compile_output_dir_is_checked_before_the_build(small, tmp_path, capsys, monkeypatch, where, words):
    import netdsl.backends.triton.aot as host_aot

    (tmp_path / "afile").write_text("keep me")
    monkeypatch.setattr(host_aot, "compile_ahead_of_time", lambda *a, **k: pytest.fail("built before checking -o"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    out, err = cli(capsys, "compile", small, "-o", tmp_path / where, rc=2)
    assert out == "" and "\nhint: " in err and all(w in err for w in words)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert not (tmp_path / "missing").exists()


def test_the_text_table_names_the_first_three_nodes():
    from netdsl.kernels.aot import KernelReport, format_reports

    r = KernelReport("linear_kernel", "m", 90, 4, 3, 10, 0, 0, 0, 0, 0, 0, True, False, "", 1, 1)
    lines = format_reports([r, r], [("fc",), ("a", "b", "c", "d", "e")]).splitlines()
    assert lines[0].split()[-2:] == ["nodes", "constexprs"]
    assert lines[1].endswith("  fc               {}") and lines[2].endswith("  a, b, c +2 more  {}")
