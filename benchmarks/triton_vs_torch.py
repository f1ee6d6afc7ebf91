"""Time netdsl's compiled Triton models against PyTorch eager and torch.compile on a CUDA GPU.

    python benchmarks/triton_vs_torch.py [--model resnet50 ...] [--dtype fp16 ...] [--batch 8]
                                         [--size 224] [--runs 50] [--warmup 10] [--nchw]
    python benchmarks/triton_vs_torch.py --selfcheck      # any machine: the PyTorch side vs the reference

For every example (examples/*.net) and dtype -- fp32 exact, fp32 with TF32 allowed ("tf32"), fp16 and
bf16 -- three implementations of the same network with the same weights run the same input:

* netdsl:   ``netdsl.compile(model, dtype=..., allow_tf32=...)`` (fused Triton kernels, NCHW in and out);
* eager:    the network's unfused IR run op by op with ``torch.nn.functional`` (``TorchGraph`` below: a
            generic IR -> PyTorch interpreter, so every .net file has a PyTorch twin); cuDNN / cuBLAS;
* compiled: ``torch.compile`` of that same module (Inductor).

The PyTorch side runs channels-last (NHWC, what cuDNN is fastest with; ``--nchw`` for contiguous NCHW)
with TF32 on or off to match. Each implementation is warmed up (netdsl autotunes its kernels, Inductor
compiles), then timed over ``--runs`` forward calls between ``torch.cuda.synchronize()`` calls, in
turns (netdsl, eager, compiled, netdsl, ...) so that a change in the GPU's clocks falls on all alike.
Printed: the median milliseconds per forward call, and netdsl's time relative to eager and to
torch.compile (below 1: netdsl is faster), plus the largest difference between netdsl's and eager's
outputs relative to the output's scale (a sanity check; ``netdsl check`` is the real one).

On a machine without a CUDA GPU there is nothing to time: the script says so and exits with 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DTYPES = {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "fp16": (torch.float16, False),
          "bf16": (torch.bfloat16, False)}


# ---------------------------------------------------------------------------------------------
# a PyTorch twin of any (unfused) netdsl graph
# ---------------------------------------------------------------------------------------------

def _activation(name: str, attrs, x, slope=None):
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.relu6(x)
    if name == "leaky_relu":
        return F.leaky_relu(x, attrs["alpha"])
    if name == "prelu":
        return F.prelu(x, slope)
    if name == "rrelu":  # inference: the mean slope
        return F.leaky_relu(x, (attrs["lower"] + attrs["upper"]) / 2)
    if name == "elu":
        return F.elu(x, attrs["alpha"])
    if name == "selu":
        return F.selu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "softsign":
        return F.softsign(x)
    if name == "softplus":
        return F.softplus(x, attrs["beta"], attrs["threshold"])
    if name == "gelu":
        return F.gelu(x, approximate=attrs["approximate"])
    if name == "silu":
        return F.silu(x)
    if name == "hardswish":
        return F.hardswish(x)
    if name == "hardsigmoid":
        return F.hardsigmoid(x)
    if name == "mish":
        return F.mish(x)
    raise NotImplementedError(f"no PyTorch twin for activation `{name}`")


class TorchGraph(torch.nn.Module):
    """Runs an unfused netdsl IR graph with torch.nn.functional; weights are buffers (so ``.to()`` and
    torch.compile see them)."""

    def __init__(self, graph, weights):
        super().__init__()
        from netdsl.ops.nn import conv_padding

        self.graph = graph
        self._conv_padding = conv_padding
        self._names = {}
        for i, name in enumerate(sorted(graph.used_params())):
            key = f"p{i}"
            self._names[name] = key
            self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(weights[name], dtype=np.float32)))

    def _p(self, node, role):
        name = node.params.get(role)
        return None if name is None else getattr(self, self._names[name])

    def _node(self, node, xs):
        op, a = node.op, node.attrs
        x = xs[0]
        if op == "conv2d":
            return F.conv2d(x, self._p(node, "weight"), self._p(node, "bias"), a["stride"], self._conv_padding(a),
                            a["dilation"], a["groups"])
        if op == "linear":
            return F.linear(x, self._p(node, "weight"), self._p(node, "bias"))
        if op == "batchnorm":
            return F.batch_norm(x, self._p(node, "running_mean"), self._p(node, "running_var"),
                                self._p(node, "weight"), self._p(node, "bias"), False, 0.0, a["eps"])
        if op == "layernorm":
            return F.layer_norm(x, x.shape[-1:], self._p(node, "weight"), self._p(node, "bias"), a["eps"])
        if op == "groupnorm":
            return F.group_norm(x, a["groups"], self._p(node, "weight"), self._p(node, "bias"), a["eps"])
        if op == "maxpool2d":
            return F.max_pool2d(x, a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"], a["dilation"],
                                a["ceil_mode"])
        if op == "avgpool2d":
            return F.avg_pool2d(x, a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"], a["ceil_mode"],
                                a["count_include_pad"])
        if op == "global_avgpool":
            return F.adaptive_avg_pool2d(x, 1)
        if op == "softmax":
            return F.softmax(x, a["dim"])
        if op == "log_softmax":
            return F.log_softmax(x, a["dim"])
        if op == "dropout":
            return x
        if op == "flatten":
            return torch.flatten(x, a["start_dim"])
        if op == "add":
            return x + xs[1]
        if op == "mul":
            return x * xs[1]
        if op == "concat":
            return torch.cat(xs, a["dim"])
        return _activation(op, a, x, self._p(node, "weight"))

    def forward(self, *inputs):
        env = {v.name: x for v, x in zip(self.graph.inputs, inputs)}
        for node in self.graph.nodes:
            env[node.output.name] = self._node(node, [env[v.name] for v in node.inputs])
        outs = [env[v.name] for v in self.graph.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------

def _timed(fns, runs: int, warmup: int) -> list[list[float]]:
    """Warm every function up, then time them in turns; seconds per call, synchronised."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, ts in zip(fns, times):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
    return times


