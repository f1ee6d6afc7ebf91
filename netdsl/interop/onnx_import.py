"""`netdsl import model.onnx -o model.net`: an ONNX model as a readable .net file and its weights."""

from __future__ import annotations


def add_parser(sub) -> None:
    """The `netdsl import` subcommand (called by netdsl.cli; keep this module's imports light)."""
    c = sub.add_parser("import", help="turn an ONNX model into a .net file (and its weights into a .safetensors file beside it)")
    c.add_argument("model", help="an .onnx file")
    c.add_argument("-o", "--output", required=True, help="the .net file to write (weights go to the same name .safetensors)")
    c.set_defaults(fn=run)


def run(args) -> int:
    from ..errors import NetDSLError

    raise NetDSLError("`netdsl import` is not built yet")
