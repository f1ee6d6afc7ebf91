"""`netdsl fmt model.net [--check]`: one canonical layout for .net files, comments kept."""

from __future__ import annotations


def add_parser(sub) -> None:
    """The `netdsl fmt` subcommand (called by netdsl.cli; keep this module's imports light)."""
    c = sub.add_parser("fmt", help="rewrite .net files in the canonical layout (--check: only report which would change)")
    c.add_argument("files", nargs="+", help=".net files")
    c.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    c.set_defaults(fn=run)


def run(args) -> int:
    from ..errors import NetDSLError

    raise NetDSLError("`netdsl fmt` is not built yet")
