"""Adding an op is one registry entry: a toy activation registered in one place reaches the language,
the reference backend, the fusion passes (as an epilogue of a conv and a linear, and a pointwise
chain) and the Triton backend, with nothing else in the compiler taught about it. And no pass or
backend keeps a table of op names: what they need is in each op's registry entry."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import netdsl
from netdsl.backends import reference
from netdsl.backends.triton.check import check, format_checks
from netdsl.ops import REGISTRY
from netdsl.ops.activations import Activation, register_activation
from netdsl.ops.registry import ALIASES, Attr
from netdsl.passes import run_pipeline

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def toy():
    """``bent(slope=0.3)``: x for x >= 0, slope * x below; its kernel form is leaky_relu(slope)."""
    entry = Activation("bent", lambda x, a, _: np.where(x >= 0, x, a["slope"] * x),
                       lambda a: ("leaky_relu", a["slope"], 0.0), attrs=(Attr("slope", "float", 0.3),), flops=2,
                       aliases=("bent_relu",))
    op = register_activation(entry)
    try:
        yield op
    finally:
        del REGISTRY["bent"], ALIASES["bent_relu"]


def _net(body: str, inputs: str) -> str:
    return f"network t {{\n    input {inputs}\n{textwrap.indent(textwrap.dedent(body).strip(), '    ')}\n}}\n"


def test_a_toy_activation_is_one_entry(toy):
    src = _net("""
        a = x -> c: conv2d(6, 3, padding=1) -> bent(slope=0.2)
        b = a -> maxpool(2) -> bent_relu -> sigmoid
        output b -> flatten -> fc: linear(5) -> bent
        """, "x: f32[N, 3, 5, 6]")
    graph = netdsl.load_source(src, "<toy>")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 6))
    weights = netdsl.random_weights(graph, seed=0)

    # the reference backend against torch (the oracle), in float64
    got = reference.run(graph, {"x": x}, weights, dtype="f64")["output0"]
    w = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in weights.items()}
    t = F.leaky_relu(F.conv2d(torch.from_numpy(x), w["c.weight"], w["c.bias"], padding=1), 0.2)
    t = torch.sigmoid(F.leaky_relu(F.max_pool2d(t, 2), 0.3))
    t = F.leaky_relu(F.linear(t.flatten(1), w["fc.weight"], w["fc.bias"]), 0.3)
    np.testing.assert_allclose(got, t.numpy(), rtol=1e-10, atol=1e-10)

    # the passes fuse it as any activation: into the conv's and the linear's epilogues, and a chain
    fused = run_pipeline(graph, "O1", log=lambda _: None)
    ops = [(n.op, n.attrs.get("act1")) for n in fused.nodes]
    assert ("fused_conv2d", "bent") in ops and ("fused_pointwise", "bent") in ops and ("fused_linear", "bent") in ops
    np.testing.assert_allclose(reference.run(fused, {"x": x}, weights, dtype="f64")["output0"], got, rtol=1e-10)

    # the Triton backend runs it (in the epilogue the kernels already have), node by node
    checks = check(fused, weights, {"x": x.astype(np.float32)}, "fp32")
    assert all(c.ok for c in checks), format_checks(checks, "fp32")


# ---------------------------------------------------------------------------------------------
# no tables of op names outside the registry
# ---------------------------------------------------------------------------------------------

# the op names a pass or backend may still spell out, and why
ALLOWED = {
    "batchnorm": "the batchnorm folded or turned into an affine is the one op the fold rule names",
    "add": "the residual add the epilogue absorbs",
    "fused_pointwise": "the fused op a pointwise chain becomes",
    "dropout": "remove_dropout's subject",
    # the attention rule's pattern is spelled in ops: matmul -> (affine) -> softmax -> matmul, k transposed
    "matmul": "the attention pattern", "affine": "the attention pattern", "softmax": "the attention pattern",
    "transpose": "the attention pattern",
}


def _op_names_in(path: Path) -> set[str]:
    """String constants compared with or collected as op names: ``x.op == "relu"``, ``"relu" in (...)``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                for const in ast.walk(side):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str) and const.value in REGISTRY:
                        names.add(const.value)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "netdsl" / "passes").glob("*.py"))
                         + sorted((ROOT / "netdsl" / "backends").rglob("*.py")), ids=lambda p: p.name)
def test_passes_and_backends_compare_no_op_names(path):
    names = _op_names_in(path)
    assert names <= set(ALLOWED), f"{path.name} compares op names {sorted(names - set(ALLOWED))}: ask the registry"


def test_every_op_and_alias_a_user_writes_is_documented():
    """docs/language.md names every op a file can call, and every alias (e.g. `batchnorm2d`)."""
    from netdsl.ops import ALIASES
    from netdsl.ops.registry import OpKind

    doc = (Path(__file__).resolve().parent.parent / "docs" / "language.md").read_text()
    callable_ops = [name for name, op in REGISTRY.items() if op.kind is not OpKind.FUSED and not op.constant]
    missing = [name for name in [*callable_ops, *ALIASES] if f"`{name}" not in doc]
    assert not missing, f"not in docs/language.md: {missing}"
