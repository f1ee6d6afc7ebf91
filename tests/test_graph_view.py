"""`netdsl graph`: the SVG and HTML pictures of a graph, read back with xml.etree and checked against
the graph itself (its nodes, its data edges, the cost model), and the layout's geometry checked
directly (no two boxes overlap, edges join the boxes they name, crossings counted from the curves)."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netdsl.cli import main
from netdsl.frontend import load
from netdsl.graph_layout import _count_crossings, _reduce_crossings, layered_layout
from netdsl.graph_view import html_page, render_svg
from netdsl.ir.sizes import concrete_dims, parse_dims
from netdsl.passes import run_pipeline
from netdsl.passes.cost import node_costs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SVG = "{http://www.w3.org/2000/svg}"
CASES = [(name, pipeline) for name in ("lenet5", "resnet18", "mobilenet_v2", "googlenet", "transformer_encoder",
                                       "gpt2", "seq2seq") for pipeline in ("O1", "O0")]


def _graphs(name: str, pipeline: str = "O1", dims: str | None = None):
    graph = load(EXAMPLES / f"{name}.net")
    env = concrete_dims(graph, parse_dims(dims))
    return graph, run_pipeline(graph, pipeline, dims=env), env


def _classes(el: ET.Element) -> set[str]:
    return set(el.get("class", "").split())


def _groups(root: ET.Element, kind: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if kind in _classes(g)]


def _box(g: ET.Element) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a node's rect or an input's/output's outer ellipse."""
    rect = g.find(f"{SVG}rect")
    if rect is not None:
        x, y, w, h = (float(rect.get(a)) for a in ("x", "y", "width", "height"))
        return x, y, x + w, y + h
    e = g.find(f"{SVG}ellipse")
    cx, cy, rx, ry = (float(e.get(a)) for a in ("cx", "cy", "rx", "ry"))
    return cx - rx, cy - ry, cx + rx, cy + ry


def _texts(g: ET.Element) -> list[str]:
    return [t.text or "" for t in g.findall(f"{SVG}text")]


def _points(d: str) -> list[tuple[float, float]]:
    """The points a path goes through (its commands' end points), in order."""
    out = []
    for cmd, args in re.findall(r"([MLC])([^MLC]*)", d):
        nums = [float(n) for n in re.findall(r"-?[0-9.]+", args)]
        out.append((nums[-2], nums[-1]))
    return out


def _expected_edges(graph) -> set[tuple[str, str]]:
    """(producer, consumer) data edges, straight from the graph: node names, input:/output: terminals."""
    source = {v.name: f"input:{v.name}" for v in graph.inputs}
    source.update((v.name, n.outputs[0].name) for n in graph.nodes for v in n.outputs)
    edges = {(source[v.name], n.outputs[0].name) for n in graph.nodes for v in n.inputs}
    names = graph.output_names or tuple(v.name for v in graph.outputs)
    edges |= {(source[v.name], f"output:{name}") for v, name in zip(graph.outputs, names)}
    return edges


@pytest.mark.parametrize("name,pipeline", CASES)
def test_the_picture_has_every_node_and_data_edge_and_no_overlaps(name, pipeline):
    graph, fused, env = _graphs(name, pipeline)
    root = ET.fromstring(render_svg(fused, env, unfused=graph, pipeline=pipeline))
    names = [n.outputs[0].name for n in fused.nodes]  # the names show, check and the cost report use
    assert len(set(names)) == len(names) and all(names)
    nodes = _groups(root, "node")
    assert len(nodes) == len(fused.nodes)
    assert sorted(g.get("data-node") for g in nodes) == sorted(names)
    assert len({g.get("id") for g in nodes}) == len(nodes)
    for g in nodes:
        assert g.get("data-node") in [t.split()[0] for t in _texts(g)]  # the IR name is written in its box
        assert g.find(f"{SVG}title").text.startswith(g.get("data-node") + ":")
    assert sorted(g.get("data-value") for g in _groups(root, "input")) == sorted(v.name for v in fused.inputs)
    assert len(_groups(root, "output")) == len(fused.outputs)

    edges = [p for p in root.iter(f"{SVG}path") if "edge" in _classes(p)]
    pairs = [(p.get("data-from"), p.get("data-to")) for p in edges]
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == _expected_edges(fused)

    boxes = {g.get("data-node") or f"{'input' if 'input' in _classes(g) else 'output'}:{g.get('data-value')}": _box(g)
             for g in [*nodes, *_groups(root, "input"), *_groups(root, "output")]}
    for (a, ra), (b, rb) in itertools.combinations(boxes.items(), 2):
        apart = ra[2] <= rb[0] or rb[2] <= ra[0] or ra[3] <= rb[1] or rb[3] <= ra[1]
        assert apart, f"{a} {ra} overlaps {b} {rb}"
    for p, (src, dst) in zip(edges, pairs):
        points = _points(p.get("d"))
        (x0, y0), (x1, y1) = points[0], points[-1]
        assert boxes[src][0] < x0 < boxes[src][2] and y0 == pytest.approx(boxes[src][3], abs=0.1)  # leaves the bottom
        assert boxes[dst][0] < x1 < boxes[dst][2] and y1 == pytest.approx(boxes[dst][1], abs=0.1)  # enters the top
        for x, y in points[1:-1]:  # its bends lie outside every box
            assert not any(r[0] < x < r[2] and r[1] < y < r[3] for r in boxes.values()), (src, dst, x, y)
        # a long edge passes the layers it crosses as one straight vertical line
        runs = {round(xa, 1) for (xa, ya), (xb, yb) in zip(points[1:], points[2:-1]) if xa == xb and ya < yb}
        assert len(runs) <= 1, (src, dst, points)
    assert int(root.get("data-crossings")) == _crossings(edges)


