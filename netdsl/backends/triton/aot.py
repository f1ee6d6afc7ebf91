"""`netdsl compile --target sm_90`: build every kernel a model needs ahead of time, without a GPU.

The model is lowered exactly as for running, then run once on storage-less "meta" tensors while
``netdsl.kernels._host.recording()`` collects every launch the kernel wrappers plan (with GPU launch
configs). Each distinct specialization (kernel, signature, constexprs, warps, stages) is compiled for
each target by ``netdsl.kernels.aot.build_many`` in worker subprocesses (one process either
interprets or compiles Triton; the workers compile), which reads registers, spills, shared memory and
tensor-core use from the cubin; reports are cached by source and specialization.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from ...errors import NetDSLError
from ...ir.graph import Graph
from .module import TritonModule

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


def build_model(fused: Graph, weights, dims, ccs, dtype="fp16", configs="default", jobs=2):
    from ...kernels import aot

    specs = model_specializations(fused, weights, dims, dtype, configs)
    return specs, aot.build_many(aot.jobs(specs, ccs), max_workers=jobs)


def compile_ahead_of_time(args) -> int:
    import time

    from ...cli import _parse_dims, concrete_dims
    from ...compiler import prepare
    from ...kernels.aot import format_reports

    ccs = parse_targets(args.target)
    graph, fused, weights = prepare(args.model, None, 0, args.network, args.pipeline)
    dims = concrete_dims(graph, _parse_dims(args.dims))
    start = time.perf_counter()
    specs, reports = build_model(fused, weights, dims, ccs, args.dtype, args.configs, args.jobs)
    elapsed = time.perf_counter() - start
    print(f"network {graph.name}: {len(fused.nodes)} fused nodes, {len(specs)} kernel specializations "
          f"({args.dtype}, {', '.join(f'{k}={v}' for k, v in sorted(dims.items()))}), "
          f"targets {', '.join(f'sm_{c}' for c in ccs)}")
    print(format_reports(reports))
    spills = sum(r.spills for r in reports)
    too_big = [r for r in reports if not r.fits_shared]
    cached = sum(r.cached for r in reports)
    print(f"built {len(reports)} kernels ({cached} from cache) in {elapsed:.1f}s: "
          f"{spills} spills, {sum(r.uses_mma for r in reports)} with tensor-core MMA, "
          f"max {max((r.registers for r in reports), default=0)} registers/thread")
    if spills or too_big:
        print(f"FAIL: {spills} spill instructions; {len(too_big)} kernels over the shared-memory limit")
        return 1
    return 0
