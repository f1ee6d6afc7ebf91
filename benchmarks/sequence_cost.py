"""The cost report of the sequence examples: what O1 and the fused attention save.

    python benchmarks/sequence_cost.py [--model gpt2 transformer ...] [--batch 1] [--seq 1024]
                                       [--dims N=1,T=1024] [--nodes]

Default: GPT-2 small (examples/gpt2.net) at T = 1024, batch 1. Sizes: ``--dims`` first, then ``--batch``
(N) and ``--seq`` (every sequence dim the model's inputs have, T and S), then the file's defaults.
Everything comes from netdsl's cost model (netdsl.passes.cost: global-memory bytes read + written,
kernel launches, FLOPs), the same numbers as ``netdsl show --cost``. Per model:

1. the totals unfused -> fused (O1) -> fusion bound: nodes, launches, MB, fused/unfused and fused/ideal (the
   table of benchmarks/fusion.py), and the FLOPs;
2. where the fused graph's bytes go, by op;
3. the attention: each kind of ``scaled_dot_product_attention`` node (one kernel: the L x S scores
   stay on chip) against the same attention as matmul -> softmax -> matmul (three kernels: the scores
   are written, read, written and read again; a mask, if any, is a fourth kernel that adds it), costed by
   the same model -- a small graph written in netdsl, run through O1 and costed with ``node_costs`` --
   and what the fusion saves in the whole model;
4. with ``--nodes``: netdsl's per-node cost report (``cost_report``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from dims import model_dims
from fusion import SUMMARY_HEADER, fuse, summary_row

import netdsl
from netdsl.frontend import load_source
from netdsl.ir.types import DTYPES
from netdsl.passes import run_pipeline
from netdsl.passes.cost import Cost, cost_report, node_costs, total

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SEQUENCE_MODELS = ("gpt2", "vit_b16", "transformer", "transformer_encoder", "rnn", "lstm_lm", "seq2seq")
SDPA = "scaled_dot_product_attention"


def _mb(n: float) -> str:
    return f"{n / 1e6:10.1f}"


def _shape(shape) -> str:
    return "x".join(map(str, shape))




def cost_by_op(graph, dims) -> dict[str, tuple[int, Cost]]:
    """{op: (nodes, their summed cost)}, the costliest first."""
    costs = node_costs(graph, dims)
    by_op: dict[str, list] = defaultdict(lambda: [0, Cost()])
    for node in graph.nodes:
        entry = by_op[node.op]
        entry[0] += 1
        entry[1] = entry[1] + costs[node.outputs[0].name]
    return {op: (n, c) for op, (n, c) in sorted(by_op.items(), key=lambda kv: -kv[1][1].bytes)}


# ---------------------------------------------------------------------------------------------
# attention: the fused node against matmul -> softmax -> matmul
# ---------------------------------------------------------------------------------------------

def unfused_attention_source(q, k, v, mask=None, dtype: str = "f32") -> str:
    """netdsl text of softmax(q k^T (+ mask)) v as three (four) kernels, for concrete shapes. k comes in
    already transposed ([..., E, S]: the first matmul reads it strided, the bytes are the same), so that
    no transpose copy is counted; the scale 1/sqrt(E) and a causal mask are taken as computed inside the
    softmax kernel (they move no extra bytes)."""
    kt = (*k[:-2], k[-1], k[-2])
    inputs = [f"q: {dtype}[{', '.join(map(str, q))}]", f"kt: {dtype}[{', '.join(map(str, kt))}]",
              f"v: {dtype}[{', '.join(map(str, v))}]"]
    scores = "matmul(q, kt)"
    if mask is not None:
        inputs.append(f"mask: {dtype}[{', '.join(map(str, mask))}]")
        scores = f"({scores} + mask)"
    return (f"network attention_in_three_kernels {{\n    input {', '.join(inputs)}\n"
            f"    output out = matmul({scores} -> softmax(dim=-1), v)\n}}\n")


def unfused_attention_cost(q, k, v, mask=None, dtype: str = "f32") -> Cost:
    """What matmul -> softmax -> matmul moves for these shapes, by netdsl's cost model after O1."""
    graph = run_pipeline(load_source(unfused_attention_source(q, k, v, mask, dtype)), "O1", dims={})
    return total(node_costs(graph, {}))


