"""Layout marking (an analysis): which memory layout each 4-D tensor will have.

Inside convolutional stacks tensors are channels-last (NHWC): the implicit-GEMM conv gathers one
contiguous run of channels per pixel, and pointwise/norm/pool kernels view a tensor as [pixels,
channels] with channel stride 1. At the boundary they are NCHW, the layout the user and PyTorch see:
graph inputs and outputs, and tensors read by an op that depends on the order of the dims (flatten,
linear over the last dim, layernorm, softmax, concat along a dim other than the channels). A tensor
read by both kinds of op is NCHW (written once; the NHWC readers convert when they load).

The result is stored on the graph: ``annotations["layout"] = {value name: "NHWC" | "NCHW"}`` for
every 4-D value (other ranks have one layout only and no entry).
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ops import REGISTRY, OpKind

# ops that read a 4-D tensor in either layout, as long as all their 4-D operands share it
LAYOUT_FREE_OPS = frozenset({
    "conv2d", "fused_conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "batchnorm", "groupnorm",
    "fused_groupnorm", "fused_pointwise", "add", "mul", "dropout",
})


def _layout_free(node: Node) -> bool:
    if node.op == "concat":
        return node.attrs["dim"] % 4 == 1
    return node.op in LAYOUT_FREE_OPS or REGISTRY[node.op].kind is OpKind.ELEMENTWISE


def mark_layout(graph: Graph) -> tuple[Graph, str]:
    boundary = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
    for node in graph.nodes:
        if not _layout_free(node):
            boundary.update(v.name for v in node.inputs if v.type.rank == 4)
    layout = {v.name: ("NCHW" if v.name in boundary else "NHWC") for v in graph.values() if v.type.rank == 4}
    nchw = sum(1 for x in layout.values() if x == "NCHW")
    annotations = {**graph.annotations, "layout": layout}
    return graph.replace(annotations=annotations), f"{len(layout) - nchw} NHWC, {nchw} NCHW"
