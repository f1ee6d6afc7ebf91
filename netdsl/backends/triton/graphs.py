"""CUDA graphs: on a CUDA device, one forward call for a known input shape is one graph replay.

A launch plan (``plan.LaunchPlan``) gives every value the same memory on every call, and its
prepared calls repeat the same launches; so on a GPU they can be captured once into a
``torch.cuda.CUDAGraph`` and replayed, which costs one launch of host work instead of one per
kernel. The first call for a shape is the warm-up: it runs every step (the autotuner benchmarks
and picks each kernel's config) and prepares the calls; the second captures them and replays the
graph, as does every later call. Inputs are copied into the plan's input buffers before a replay,
and the outputs returned are fresh copies of the plan's output storages (``LaunchPlan.results``),
so they stay valid after the next call.

On by default where it can be: a CUDA device with compiled kernels. Off on the CPU, under Triton's
interpreter, on the meta device, while launches are recorded, with ``netdsl.compile(...,
cuda_graphs=False)``, or with the environment variable ``NETDSL_CUDA_GRAPHS=0``. A shape whose calls
cannot be captured (a step that synchronises with the host) warns once and runs its calls one by one.
"""

from __future__ import annotations

import os
import warnings
from typing import Mapping

import torch

from .plan import LaunchPlan
from .runtime import select_mode

OFF = ("0", "false", "no", "off")


def graphs_wanted(requested: bool, device: torch.device, mode: str | None = None,
                  env: Mapping[str, str] | None = None) -> bool:
    """Whether a module on ``device`` replays CUDA graphs: asked for (``requested``, and not switched off
    by NETDSL_CUDA_GRAPHS in ``env``), on a CUDA device, with compiled kernels (``mode`` "cuda", by
    default this process's, ``runtime.select_mode``)."""
    env = os.environ if env is None else env
    if not requested or env.get("NETDSL_CUDA_GRAPHS", "1").strip().lower() in OFF:
        return False
    if device.type != "cuda":
        return False
    return (mode if mode is not None else select_mode()) == "cuda"


def capture(plan: LaunchPlan) -> None:
    """Capture the plan's prepared calls (they ran once already, as the warm-up) into ``plan.graph``;
    ``plan.graph = False`` when they cannot be captured."""
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize(plan.device)
    try:
        with torch.cuda.graph(graph):
            for call in plan.calls[False]:
                call()
    except Exception as e:  # any op that cannot be captured: run this shape's calls one by one
        warnings.warn(f"netdsl: a forward call could not be captured in a CUDA graph ({e}); "
                      "its kernels are launched one by one", stacklevel=3)
        plan.graph = False
        return
    plan.graph = graph


def replay(plan: LaunchPlan) -> None:
    """Run one forward call of ``plan`` (inputs staged): the graph, captured on first use."""
    if plan.graph is None:
        capture(plan)
    if plan.graph is False:
        for call in plan.calls[False]:
            call()
        return
    plan.graph.replay()
