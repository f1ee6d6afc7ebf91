"""`netdsl graph model.net -o model.svg`: a picture of the (fused) graph, no system binary needed.

One box per node of the graph after the pipeline: the ops it absorbed (``conv2d + batchnorm + relu``),
its IR name, its output shapes at the sizes asked for (or the file's defaults), its FLOPs and bytes
(``netdsl.passes.cost.node_costs``, the numbers of `netdsl show --cost`) and its parameters; graph
inputs and outputs are ellipses; edges are the data flow. The layout is `netdsl.graph_layout`.

The SVG is meant to be read by programs too: each node's ``<g class="node">`` carries ``data-node``
(the IR node name) and ``data-op``, each edge ``<path class="edge">`` carries ``data-from`` and
``data-to`` (a node name, or ``input:NAME`` / ``output:NAME`` for the graph's inputs and outputs), and
every box has a ``<title>`` with its details. ``-o model.html`` wraps the same SVG in a page that
works offline, with a panel showing the details of the box under the mouse and a search field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping
from xml.sax.saxutils import escape, quoteattr

from .ir.graph import Graph, Node, Value

if TYPE_CHECKING:
    from .passes.cost import Cost

FORMATS = {".svg": "svg", ".html": "html", ".htm": "html"}
_CHAR = 6.7  # width of one character of 11px monospace, in px
_LINE = 14.0  # line height, px
_PAD = 8.0  # inside a box
_MAX_CHARS = 52  # a longer line is cut (its whole text is in the box's title)
_MARGIN = 16.0
_HEADING = 44.0
_FILL = {"fused": "#ffe0b2", "out_fusable": "#cfe2ff", "norm": "#e4d7ff", "reduce": "#d4efdf",
         "injective": "#eeeeee", "elementwise": "#f6f6f6", "binary": "#f6f6f6"}
_INPUT_FILL, _OUTPUT_FILL = "#d9f2d0", "#cde8f6"


@dataclass(frozen=True)
class Vertex:
    """One box of the picture: ``key`` is how edges name it (``data-from``/``data-to``)."""

    key: str
    kind: str  # "node", "input" or "output"
    lines: tuple[str, ...]  # shown; the first in bold
    details: str  # the tooltip
    fill: str
    op: str = ""

    @property
    def size(self) -> tuple[float, float]:
        chars = max(len(line) for line in self.lines)
        if self.kind == "node":
            return max(chars * _CHAR + 2 * _PAD, 120.0), len(self.lines) * _LINE + 2 * _PAD
        return chars * _CHAR + 48.0, len(self.lines) * _LINE + 14.0  # an ellipse needs room at its ends


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    values: tuple[Value, ...]  # what flows along it (a node may read several results of another)


def human(x: float, unit: str = "") -> str:
    """1.23G, 45.6M, 7.8K: short enough for a box."""
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}{unit}"
    return f"{int(x)}{unit}"


def _unique(names: list[str]) -> list[str]:
    """``names`` with a repeated one made unique as ``name#2``, ``name#3``."""
    out, seen = [], set()
    for base in names:
        key, k = base, 1
        while key in seen:
            k += 1
            key = f"{base}#{k}"
        seen.add(key)
        out.append(key)
    return out


def node_keys(graph: Graph) -> list[str]:
    """The name each node goes by in the picture: the one `show`, `check` and the cost report give it
    (its first result, as the IR printer writes it)."""
    from .report import node_name

    return _unique([node_name(node) for node in graph.nodes])


def output_keys(graph: Graph) -> list[str]:
    """``output:NAME`` for each graph output, by the name the file gives it."""
    names = graph.output_names if len(graph.output_names) == len(graph.outputs) else [v.name for v in graph.outputs]
    return _unique([f"output:{name}" for name in names])


def data_edges(graph: Graph) -> list[Edge]:
    """Every (producer, consumer) pair once, graph inputs and outputs included, in graph order."""
    source = {v.name: f"input:{v.name}" for v in graph.inputs}
    keys = node_keys(graph)
    for node, key in zip(graph.nodes, keys):
        source.update((v.name, key) for v in node.outputs)
    flows: dict[tuple[str, str], dict[str, Value]] = {}
    for node, key in zip(graph.nodes, keys):
        for v in node.inputs:
            flows.setdefault((source[v.name], key), {})[v.name] = v
    for v, key in zip(graph.outputs, output_keys(graph)):
        flows.setdefault((source[v.name], key), {})[v.name] = v
    return [Edge(s, t, tuple(vs.values())) for (s, t), vs in flows.items()]


