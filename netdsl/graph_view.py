"""`netdsl graph model.net -o model.svg`: a picture of the (fused) graph, no system binary needed."""

from __future__ import annotations


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
    from .errors import NetDSLError

    raise NetDSLError("`netdsl graph` is not built yet")
