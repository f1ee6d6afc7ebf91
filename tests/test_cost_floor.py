"""The floor of the cost report, computed here on its own, and one name per node.

The floor is the traffic no schedule can avoid: every weight read once (batchnorm parameters left out:
they fold into the weights the kernels read), every graph input read once, every graph output written
once. Here it is recomputed from what a user sees: the parameter table that `netdsl show` prints and
the input and output shapes at the bound dims, in fp32 and in fp16 (token ids stay 8-byte integers).
The fused graph can never move less than the floor, nor the fusion bound.

Names: a fused node is named, everywhere, by the value it produces as the IR printer writes it
(``%tanh_0``), not by the scope its parameters live under (``c1``).
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl.passes import format_annotated, run_pipeline
from netdsl.passes.cost import cost_report, summarize
from netdsl.report import parameter_table, show

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.net"))
ELEMENT_BYTES = {"f32": 4, "f64": 8, "i64": 8, "i32": 4, "bool": 1}


def _table_params(graph) -> dict[str, int]:
    """Parameter name -> element count, read back from the table `netdsl show` prints."""
    rows = parameter_table(graph).splitlines()[1:-1]  # the header and the total left out
    out = {}
    for row in rows:
        name, _shape, count = row.split()
        out[name] = int(count.replace(",", ""))
    return out


def _floor_by_hand(unfused, fused, dims: dict[str, int], float_bytes: int) -> int:
    """Weights from the fused graph's parameter table, less the batchnorm parameters of the unfused
    graph; inputs and outputs from their shapes at ``dims``."""
    batchnorm = {p for n in unfused.nodes if n.op == "batchnorm" for p in n.params.values()}
    weights = sum(count for name, count in _table_params(fused).items() if name not in batchnorm) * float_bytes

    def size(v) -> int:
        elements = math.prod(int(d) for d in v.type.concrete(dims))
        dtype = v.type.dtype
        return elements * (float_bytes if dtype.startswith(("f", "bf")) else ELEMENT_BYTES[dtype])

    inputs = sum(size(v) for v in unfused.inputs)
    outputs = sum(size(v) for v in {v.name: v for v in unfused.outputs}.values())
    return weights + inputs + outputs


@pytest.fixture(scope="module", params=EXAMPLES, ids=lambda p: p.stem)
def example(request):
    graph = netdsl.load(request.param)
    return request.param.stem, graph, {n: run_pipeline(graph, "O1", dims={**graph.dim_defaults, "N": n})
                                       for n in (1, 8)}


@pytest.mark.parametrize("float_bytes", [4, 2], ids=["fp32", "fp16"])
@pytest.mark.parametrize("n", [1, 8])
def test_floor_is_weights_inputs_and_outputs_and_below_fused(example, n, float_bytes):
    name, graph, fused = example
    dims = {**graph.dim_defaults, "N": n}
    s = summarize(graph, fused[n], dims, None if float_bytes == 4 else float_bytes)
    assert s.floor.bytes == _floor_by_hand(graph, fused[n], dims, float_bytes), name
    assert s.floor.bytes <= s.ideal.bytes <= s.fused.bytes <= s.unfused.bytes, name
    assert s.fused_over_floor >= 1.0


def test_floor_of_a_conv_batchnorm_relu_by_arithmetic():
    """conv(3 -> 8, 3x3, no bias) -> batchnorm -> relu on 2x3x10x10: the weight, the input, the output."""
    src = """network t {
    input x: f32[N, 3, 10, 10]
    output x -> conv2d(8, 3, padding=1, bias=false) -> batchnorm -> relu
}
"""
    graph = netdsl.load_source(src, "t.net")
    dims = {"N": 2}
    s = summarize(graph, run_pipeline(graph, "O1", dims=dims), dims)
    assert s.floor.read == 4 * (8 * 3 * 3 * 3 + 2 * 3 * 10 * 10)
    assert s.floor.written == 4 * 2 * 8 * 10 * 10
    # the fused conv reads its input and the packed weight with the folded bias, and writes the output
    assert s.fused.bytes == s.floor.bytes + 4 * 8


def _printed_names(ir_text: str) -> set[str]:
    """The values the printed IR defines: the left-hand sides of its node lines."""
    names = set()
    for line in ir_text.splitlines():
        match = re.match(r"\s+((?:%[\w.]+(?:, )?)+) = ", line)
        if match:
            names.update(v.strip().lstrip("%") for v in match.group(1).split(","))
    return names


def _report_rows(text: str, header: str) -> list[str]:
    """The first column of the rows of the table that starts with ``header``, up to its blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 1
    rows = []
    for line in lines[start:]:
        if not line.strip() or line.startswith("total"):
            break
        rows.append(line.split()[0])
    return rows


def test_cost_report_names_every_node_as_the_printed_ir_does(example):
    name, graph, fused = example
    dims = {**graph.dim_defaults, "N": 1}
    printed = _printed_names(format_annotated(fused[1]))
    rows = _report_rows(cost_report(graph, fused[1], dims), "node ")
    assert len(rows) == len(fused[1].nodes), name
    assert set(rows) <= printed, f"{name}: cost report names not in the IR: {sorted(set(rows) - printed)[:5]}"


def test_show_names_a_fused_node_by_its_value_in_the_ir_flops_and_cost():
    """`show --pipeline O1 --cost`: the linear labelled c1 with its tanh fused in is %tanh_0 in the IR,
    in the FLOPs table and in the cost report (c1 is only its parameters' scope)."""
    src = """network t {
    input x: f32[N, 4]
    output x -> c1: linear(8) -> tanh -> linear(3)
}
"""
    graph = netdsl.load_source(src, "t.net")
    text = show(graph, {"N": 1}, pipeline="O1", cost=True)
    printed = _printed_names(text)
    assert "tanh_0" in printed and "c1" not in printed
    flops_rows = _report_rows(text, "node      op               output")
    cost_rows = _report_rows(text, "node      op               parts")
    assert flops_rows == cost_rows == ["tanh_0", "linear_0"]
    assert "c1.weight" in text  # the parameters keep the scope


def test_fusion_benchmark_reports_fused_over_floor_in_fp32_and_fp16(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import fusion

    fusion.main(["--model", "lenet5", "--batch", "8", "--runs", "1"])
    out = capsys.readouterr().out
    graph = netdsl.load(ROOT / "examples" / "lenet5.net")
    dims = {**graph.dim_defaults, "N": 8}
    fused = run_pipeline(graph, "O1", dims=dims)
    for dtype, float_bytes in (("fp32", 4), ("fp16", 2)):
        section = out.split(f"\n{dtype} (")[1]
        header, row = section.splitlines()[1:3]
        columns = dict(zip(header.replace("MB ", "MB_").replace("launches (bound)", "launches").split(),
                           row.replace(" (", "(").split()))
        floor = _floor_by_hand(graph, fused, dims, float_bytes)
        assert float(columns["MB_floor"]) == pytest.approx(floor / 1e6, abs=0.05)
        fused_bytes = summarize(graph, fused, dims, None if float_bytes == 4 else float_bytes).fused.bytes
        assert float(columns["fused/floor"]) == pytest.approx(fused_bytes / floor, abs=5e-4)