def _crossings(paths) -> int:
    """Crossings of the drawn edges, from their geometry: between two layers every step is a cubic
    with control points at the same mid height, so two steps between the same heights cross exactly
    when their ends are in opposite orders."""
    steps: dict[tuple[float, float], list[tuple[float, float]]] = {}
    for p in paths:
        points = _points(p.get("d"))
        for (xa, ya), (xb, yb) in zip(points, points[1:]):  # (vertical runs never cross: no harm counting them)
            steps.setdefault((round(ya, 1), round(yb, 1)), []).append((xa, xb))
    count = 0
    for group in steps.values():
        for (a0, a1), (b0, b1) in itertools.combinations(group, 2):
            count += (a0 - b0) * (a1 - b1) < 0
    return count


def test_a_fused_box_lists_the_ops_it_absorbed_with_shapes_cost_and_params():
    graph, fused, env = _graphs("resnet18", dims="N=2,H=64,W=64")
    root = ET.fromstring(render_svg(fused, env, unfused=graph, pipeline="O1"))
    box = {g.get("data-node"): _texts(g) for g in _groups(root, "node")}
    value = {n.name: n.outputs[0].name for n in fused.nodes}  # a node's label -> its IR name
    # relu(bn(conv(x)) + skip): one box, named by its IR name and the label it came from; layer1 is 16x16
    block = value["layer1.0.conv2"]
    assert box[block][:3] == ["conv2d + batchnorm + add + relu", f"{block}  layer1.0.conv2", "out 2x64x16x16"]
    assert box[value["conv1"]][:3] == ["conv2d + batchnorm + relu", f"{value['conv1']}  conv1", "out 2x64x32x32"]
    # 64*64*3*3 conv weights + 4 batchnorm vectors of 64 = 37,120 numbers, 148,480 bytes in f32
    assert box[block][4] == "params 37.1K (148KB)"
    assert box[value["maxpool2d_0"]][4] == "no params"
    costs = node_costs(fused, env)
    for node in fused.nodes:
        title = next(g for g in _groups(root, "node")
                     if g.get("data-node") == node.outputs[0].name).find(f"{SVG}title").text
        assert f"{costs[node.outputs[0].name].flops:,} FLOPs" in title
        assert f"{costs[node.outputs[0].name].read:,} bytes read" in title


def test_lenet_boxes_at_o0_name_their_own_op():
    graph, fused, env = _graphs("lenet5", "O0")
    root = ET.fromstring(render_svg(fused, env, unfused=graph))
    box = {g.get("data-node"): _texts(g) for g in _groups(root, "node")}
    c1 = next(n.outputs[0].name for n in fused.nodes if n.name == "c1")
    assert c1 == "c1" and box[c1][:3] == ["conv2d", "c1", "out 1x6x28x28"]  # unfused: the label is the IR name
    assert box[c1][4] == "params 156 (624B)"  # 6 filters of 1x5x5 and 6 biases, f32
    assert [g.get("data-op") for g in _groups(root, "node")] == [n.op for n in fused.nodes]


def test_layout_of_a_complete_bipartite_graph_has_the_known_crossings():
    """Any two-layer drawing of K(3,3) has C(3,2) * C(3,2) = 9 crossings; a tree has none."""
    sizes = {name: (60.0, 30.0) for name in "abcxyz"}
    layout = layered_layout(sizes, [(s, t) for s in "abc" for t in "xyz"])
    assert layout.crossings == 9
    assert layout.layers == (tuple("abc"), tuple("xyz"))
    tree = {f"v{i}": (40.0 + 10 * (i % 3), 30.0) for i in range(15)}
    layout = layered_layout(tree, [(f"v{(i - 1) // 2}", f"v{i}") for i in range(1, 15)])
    assert layout.crossings == 0
    assert [len(row) for row in layout.layers] == [1, 2, 4, 8]