def _shape(v: Value, env: Mapping[str, int]) -> str:
    return "x".join(map(str, v.type.concrete(env))) or "scalar"


def _cut(line: str) -> str:
    return line if len(line) <= _MAX_CHARS else line[: _MAX_CHARS - 1] + "…"


def absorbed_ops(node: Node, graph: Graph, unfused: Graph | None) -> list[str]:
    """The ops of the original graph that ``node`` computes, in order (``origin``, kept by the passes);
    just its own op when it replaced nothing or the original graph is not at hand."""
    if unfused is None or unfused is graph:
        return [node.op]
    from .passes.rewrite import origin_of

    ops = {v.name: n.op for n in unfused.nodes for v in n.outputs}
    parts = [ops[p] for p in origin_of(graph, node.outputs[0].name) if p in ops]
    return parts if len(parts) > 1 else [node.op]


def vertices(graph: Graph, env: Mapping[str, int], costs: Mapping[str, Cost],
             unfused: Graph | None = None) -> list[Vertex]:
    """The boxes, in a topological order: the inputs, the nodes, the outputs (``costs``: from
    ``node_costs``, keyed by each node's first result)."""
    from .ir.types import DTYPES, numel
    from .ops import REGISTRY

    out = [Vertex(f"input:{v.name}", "input", (v.name, _shape(v, env)),
                  f"input {v.name}: {v.type}\nat {_env(env)}: {_shape(v, env)}", _INPUT_FILL) for v in graph.inputs]
    for node, key in zip(graph.nodes, node_keys(graph)):
        cost = costs[node.outputs[0].name]
        ops = absorbed_ops(node, graph, unfused)
        params = {role: graph.params[p] for role, p in node.params.items()}
        count = sum(numel(tuple(spec.shape)) for spec in params.values())
        pbytes = count * DTYPES.get(node.outputs[0].type.dtype, 4)
        shapes = ", ".join(_shape(v, env) for v in node.outputs)
        scope = f"{key}  {node.name}" if node.name and node.name != key else key  # and the label it came from
        lines = (" + ".join(ops), scope, f"out {shapes}", f"{human(cost.flops)} FLOPs  {human(cost.bytes, 'B')}",
                 f"params {human(count)} ({human(pbytes, 'B')})" if count else "no params")
        details = [f"{key}: {node.op}" + (f" = {' + '.join(ops)}" if len(ops) > 1 else "")]
        details += [f"  in  {v.name}: {v.type} = {_shape(v, env)}" for v in node.inputs]
        details += [f"  out {v.name}: {v.type} = {_shape(v, env)}" for v in node.outputs]
        details.append(f"  {cost.flops:,} FLOPs, {cost.read:,} bytes read, {cost.written:,} written, "
                       f"{cost.launches} launch(es) at {_env(env)}")
        details += [f"  {role}: {node.params[role]} {list(spec.shape)}" for role, spec in params.items()]
        out.append(Vertex(key, "node", tuple(_cut(line) for line in lines), "\n".join(details),
                          _FILL.get(REGISTRY[node.op].kind.value, "#ffffff"), node.op))
    for v, key in zip(graph.outputs, output_keys(graph)):
        name = key.partition(":")[2]
        out.append(Vertex(key, "output", (name, _shape(v, env)),
                          f"output {name} (value {v.name}): {v.type}\nat {_env(env)}: {_shape(v, env)}", _OUTPUT_FILL))
    return out


def _env(env: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(env.items())) or "fixed sizes"


