"""How many programs each GEMM launch of a model gives the GPU, before and after split-K.

At batch 1 most of a CNN's convolutions have fewer output tiles than the GPU has SMs: the rest of
the machine idles. This lists every launch the Triton backend makes for a model (planned on "meta"
tensors under ``netdsl.kernels._host.recording``: the same plans a GPU run makes), with

* its work in multiply-adds (GEMMs and the depthwise kernel; pooling and pointwise launches show 0),
* its grid with the default config and with the most parallel eligible config,
* the split ``netdsl.kernels.splitk.choose_split`` gives it for 108 SMs (A100, sm_80 configs) and
  132 SMs (H100/H200, sm_90 configs too), and the grid then: the partial kernel's, or without a
  split the most parallel config's (the best the autotuner can do),

then counts the launches with enough work to fill the machine (at least SMs * 64^3 multiply-adds:
one 64x64x64 tile per SM) whose grid covers every SM. Counts only, no timing: run anywhere.

    python benchmarks/occupancy.py [--models resnet50,mobilenet_v2] [--size 224] [--dtype fp16] [--quiet]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from netdsl.backends.triton import TritonModule
from netdsl.compiler import prepare
from netdsl.kernels import conv, matmul, splitk
from netdsl.kernels._host import Launch, recording

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MACHINES = ((108, 80), (132, 90))   # (SMs, compute capability): A100, H100/H200


@dataclass(frozen=True)
class Gemm:
    """A GEMM launch's problem: [m, n] outputs per group over taps * k_per_tap, ``groups`` groups."""
    m: int
    n: int
    k_per_tap: int
    taps: int = 1
    groups: int = 1

    @property
    def macs(self) -> int:
        return self.m * self.n * self.k_per_tap * self.taps * self.groups


def gemm_of(launch: Launch) -> Gemm | None:
    """The GEMM a conv2d or linear launch computes (None for any other kernel)."""
    a, name = launch.args, launch.kernel.fn.__name__
    if name == "conv2d_kernel":
        groups = launch.grid({**launch.constexprs, **launch.config.kwargs})[1]
        return Gemm(a["M"], a["OCg"], a["ICg"], a["KH"] * a["KW"], groups)
    if name == "linear_kernel":
        return Gemm(a["M"], a["N"], a["K"])
    return None


def macs_of(launch: Launch) -> int:
    gemm = gemm_of(launch)
    if gemm is not None:
        return gemm.macs
    if launch.kernel.fn.__name__ == "depthwise_conv2d_kernel":
        a = launch.args
        return a["M"] * a["C_out"] * a["KH"] * a["KW"]
    return 0


def programs(launch: Launch, config) -> int:
    return math.prod(launch.grid({**launch.constexprs, **config.kwargs}))


def eligible(launch: Launch, cc: int) -> list:
    """The configs a GPU of compute capability ``cc`` may launch (the split-K chooser's candidates)."""
    module = conv if launch.kernel.fn.__name__ == "conv2d_kernel" else matmul
    return module.eligible_configs({**launch.args, **launch.constexprs}, cc)


def after_split(launch: Launch, sm_count: int, cc: int) -> tuple[int, int]:
    """(split, programs) that the plan of a GPU with ``sm_count`` SMs launches: the partial kernel's grid,
    or with no split the most parallel eligible config's (the autotuner may pick it)."""
    gemm = gemm_of(launch)
    if gemm is None:
        return 1, programs(launch, launch.config)
    configs = eligible(launch, cc)
    config, split = splitk.choose_split(gemm.m, gemm.n, gemm.k_per_tap, configs, sm_count, taps=gemm.taps,
                                        groups=gemm.groups)
    if split == 1:
        return 1, max(programs(launch, c) for c in configs)
    return split, splitk.tiles_of(config, gemm.m, gemm.n, gemm.groups) * split


def model_launches(name: str, size: int, dtype: str) -> list[tuple[str, Launch]]:
    """(kernel name, launch) for every launch of one batch-1 forward call, in order."""
    _, fused, _ = prepare(EXAMPLES / f"{name}.net")
    weights = {p: np.zeros(spec.shape, np.float32) for p, spec in fused.used_params().items()}
    module = TritonModule(fused, weights, dtype=dtype, device="meta")
    dims = {"N": 1, "H": size, "W": size}
    inputs = {v.name: torch.empty(v.type.concrete({**dims, **{s: dims.get(s, 1) for s in v.type.symbols()}}),
                                  device="meta") for v in fused.inputs}
    with recording() as launches:
        module.run(inputs)
    return [(launch.kernel.fn.__name__, launch) for launch in launches]


def report(name: str, size: int, dtype: str, quiet: bool) -> dict:
    rows = []
    for kernel, launch in model_launches(name, size, dtype):
        gemm = gemm_of(launch)
        most = max(programs(launch, c) for c in (eligible(launch, 80) if gemm else [launch.config]))
        row = dict(kernel=kernel, macs=macs_of(launch), default=programs(launch, launch.config), most=most)
        for sms, cc in MACHINES:
            row[sms] = after_split(launch, sms, cc)
        rows.append((gemm, row))
    if not quiet:
        print(f"\n{name} at batch 1, {size}x{size}, {dtype}: {len(rows)} launches")
        print(f"{'#':>3} {'kernel':26} {'M x N x K (groups)':26} {'MMACs':>8} {'default':>7} {'most':>6} "
              + " ".join(f"{'split@' + str(s):>8} {'grid@' + str(s):>8}" for s, _ in MACHINES))
        for i, (gemm, r) in enumerate(rows):
            shape = f"{gemm.m} x {gemm.n} x {gemm.k_per_tap * gemm.taps}" + (
                f" ({gemm.groups})" if gemm.groups > 1 else "") if gemm else ""
            print(f"{i:3} {r['kernel']:26} {shape:26} {r['macs'] / 1e6:8.1f} {r['default']:7} {r['most']:6} "
                  + " ".join(f"{r[s][0]:8} {r[s][1]:8}" for s, _ in MACHINES))
    summary = {"model": name, "launches": len(rows)}
    for sms, _ in MACHINES:
        big = [r for _, r in rows if r["macs"] >= sms * 64 ** 3]
        every = [r for _, r in rows]
        summary[sms] = dict(big=len(big), default=sum(r["default"] >= sms for r in big),
                            most=sum(r["most"] >= sms for r in big), split=sum(r[sms][1] >= sms for r in big),
                            splits=sum(r[sms][0] > 1 for r in every),
                            all=tuple(sum(r[key] >= sms for r in every) for key in ("default", "most"))
                            + (sum(r[sms][1] >= sms for r in every),))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,mobilenet_v2")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dtype", default="fp16")
    parser.add_argument("--quiet", action="store_true", help="the summary only")
    args = parser.parse_args(argv)
    summaries = [report(m, args.size, args.dtype, args.quiet) for m in args.models.split(",")]
    print("\nbig: launches with >= SMs * 64^3 multiply-adds; then how many of them have a grid that covers")
    print("every SM with the default config, the most parallel config, and split-K; split: launches split;")
    print("all: every launch that covers every SM (default / most parallel / split-K)")
    for sms, _ in MACHINES:
        print(f"\n{sms} SMs\n{'model':14} {'launches':>8} {'big':>5} {'default':>7} {'most':>5} {'split-K':>7} "
              f"{'split':>5}  {'all':>12}")
        for s in summaries:
            r = s[sms]
            print(f"{s['model']:14} {s['launches']:8} {r['big']:5} {r['default']:7} {r['most']:5} {r['split']:7} "
                  f"{r['splits']:5}  {'/'.join(map(str, r['all'])):>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
