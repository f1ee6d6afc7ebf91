"""The front end: .net text -> AST (Lark) -> typed IR graph.

A file may import blocks: ``import "layers.net"`` reads a file next to it, ``import transformer`` a module
of netdsl's standard library (``netdsl/stdlib/*.net``, installed with the package). Imports are resolved
here, before elaboration: the imported file's blocks (and those it imports) join the file's own; a
missing file, an import cycle or a block defined twice is a located NetDSLError.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import NetDSLError, did_you_mean
from ..ir.graph import Graph
from . import ast
from .elaborate import elaborate
from .parser import decode, parse


def stdlib_modules() -> list[str]:
    """The names of the standard library's modules (``import transformer``)."""
    return sorted(p.name[:-4] for p in resources.files("netdsl.stdlib").iterdir() if p.name.endswith(".net"))


def _read_import(imp: ast.Import, importer: str) -> tuple[str, str]:
    """(file name, text) of an import."""
    if imp.is_file:
        base = Path(importer).parent if importer and not importer.startswith("<") else Path.cwd()
        path = base / imp.target
        try:
            data = path.read_bytes()
        except OSError as e:
            raise NetDSLError(f"cannot import \"{imp.target}\": {e.strerror} ({path})", imp.loc,
                              hint="a quoted import names a file relative to the importing file") from None
        try:
            return str(path), decode(data, str(path))
        except NetDSLError as err:  # at the bad byte in the imported file
            raise err.with_note(f"imported from {Path(importer).name}", imp.loc) from None
    ref = resources.files("netdsl.stdlib").joinpath(imp.target + ".net")
    if not ref.is_file():
        names = stdlib_modules()
        raise NetDSLError(f"no module `{imp.target}` in netdsl's standard library", imp.loc,
                          hint=did_you_mean(imp.target, names) or f"modules: {', '.join(names)}; a file is "
                          "imported by its quoted name: import \"blocks.net\"")
    return f"<netdsl>/stdlib/{imp.target}.net", ref.read_text(encoding="utf-8")


MAX_IMPORT_DEPTH = 64  # files importing files: far beyond any real model, far below Python's recursion limit


def resolve_imports(module: ast.Module, stack: tuple[str, ...] = ()) -> ast.Module:
    """``module`` with the blocks of everything it imports (transitively) added to its own."""
    stack = stack + (module.file,)
    origin = {name: module.file for name in module.blocks}
    for imp in module.imports:
        if len(stack) >= MAX_IMPORT_DEPTH:
            raise NetDSLError(f"imports nest more than {MAX_IMPORT_DEPTH} files deep", imp.loc,
                              hint="import the files a model needs from one place instead of a long chain")
        file, text = _read_import(imp, module.file)
        if file in stack or (imp.is_file and Path(file).resolve() in {Path(f).resolve() for f in stack
                                                                          if not f.startswith("<")}):
            cycle = " -> ".join(Path(f).name for f in stack[stack.index(file):] + (file,)) if file in stack else file
            raise NetDSLError(f"import cycle: {cycle}", imp.loc, hint="two files cannot import each other")
        imported = resolve_imports(parse(text, file), stack)
        for name, block in imported.blocks.items():
            if name in module.blocks:
                if module.blocks[name] is block:
                    continue
                mine = module.blocks[name]
                raise NetDSLError(f"block `{name}` is defined twice: here and in {Path(origin[name]).name}",
                                  mine.loc if origin[name] == module.file else imp.loc,
                                  hint="rename one of them").with_note("the other definition", block.loc)
            module.blocks[name] = block
            origin[name] = file
    return module


def load_source(source: str | bytes, file: str = "<string>", network: str | None = None) -> Graph:
    """Parse and elaborate .net text into an IR graph. Bytes are read as UTF-8 (as ``load`` reads a file)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = decode(bytes(source), file)
    elif not isinstance(source, str):
        raise NetDSLError(f"load_source takes the text of a .net file (a str), got {type(source).__name__}",
                          hint="pass the file's text; netdsl.load(path) reads a file")
    return elaborate(resolve_imports(parse(source, file)), network)


def load(path: str | Path, network: str | None = None) -> Graph:
    """Parse and elaborate a .net file (UTF-8 text) into an IR graph."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise NetDSLError(f"cannot read {path}: {e.strerror}", None,
                          hint="give the path of a .net file" if path.is_dir() or not path.exists()
                          else "check that you may read it") from None
    return load_source(decode(data, str(path)), str(path), network)


__all__ = ["parse", "elaborate", "load", "load_source", "resolve_imports", "stdlib_modules"]
