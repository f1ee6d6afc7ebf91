"""`netdsl export model.net -o model.onnx`: a netdsl graph as an ONNX model."""

from __future__ import annotations


def add_parser(sub) -> None:
    """The `netdsl export` subcommand (called by netdsl.cli; keep this module's imports light)."""
    c = sub.add_parser("export", help="write the model as ONNX (weights inside; symbolic dims as dynamic axes)")
    c.add_argument("model", help="a .net file")
    c.add_argument("--network", help="which network of the file (when it has several)")
    c.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    c.add_argument("--weights", help=".safetensors or .npz weights (default: seeded initialisation)")
    c.add_argument("--seed", default="0", help="seed of the default weights (0 or more)")
    c.add_argument("--pipeline", default="O0", help="passes to run first (O0 = none, O1 = all)")
    c.set_defaults(fn=run)


def run(args) -> int:
    from ..errors import NetDSLError

    raise NetDSLError("`netdsl export` is not built yet")
