"""Time netdsl's compiled Triton models against PyTorch eager and torch.compile on a CUDA GPU.

    python benchmarks/triton_vs_torch.py [--model resnet50 ...] [--dtype fp16 ...] [--batch 8]
                                         [--size 224] [--seq 1024] [--dims T=1024,S=64]
                                         [--runs 50] [--warmup 10] [--nchw]
    python benchmarks/triton_vs_torch.py --model gpt2 --batch 1 --seq 1024 --dtype fp16 bf16
    python benchmarks/triton_vs_torch.py --selfcheck      # any machine: the PyTorch side vs the reference

For every example (examples/*.net: the CNNs and the sequence models gpt2, vit_b16, transformer,
transformer_encoder, rnn, lstm_lm, seq2seq) and dtype -- fp32 exact, fp32 with TF32 allowed ("tf32"),
fp16 and bf16 -- three implementations of the same network with the same weights run the same inputs
(``netdsl.params.random_inputs``: normal floats, token ids for integer inputs; every input, in order):

* netdsl:   ``netdsl.compile(model, dtype=..., allow_tf32=...)`` (fused Triton kernels, NCHW in and out);
* eager:    the network's unfused IR run op by op with PyTorch (``TorchGraph`` below: a generic IR ->
            PyTorch interpreter, so every .net file has a PyTorch twin); cuDNN / cuBLAS, attention by
            ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels), the recurrent layers
            by torch.nn's own ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (cuDNN);
* compiled: ``torch.compile(eager, fullgraph=True)`` (Inductor) in two modes: "max-autotune" (autotuned
            Triton templates, CUDA graphs) and "reduce-overhead" (CUDA graphs); where the graph cannot be
            captured whole (torch.compile does not trace nn.LSTM and friends), ``fullgraph=False`` instead,
            and its time is marked ``*``.

Sizes: ``--batch`` (N), ``--size`` (H = W, image models), ``--seq`` (every sequence dim: T, S), ``--dims``
for any dim; otherwise the file's defaults (GPT-2: T = 1024). netdsl takes and returns NCHW (and pays its
conversions to NHWC inside); PyTorch eager runs both ways: on the same NCHW tensors (cuDNN picks its
kernels for that layout) and channels-last (what cuDNN is fastest with), so each layout's cost is shown.
TF32 is on or off on every side alike, and netdsl captures CUDA graphs as the compiled modes do. Each
implementation is warmed up (netdsl autotunes its kernels, Inductor compiles), then every forward call is
timed with CUDA events, in turns (netdsl, eager, compiled, netdsl, ...) so that a change in the GPU's
clocks falls on all alike. Printed per model and dtype: netdsl's min / median / max milliseconds, the
median of every PyTorch side, netdsl's median over the fastest PyTorch side's (below 1: netdsl is
faster), and the agreement: each side's output against PyTorch eager in fp32 with TF32 off, as the largest
difference relative to the output's scale. netdsl must be no further off than twice PyTorch's own
difference in the same dtype, or within netdsl's tolerance for that dtype (``netdsl.tolerances``);
otherwise the row says FAIL and the script exits with 1.

On a machine without a CUDA GPU there is nothing to time: the script says so and exits with 0.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dims import model_dims

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


RECURRENT = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def _recurrent_module(node, weights) -> torch.nn.Module:
    """torch.nn's own RNN / LSTM / GRU (batch_first) for a netdsl recurrent node, holding its weights (the
    node's parameter roles are torch's state_dict names)."""
    a = node.attrs
    extra = {"nonlinearity": a["nonlinearity"]} if node.op == "rnn" else {}
    module = RECURRENT[node.op](node.inputs[0].type.shape[-1], a["hidden_size"], a["num_layers"], bias=a["bias"],
                                batch_first=True, bidirectional=a["bidirectional"], **extra)
    module.load_state_dict({role: torch.from_numpy(np.asarray(weights[name], dtype=np.float32))
                            for role, name in node.params.items()})
    return module.requires_grad_(False)


def _sinusoids(length: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """The positional encoding of "Attention Is All You Need": sin at even features, cos at odd ones."""
    pos = torch.arange(length, dtype=torch.float32, device=like.device)[:, None]
    angle = pos * torch.exp(torch.arange(0, d, 2, dtype=torch.float32, device=like.device) * (-math.log(10000.0) / d))
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(length, d).to(like.dtype)


class TorchGraph(torch.nn.Module):
    """Runs an unfused netdsl IR graph with PyTorch; weights are buffers (so ``.to()`` and torch.compile see
    them), a recurrent layer is a torch.nn module. ``dims`` binds the symbolic sizes in attributes
    (``reshape(N, T, 8, -1)``, ``wpe[:T]``) once, here, so that forward is plain tensor code: a graph with
    such attributes runs at those sizes only."""

    def __init__(self, graph, weights, dims=None):
        super().__init__()
        from netdsl.backends.reference import bind_attrs_to_sizes
        from netdsl.ops.nn import conv_pads

        self.graph = graph
        self._conv_pads = conv_pads
        self._attrs = [bind_attrs_to_sizes(n.attrs, dims) if dims else n.attrs for n in graph.nodes]
        self._names = {}
        recurrent = {n.op for n in graph.nodes} & set(RECURRENT)
        own = {name for n in graph.nodes if n.op in recurrent for name in n.params.values()}
        for i, name in enumerate(sorted(set(graph.used_params()) - own)):
            key = f"p{i}"
            self._names[name] = key
            self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(weights[name], dtype=np.float32)))
        self.recurrent = torch.nn.ModuleDict({f"r{i}": _recurrent_module(n, weights)
                                              for i, n in enumerate(graph.nodes) if n.op in RECURRENT})

    def _p(self, node, role):
        name = node.params.get(role)
        return None if name is None else getattr(self, self._names[name])

    def _node(self, i, node, xs):
        op, a = node.op, self._attrs[i]
        x = xs[0] if xs else None
        if op == "conv2d":
            top, left, bottom, right = self._conv_pads(a, tuple(x.shape[2:]))
            if (top, left) != (bottom, right):  # torch pads both ends alike: pad first, asymmetrically
                x, top, left = F.pad(x, (left, right, top, bottom)), 0, 0
            return F.conv2d(x, self._p(node, "weight"), self._p(node, "bias"), a["stride"], (top, left),
                            a["dilation"], a["groups"])
        if op == "conv_transpose2d":
            return F.conv_transpose2d(x, self._p(node, "weight"), self._p(node, "bias"), a["stride"], a["padding"],
                                      a["output_padding"], a["groups"], a["dilation"])
        if op == "linear":
            return F.linear(x, self._p(node, "weight"), self._p(node, "bias"))
        if op == "matmul":
            return torch.matmul(x, xs[1])
        if op == "batchnorm":
            return F.batch_norm(x, self._p(node, "running_mean"), self._p(node, "running_var"),
                                self._p(node, "weight"), self._p(node, "bias"), False, 0.0, a["eps"])
        if op == "layernorm":
            return F.layer_norm(x, x.shape[-a["dims"]:], self._p(node, "weight"), self._p(node, "bias"), a["eps"])
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
        if op == "adaptive_avgpool2d":
            return F.adaptive_avg_pool2d(x, a["output_size"])
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
        if op == "affine":
            return x * a["scale"] + a["shift"]
        if op == "concat":
            return torch.cat(xs, a["dim"])
        # sequence models
        if op == "embedding":
            return F.embedding(x, self._p(node, "weight"))
        if op == "parameter":
            return self._p(node, "value")
        if op == "positional_encoding":
            return x + _sinusoids(x.shape[-2], x.shape[-1], x)
        if op == "scaled_dot_product_attention":
            return F.scaled_dot_product_attention(xs[0], xs[1], xs[2], attn_mask=xs[3] if len(xs) > 3 else None,
                                                  is_causal=a["causal"], scale=a["scale"])
        if op in RECURRENT:
            state = None if len(xs) == 1 else (xs[1] if op != "lstm" else (xs[1], xs[2]))
            out, h = self.recurrent[f"r{i}"](x, state)
            return (out, *h) if op == "lstm" else (out, h)
        if op == "chunk":
            return x.chunk(a["chunks"], a["dim"])
        if op == "split":
            return x.split(a["split_size_or_sections"], a["dim"])
        if op == "slice":
            return x[(slice(None),) * (a["dim"] % x.dim()) + (slice(a["start"], a["end"], a["step"]),)]
        if op == "select":
            return x.select(a["dim"], a["index"])
        if op == "transpose":
            return x.transpose(a["dim0"], a["dim1"])
        if op == "permute":
            return x.permute(*a["dims"])
        if op == "reshape":
            return x.reshape(*a["shape"])
        if op == "unflatten":
            return x.unflatten(a["dim"], a["sizes"])
        if op == "expand":
            return x.expand(*a["sizes"])
        if op == "unsqueeze":
            return x.unsqueeze(a["dim"])
        if op == "squeeze":
            return x.squeeze(a["dim"])
        return _activation(op, a, x, self._p(node, "weight"))

    def forward(self, *inputs):
        env = {v.name: x for v, x in zip(self.graph.inputs, inputs)}
        for i, node in enumerate(self.graph.nodes):
            out = self._node(i, node, [env[v.name] for v in node.inputs])
            if len(node.outputs) == 1:
                env[node.outputs[0].name] = out
            else:
                env.update((v.name, y) for v, y in zip(node.outputs, out))
        outs = [env[v.name] for v in self.graph.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------

def _timed(fns, runs: int, warmup: int) -> list[list[float]]:
    """Warm every function up, then time them in turns: seconds per call, from CUDA events recorded on
    either side of it (the GPU's time for the call, gaps between its launches included)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, ts in zip(fns, times):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            ts.append(start.elapsed_time(end) / 1e3)
    return times


def _max_rel_diff(a, b) -> float:
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))




