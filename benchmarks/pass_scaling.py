"""How the compiler's time grows with the size of a model: parse + elaborate, and the O1 pipeline, on
chains of 10k to 100k nodes (``x -> (relu * 1000) * k``, the fused graph half as long: two activations
per fused_pointwise), and on a deep residual tower. Near-linear passes show a flat time per node.

    python benchmarks/pass_scaling.py [--sizes 10000,25000,50000,100000]

Prints, per size, the seconds and the microseconds per node of each phase, and at the end the ratio of
the largest size's time per node to the smallest's (1.0 is linear; a quadratic pass shows ~10 at 10x).
"""

from __future__ import annotations

import argparse
import gc
import time

import netdsl
from netdsl.passes import run_pipeline


def chain(n: int) -> str:
    return f"network chain {{\n    input x: f32[N, 8]\n    output x -> (relu * 1000) * {n // 1000}\n}}\n"


def residual_tower(n: int) -> str:
    """n/5 residual blocks of linear -> relu -> linear, + x, relu (five nodes each; blocks of 100 blocks, as
    a repetition count is at most 1000)."""
    blocks = max(1, n // 500)
    return ("block res() {\n    input x\n    output relu(x + (x -> linear(8) -> relu -> linear(8)))\n}\n"
            "block stage() {\n    input x\n    output x -> res * 100\n}\n"
            f"network tower {{\n    input x: f32[N, 8]\n    output x -> stage * {blocks}\n}}\n")


def timed(fn):
    gc.collect()
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,25000,50000,100000", help="node counts, comma-separated")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'model':<14} {'nodes':>7} {'load s':>7} {'O1 s':>7} {'load us/node':>13} {'O1 us/node':>11}")
    for name, make in (("chain", chain), ("residual", residual_tower)):
        per_node = []
        for n in sizes:
            graph, load = timed(lambda: netdsl.load_source(make(n), f"{name}.net"))
            _, o1 = timed(lambda: run_pipeline(graph, "O1", log=lambda _: None))
            nodes = len(graph.nodes)
            per_node.append(o1 / nodes)
            print(f"{name:<14} {nodes:>7} {load:>7.2f} {o1:>7.2f} {1e6 * load / nodes:>13.1f} "
                  f"{1e6 * o1 / nodes:>11.1f}", flush=True)
        print(f"{name:<14} O1 time per node, largest / smallest size: {per_node[-1] / per_node[0]:.2f} "
              "(1.0: linear)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
