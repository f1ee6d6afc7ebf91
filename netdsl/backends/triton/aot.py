"""Ahead-of-time builds of every kernel a model needs, without a GPU (`netdsl compile --target sm_90`).

The model is lowered exactly as for running, then run once on storage-less "meta" tensors while
``netdsl.kernels._host.recording()`` collects every launch the kernel wrappers plan (with GPU launch
configs). Each distinct specialization (kernel, signature, constexprs, warps, stages) is compiled for
each target by ``netdsl.kernels.aot.build_many`` in worker subprocesses (one process either
interprets or compiles Triton; the workers compile), which reads registers, spills, shared memory and
tensor-core use from the cubin; reports (and each build's cubin and PTX) are cached by source and
specialization. Each specialization also knows the IR nodes that launch it (``ModelKernel.nodes``), so
that a report can say which fused node a kernel serves.
"""

from __future__ import annotations

import bisect
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import torch

from ...errors import NetDSLError
from ...ir.graph import Graph
from ...ir.sizes import concrete_dims
from ...progress import Progress, quiet
from .check import watch_steps
from .module import TritonModule

if TYPE_CHECKING:
    from ...kernels.aot import KernelReport

TARGETS = {"sm_80": 80, "sm_90": 90, "sm_90a": 90}


def parse_targets(text: str) -> list[int]:
    ccs = []
    for t in text.split(","):
        t = t.strip()
        if t not in TARGETS:
            raise NetDSLError(f"unknown target `{t}`", hint="one of sm_80, sm_90 (comma-separated for several)")
        ccs.append(TARGETS[t])
    return sorted(set(ccs))


@dataclass(frozen=True)
class ModelKernel:
    """One kernel specialization a model launches, and the IR nodes (their output names, as the IR
    printer names them) whose kernels it is, in graph order."""

    spec: dict
    nodes: tuple[str, ...]


def model_kernels(fused: Graph, weights, dims: dict[str, int], dtype: str = "fp16", configs: str = "default",
                  allow_tf32: bool = False) -> list[ModelKernel]:
    """The distinct kernel specializations one forward call of the model launches, with their nodes.

    ``weights``: the model's weights, or None (only their shapes matter: zeros are used).
    ``configs``: "default" (the config a GPU launches first) or "all" (every autotuning config).
    """
    from ...kernels._host import recording, spec_of

    if weights is None:
        weights = {name: np.zeros(spec.shape, np.float32) for name, spec in fused.used_params().items()}
    module = TritonModule(fused, weights, dtype=dtype, device="meta", allow_tf32=allow_tf32)
    inputs = {v.name: torch.empty(v.type.concrete(dims), device="meta") for v in fused.inputs}
    starts: list[int] = []  # the index of each watched node's first launch, in launch order
    owners: list[str] = []  # that node's name

    def starting(_: int, node, finished: bool) -> None:
        if not finished:
            starts.append(len(launches))
            owners.append(node.outputs[0].name)

    with recording() as launches:
        watch_steps(module, starting)
        module.run(inputs)
    kernels: dict[str, tuple[dict, list[str]]] = {}
    for index, launch in enumerate(launches):
        at = bisect.bisect_right(starts, index) - 1  # the last node started at or before this launch
        owner = owners[at] if at >= 0 else None
        choices = [None] if configs == "default" or not launch.configs else list(range(len(launch.configs)))
        for choice in choices:
            spec = spec_of(launch, choice)
            spec_nodes = kernels.setdefault(json.dumps(spec, sort_keys=True, default=str), (spec, []))[1]
            if owner is not None and owner not in spec_nodes:
                spec_nodes.append(owner)
    return [ModelKernel(spec, tuple(nodes)) for spec, nodes in kernels.values()]


def model_specializations(fused: Graph, weights, dims: dict[str, int], dtype: str = "fp16",
                          configs: str = "default", allow_tf32: bool = False) -> list[dict]:
    """The distinct kernel specializations one forward call of the model launches (see ``model_kernels``)."""
    return [k.spec for k in model_kernels(fused, weights, dims, dtype, configs, allow_tf32)]


@dataclass(frozen=True)
class AheadOfTimeBuild:
    """What ``compile_ahead_of_time`` built: the specializations (with their nodes), one report per
    (specialization, target) in that order, the sizes the model was specialized for, and the seconds
    the builds took."""

    kernels: list[ModelKernel]
    reports: list[KernelReport]
    dims: dict[str, int]
    ccs: list[int]
    elapsed: float

    @property
    def specs(self) -> list[dict]:
        return [k.spec for k in self.kernels]

    def kernel_of(self, index: int) -> ModelKernel:
        """The specialization of ``reports[index]`` (the reports run through the targets of each)."""
        return self.kernels[index // len(self.ccs)]


def compile_ahead_of_time(fused: Graph, weights, ccs: Sequence[int], dims: Mapping[str, int] | None = None,
                          dtype: str = "fp16", configs: str = "default", jobs: int = 2,
                          progress: Progress | None = None, artifacts: bool = False) -> AheadOfTimeBuild:
    """Build every kernel specialization one forward call of ``fused`` launches, for each compute
    capability in ``ccs`` (see ``parse_targets``), in ``jobs`` worker processes.

    ``dims``: sizes of the symbolic input dims; the rest are bound by ``concrete_dims`` (the file's
    defaults, then N=1). ``weights`` and ``configs``: as for ``model_kernels``. ``progress``: told of
    each finished build. ``artifacts``: make sure every build's cubin and PTX are in the cache
    (``netdsl.kernels.aot.artifact``), rebuilding a cached report that lacks them.
    """
    from ...kernels import aot

    progress = progress or quiet()
    env = concrete_dims(fused, dims or {})
    ccs = sorted(set(ccs))
    start = time.perf_counter()
    progress.stage("planning launches", None)
    kernels = model_kernels(fused, weights, env, dtype, configs)
    job_list = aot.jobs([k.spec for k in kernels], ccs)
    progress.stage("building", len(job_list), "kernels")
    done: Callable[[int, aot.KernelReport], None] = lambda n, r: progress.update(n, f"{r.name} sm_{r.cc}")
    reports = aot.build_many(job_list, max_workers=jobs, on_done=done, artifacts=artifacts)
    return AheadOfTimeBuild(kernels, reports, env, ccs, time.perf_counter() - start)


def build_report(build: AheadOfTimeBuild) -> dict:
    """The build as data (the "kernels" and "summary" of `compile --json`): every report's fields, its
    target and the IR nodes it serves; the summary counts what the text report's last lines say."""
    from dataclasses import asdict

    reports = build.reports
    rows = [{**asdict(r), "target": f"sm_{r.cc}", "nodes": list(build.kernel_of(i).nodes)}
            for i, r in enumerate(reports)]
    spills = sum(r.spills for r in reports)
    over = sum(not r.fits_shared for r in reports)
    summary = {"kernels": len(reports), "specializations": len(build.kernels), "cached": sum(r.cached for r in reports),
               "spills": spills, "with_mma": sum(r.uses_mma for r in reports), "over_shared_limit": over,
               "max_registers": max((r.registers for r in reports), default=0),
               "elapsed_s": round(build.elapsed, 3)}
    return {"kernels": rows, "summary": summary, "ok": not spills and not over}