def _max_rel_diff(a, b) -> float:
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def bench_one(name: str, dtype_key: str, args) -> str:
    import netdsl
    from netdsl.ir.sizes import concrete_dims

    torch_dtype, tf32 = DTYPES[dtype_key]
    graph = netdsl.load(EXAMPLES / f"{name}.net")
    weights = netdsl.init_weights(graph, seed=0)
    over = {"N": args.batch}
    if args.size:
        over.update(H=args.size, W=args.size)
    dims = concrete_dims(graph, {k: v for k, v in over.items() if any(k in x.type.symbols() for x in graph.inputs)})
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(v.type.concrete(dims), generator=gen).to("cuda", torch_dtype) for v in graph.inputs]

    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    ours = netdsl.compile(graph, dtype="fp32" if dtype_key == "tf32" else dtype_key, weights=weights,
                          allow_tf32=tf32)
    eager = TorchGraph(graph, weights).to("cuda", torch_dtype).eval()
    torch_inputs = inputs
    if not args.nchw:
        eager = eager.to(memory_format=torch.channels_last)
        torch_inputs = [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs]
    compiled = torch.compile(eager)

    with torch.inference_mode():
        reference = eager(*torch_inputs)
        got = ours(*inputs)
        if isinstance(got, tuple):
            got, reference = got[0], reference[0]
        diff = _max_rel_diff(got, reference)
        fns = [lambda: ours(*inputs), lambda: eager(*torch_inputs)]
        try:
            compiled(*torch_inputs)
            fns.append(lambda: compiled(*torch_inputs))
        except Exception as e:  # noqa: BLE001 - report and go on without Inductor
            print(f"  ({name} {dtype_key}: torch.compile failed: {type(e).__name__}: {e})", file=sys.stderr)
        times = _timed(fns, args.runs, args.warmup)
    ms = [statistics.median(t) * 1e3 for t in times]
    cols = [f"{name:<14} {dtype_key:<5} {ms[0]:>9.3f} {ms[1]:>9.3f}"]
    cols.append(f"{ms[2]:>9.3f}" if len(ms) > 2 else f"{'n/a':>9}")
    cols.append(f"{ms[0] / ms[1]:>10.2f}")
    cols.append(f"{ms[0] / ms[2]:>10.2f}" if len(ms) > 2 else f"{'n/a':>10}")
    cols.append(f"{diff:>10.1e}")
    return " ".join(cols)