def attention_table(graph, fused, dims) -> list[str]:
    """One line per kind of attention node (shapes, causal), then the model's fused bytes with and without
    the attention fusion."""
    after = node_costs(fused, dims)
    kinds: dict[tuple, list[Cost]] = defaultdict(list)
    for node in fused.nodes:
        if node.op != SDPA:
            continue
        shapes = tuple(tuple(x.type.concrete(dims)) for x in node.inputs)
        kinds[(shapes, node.inputs[0].type.dtype, node.attrs["causal"])].append(after[node.outputs[0].name])
    if not kinds:
        return ["  no attention nodes"]
    lines = [f"  {'q x k (x v)':<34} {'causal':>6} {'nodes':>5}  {'scores MB':>9}  {'fused: launches':>15} "
             f"{'MB':>8}  {'3 kernels: launches':>19} {'MB':>8}  {'saved MB':>9} {'ratio':>6}"]
    saved_bytes = saved_launches = 0
    for (shapes, dtype, causal), costs in kinds.items():
        q, k, v = shapes[:3]
        mask = shapes[3] if len(shapes) > 3 else None
        one = unfused_attention_cost(q, k, v, mask, dtype)
        fused_one = costs[0]
        n = len(costs)
        # the L x S scores of one node: what never reaches memory in the fused kernel
        scores = math.prod(np.broadcast_shapes(q[:-2], k[:-2])) * q[-2] * k[-2] * DTYPES[dtype]
        label = f"{_shape(q)} x {_shape(k)}" + ("" if v == k else f" ({_shape(v)})")
        lines.append(f"  {label:<34} {('yes' if causal else 'no'):>6} {n:>5}  {scores / 1e6:>9.1f}  "
                     f"{n * fused_one.launches:>15} {n * fused_one.bytes / 1e6:>8.1f}  {n * one.launches:>19} "
                     f"{n * one.bytes / 1e6:>8.1f}  {n * (one.bytes - fused_one.bytes) / 1e6:>9.1f} "
                     f"{one.bytes / fused_one.bytes:>5.1f}x")
        saved_bytes += n * (one.bytes - fused_one.bytes)
        saved_launches += n * (one.launches - fused_one.launches)
    whole = total(after)
    lines.append(f"  the whole fused model: {whole.bytes / 1e6:.1f} MB in {whole.launches} launches; with its "
                 f"attention as matmul -> softmax -> matmul: {(whole.bytes + saved_bytes) / 1e6:.1f} MB in "
                 f"{whole.launches + saved_launches} launches (the fusion saves {saved_bytes / 1e6:.1f} MB, "
                 f"{saved_bytes / (whole.bytes + saved_bytes):.0%} of that, and {saved_launches} launches)")
    return lines


# ---------------------------------------------------------------------------------------------

def report(name: str, dims: dict[str, int], nodes: bool = False, log=print) -> dict:
    """Print the report of one example; return its numbers (for tests and callers)."""
    t0 = time.perf_counter()
    log(f"{name}: loading examples/{name}.net ...", flush=True)
    graph = netdsl.load(EXAMPLES / f"{name}.net")
    fused, s = fuse(graph, dims)
    log(f"{name} at {', '.join(f'{k}={v}' for k, v in sorted(dims.items()))} "
        f"(front end + O1 + cost: {time.perf_counter() - t0:.2f} s)")
    log(SUMMARY_HEADER)
    log(summary_row(name, dims.get("N", 1), fused, s))
    log(f"  GFLOP {s.unfused.flops / 1e9:.2f} (unfused) = {s.fused.flops / 1e9:.2f} (fused); "
        f"bytes read {s.unfused.read / 1e6:.1f} -> {s.fused.read / 1e6:.1f} (fusion bound {s.ideal.read / 1e6:.1f}) MB, "
        f"written {s.unfused.written / 1e6:.1f} -> {s.fused.written / 1e6:.1f} (fusion bound "
        f"{s.ideal.written / 1e6:.1f}) MB")
    log(f"  fused/floor bytes {s.fused_over_floor:.3f}, fused/fusion bound {s.fused_over_ideal:.3f}, "
        f"fused/unfused {s.fused_over_unfused:.3f}, launches {s.unfused.launches} -> {s.fused.launches} "
        f"(fusion bound {s.ideal.launches})")

    log("\n  the fused graph's bytes by op")
    log(f"  {'op':<30} {'nodes':>5} {'launches':>8} {'GFLOP':>9} {'MB read':>10} {'MB written':>10} {'share':>6}")
    whole = max(1, s.fused.bytes)
    for op, (n, c) in cost_by_op(fused, dims).items():
        if c.bytes or c.launches:
            log(f"  {op:<30} {n:>5} {c.launches:>8} {c.flops / 1e9:>9.2f} {_mb(c.read)} {_mb(c.written)} "
                f"{c.bytes / whole:>6.1%}")

    log("\n  attention: the fused node against matmul -> softmax -> matmul (totals over the nodes of each kind)")
    for line in attention_table(graph, fused, dims):
        log(line)
    if nodes:
        log("")
        log(cost_report(graph, fused, dims))
    log("", flush=True)
    return {"summary": s, "graph": graph, "fused": fused}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", default=["gpt2"], help=f"example names (sequence examples: "
                   f"{', '.join(SEQUENCE_MODELS)}; any examples/NAME.net works)")
    p.add_argument("--batch", type=int, default=1, help="N (default 1)")
    p.add_argument("--seq", type=int, default=None, help="every sequence dim, T and S (default: the file's)")
    p.add_argument("--dims", default=None, help="sizes, e.g. N=1,T=1024 (over --batch and --seq)")
    p.add_argument("--nodes", action="store_true", help="also print the cost of every fused node")
    args = p.parse_args(argv)
    for name in args.model:
        if not (EXAMPLES / f"{name}.net").exists():
            p.error(f"no example `{name}` (examples/{name}.net)")
    for name in args.model:
        graph = netdsl.load(EXAMPLES / f"{name}.net")
        report(name, model_dims(graph, batch=args.batch, seq=args.seq, dims_text=args.dims), args.nodes,
               log=lambda *a, flush=False: print(*a, flush=flush))
    return 0


if __name__ == "__main__":
    sys.exit(main())
