"""What the O1 pipeline buys on every example, against the floor, and how long the front end + O1 take.

    python benchmarks/fusion.py [--batch 1 8] [--runs 20] [--model resnet50 ...] [--dtype fp32 fp16]

Per example, batch size and dtype (inputs at the file's default size, 224 x 224 for the ImageNet models;
fp16 counts every floating-point value and weight in 2 bytes, token ids and masks in their own size):
nodes and kernel launches unfused -> fused (fusion bound), global-memory bytes unfused / fused / fusion
bound / floor and the ratios fused/unfused, fused/floor and fused/bound (netdsl.passes.cost), and the
memory plan's peak activation memory against one buffer per tensor.

The floor is the traffic no schedule can avoid: every weight, graph input and graph output once.
fused/floor is how far the fused graph is from it (the activations it still writes and reads back).
The fusion bound ("ideal" in netdsl.passes.cost) is the fusion rules' own best: every value whose one
reader is a same-shape pointwise op kept on chip; fused/bound is about 1 by design, it checks that the
passes do what the rules allow.

Then the time of the front end (parse + elaborate) plus the O1 pipeline, measured with
time.perf_counter after one warm-up (which builds the cached Lark parser): the minimum and the median
of ``--runs`` runs.

Targets (the fusion issue): for ResNet-50, fused/unfused bytes <= 0.45, fused/bound <= 1.10, one launch
per conv (with its batchnorm, activation and residual), and front end + O1 <= 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import netdsl
from netdsl.passes import run_pipeline
from netdsl.passes.cost import summarize

ROOT = Path(__file__).resolve().parent.parent


def _mb(n: int) -> str:
    return f"{n / 1e6:9.1f}"


def frontend_and_o1(path: Path, runs: int) -> tuple[list[float], list[float]]:
    netdsl.load(path)  # warm-up: builds and caches the parser
    total, passes = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        graph = netdsl.load(path)
        t1 = time.perf_counter()
        run_pipeline(graph, "O1")
        t2 = time.perf_counter()
        total.append(t2 - t0)
        passes.append(t2 - t1)
    return total, passes


SUMMARY_HEADER = (f"{'example':<13} {'N':>3} {'nodes':>9} {'launches (bound)':>17} {'MB unfused':>10} {'MB fused':>9} "
                  f"{'MB bound':>9} {'MB floor':>9} {'fused/unf':>9} {'fused/floor':>11} {'fused/bound':>11} "
                  f"{'peak MiB':>9} {'no reuse':>9}")

# the dtypes the table is made for: name -> bytes per floating-point element (None: the graph's own, f32)
DTYPES = {"fp32": None, "fp16": 2}


def fuse(graph, dims: dict[str, int], itemsize: int | None = None):
    """(the O1 graph at ``dims``, its cost summary against the unfused graph and the bounds), with
    floating-point values counted in ``itemsize`` bytes when given."""
    fused = run_pipeline(graph, "O1", dims=dims)
    return fused, summarize(graph, fused, dims, itemsize)


def summary_row(name: str, n: int, fused, s) -> str:
    """One line of SUMMARY_HEADER's table (shared with benchmarks/sequence_cost.py)."""
    plan = fused.annotations.get("memory")
    return (f"{name:<13} {n:>3} {f'{s.unfused_nodes}->{s.fused_nodes}':>9} "
            f"{f'{s.unfused.launches}->{s.fused.launches} ({s.ideal.launches})':>17} "
            f"{_mb(s.unfused.bytes):>10} {_mb(s.fused.bytes):>9} {_mb(s.ideal.bytes):>9} {_mb(s.floor.bytes):>9} "
            f"{s.fused_over_unfused:>9.3f} {s.fused_over_floor:>11.3f} {s.fused_over_ideal:>11.3f} "
            f"{plan.peak / 2**20 if plan else float('nan'):>9.2f} "
            f"{plan.no_reuse / 2**20 if plan else float('nan'):>9.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--model", nargs="*", help="example names (default: every examples/*.net)")
    parser.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    args = parser.parse_args(argv)
    paths = sorted((ROOT / "examples").glob("*.net"))
    if args.model:
        paths = [p for p in paths if p.stem in args.model]

    timings = {}
    results = {}
    graphs = {path.stem: netdsl.load(path) for path in paths}
    fused = {(name, n): run_pipeline(graph, "O1", dims={**graph.dim_defaults, "N": n})
             for name, graph in graphs.items() for n in args.batch}
    for dtype in args.dtype:
        print(f"\n{dtype} (floating-point values and weights in {DTYPES[dtype] or 4} bytes; the memory plan in the "
              "graph's dtype)")
        print(SUMMARY_HEADER)
        for (name, n), f in fused.items():
            graph = graphs[name]
            s = summarize(graph, f, {**graph.dim_defaults, "N": n}, DTYPES[dtype])
            results[(name, n, dtype)] = (graph, f, s)
            print(summary_row(name, n, f, s), flush=True)
    for path in paths:
        timings[path.stem] = frontend_and_o1(path, args.runs)

    print(f"\nfront end + O1 ({args.runs} runs after a warm-up; time.perf_counter)")
    print(f"{'example':<13} {'min ms':>8} {'median ms':>10} {'of which O1 (median)':>21}")
    for name, (total, passes) in timings.items():
        print(f"{name:<13} {min(total) * 1e3:>8.1f} {statistics.median(total) * 1e3:>10.1f} "
              f"{statistics.median(passes) * 1e3:>21.1f}")

    if "resnet50" in timings:
        print("\nResNet-50 targets")
        graph, fused, _ = next(iter(v for k, v in results.items() if k[0] == "resnet50"))
        convs = sum(n.op == "conv2d" for n in graph.nodes)
        fused_convs = sum(n.op == "fused_conv2d" for n in fused.nodes)
        left = sorted({n.op for n in fused.nodes} & {"batchnorm", "relu", "add", "conv2d"})
        ok = "ok" if fused_convs == convs and not left else "FAIL"
        print(f"  one launch per conv: {convs} convs -> {fused_convs} fused_conv2d nodes, "
              f"unfused batchnorm/relu/add left: {left or 'none'}  [{ok}]")
        for (name, n, dtype), (_, _, s) in results.items():
            if name == "resnet50":
                print(f"  N={n} {dtype}: fused/unfused bytes {s.fused_over_unfused:.3f} (<= 0.45: "
                      f"{'ok' if s.fused_over_unfused <= 0.45 else 'no'}), fused/bound {s.fused_over_ideal:.3f} "
                      f"(<= 1.10: {'ok' if s.fused_over_ideal <= 1.10 else 'no'}), fused/floor {s.fused_over_floor:.3f}")
        total, _ = timings["resnet50"]
        print(f"  front end + O1: median {statistics.median(total) * 1e3:.1f} ms, min {min(total) * 1e3:.1f} ms "
              f"(<= 50 ms: {'ok' if statistics.median(total) <= 0.050 else 'no'})")


if __name__ == "__main__":
    main()