def example_inputs(graph, dims, device, torch_dtype=torch.float32, seed: int = 0) -> list[torch.Tensor]:
    """The graph's inputs in order (``netdsl.params.random_inputs``): floats in ``torch_dtype``, token ids
    as int64, on ``device``."""
    from netdsl.params import random_inputs

    arrays = random_inputs(graph, dims, seed)
    out = []
    for v in graph.inputs:
        x = torch.from_numpy(arrays[v.name]).to(device)
        out.append(x.to(torch_dtype) if x.is_floating_point() else x.long())
    return out


def _compiled(module, example, name: str, mode: str | None = None):
    """(torch.compile(module, fullgraph=True, mode=mode), False), or, where the whole graph cannot be
    captured, (torch.compile(module, mode=mode), True); (None, False) where torch.compile fails."""
    try:
        torch._dynamo.reset()
        compiled = torch.compile(module, fullgraph=True, mode=mode)
        compiled(*example)
        return compiled, False
    except Exception as e:  # noqa: BLE001 - report, then try with graph breaks
        print(f"  ({name}: torch.compile(fullgraph=True) failed: {type(e).__name__}: {str(e).splitlines()[0]}; "
              "timing torch.compile with graph breaks instead, marked *)", file=sys.stderr, flush=True)
    try:
        torch._dynamo.reset()
        compiled = torch.compile(module, mode=mode)
        compiled(*example)
        return compiled, True
    except Exception as e:  # noqa: BLE001 - report and go on without Inductor
        print(f"  ({name}: torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0]})", file=sys.stderr,
              flush=True)
        return None, False


