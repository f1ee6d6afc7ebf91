"""The `netdsl` command line.

    netdsl show model.net [--pipeline O1] [--dims N=1,H=224,W=224]   IR, parameter table, FLOPs
    netdsl run model.net [--input x.npy] [--weights w.safetensors]   run on the reference backend
    netdsl init model.net -o weights.safetensors                      write default-initialised weights

A user's mistake prints one NetDSLError (file:line:col, the line, a caret, a hint) and exits with 2;
never a Python traceback. Sizes are checked before anything is allocated: every array must fit the
memory budget (half of physical memory; --memory-budget or NETDSL_MEMORY_BUDGET to change it), and
files are written whole or not at all.
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np

from . import __version__
from .errors import NetDSLError
from .ir.sizes import BUDGET_ENV, INT64_MAX, concrete_dims, memory_budget_set, parse_dims


def _load(args):
    from .frontend import load

    return load(args.model, getattr(args, "network", None))


def cmd_show(args) -> int:
    from .report import show

    graph = _load(args)
    print(show(graph, concrete_dims(graph, parse_dims(args.dims)), pipeline=args.pipeline,
               dump_after=args.dump_after, cost=args.cost))
    return 0


def parse_seed(text: str | int) -> int:
    """A --seed: a whole number from 0 to 2^63 - 1, in the digits 0-9."""
    if isinstance(text, int) or (re.fullmatch(r"[0-9]+", text, re.ASCII) and int(text) <= INT64_MAX):
        return int(text)
    raise NetDSLError(f"bad --seed `{text}`: a seed is a whole number from 0 to {INT64_MAX:,}",
                      hint="write e.g. --seed 0")


def cmd_run(args) -> int:
    from .backends import reference
    from .params import (
        check_arrays_target,
        init_weights,
        load_array,
        load_weights,
        parameter_count,
        save_arrays,
    )

    seed = parse_seed(args.seed)
    graph = _load(args)
    if args.output:  # before running: a bad target should not cost a whole run
        check_arrays_target(args.output, graph.output_names, f"outputs of `{graph.name}`")
    if args.input:
        if len(args.input) != len(graph.inputs):
            raise NetDSLError(f"`{graph.name}` takes {len(graph.inputs)} input(s), got {len(args.input)} --input",
                              hint="give one --input per network input, in the order of the `input` lines: "
                                   + ", ".join(v.name for v in graph.inputs))
        inputs = {v.name: load_array(path, "input") for v, path in zip(graph.inputs, args.input)}
    else:
        inputs = _random_inputs(graph, args.dims, seed)
    weights = load_weights(args.weights, graph) if args.weights else init_weights(graph, seed)
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
        save_arrays(args.output, outputs)
    return 0


def cmd_init(args) -> int:
    from .params import check_writable, init_weights, parameter_count, save_weights

    seed = parse_seed(args.seed)
    graph = _load(args)
    check_writable(args.output, "weights file")
    save_weights(args.output, init_weights(graph, seed))
    print(f"wrote {parameter_count(graph):,} parameters of `{graph.name}` to {args.output}")
    return 0


def _random_inputs(graph, dims_text, seed):
    from .params import random_inputs

    return random_inputs(graph, concrete_dims(graph, parse_dims(dims_text)), seed)


def cmd_check(args) -> int:
    from .compiler import prepare
    from .params import random_inputs

    seed, dims = parse_seed(args.seed), parse_dims(args.dims)
    if args.weights and args.random_weights:
        raise NetDSLError("--weights and --random-weights both say where the weights come from",
                          hint="give one of them: --random-weights replaces every tensor with random values")
    graph, fused, weights = prepare(args.model, args.weights, seed, args.network, args.pipeline)
    inputs = random_inputs(graph, concrete_dims(graph, dims), seed)  # sizes checked before the GPU is touched
    from .backends.triton import device
    from .backends.triton.check import check, format_checks

    if args.random_weights:
        from .params import random_weights

        weights = random_weights(graph, seed)
    checks = check(fused, weights, inputs, dtype=args.dtype, device=device())
    print(f"network {graph.name}: Triton ({args.dtype}, {device()}) vs reference, "
          f"{len(fused.nodes)} fused nodes, inputs {', '.join(str(list(x.shape)) for x in inputs.values())}")
    print(format_checks(checks, args.dtype))
    return 0 if all(c.ok for c in checks) else 1


def cmd_compile(args) -> int:
    from .backends.triton.aot import compile_ahead_of_time, parse_targets
    from .compiler import prepare
    from .kernels.aot import format_reports

    ccs, dims = parse_targets(args.target), parse_dims(args.dims)
    graph, fused, weights = prepare(args.model, None, 0, args.network, args.pipeline)
    build = compile_ahead_of_time(fused, weights, ccs, dims, args.dtype, args.configs, args.jobs)
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
    p.add_argument("--version", action="version", version=f"netdsl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def model_cmd(name, help_, allocates=False):
        c = sub.add_parser(name, help=help_)
        c.add_argument("model", help="a .net file")
        c.add_argument("--network", help="which network of the file (when it has several)")
        if allocates:
            c.add_argument("--memory-budget", metavar="BYTES",
                           help="the most memory one array (or one file, or all weights) may take, e.g. 8G or "
                                f"512M; sizes are checked before anything is allocated (default: half of "
                                f"physical memory; also {BUDGET_ENV})")
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

    r = model_cmd("run", "run the model on the reference (NumPy) backend", allocates=True)
    r.add_argument("--input", action="append", help=".npy file per network input (default: random)")
    r.add_argument("--weights", help=".safetensors or .npz weights (default: seeded initialisation)")
    r.add_argument("--dims", help="sizes of symbolic dims for random inputs, e.g. N=2,H=224,W=224")
    r.add_argument("--dtype", default="f32", choices=["f32", "f64"])
    r.add_argument("--pipeline", default="O0", help="pass pipeline to run first (O0 = none, O1 = all)")
    r.add_argument("--seed", default="0", help="seed of the default weights and random inputs (0 or more)")
    r.add_argument("--output", help="save the outputs: a .npy file for a network with one output, a .npz "
                                    "file (one array per output name) for any number")
    r.set_defaults(fn=cmd_run)

    i = model_cmd("init", "write default-initialised weights", allocates=True)
    i.add_argument("-o", "--output", required=True, help="a .safetensors or .npz file")
    i.add_argument("--seed", default="0", help="seed of the initialisation (0 or more)")
    i.set_defaults(fn=cmd_init)

    c = model_cmd("check", "run the Triton backend and the reference on the same inputs, node by node",
                  allocates=True)
    c.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    c.add_argument("--dims", help="input sizes, e.g. N=2,H=32,W=32 (default: the file's defaults)")
    c.add_argument("--weights", help=".safetensors or .npz weights (default: seeded initialisation)")
    c.add_argument("--random-weights", action="store_true",
                   help="randomise every tensor (batchnorm statistics too) instead of the default init")
    c.add_argument("--pipeline", default="O1")
    c.add_argument("--seed", default="0", help="seed of the weights and random inputs (0 or more)")
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

    from . import graph_view
    from .frontend import fmt
    from .interop import onnx_export, onnx_import

    for module in (onnx_import, onnx_export, graph_view, fmt):
        module.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with memory_budget_set(getattr(args, "memory_budget", None)):
            return args.fn(args)
    except NetDSLError as e:
        print(e, file=sys.stderr)
        return 2
    except OSError as e:  # a file the user named cannot be read or written
        print(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        return 2
    except MemoryError as e:  # an allocation the size checks could not foresee (a backend's scratch space)
        print(NetDSLError(f"out of memory: {e}" if str(e) else "out of memory",
                          hint=f"give smaller sizes (--dims); --memory-budget ({BUDGET_ENV}) bounds each array "
                               f"before it is made, but not a backend's scratch space"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
