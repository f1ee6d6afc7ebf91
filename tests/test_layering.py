"""The package's layering, read from the source with `ast` (nothing is imported).

Arrows between folders run one way: cli -> compiler -> frontend / passes / backends -> ops -> ir.
`netdsl.ir` is the ground floor; `netdsl.kernels` (the repository's top-level kernels/ folder,
installed as netdsl.kernels) stands alone; only the command line imports the command line. Every
import counts: module level, inside functions and under ``if TYPE_CHECKING``. A violation is
reported as ``file:line: importer -> imported``.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _package_dirs() -> dict[str, Path]:
    """Package name -> source folder, from pyproject's ``package-dir`` (kernels/ is netdsl.kernels)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs = config["tool"]["setuptools"]["package-dir"]
    return {pkg: ROOT / folder for pkg, folder in dirs.items()}


def _modules() -> dict[str, Path]:
    """Every netdsl module: dotted name -> file."""
    dirs = _package_dirs()
    out: dict[str, Path] = {}
    for pkg, folder in dirs.items():
        others = [d for d in dirs.values() if d != folder and folder in d.parents]
        for path in sorted(folder.rglob("*.py")):
            if any(d in path.parents for d in others):
                continue  # a folder inside this one that is installed as another package
            parts = [pkg, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The netdsl module that an import of ``name`` loads (the longest known prefix), or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported netdsl module, line) for every import statement anywhere in the file."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != module:
                found.add((resolved, node.lineno))
    return sorted(found, key=lambda edge: (edge[1], edge[0]))


GRAPH: dict[str, list[tuple[str, int]]] = {m: _imports(m, p) for m, p in MODULES.items()}


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _where(importer: str, line: int, imported: str) -> str:
    return f"{MODULES[importer].relative_to(ROOT)}:{line}: {importer} -> {imported}"


def _violations(importers: tuple[str, ...], forbidden, exempt: tuple[str, ...] = ()) -> list[str]:
    """Imports from a module under ``importers`` (but not ``exempt``) of a module ``forbidden(name)`` rejects."""
    return [_where(m, line, dep) for m, deps in GRAPH.items() if _in(m, *importers) and not _in(m, *exempt)
            for dep, line in deps if forbidden(dep)]


def _netdsl(*names: str) -> tuple[str, ...]:
    return tuple(f"netdsl.{n}" for n in names)


def test_the_graph_sees_the_whole_package():
    assert {"netdsl", "netdsl.cli", "netdsl.ir.graph", "netdsl.ops.registry", "netdsl.kernels",
            "netdsl.kernels.conv", "netdsl.backends.triton.aot"} <= set(MODULES)
    deps = {m: {dep for dep, _ in GRAPH[m]} for m in GRAPH}
    assert "netdsl.cli" in deps["netdsl.__main__"]  # from .cli import main
    assert "netdsl.report" in deps["netdsl.cli"]  # inside cmd_show: function-level imports count
    assert "netdsl.ir.graph" in deps["netdsl.backends.triton.aot"]  # from ...ir.graph import Graph
    assert any(_in(dep, "netdsl.kernels") for m in GRAPH if _in(m, "netdsl.kernels") for dep in deps[m])


def _cycles() -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w, _ in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    problems = []
    for component in _cycles():
        members = set(component)
        edges = [_where(m, line, dep) for m in component for dep, line in GRAPH[m] if dep in members]
        problems.append(f"cycle among {', '.join(component)}:\n    " + "\n    ".join(edges))
    assert not problems, "\n" + "\n".join(problems)


ABOVE_OPS = _netdsl("passes", "backends", "frontend", "cli", "compiler")

RULES = {  # rule: (importers, what they must not import, importers exempt from the rule)
    "ir is the ground floor": (_netdsl("ir"), _netdsl("ops", *ABOVE_OPS), ()),
    "ops import no layer above them": (_netdsl("ops"), ABOVE_OPS, ()),
    "passes see neither the backends nor the front end": (_netdsl("passes"), _netdsl("backends", "frontend", "cli"),
                                                          ()),
    "the compiler driver sits above what it drives": (_netdsl("frontend", "passes", "backends"), _netdsl("compiler"),
                                                      ()),
    # `python -m netdsl`: __main__ is the command line's own entry point
    "only the command line imports the command line": (("netdsl",), _netdsl("cli"), _netdsl("cli", "__main__")),
}


@pytest.mark.parametrize("rule", RULES)
def test_layer(rule):
    importers, forbidden, exempt = RULES[rule]
    bad = _violations(importers, lambda dep: _in(dep, *forbidden), exempt)
    assert not bad, f"{rule}:\n" + "\n".join(bad)


def test_kernels_stand_alone():
    """netdsl.kernels (kernels/) imports nothing from netdsl outside itself."""
    bad = _violations(("netdsl.kernels",), lambda dep: not _in(dep, "netdsl.kernels"))
    assert not bad, "\n" + "\n".join(bad)
