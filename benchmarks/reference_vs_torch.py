"""Time netdsl's NumPy reference backend against PyTorch CPU eager on the same model and weights.

    python benchmarks/reference_vs_torch.py [--model resnet18] [--batch 8] [--size 224]
                                            [--dtype f32] [--runs 5] [--threads N]
    python benchmarks/reference_vs_torch.py --model gpt2 --batch 1 --seq 128 --threads 2

Any example works: image models (``--size``: height = width, where the input has H and W) and sequence
models (gpt2, vit_b16, transformer, transformer_encoder, rnn, lstm_lm, seq2seq; ``--seq``: every
sequence dim, T and S; ``--dims T=128,S=64`` for each on its own). Inputs are
``netdsl.params.random_inputs``: standard normal floats, and token ids for integer inputs; a model with
several inputs (the transformer's src and tgt) gets them all, in order.

The PyTorch side is the model's independent twin (tests/twins.py: torch.nn.functional and, for the
transformer and the recurrent models, torch.nn's own modules; no grad), run with the same number of
threads as NumPy's BLAS. A twin that builds a torch.nn module (nn.Transformer, nn.LSTM, ...) builds it
and loads its weights once, in the warm-up, as the reference prepares nothing: only forward calls are
timed on both sides. Each side is warmed up once, then the two are timed in turns ``--runs`` times
each; the medians and the fastest runs, and their ratios, are printed (on a shared machine the fastest
runs are the ones least disturbed by other work).
Targets: reference / torch <= 2 (the sequence-models issue: GPT-2 small at T = 128, batch 1), and
<= 1.5 for MobileNetV2 and ResNet-18 at batch 8, one thread (``--threads 1``). Measured on a shared
2-core machine (medians of 9 interleaved runs; the ratio is what carries over, not the milliseconds):

    model                before   after (netdsl/ops/convolution.py, chunked pooling and batchnorm)
    mobilenet_v2         1.72x    0.87x
    resnet18             1.36x    1.20x
    mobilenet_v3_small   1.61x    1.11x   (before: the depthwise tap loop without the channels-last path)

("before" for the first two is the loop over the depthwise taps over whole tensors, with this script's
fix: NumPy's BLAS now gets ``--threads`` as torch does; it used to be imported first, with every core.)
``--profile`` prints the reference's time per op: MobileNetV2 spends about two thirds of its time in
conv2d (1x1 GEMMs and depthwise tap loops alike) and a fifth in batchnorm, which is memory-bound as
torch's is; ResNet-18 90% in conv2d's GEMMs (NumPy's OpenBLAS).
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
sys.path.insert(0, str(ROOT / "benchmarks"))


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


def _runs(seconds: list[float]) -> str:
    return ", ".join(f"{t * 1e3:.0f}" if t >= 0.01 else f"{t * 1e3:.2f}" for t in seconds)


class BuiltOnce:
    """While active, ``torch.nn.<name>(...)`` for the given module classes returns, for the k-th call within
    one run of a twin (``next_run()`` starts a run), the module built by the k-th call of the first run,
    whose ``load_state_dict`` loads the weights the first time only (the weights do not change between
    runs). So the twins that build nn.Transformer / nn.RNN / nn.LSTM / nn.GRU per call are timed on their
    forward alone."""

    NAMES = ("Transformer", "RNN", "LSTM", "GRU")

    def __init__(self, torch_nn, names=NAMES):
        self.nn, self.names = torch_nn, names
        self.built: list = []
        self.k = 0

    def next_run(self) -> None:
        self.k = 0

    def _factory(self, cls):
        def build(*args, **kwargs):
            k, self.k = self.k, self.k + 1
            if k == len(self.built):
                module = cls(*args, **kwargs)
                load = module.load_state_dict

                def load_once(*a, **kw):
                    object.__setattr__(module, "load_state_dict", lambda *a, **kw: None)
                    return load(*a, **kw)

                object.__setattr__(module, "load_state_dict", load_once)
                self.built.append(module)
            return self.built[k]
        return build

    def __enter__(self):
        self.saved = {name: getattr(self.nn, name) for name in self.names}
        for name, cls in self.saved.items():
            setattr(self.nn, name, self._factory(cls))
        return self

    def __exit__(self, *exc):
        for name, cls in self.saved.items():
            setattr(self.nn, name, cls)




def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18", help="an example name (examples/NAME.net)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224, help="input height = width (models with an H x W input)")
    p.add_argument("--seq", type=int, default=None, help="every sequence dim, T and S (default: the file's)")
    p.add_argument("--dims", default=None, help="sizes of the inputs' dims, e.g. T=128,S=64 (over the others)")
    p.add_argument("--dtype", default="f32", choices=["f32", "f64"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="threads for both sides (default: all cores)")
    p.add_argument("--profile", action="store_true", help="also print the reference's time per op kind")
    args = p.parse_args(argv)

    threads = args.threads or os.cpu_count() or 1
    # BLAS reads these when NumPy is first imported (when a caller imported it already, its BLAS keeps
    # the threads it started with: the report says so)
    blas_fixed = "numpy" in sys.modules
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)

    import numpy as np  # (after the variables: nothing above imports NumPy, so BLAS gets ``threads``)
    import torch
    from dims import model_dims

    import netdsl
    from twins import run_twin

    torch.set_num_threads(threads)
    graph = netdsl.load(ROOT / "examples" / f"{args.model}.net")
    print(f"{args.model}: making random weights ({netdsl.parameter_count(graph):,} parameters) ...", flush=True)
    weights = netdsl.random_weights(graph, seed=0)
    dims = model_dims(graph, args.batch, args.size, args.seq, args.dims)
    inputs = netdsl.params.random_inputs(graph, dims, seed=0)
    xs = tuple(inputs[v.name] for v in graph.inputs)
    tdtype = torch.float32 if args.dtype == "f32" else torch.float64

    # the twin gets its weights converted once, outside the timed region, like the reference's
    cast = {k: v.astype(np.float32 if args.dtype == "f32" else np.float64) for k, v in weights.items()}
    reuse = BuiltOnce(torch.nn)

    def ours():
        return netdsl.reference.run(graph, inputs, cast, dtype=args.dtype)

    def twin():
        reuse.next_run()
        return run_twin(args.model, cast, xs if len(xs) > 1 else xs[0], tdtype, check_all_used=False)

    with reuse:
        print(f"{args.model}: checking the outputs agree, then timing ...", flush=True)
        a, b = next(iter(ours().values())), twin()
        err = float(np.abs(a - b).max() / np.abs(b).max())
        ref_all, torch_all = _interleaved_times([ours, twin], args.runs)
    t_ref, t_torch = statistics.median(ref_all), statistics.median(torch_all)
    shapes = ", ".join(f"{v.name} {'x'.join(map(str, inputs[v.name].shape))} {inputs[v.name].dtype}"
                       for v in graph.inputs)
    print(f"{args.model} at {', '.join(f'{k}={v}' for k, v in sorted(dims.items()))} ({shapes}), {args.dtype}, "
          f"{threads} thread(s){' (NumPy imported before: its BLAS threads as they were)' if blas_fixed else ''}, "
          f"median of {args.runs} interleaved runs after a warm-up")
    print(f"  numpy {np.__version__}, torch {torch.__version__}")
    print(f"  reference (NumPy) : {t_ref * 1e3:9.1f} ms   runs: {_runs(ref_all)}")
    print(f"  torch CPU eager   : {t_torch * 1e3:9.1f} ms   runs: {_runs(torch_all)}")
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
