"""``netdsl.compile``: a .net model -> a runnable ``torch.nn.Module``."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import NetDSLError
from .ir.graph import Graph
from .params import check_weights, init_weights, load_weights


def prepare(model: str | Path | Graph, weights=None, seed: int = 0, network: str | None = None,
            pipeline: str = "O1") -> tuple[Graph, Graph, dict[str, np.ndarray]]:
    """(unfused graph, fused graph, checked weights) for a model path or graph."""
    from .frontend import load
    from .passes import run_pipeline

    graph = model if isinstance(model, Graph) else load(model, network)
    if weights is None:
        w = init_weights(graph, seed)
    elif isinstance(weights, (str, Path)):
        w = load_weights(weights, graph)
    elif isinstance(weights, Mapping):
        w = check_weights(graph, weights)
    else:
        raise NetDSLError("weights must be a path, a dict of arrays or None")
    return graph, run_pipeline(graph, pipeline, log=lambda _: None), w


def compile(model: str | Path | Graph, *, backend: str = "triton", dtype: str = "fp32", weights=None,
            seed: int = 0, network: str | None = None, pipeline: str = "O1", allow_tf32: bool = False,
            cuda_graphs: bool = True, sm_count: int | None = None):
    """Compile a model into a ``torch.nn.Module`` taking and returning NCHW tensors.

    backend "triton": fused Triton kernels — compiled on a CUDA GPU, run through Triton's interpreter
    on a CPU-only machine (slow; for checking). dtype: "fp32", "fp16" or "bf16".
    cuda_graphs: on a CUDA GPU, replay each input shape's kernels as one CUDA graph (captured on the
    second call of a shape; the environment variable NETDSL_CUDA_GRAPHS=0 turns it off too).
    sm_count: the SMs a short conv/linear fills by splitting K (``netdsl.kernels.splitk``), e.g.
    ``torch.cuda.get_device_properties(0).multi_processor_count``; None (the default, until split-K is
    measured on hardware): no split. Given on the CPU, split-K runs in the interpreter.
    """
    if backend != "triton":
        raise NetDSLError(f"unknown backend `{backend}`", hint="netdsl.compile(..., backend=\"triton\"); the "
                          "reference backend is netdsl.reference.run")
    from .backends.triton import TritonModule, device

    _, fused, w = prepare(model, weights, seed, network, pipeline)
    return TritonModule(fused, w, dtype=dtype, device=device(), allow_tf32=allow_tf32, cuda_graphs=cuda_graphs,
                        sm_count=sm_count)