def test_layout_rejects_a_cycle_and_unknown_vertices():
    with pytest.raises(ValueError, match="cycle"):
        layered_layout({"a": (1, 1), "b": (1, 1)}, [("a", "b"), ("b", "a")])
    with pytest.raises(ValueError, match="unknown"):
        layered_layout({"a": (1, 1)}, [("a", "q")])


def test_barycenter_sweeps_untangle_a_reversed_layer():
    """A lower layer in the reverse order of its parents has C(5,2) = 10 crossings; the sweeps undo them."""
    rows = [[0, 1, 2, 3, 4], [9, 8, 7, 6, 5]]
    down = [[5 + i] for i in range(5)] + [[] for _ in range(5)]
    up = [[] for _ in range(5)] + [[i] for i in range(5)]
    assert _count_crossings(rows, down) == 10
    best, count = _reduce_crossings([list(r) for r in rows], down, up, sweeps=2)
    assert count == 0 and best == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_layers_put_a_branch_where_its_result_is_needed():
    """a -> b -> c -> d and a -> e -> d: e sits just above d (its edge from a bends past the layer of
    b), the sink f (read from a) just below a."""
    sizes = {k: (40.0, 20.0) for k in "abcdef"}
    layout = layered_layout(sizes, [("a", "b"), ("b", "c"), ("c", "d"), ("a", "e"), ("e", "d"), ("a", "f")])
    depth = {k: i for i, row in enumerate(layout.layers) for k in row}
    assert depth == {"a": 0, "b": 1, "f": 1, "c": 2, "e": 2, "d": 3}
    assert len(layout.routes[("e", "d")]) == 2 and len(layout.routes[("a", "f")]) == 2  # one layer: no bends
    assert len(layout.routes[("a", "e")]) == 4  # down through layer 1 beside b


# --- the command line ------------------------------------------------------------------------------

def test_cli_writes_svg_and_an_html_page_with_the_same_svg(tmp_path, capsys):
    svg, html = tmp_path / "r.svg", tmp_path / "r.html"
    assert main(["graph", str(EXAMPLES / "resnet18.net"), "-o", str(svg), "--dims", "H=64,W=64"]) == 0
    assert main(["graph", str(EXAMPLES / "resnet18.net"), "-o", str(html), "--dims", "H=64,W=64"]) == 0
    out = capsys.readouterr().out
    assert f"to {svg}" in out and f"to {html}" in out
    svg_text, page = svg.read_text(), html.read_text()
    element = svg_text[svg_text.index("<svg"):].strip()
    assert element in page
    root = ET.fromstring(svg_text)
    _, fused, _ = _graphs("resnet18", dims="H=64,W=64")
    assert len(_groups(root, "node")) == len(fused.nodes)
    assert "out 1x64x16x16" in [t for g in _groups(root, "node") for t in _texts(g)]
    # self-contained: nothing fetched, the script's elements are on the page
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\((?!#)", page)
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}
    assert 'id="find"' in page and 'id="details"' in page and "<script>" in page
    assert sorted(tmp_path.iterdir()) == [html, svg]


@pytest.mark.parametrize("argv,message", [
    (["-o", "{d}/pic.png"], "unknown file type `.png`"),
    (["-o", "{d}/pic"], "unknown file type"),
    (["-o", "{d}/no/such/dir/pic.svg"], "there is no directory"),
    (["-o", "{d}/pic.svg", "--dims", "H=0"], "--dims"),
    (["-o", "{d}/pic.svg", "--pipeline", "O7"], "unknown pass or pipeline"),
])
def test_cli_refuses_bad_input_with_exit_2_and_writes_nothing(tmp_path, capsys, argv, message):
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    assert main(["graph", str(EXAMPLES / "lenet5.net"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "hint" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_directory_and_a_broken_model(tmp_path, capsys):
    (tmp_path / "pic.svg").mkdir()
    assert main(["graph", str(EXAMPLES / "lenet5.net"), "-o", str(tmp_path / "pic.svg")]) == 2
    assert "is a directory" in capsys.readouterr().err
    bad = tmp_path / "bad.net"
    bad.write_text("network n {\n    input x: f32[N, 4]\n    y = x -> relu -> lineer(3)\n    output y\n}\n")
    assert main(["graph", str(bad), "-o", str(tmp_path / "bad.svg")]) == 2
    err = capsys.readouterr().err
    assert "bad.net:3" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.net", "pic.svg"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, capsys, monkeypatch):
    target = tmp_path / "pic.svg"
    target.write_text("old")

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    assert main(["graph", str(EXAMPLES / "lenet5.net"), "-o", str(target)]) == 2
    monkeypatch.undo()
    assert "No space left on device" in capsys.readouterr().err
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["pic.svg"]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to parse the page's script")
def test_the_page_script_parses(tmp_path):
    graph, fused, env = _graphs("lenet5")
    page = html_page(render_svg(fused, env, unfused=graph), "lenet5")
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.S)
    (tmp_path / "page.js").write_text(script)
    done = subprocess.run(["node", "--check", str(tmp_path / "page.js")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
