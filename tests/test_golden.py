"""Golden IR text: `format_graph` of LeNet-5 and of a small residual network, compared with the files in
tests/golden/. After an intended change of the printer or the front end, rewrite them with

    NETDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py

and review the diff."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

import netdsl
from netdsl.ir.printer import format_graph
from netdsl.ops.printing import attr_defaults

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
UPDATE = os.environ.get("NETDSL_UPDATE_GOLDEN") == "1"

RESIDUAL = """\
# a small residual network: a stride-2 block with a projection shortcut, then an identity block
block basic(c, stride=1) {
    input x
    y = x -> conv1: conv2d(c, 3, stride=stride, padding=1, bias=false) -> bn1: batchnorm -> relu
          -> conv2: conv2d(c, 3, padding=1, bias=false) -> bn2: batchnorm
    output relu(y + x)
}

block down(c) {
    input x
    y    = x -> conv1: conv2d(c, 3, stride=2, padding=1, bias=false) -> bn1: batchnorm -> relu
             -> conv2: conv2d(c, 3, padding=1, bias=false) -> bn2: batchnorm
    skip = x -> downsample: (conv2d(c, 1, stride=2, bias=false) -> batchnorm)
    output relu(y + skip)
}

network tiny_resnet {
    input image: f32[N, 3, H=32, W=32]
    features = image
        -> conv1: conv2d(16, 3, padding=1, bias=false) -> bn1: batchnorm -> relu
        -> maxpool(3, stride=2, padding=1)
        -> layer1: (down(32) -> basic(32))
    logits = features -> global_avgpool -> flatten -> dropout(0.2) -> fc: linear(10)
    output logits, probs = softmax(logits, dim=1)
}
"""

CASES = {
    "lenet5": lambda: netdsl.load(HERE.parent / "examples" / "lenet5.net"),
    "tiny_resnet": lambda: netdsl.load_source(RESIDUAL, "tiny_resnet.net"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_ir(name):
    text = format_graph(CASES[name](), attr_defaults=attr_defaults) + "\n"
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing: run with NETDSL_UPDATE_GOLDEN=1 to write it"
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), str(path), "now"))
        pytest.fail(f"the IR of {name} changed (NETDSL_UPDATE_GOLDEN=1 rewrites the golden file):\n{diff}")