def setup(name: str, dtype_key: str, dims: dict[str, int], device):
    """(netdsl's module, the eager TorchGraph, the inputs) for one example at ``dims`` on ``device``; the
    same weights (seed 0) on both sides, the same NCHW inputs."""
    import netdsl

    torch_dtype, tf32 = DTYPES[dtype_key]
    graph = netdsl.load(EXAMPLES / f"{name}.net")
    weights = netdsl.init_weights(graph, seed=0)
    inputs = example_inputs(graph, dims, device, torch_dtype)
    ours = netdsl.compile(graph, dtype="fp32" if dtype_key == "tf32" else dtype_key, weights=weights,
                          allow_tf32=tf32)
    eager = TorchGraph(graph, weights, dims).to(device, torch_dtype).eval()
    return ours, eager, inputs


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def agreement(ours_out, torch_out, exact_out, dtype_key: str) -> tuple[float, float, bool]:
    """(netdsl's and PyTorch's difference from PyTorch in fp32, relative to its scale; whether netdsl's is
    within twice PyTorch's own or within netdsl's tolerance for the dtype)."""
    from netdsl.tolerances import TOLERANCES

    tol = TOLERANCES["fp16" if dtype_key == "tf32" else dtype_key]  # TF32 keeps fp16's 10-bit mantissa
    ours, theirs = _max_rel_diff(ours_out, exact_out), _max_rel_diff(torch_out, exact_out)
    return ours, theirs, ours <= max(2 * theirs, tol.rtol)


SIDES = ("eager NCHW", "eager NHWC", "max-autotune", "reduce-overhead")


