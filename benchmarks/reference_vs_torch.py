"""Time netdsl's NumPy reference backend against PyTorch CPU eager on the same model and weights.

    python benchmarks/reference_vs_torch.py [--model resnet18] [--batch 8] [--size 224]
                                            [--dtype f32] [--runs 5] [--threads N]

The PyTorch side is the model's independent twin (tests/twins.py: torch.nn.functional, no grad),
run with the same number of threads as NumPy's BLAS. Each side is warmed up once, then the two are
timed in turns ``--runs`` times each; the medians and the fastest runs, and their ratios, are printed
(on a shared machine the fastest runs are the ones least disturbed by other work).
Target: reference / torch <= 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _interleaved_times(fns, runs: int) -> list[list[float]]:
    """Warm each function up once, then time them in turns (a, b, a, b, ...), so that a change in the
    machine's load during the measurement falls on both sides alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18", help="an example name (examples/NAME.net)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224, help="input height = width")
    p.add_argument("--dtype", default="f32", choices=["f32", "f64"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="threads for both sides (default: all cores)")
    p.add_argument("--profile", action="store_true", help="also print the reference's time per op kind")
    args = p.parse_args(argv)

    threads = args.threads or os.cpu_count() or 1
    # BLAS reads these when NumPy is first imported
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)

    import numpy as np
    import torch

    import netdsl
    from twins import run_twin

    torch.set_num_threads(threads)
    graph = netdsl.load(ROOT / "examples" / f"{args.model}.net")
    weights = netdsl.random_weights(graph, seed=0)
    (inp,) = graph.inputs
    env = {**graph.dim_defaults, "N": args.batch, "H": args.size, "W": args.size}
    x = np.random.default_rng(0).standard_normal(inp.type.concrete(env)).astype(np.float32)
    tdtype = torch.float32 if args.dtype == "f32" else torch.float64

    # the twin gets its weights converted once, outside the timed region, like the reference's
    cast = {k: v.astype(np.float32 if args.dtype == "f32" else np.float64) for k, v in weights.items()}

    def ours():
        return netdsl.reference.run(graph, {inp.name: x}, cast, dtype=args.dtype)

    def twin():
        return run_twin(args.model, cast, x, tdtype, check_all_used=False)

    a, b = next(iter(ours().values())), twin()
    err = float(np.abs(a - b).max() / np.abs(b).max())

    ref_all, torch_all = _interleaved_times([ours, twin], args.runs)
    t_ref, t_torch = statistics.median(ref_all), statistics.median(torch_all)
    print(f"{args.model}, batch {args.batch}, {args.size}x{args.size}, {args.dtype}, {threads} thread(s), "
          f"median of {args.runs} interleaved runs after a warm-up")
    print(f"  numpy {np.__version__}, torch {torch.__version__}")
    print(f"  reference (NumPy) : {t_ref * 1e3:9.1f} ms   runs: {', '.join(f'{t * 1e3:.0f}' for t in ref_all)}")
    print(f"  torch CPU eager   : {t_torch * 1e3:9.1f} ms   runs: {', '.join(f'{t * 1e3:.0f}' for t in torch_all)}")
    print(f"  ratio reference / torch: {t_ref / t_torch:.2f}x (medians), {min(ref_all) / min(torch_all):.2f}x (fastest "
          f"runs)   max |diff| / max |out| = {err:.2e}")

    if args.profile:
        from collections import defaultdict

        from netdsl.ops import REGISTRY

        spent: dict[str, float] = defaultdict(float)
        originals = {}
        for name, op in REGISTRY.items():
            def timed(xs, params, attrs, _ref=op.reference, _name=name):
                t0 = time.perf_counter()
                out = _ref(xs, params, attrs)
                spent[_name] += time.perf_counter() - t0
                return out
            originals[name] = op
            object.__setattr__(op, "reference", timed)
        try:
            t0 = time.perf_counter()
            ours()
            total = time.perf_counter() - t0
        finally:
            for name, op in originals.items():
                object.__setattr__(op, "reference", op.reference.__defaults__[0])
        print(f"  reference per op (one run, {total * 1e3:.0f} ms):")
        for name, t in sorted(spent.items(), key=lambda kv: -kv[1]):
            print(f"    {name:<16} {t * 1e3:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