def _path(points) -> str:
    """Vertical runs as lines; each step between layers as an S-shaped cubic."""
    (x0, y0), *rest = points
    d = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        if abs(x1 - x0) < 0.5:
            d.append(f"L{x1:.1f},{y1:.1f}")
        else:
            mid = (y0 + y1) / 2
            d.append(f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(d)


_SVG_STYLE = """
  .node rect, .input ellipse, .output ellipse { stroke: #555; stroke-width: 1; }
  .node text.op { font-weight: bold; }
  .edge { fill: none; stroke: #7a7a7a; stroke-width: 1.2; marker-end: url(#arrow); }
  .heading { font-size: 13px; }
  .picked rect, .picked ellipse { stroke: #d9480f; stroke-width: 3; }
  .edge.lit { stroke: #d9480f; stroke-width: 2.4; }
"""


def render_svg(graph: Graph, env: Mapping[str, int], unfused: Graph | None = None, pipeline: str = "") -> str:
    """The picture of ``graph`` at sizes ``env`` as one ``<svg>`` element (``unfused``: the graph
    before the passes, to name the ops each fused node absorbed)."""
    from .graph_layout import layered_layout
    from .params import parameter_count
    from .passes.cost import node_costs, total

    costs = node_costs(graph, env)
    verts = vertices(graph, env, costs, unfused)
    edges = data_edges(graph)
    layout = layered_layout({v.key: v.size for v in verts}, [(e.source, e.target) for e in edges])
    cost = total(costs)
    heading = (f"{graph.name}" + (f" after {pipeline}" if pipeline else "") + f" at {_env(env)}: "
               f"{len(graph.nodes)} nodes, {cost.launches} launches, {human(cost.flops)} FLOPs, "
               f"{human(cost.bytes, 'B')} moved, {human(parameter_count(graph))} parameters")
    dx, dy = _MARGIN, _MARGIN + _HEADING
    width = max(layout.width, len(heading) * 7.9) + 2 * _MARGIN  # 13px monospace
    height = layout.height + dy + _MARGIN
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="netdsl-graph" width="{width:.0f}" '
           f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" font-family="monospace" '
           f'font-size="11" data-network={quoteattr(graph.name)} data-pipeline={quoteattr(pipeline)} '
           f'data-crossings="{layout.crossings}">',
           f"<style>{_SVG_STYLE}</style>",
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#7a7a7a"/></marker></defs>',
           '<rect width="100%" height="100%" fill="#ffffff"/>',
           f'<text class="heading" x="{_MARGIN}" y="{_MARGIN + 14}">{escape(heading)}</text>',
           '<g class="edges">']
    for e in edges:
        points = [(x + dx, y + dy) for x, y in layout.routes[(e.source, e.target)]]
        what = ", ".join(f"{v.name}: {_shape(v, env)}" for v in e.values)
        out.append(f'<path class="edge" data-from={quoteattr(e.source)} data-to={quoteattr(e.target)} '
                   f'd="{_path(points)}"><title>{escape(f"{e.source} -> {e.target}: {what}")}</title></path>')
    out.append('</g>\n<g class="boxes">')
    for i, v in enumerate(verts):
        out.append(_box(v, i, layout.boxes[v.key], dx, dy))
    out.append("</g>\n</svg>")
    return "\n".join(out)


def _box(v: Vertex, i: int, r, dx: float, dy: float) -> str:
    x, y = r.x + dx, r.y + dy
    if v.kind == "node":
        attrs = f'class="node" id="node-{i}" data-node={quoteattr(v.key)} data-op={quoteattr(v.op)}'
        shape = f'<rect x="{x:.1f}" y="{y:.1f}" width="{r.width:.1f}" height="{r.height:.1f}" rx="4" fill="{v.fill}"/>'
        first = y + _PAD + _LINE - 3
        texts = [f'<text x="{x + _PAD:.1f}" y="{first + k * _LINE:.1f}"' + (' class="op"' if k == 0 else "")
                 + f">{escape(line)}</text>" for k, line in enumerate(v.lines)]
    else:
        name = v.key.partition(":")[2]
        attrs = f'class="{v.kind}" id="{v.kind}-{i}" data-value={quoteattr(name)}'
        cx, cy, rx, ry = x + r.width / 2, y + r.height / 2, r.width / 2, r.height / 2
        shape = f'<ellipse cx="{cx:.1f}" cy="{cy:.1f}" rx="{rx:.1f}" ry="{ry:.1f}" fill="{v.fill}"/>'
        if v.kind == "output":  # a double outline: an output is where the data leaves
            shape += (f'<ellipse cx="{cx:.1f}" cy="{cy:.1f}" rx="{rx - 4:.1f}" ry="{ry - 4:.1f}" fill="none" '
                      f'stroke="#555"/>')
        top = cy - (len(v.lines) - 1) * _LINE / 2 + 4
        texts = [f'<text x="{cx:.1f}" y="{top + k * _LINE:.1f}" text-anchor="middle"'
                 + (' font-weight="bold"' if k == 0 else "") + f">{escape(line)}</text>"
                 for k, line in enumerate(v.lines)]
    return f"<g {attrs}><title>{escape(v.details)}</title>{shape}{''.join(texts)}</g>"


