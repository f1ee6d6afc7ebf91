"""The `netdsl` command line.

    netdsl show model.net [--pipeline O1] [--dims N=1,H=224,W=224]   IR, parameter table, FLOPs
    netdsl run model.net [--input x.npy] [--weights w.safetensors]   run on the reference backend
    netdsl init model.net -o weights.safetensors                      write default-initialised weights

A user's mistake prints one NetDSLError (file:line:col, the line, a caret, a hint) and exits with 2;
never a Python traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .errors import NetDSLError
from .ir.sizes import concrete_dims, parse_dims


def _load(args):
    from .frontend import load

    return load(args.model, getattr(args, "network", None))


def cmd_show(args) -> int:
    from .report import show

    graph = _load(args)
    print(show(graph, concrete_dims(graph, parse_dims(args.dims)), pipeline=args.pipeline,
               dump_after=args.dump_after, cost=args.cost))
    return 0


def cmd_run(args) -> int:
    from .backends import reference
    from .params import init_weights, load_weights, parameter_count

    graph = _load(args)
    weights = load_weights(args.weights, graph) if args.weights else init_weights(graph, args.seed)
    if args.input:
        if len(args.input) != len(graph.inputs):
            raise NetDSLError(f"`{graph.name}` takes {len(graph.inputs)} input(s), got {len(args.input)} --input")
        inputs = {}
        for v, path in zip(graph.inputs, args.input):
            try:
                inputs[v.name] = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise NetDSLError(f"cannot read input `{path}`: {e}", hint="give a .npy file") from None
    else:
        inputs = _random_inputs(graph, args.dims, args.seed)
    if args.pipeline != "O0":  # passes rewrite the graph only; the weights keep their names
        from .passes import run_pipeline

        graph = run_pipeline(graph, args.pipeline)
    outputs = reference.run(graph, inputs, weights, dtype=args.dtype)
    print(f"network {graph.name}: {parameter_count(graph):,} parameters")
    for v in graph.inputs:
        print(f"  input  {v.name}: {list(inputs[v.name].shape)}")
    for name, out in outputs.items():
        flat = out.reshape(-1)
        print(f"  output {name}: {list(out.shape)}  mean={flat.mean():.6g} std={flat.std():.6g} "
              f"first={np.array2string(flat[:5], precision=5)}")
        if out.ndim == 2 and out.shape[1] > 1:
            print(f"         argmax per row: {out.argmax(axis=1).tolist()[:16]}")
    if args.output:
        np.save(_writable(args.output), next(iter(outputs.values())))
    return 0


def _writable(path: str) -> str:
    """``path``, once its directory is known to exist (safetensors' own error for that is obscure)."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise NetDSLError(f"cannot write `{path}`: there is no directory `{parent}`")
    return path


def cmd_init(args) -> int:
    from .params import init_weights, parameter_count, save_weights

    graph = _load(args)
    save_weights(_writable(args.output), init_weights(graph, args.seed))
    print(f"wrote {parameter_count(graph):,} parameters of `{graph.name}` to {args.output}")
    return 0


def _random_inputs(graph, dims_text, seed):
    from .params import random_inputs

    return random_inputs(graph, concrete_dims(graph, parse_dims(dims_text)), seed)


def cmd_check(args) -> int:
    from .compiler import prepare

    graph, fused, weights = prepare(args.model, args.weights, args.seed, args.network, args.pipeline)
    from .backends.triton import device
    from .backends.triton.check import check, format_checks

    inputs = _random_inputs(graph, args.dims, args.seed)
    if args.random_weights:
        from .params import random_weights

        weights = random_weights(graph, args.seed)
    checks = check(fused, weights, inputs, dtype=args.dtype, device=device())
    print(f"network {graph.name}: Triton ({args.dtype}, {device()}) vs reference, "
          f"{len(fused.nodes)} fused nodes, inputs {', '.join(str(list(x.shape)) for x in inputs.values())}")
    print(format_checks(checks, args.dtype))
    return 0 if all(c.ok for c in checks) else 1


def cmd_compile(args) -> int:
    from .backends.triton.aot import compile_ahead_of_time, parse_targets
    from .compiler import prepare
    from .kernels.aot import format_reports

    ccs = parse_targets(args.target)
    graph, fused, weights = prepare(args.model, None, 0, args.network, args.pipeline)
    build = compile_ahead_of_time(fused, weights, ccs, parse_dims(args.dims), args.dtype, args.configs, args.jobs)
    reports = build.reports
    print(f"network {graph.name}: {len(fused.nodes)} fused nodes, {len(build.specs)} kernel specializations "
          f"({args.dtype}, {', '.join(f'{k}={v}' for k, v in sorted(build.dims.items()))}), "
          f"targets {', '.join(f'sm_{c}' for c in build.ccs)}")
    print(format_reports(reports))
    spills = sum(r.spills for r in reports)
    too_big = [r for r in reports if not r.fits_shared]
    cached = sum(r.cached for r in reports)
    print(f"built {len(reports)} kernels ({cached} from cache) in {build.elapsed:.1f}s: "
          f"{spills} spills, {sum(r.uses_mma for r in reports)} with tensor-core MMA, "
          f"max {max((r.registers for r in reports), default=0)} registers/thread")
    if spills or too_big:
        print(f"FAIL: {spills} spill instructions; {len(too_big)} kernels over the shared-memory limit")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netdsl", description="Compile and run .net neural network models.")
    sub = p.add_subparsers(dest="command", required=True)

    def model_cmd(name, help_):
        c = sub.add_parser(name, help=help_)
        c.add_argument("model", help="a .net file")
        c.add_argument("--network", help="which network of the file (when it has several)")
        return c

    s = model_cmd("show", "print the IR with shapes, the parameter table and FLOPs")
    s.add_argument("--dims", help="sizes of symbolic dims, e.g. N=1,H=224,W=224")
    s.add_argument("--pipeline", default="O0",
                   help="pass pipeline to run first: O0 = none, O1 = all, or pass names joined by commas")
    s.add_argument("--dump-after", default=None,
                   help="print the IR after these passes (comma-separated, or 'all'; also NETDSL_DUMP_AFTER)")
    s.add_argument("--cost", action="store_true",
                   help="print FLOPs, memory traffic and launches per node: unfused, fused (O1) and ideal")
    s.set_defaults(fn=cmd_show)

    r = model_cmd("run", "run the model on the reference (NumPy) backend")
    r.add_argument("--input", action="append", help=".npy file per network input (default: random)")
    r.add_argument("--weights", help=".safetensors or .npz weights (default: seeded initialisation)")
    r.add_argument("--dims", help="sizes of symbolic dims for random inputs, e.g. N=2,H=224,W=224")
    r.add_argument("--dtype", default="f32", choices=["f32", "f64"])
    r.add_argument("--pipeline", default="O0", help="pass pipeline to run first (O0 = none, O1 = all)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--output", help="save the first output to this .npy file")
    r.set_defaults(fn=cmd_run)

    i = model_cmd("init", "write default-initialised weights")
    i.add_argument("-o", "--output", required=True, help="a .safetensors or .npz file")
    i.add_argument("--seed", type=int, default=0)
    i.set_defaults(fn=cmd_init)

    c = model_cmd("check", "run the Triton backend and the reference on the same inputs, node by node")
    c.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    c.add_argument("--dims", help="input sizes, e.g. N=2,H=32,W=32 (default: the file's defaults)")
    c.add_argument("--weights", help=".safetensors or .npz weights (default: seeded initialisation)")
    c.add_argument("--random-weights", action="store_true",
                   help="randomise every tensor (batchnorm statistics too) instead of the default init")
    c.add_argument("--pipeline", default="O1")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(fn=cmd_check)

    k = model_cmd("compile", "build every kernel the model needs ahead of time for a GPU target")
    k.add_argument("--target", default="sm_90", help="sm_80 or sm_90 (comma-separated for both)")
    k.add_argument("--dtype", default="fp16", choices=["fp32", "fp16", "bf16"])
    k.add_argument("--dims", help="input sizes, e.g. N=8,H=224,W=224 (default: the file's defaults)")
    k.add_argument("--configs", default="default", choices=["default", "all"],
                   help="build the default launch config of each kernel, or every autotuning config")
    k.add_argument("--pipeline", default="O1")
    k.add_argument("--jobs", type=int, default=2, help="parallel build workers")
    k.set_defaults(fn=cmd_compile)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except NetDSLError as e:
        print(e, file=sys.stderr)
        return 2
    except OSError as e:  # a file the user named cannot be read or written
        print(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