def bench_one(name: str, dtype_key: str, args) -> tuple[str, bool]:
    """One row of the table, and whether netdsl's output agrees."""
    import netdsl

    _, tf32 = DTYPES[dtype_key]
    dims = model_dims(netdsl.load(EXAMPLES / f"{name}.net"), args.batch, args.size, args.seq, args.dims)
    print(f"  ({name} {dtype_key} at {', '.join(f'{k}={v}' for k, v in sorted(dims.items()))}: compiling ...)",
          file=sys.stderr, flush=True)
    with torch.inference_mode():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        ours, eager, inputs = setup(name, dtype_key, dims, "cuda")
        exact = TorchGraph(eager.graph, netdsl.init_weights(eager.graph, seed=0), dims).to("cuda").eval()
        exact_out = _first(exact(*[x.float() if x.is_floating_point() else x for x in inputs]))
        del exact
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        channels_last = copy.deepcopy(eager).to(memory_format=torch.channels_last)
        cl_inputs = [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs]
        ours_err, torch_err, ok = agreement(_first(ours(*inputs)), _first(eager(*inputs)), exact_out, dtype_key)
        sides = {"eager NCHW": lambda: eager(*inputs), "eager NHWC": lambda: channels_last(*cl_inputs)}
        breaks = set()
        for mode in () if args.no_compile else ("max-autotune", "reduce-overhead"):
            compiled, broke = _compiled(channels_last, cl_inputs, f"{name} {dtype_key}", mode)
            if compiled is not None:
                sides[mode] = (lambda c: lambda: c(*cl_inputs))(compiled)
                if broke:
                    breaks.add(mode)
        times = _timed([lambda: ours(*inputs), *sides.values()], args.runs, args.warmup)
    ms = [[t * 1e3 for t in ts] for ts in times]
    med = {side: statistics.median(t) for side, t in zip(sides, ms[1:])}
    best = min(med.values())
    cols = [f"{name:<19} {dtype_key:<5} {min(ms[0]):>8.3f} {statistics.median(ms[0]):>8.3f} {max(ms[0]):>8.3f}"]
    for side in SIDES:
        cols.append(f"{med[side]:>9.3f}{'*' if side in breaks else ' '}" if side in med else f"{'n/a':>10}")
    cols.append(f"{statistics.median(ms[0]) / best:>8.2f}")
    cols.append(f"{ours_err:>9.1e} {torch_err:>9.1e}  {'ok' if ok else 'FAIL'}")
    return " ".join(cols), ok


# ---------------------------------------------------------------------------------------------
# the PyTorch twin against netdsl's reference backend (no GPU needed)
# ---------------------------------------------------------------------------------------------

def selfcheck(models, seq: int = 7) -> int:
    """TorchGraph against netdsl's reference backend on the CPU, for each example at a small size: batch 2
    (1 for the fixed-size ones), 64 x 64 images where the size is free, sequences of ``seq``."""
    import netdsl
    from netdsl.backends import reference

    small = {"lenet5", "mlp", "alexnet", "vgg11", "vit_b16"}  # fixed sizes, some large
    worst = 0.0
    for name in models:
        graph = netdsl.load(EXAMPLES / f"{name}.net")
        weights = netdsl.random_weights(graph, seed=0)
        dims = model_dims(graph, 1 if name in small else 2, 64, seq)
        inputs = example_inputs(graph, dims, "cpu")
        ref = reference.run(graph, [x.numpy() for x in inputs], weights)
        with torch.no_grad():
            got = TorchGraph(graph, weights, dims)(*inputs)
        got = got if isinstance(got, tuple) else (got,)
        for r, g in zip(ref.values(), got):
            d = float(np.abs(g.numpy() - r).max() / max(np.abs(r).max(), 1e-30))
            worst = max(worst, d)
            print(f"{name:<19} {tuple(r.shape)}  max |torch - reference| / max |reference| = {d:.1e}", flush=True)
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
    p.add_argument("--seq", type=int, default=None, help="every sequence dim, T and S (default: the file's)")
    p.add_argument("--dims", default=None, help="sizes of the inputs' dims, e.g. T=1024,S=64 (over the others)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-compile", action="store_true", help="leave out torch.compile (netdsl against eager only)")
    p.add_argument("--selfcheck", action="store_true",
                   help="check the PyTorch twin against netdsl's reference backend (CPU) and exit")
    args = p.parse_args(argv)

    if args.selfcheck:
        return selfcheck(args.model, args.seq or 7)
    if not torch.cuda.is_available():
        print("benchmarks/triton_vs_torch.py times GPU kernels and needs a CUDA GPU; this machine has none "
              "(torch.cuda.is_available() is False), so there is nothing to time.")
        print("(`python benchmarks/triton_vs_torch.py --selfcheck` checks the PyTorch side on the CPU; "
              "`netdsl check` checks the kernels under Triton's interpreter.)")
        return 0

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; batch {args.batch}; ms per forward call "
          f"from CUDA events, {args.runs} runs after {args.warmup} warm-up calls; netdsl min/median/max, the "
          "others medians (* torch.compile with graph breaks); err: max |out - PyTorch fp32| / max |PyTorch fp32|")
    print(f"{'model':<19} {'dtype':<5} {'min':>8} {'netdsl':>8} {'max':>8} "
          + " ".join(f"{side:>10}" for side in SIDES) + f" {'/best':>8} {'err ours':>9} {'err torch':>9}")
    failed = 0
    for name in args.model:
        for dtype_key in args.dtype:
            try:
                row, ok = bench_one(name, dtype_key, args)
                print(row, flush=True)
                failed += not ok
            except torch.cuda.OutOfMemoryError:
                print(f"{name:<19} {dtype_key:<5} out of GPU memory at batch {args.batch}")
                torch.cuda.empty_cache()
    if failed:
        print(f"FAIL: {failed} row(s) where netdsl's output is further from PyTorch fp32 than allowed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