def svg_document(svg: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{svg}\n'


_PAGE_STYLE = """
  body { margin: 0; font-family: sans-serif; }
  header { position: sticky; top: 0; background: #fafafa; border-bottom: 1px solid #ccc; padding: 6px 12px;
           display: flex; gap: 12px; align-items: flex-start; z-index: 1; }
  header h1 { font-size: 15px; margin: 4px 0; white-space: nowrap; }
  #details { margin: 0; font-size: 11px; max-height: 9em; overflow: auto; flex: 1; }
  main { overflow: auto; }
  g.node, g.input, g.output { cursor: pointer; }
"""

_PAGE_SCRIPT = """
(function () {
  const svg = document.querySelector("svg.netdsl-graph");
  const details = document.getElementById("details");
  const boxes = Array.from(svg.querySelectorAll("g.node, g.input, g.output"));
  const keyOf = (g) => g.dataset.node || (g.classList.contains("input") ? "input:" : "output:") + g.dataset.value;
  function pick(g) {
    svg.querySelectorAll(".picked, .lit").forEach((el) => el.classList.remove("picked", "lit"));
    g.classList.add("picked");
    const key = keyOf(g);
    svg.querySelectorAll("path.edge").forEach((e) => {
      if (e.dataset.from === key || e.dataset.to === key) e.classList.add("lit");
    });
    details.textContent = g.querySelector("title").textContent;
  }
  boxes.forEach((g) => {
    g.addEventListener("mouseenter", () => { details.textContent = g.querySelector("title").textContent; });
    g.addEventListener("click", () => pick(g));
  });
  document.getElementById("find").addEventListener("change", (ev) => {
    const q = ev.target.value.trim().toLowerCase();
    const g = q && boxes.find((b) => keyOf(b).toLowerCase().includes(q));
    if (g) { pick(g); g.scrollIntoView({ block: "center", inline: "center" }); }
  });
})();
"""


def html_page(svg: str, title: str) -> str:
    """A page that needs nothing but itself: the SVG inline, a details panel and a search field."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f"<style>{_PAGE_STYLE}</style>\n</head>\n<body>\n<header><h1>{escape(title)}</h1>"
            '<input id="find" type="search" placeholder="find a node by name">'
            '<pre id="details">point at a box to see its details; click it to follow its edges</pre></header>\n'
            f"<main>\n{svg}\n</main>\n<script>{_PAGE_SCRIPT}</script>\n</body>\n</html>\n")


def output_format(path: str | Path) -> str:
    """"svg" or "html", from the file name; anything else is a NetDSLError."""
    from .errors import NetDSLError

    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise NetDSLError(f"cannot draw the graph as `{Path(path).name}`: unknown file type `{suffix or '(none)'}`",
                          hint="write -o model.svg (a picture) or -o model.html (a page with details)")
    return FORMATS[suffix]


def add_parser(sub) -> None:
    """The `netdsl graph` subcommand (called by netdsl.cli; keep this module's imports light)."""
    c = sub.add_parser("graph", help="draw the graph (fused with --pipeline O1) as SVG or HTML")
    c.add_argument("model", help="a .net file")
    c.add_argument("--network", help="which network of the file (when it has several)")
    c.add_argument("-o", "--output", required=True, help="a .svg or .html file")
    c.add_argument("--pipeline", default="O1", help="passes to run first (O0 = none, O1 = all)")
    c.add_argument("--dims", help="sizes of symbolic dims, e.g. N=1,H=224,W=224 (default: the file's defaults)")
    c.set_defaults(fn=run)


def run(args) -> int:
    from .frontend import load
    from .ir.sizes import concrete_dims, parse_dims
    from .files import check_writable, write_atomically
    from .passes import run_pipeline

    what = "graph picture"
    kind = output_format(args.output)  # before any work: a wrong name should not cost a compile
    check_writable(args.output, what)
    dims = parse_dims(args.dims)
    graph = load(args.model, args.network)
    env = concrete_dims(graph, dims)
    fused = run_pipeline(graph, args.pipeline, dims=env)
    svg = render_svg(fused, env, unfused=graph, pipeline=args.pipeline)
    title = f"{graph.name} ({args.pipeline}, {_env(env)})"
    text = svg_document(svg) if kind == "svg" else html_page(svg, title)
    write_atomically(args.output, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), what)
    print(f"wrote {len(fused.nodes)} nodes of `{graph.name}` ({args.pipeline}) to {args.output}")
    return 0