# ---------------------------------------------------------------------------------------------
# the PyTorch twin against netdsl's reference backend (no GPU needed)
# ---------------------------------------------------------------------------------------------

def selfcheck(models) -> int:
    import netdsl
    from netdsl.backends import reference
    from netdsl.ir.sizes import concrete_dims

    small = {"lenet5": None, "mlp": None, "alexnet": None, "vgg11": None}  # fixed sizes
    worst = 0.0
    for name in models:
        graph = netdsl.load(EXAMPLES / f"{name}.net")
        weights = netdsl.random_weights(graph, seed=0)
        over = {"N": 1} if name in small else {"N": 2, "H": 64, "W": 64}
        dims = concrete_dims(graph, over)
        rng = np.random.default_rng(0)
        inputs = {v.name: rng.standard_normal(v.type.concrete(dims)).astype(np.float32) for v in graph.inputs}
        ref = reference.run(graph, inputs, weights)
        with torch.no_grad():
            got = TorchGraph(graph, weights)(*[torch.from_numpy(x) for x in inputs.values()])
        got = got if isinstance(got, tuple) else (got,)
        for r, g in zip(ref.values(), got):
            d = float(np.abs(g.numpy() - r).max() / max(np.abs(r).max(), 1e-30))
            worst = max(worst, d)
            print(f"{name:<14} {tuple(r.shape)}  max |torch - reference| / max |reference| = {d:.1e}")
    ok = worst < 1e-4
    print("OK: the PyTorch twin computes what the reference backend does" if ok else "FAIL: the twin disagrees")
    return 0 if ok else 1


def main(argv=None) -> int:
    names = sorted(p.stem for p in EXAMPLES.glob("*.net"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", default=names, choices=names)
    p.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=None, help="input height = width (default: the file's)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--nchw", action="store_true", help="run the PyTorch side in NCHW instead of channels-last")
    p.add_argument("--selfcheck", action="store_true",
                   help="check the PyTorch twin against netdsl's reference backend (CPU) and exit")
    args = p.parse_args(argv)

    if args.selfcheck:
        return selfcheck(args.model)
    if not torch.cuda.is_available():
        print("benchmarks/triton_vs_torch.py times GPU kernels and needs a CUDA GPU; this machine has none "
              "(torch.cuda.is_available() is False), so there is nothing to time.")
        print("(`python benchmarks/triton_vs_torch.py --selfcheck` checks the PyTorch side on the CPU; "
              "`netdsl check` checks the kernels under Triton's interpreter.)")
        return 0

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; batch {args.batch}, "
          f"{'NCHW' if args.nchw else 'channels-last'} PyTorch, median of {args.runs} runs after {args.warmup} "
          "warm-up calls (ms per forward call)")
    print(f"{'model':<14} {'dtype':<5} {'netdsl':>9} {'eager':>9} {'compiled':>9} {'/eager':>10} {'/compiled':>10} "
          f"{'max diff':>10}")
    for name in args.model:
        for dtype_key in args.dtype:
            try:
                print(bench_one(name, dtype_key, args), flush=True)
            except torch.cuda.OutOfMemoryError:
                print(f"{name:<14} {dtype_key:<5} out of GPU memory at batch {args.batch}")
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
