"""Ahead-of-time builds of every kernel a model needs, without a GPU (`netdsl compile --target sm_90`).

The model is lowered exactly as for running, then run once on storage-less "meta" tensors while
``netdsl.kernels._host.recording()`` collects every launch the kernel wrappers plan (with GPU launch
configs). Each distinct specialization (kernel, signature, constexprs, warps, stages) is compiled for
each target by ``netdsl.kernels.aot.build_many`` in worker subprocesses (one process either
interprets or compiles Triton; the workers compile), which reads registers, spills, shared memory and
tensor-core use from the cubin; reports are cached by source and specialization.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import torch

from ...errors import NetDSLError
from ...ir.graph import Graph
from ...ir.sizes import concrete_dims
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


def model_specializations(fused: Graph, weights, dims: dict[str, int], dtype: str = "fp16",
                          configs: str = "default", allow_tf32: bool = False) -> list[dict]:
    """The distinct kernel specializations one forward call of the model launches.

    ``weights``: the model's weights, or None (only their shapes matter: zeros are used).
    ``configs``: "default" (the config a GPU launches first) or "all" (every autotuning config).
    """
    from ...kernels._host import recording, spec_of

    if weights is None:
        weights = {name: np.zeros(spec.shape, np.float32) for name, spec in fused.used_params().items()}
    module = TritonModule(fused, weights, dtype=dtype, device="meta", allow_tf32=allow_tf32)
    inputs = {v.name: torch.empty(v.type.concrete(dims), device="meta") for v in fused.inputs}
    with recording() as launches:
        module.run(inputs)
    specs, seen = [], set()
    for launch in launches:
        choices = [None] if configs == "default" or not launch.configs else list(range(len(launch.configs)))
        for choice in choices:
            spec = spec_of(launch, choice)
            key = json.dumps(spec, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                specs.append(spec)
    return specs


@dataclass(frozen=True)
class AheadOfTimeBuild:
    """What ``compile_ahead_of_time`` built: the specializations, one report per (specialization,
    target), the sizes the model was specialized for, and the seconds the builds took."""

    specs: list[dict]
    reports: list[KernelReport]
    dims: dict[str, int]
    ccs: list[int]
    elapsed: float


def compile_ahead_of_time(fused: Graph, weights, ccs: Sequence[int], dims: Mapping[str, int] | None = None,
                          dtype: str = "fp16", configs: str = "default", jobs: int = 2) -> AheadOfTimeBuild:
    """Build every kernel specialization one forward call of ``fused`` launches, for each compute
    capability in ``ccs`` (see ``parse_targets``), in ``jobs`` worker processes.

    ``dims``: sizes of the symbolic input dims; the rest are bound by ``concrete_dims`` (the file's
    defaults, then N=1). ``weights`` and ``configs``: as for ``model_specializations``.
    """
    from ...kernels import aot

    env = concrete_dims(fused, dims or {})
    ccs = sorted(set(ccs))
    start = time.perf_counter()
    specs = model_specializations(fused, weights, env, dtype, configs)
    reports = aot.build_many(aot.jobs(specs, ccs), max_workers=jobs)
    return AheadOfTimeBuild(specs, reports, env, ccs, time.perf_counter() - start)
