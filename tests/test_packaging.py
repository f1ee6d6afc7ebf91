"""The package builds into a wheel that carries the grammar and the kernels inside `netdsl`, and that
wheel works on its own: unpacked into an empty directory (nothing but it on PYTHONPATH, run from
elsewhere, so neither the repository nor the editable install can stand in for it), it loads the
grammar from the installed package and elaborates a model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
                                ".pytest_cache", ".netdsl_cache", "tests", "benchmarks")

CHECK = """
import sys
from importlib import resources
from pathlib import Path

import netdsl
import netdsl.kernels

site = Path(sys.argv[1]).resolve()
for module in (netdsl, netdsl.kernels):
    assert Path(module.__file__).resolve().is_relative_to(site), module.__file__
grammar = resources.files("netdsl.grammar").joinpath("netdsl.lark")
assert Path(str(grammar)).resolve().is_relative_to(site), grammar
graph = netdsl.load_source("network n {\\n    input x: f32[N, 3, 8, 8]\\n    output x -> conv2d(4, 3) -> relu\\n}\\n")
print(graph.outputs[0].type)
stdlib = resources.files("netdsl.stdlib").joinpath("transformer.net")
assert Path(str(stdlib)).resolve().is_relative_to(site), stdlib
graph = netdsl.load_source("import transformer\\nnetwork n {\\n    input x: f32[N, T, 8]\\n"
                           "    output x -> encoder_layer(8, 2, 16)\\n}\\n")
print(graph.outputs[0].type)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the repository (so the build leaves nothing in the working tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = (tmp / "dist").glob("netdsl-*.whl")
    return path


def test_wheel_contains_the_grammar_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "netdsl/grammar/netdsl.lark" in names
    assert "netdsl/kernels/__init__.py" in names
    # every module of the source tree is packaged (a subpackage missing from pyproject's list fails here)
    expected = {f"netdsl/{p.relative_to(ROOT / 'netdsl').as_posix()}" for p in (ROOT / "netdsl").rglob("*.py")}
    kernels = ROOT / "kernels"
    expected |= {f"netdsl/kernels/{p.relative_to(kernels).as_posix()}" for p in kernels.rglob("*.py")}
    expected |= {f"netdsl/grammar/{p.name}" for p in (ROOT / "grammar").iterdir() if p.suffix in (".py", ".lark")}
    expected |= {f"netdsl/stdlib/{p.name}" for p in (ROOT / "stdlib").iterdir() if p.suffix in (".py", ".net")}
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel: {missing}"
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)
    entry_points = next(zipfile.ZipFile(wheel).read(n) for n in names if n.endswith("entry_points.txt")).decode()
    assert "netdsl = netdsl.cli:main" in entry_points


def test_unpacked_wheel_loads_the_grammar_from_the_installed_package(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["f32[N,", "4,", "6,", "6]", "f32[N,", "T,", "8]"]
