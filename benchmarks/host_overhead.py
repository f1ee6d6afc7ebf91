"""Host work per kernel launch of a compiled model, with the kernels not run, against PyTorch eager's
host work per op on the same network, measured in the same run.

    python benchmarks/host_overhead.py [--models resnet50,mobilenet_v2,gpt2] [--repeat 20]

What it measures. A ``TritonModule`` is built on the CPU and called inside
``netdsl.kernels._host.recording``, which replaces every kernel launch with appending it to a list (the
launches are planned as for a GPU). What remains of a call is netdsl's own host work: binding the
inputs' shapes, staging them, checking and planning each launch (or repeating a prepared one), and the
layout copies and output copies torch makes (tiny tensors, one thread). Triton's own launch cost (its
argument binding and the driver call, which a CUDA graph also removes) is not in it. Three numbers
per model, each per launch:

- first call: the launch plan for the shape is built (memory plan, arena, every wrapper's checks,
  grid and config, the launches prepared);
- unprepared: every step planned again on an existing plan (what every call cost before launch plans);
- steady state: a later call of the same shape (inputs staged, prepared calls repeated, outputs copied).

The peer is PyTorch eager on the model's independent twin (tests/twins.py) on tiny CPU tensors, one
thread: its forward time divided by the aten ops it dispatches (counted by a dispatch mode in a separate
run). That is PyTorch's host cost per op plus the CPU arithmetic of tiny tensors, so it overstates the
dispatch cost alone (more so for the wide models: GPT-2's 768-wide GEMMs). (Meta tensors would avoid
the arithmetic, but many of torch's meta kernels are Python and cost far more than dispatch.) The ratio
is netdsl's steady state per launch over that; a second ratio is over PyTorch's cheapest op (an add of
one-element tensors), a floor for dispatch alone. CPU time of the process (one thread), medians of
``--repeat`` calls after one warm-up. Batch 1, small sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SIZES = {"resnet50": {"N": 1, "H": 32, "W": 32}, "mobilenet_v2": {"N": 1, "H": 32, "W": 32},
         "gpt2": {"N": 1, "T": 4}}


class _CountOps(TorchDispatchMode):
    """Counts the aten ops a region dispatches."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never under torch.compile: keep torch from importing its compiler on first use

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _median_seconds(fn, repeat: int) -> float:
    """Median CPU seconds of this process (one thread) per call: other work on the machine counts less."""
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def warm_process() -> None:
    """One-time work the first call of a process would otherwise pay (imports on first use: sympy by
    torch.broadcast_shapes, the kernels' modules): LeNet-5 measured once and dropped, so that the
    first-call numbers are a shape's planning, not the process's start-up."""
    torch.broadcast_shapes((1,), (1,))
    netdsl_costs("lenet5", 1)


def dispatch_floor(repeat: int) -> float:
    """µs of PyTorch eager's cheapest op: an add of two one-element CPU tensors into a third."""
    a, b, out = torch.ones(1), torch.ones(1), torch.empty(1)

    def hundred():
        for _ in range(100):
            torch.add(a, b, out=out)

    return _median_seconds(hundred, repeat) * 1e6 / 100


def netdsl_costs(name: str, repeat: int) -> dict[str, float]:
    """µs per launch: first call, unprepared, steady state; and the launch count."""
    from netdsl.backends.triton import TritonModule
    from netdsl.kernels._host import recording

    graph, fused = _graphs(name)
    weights = {k: np.zeros(spec.shape, np.float32) for k, spec in graph.used_params().items()}
    dims = {**graph.dim_defaults, **SIZES.get(name, {"N": 1})}
    inputs = {v.name: torch.zeros(tuple(v.type.concrete(dims)),
                                  dtype=torch.int64 if v.type.dtype.startswith("i") else torch.float32)
              for v in graph.inputs}
    module = TritonModule(fused, weights, dtype="fp16", device="cpu")

    with recording() as launches:
        t0 = time.process_time()
        module.run(inputs)
        first = time.process_time() - t0
    count = len(launches)
    (plan,) = module.launch_plans.values()

    def steady():
        with recording():
            module.run(inputs)

    def unprepared():
        with recording():
            plan.stage(inputs)
            module._execute(plan, inputs, trace=False, prepare=False)

    us = 1e6 / count
    return {"launches": count, "first": first * us, "unprepared": _median_seconds(unprepared, repeat) * us,
            "steady": _median_seconds(steady, repeat) * us, "as_is": len(plan.run_as_is[True])}


def _graphs(name: str):
    from netdsl.frontend import load
    from netdsl.passes import run_pipeline

    graph = load(ROOT / "examples" / f"{name}.net")
    return graph, run_pipeline(graph, "O1", log=lambda _: None)


class _TwinWeights:
    """The twins' weights (tests/twins.py ``Weights``) as tensors made once (small random values)."""

    def __init__(self, graph):
        self.tensors = {k: torch.randn(spec.shape) * 0.02 for k, spec in graph.used_params().items()}
        self.arrays = self.tensors  # what the twins ask membership of
        self.dtype = torch.float32

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def get(self, name: str):
        return self.tensors.get(name)


def eager_cost(name: str, repeat: int) -> tuple[float, int]:
    """PyTorch eager on the twin, tiny CPU tensors: µs per dispatched aten op, and the op count."""
    from twins import TWINS

    graph, _ = _graphs(name)
    dims = {**graph.dim_defaults, **SIZES.get(name, {"N": 1})}
    w = _TwinWeights(graph)
    xs = [torch.zeros(tuple(v.type.concrete(dims)), dtype=torch.int64) if v.type.dtype.startswith("i")
          else torch.randn(tuple(v.type.concrete(dims))) for v in graph.inputs]
    twin = TWINS[name]

    def forward():
        with torch.no_grad():
            twin(w, *xs)

    with _CountOps() as counter:
        forward()
    return _median_seconds(forward, repeat) * 1e6 / counter.count, counter.count


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet50,mobilenet_v2,gpt2")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    warm_process()
    floor = dispatch_floor(args.repeat)
    rows = []
    for name in args.models.split(","):
        print(f"[{name}] netdsl (launches recorded, not run) ...", flush=True)
        ours = netdsl_costs(name, args.repeat)
        print(f"[{name}] PyTorch eager twin (tiny CPU tensors) ...", flush=True)
        peer, ops = eager_cost(name, args.repeat)
        rows.append((name, ours, peer, ops))
    print()
    print("host CPU µs per launch (netdsl, kernels not run) and per aten op (PyTorch eager), same run;")
    print(f"PyTorch's cheapest op (one-element add, out=): {floor:.2f} µs")
    print(f"{'model':<14}{'launches':>9}{'run as is':>10}{'first':>9}{'unprepared':>11}{'steady':>8}"
          f"{'eager/op':>10}{'eager ops':>10}{'steady/eager':>13}{'steady/floor':>13}")
    for name, o, peer, ops in rows:
        print(f"{name:<14}{o['launches']:>9}{o['as_is']:>10}{o['first']:>9.1f}{o['unprepared']:>11.1f}"
              f"{o['steady']:>8.2f}{peer:>10.2f}{ops:>10}{o['steady'] / peer:>13.3f}{o['steady'] / floor:>13.2f}")


if __name__ == "__main__":
    main()
