"""The `netdsl` command line.

    netdsl show model.net [--pipeline O1] [--dims N=1,H=224,W=224]   IR, parameter table, FLOPs
    netdsl run model.net [--input x.npy] [--weights w.safetensors]   run on the reference backend
    netdsl init model.net -o weights.safetensors                      write default-initialised weights
    netdsl check model.net [--dtype bf16] [--json]                    Triton kernels vs the reference, per node
    netdsl compile model.net [--target sm_80,sm_90] [-o DIR] [--json] build every kernel ahead of time

Every --dtype takes the same names (``DTYPE_NAMES``: fp32/f32/float32, fp16/f16/half, bf16/bfloat16,
fp64/f64/float64), normalised once by ``parse_dtype``; a command says which of them it runs.

``--json`` (show --cost, check, compile) prints one JSON object on stdout and nothing else. Every
report has ``"schema": "netdsl.<report>"`` (cost, check or compile), ``"schema_version"``
(``JSON_SCHEMA_VERSION``: raised whenever a field changes meaning or goes away; new fields may appear
without it), ``"netdsl"`` (the version) and ``"network"``; numbers are plain (bytes, FLOPs, seconds),
and an error that is not finite is null; a compile report's kernels name their "cubin" and "ptx"
files when -o wrote them. Progress goes to stderr (``netdsl.progress``).

A user's mistake prints one NetDSLError (file:line:col, the line, a caret, a hint) and exits with 2;
never a Python traceback. Sizes are checked before anything is allocated: every array must fit the
memory budget (half of physical memory; --memory-budget or NETDSL_MEMORY_BUDGET to change it), and
files are written whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .errors import NetDSLError
from .ir.sizes import BUDGET_ENV, concrete_dims, memory_budget_set, parse_dims
from .params import parse_seed
from .progress import Progress

JSON_SCHEMA_VERSION = 1

# Every dtype name a user may write -> its canonical name (the Triton backend's and the tolerances').
DTYPE_NAMES = {"fp32": "fp32", "f32": "fp32", "float32": "fp32", "fp16": "fp16", "f16": "fp16", "half": "fp16",
               "float16": "fp16", "bf16": "bf16", "bfloat16": "bf16", "fp64": "fp64", "f64": "fp64",
               "float64": "fp64", "double": "fp64"}
# What each command runs in, and why (for the message when a dtype is not one of them).
COMMAND_DTYPES = {"run": (("fp32", "fp64"), "runs the NumPy reference backend"),
                  "check": (("fp32", "fp16", "bf16"), "runs Triton kernels"),
                  "compile": (("fp32", "fp16", "bf16"), "builds Triton kernels")}
REFERENCE_DTYPES = {"fp32": "f32", "fp64": "f64"}  # the reference backend's names for them


def _or(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _spelled(dtype: str) -> str:
    """A canonical dtype with its other spellings, e.g. "fp16 (f16, half, float16)"."""
    return f"{dtype} ({', '.join(k for k, v in DTYPE_NAMES.items() if v == dtype and k != dtype)})"


def parse_dtype(text: str, command: str) -> str:
    """The canonical name of a --dtype (any spelling of ``DTYPE_NAMES``), if ``command`` runs in it."""
    allowed, what = COMMAND_DTYPES[command]
    name = DTYPE_NAMES.get(text.strip().lower())
    takes = f"`netdsl {command}` takes --dtype {_or(allowed)}"
    if name is None:
        raise NetDSLError(f"--dtype `{text}`: invalid choice, not a dtype netdsl knows",
                          hint=f"{takes}, spelt {_or(map(_spelled, allowed))}")
    if name not in allowed:
        other = "`netdsl check --dtype fp16` runs Triton kernels in fp16 and bf16" if command == "run" else \
            "`netdsl run --dtype fp64` runs the reference backend in fp64"
        raise NetDSLError(f"--dtype `{text}` ({name}): invalid choice for `netdsl {command}`, which {what} in "
                          f"{_or(allowed)}", hint=f"{takes}; {other}")
    return name


def _dtype_help(command: str, default: str) -> str:
    return f"{_or(map(_spelled, COMMAND_DTYPES[command][0]))}; default {default}"


def json_report(report: str, graph, fields: dict) -> str:
    """A JSON report: the envelope of the module's docstring around ``fields``."""
    doc = {"schema": f"netdsl.{report}", "schema_version": JSON_SCHEMA_VERSION, "netdsl": __version__,
           "network": graph.name, **fields}
    return json.dumps(doc, indent=2, allow_nan=False, default=str)  # (a constexpr may be a dtype object)


def _load(args):
    from .frontend import load

    return load(args.model, getattr(args, "network", None))


def cmd_show(args) -> int:
    from .report import cost_fields, show

    if args.json and not args.cost:
        raise NetDSLError("--json writes the cost report: it goes with --cost", hint="netdsl show MODEL --cost --json")
    if args.json and args.dump_after:
        raise NetDSLError("--dump-after prints IR text, which a --json report leaves out", hint="drop one of them")
    graph = _load(args)
    env = concrete_dims(graph, parse_dims(args.dims))
    if args.json:
        print(json_report("cost", graph, cost_fields(graph, env, args.pipeline)))
        return 0
    print(show(graph, env, pipeline=args.pipeline, dump_after=args.dump_after, cost=args.cost))
    return 0


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

    seed, dtype = parse_seed(args.seed), parse_dtype(args.dtype, "run")
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
    with Progress("run") as progress:  # no count: a heartbeat, so that a long run is not silent
        progress.stage("reference backend")
        outputs = reference.run(graph, inputs, weights, dtype=REFERENCE_DTYPES[dtype])
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
    from .files import check_writable
    from .params import init_weights, parameter_count, save_weights

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

    seed, dims, dtype = parse_seed(args.seed), parse_dims(args.dims), parse_dtype(args.dtype, "check")
    if args.weights and args.random_weights:
        raise NetDSLError("--weights and --random-weights both say where the weights come from",
                          hint="give one of them: --random-weights replaces every tensor with random values")
    graph, fused, weights = prepare(args.model, args.weights, seed, args.network, args.pipeline)
    env = concrete_dims(graph, dims)
    inputs = random_inputs(graph, env, seed)  # sizes checked before the GPU is touched
    from .backends.triton import device
    from .backends.triton.check import check, check_report, format_checks

    if args.random_weights:
        from .params import random_weights

        weights = random_weights(graph, seed)
    with Progress("check") as progress:
        checks = check(fused, weights, inputs, dtype=dtype, device=device(), progress=progress)
    if args.json:
        print(json_report("check", graph, {"dtype": dtype, "device": device(), "pipeline": args.pipeline,
                                           "seed": seed, "dims": dict(sorted(env.items())),
                                           "fused_nodes": len(fused.nodes),
                                           "inputs": {k: list(x.shape) for k, x in inputs.items()},
                                           **check_report(checks, dtype)}))
    else:
        print(f"network {graph.name}: Triton ({dtype}, {device()}) vs reference, {len(fused.nodes)} fused nodes, "
              f"inputs {', '.join(str(list(x.shape)) for x in inputs.values())}")
        print(format_checks(checks, dtype))
    return 0 if all(c.ok for c in checks) else 1


def cmd_compile(args) -> int:
    from .backends.triton.aot import build_report, compile_ahead_of_time, parse_targets
    from .compiler import prepare
    from .kernels.aot import format_reports

    ccs, dims, dtype = parse_targets(args.target), parse_dims(args.dims), parse_dtype(args.dtype, "compile")
    folder = _check_output_dir(args.output) if args.output else None  # before a build that may take minutes
    graph, fused, weights = prepare(args.model, None, 0, args.network, args.pipeline)
    with Progress("compile") as progress:
        build = compile_ahead_of_time(fused, weights, ccs, dims, dtype, args.configs, args.jobs, progress=progress,
                                      artifacts=folder is not None)
    reports, data = build.reports, build_report(build)
    summary = data["summary"]
    text = [f"network {graph.name}: {len(fused.nodes)} fused nodes, {len(build.kernels)} kernel specializations "
            f"({dtype}, {', '.join(f'{k}={v}' for k, v in sorted(build.dims.items()))}), "
            f"targets {', '.join(f'sm_{c}' for c in build.ccs)}",
            format_reports(reports, [build.kernel_of(i).nodes for i in range(len(reports))]),
            f"built {summary['kernels']} kernels ({summary['cached']} from cache) in {build.elapsed:.1f}s: "
            f"{summary['spills']} spills, {summary['with_mma']} with tensor-core MMA, "
            f"max {summary['max_registers']} registers/thread"]
    if not data["ok"]:
        text.append(f"FAIL: {summary['spills']} spill instructions; {summary['over_shared_limit']} kernels over the "
                    "shared-memory limit")
    fields = {"dtype": dtype, "targets": [f"sm_{c}" for c in build.ccs], "configs": args.configs,
              "pipeline": args.pipeline, "dims": dict(sorted(build.dims.items())), "fused_nodes": len(fused.nodes),
              **data}
    if folder is not None:
        _write_build(folder, build, "\n".join(text) + "\n", graph, fields)
    if args.json:
        print(json_report("compile", graph, fields))
    else:
        print("\n".join(text))
    return 0 if data["ok"] else 1


def _check_output_dir(text: str) -> Path:
    """``compile -o DIR``: a directory, or a name to create one under that exists (checked before the build)."""
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise NetDSLError(f"cannot write the build into `{folder}`: it is a file, not a directory",
                          hint="give a directory for the report and the kernels (it is created if missing)")
    if not folder.parent.is_dir():
        raise NetDSLError(f"cannot write the build into `{folder}`: there is no directory `{folder.parent}`",
                          hint="create the parent directory first, or write somewhere else")
    return folder


def _write_build(folder: Path, build, text: str, graph, fields: dict) -> None:
    """Each kernel's cubin and PTX (named ``<specialization>-<kernel>.sm_<cc>.cubin``), then report.json
    and report.txt: every file written whole (``write_atomically``), the reports last, naming the files."""
    from .kernels.aot import artifact
    from .files import write_atomically

    try:
        folder.mkdir(exist_ok=True)
    except OSError as e:
        raise NetDSLError(f"cannot create `{folder}`: {e.strerror or e}",
                          hint=f"check that you may write to `{folder.parent}`") from None
    for i, (r, row) in enumerate(zip(build.reports, fields["kernels"], strict=True)):
        stem = f"{i // len(build.ccs):03d}-{r.name}.sm_{r.cc}"
        for kind in ("cubin", "ptx"):
            row[kind] = f"{stem}.{kind}"
            source = artifact(r, kind)
            write_atomically(folder / row[kind], lambda tmp, source=source: shutil.copyfile(source, tmp), kind)
    doc = json_report("compile", graph, fields) + "\n"
    write_atomically(folder / "report.json", lambda tmp: Path(tmp).write_text(doc), "report")
    write_atomically(folder / "report.txt", lambda tmp: Path(tmp).write_text(text), "report")


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
    s.add_argument("--json", action="store_true", help="with --cost: the cost report as JSON on stdout")
    s.set_defaults(fn=cmd_show)

    r = model_cmd("run", "run the model on the reference (NumPy) backend", allocates=True)
    r.add_argument("--input", action="append", help=".npy file per network input (default: random)")
    r.add_argument("--weights", help=".safetensors or .npz weights (default: seeded initialisation)")
    r.add_argument("--dims", help="sizes of symbolic dims for random inputs, e.g. N=2,H=224,W=224")
    r.add_argument("--dtype", default="fp32", metavar="DTYPE", help=_dtype_help("run", "fp32"))
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
    c.add_argument("--dtype", default="fp32", metavar="DTYPE", help=_dtype_help("check", "fp32"))
    c.add_argument("--dims", help="input sizes, e.g. N=2,H=32,W=32 (default: the file's defaults)")
    c.add_argument("--weights", help=".safetensors or .npz weights (default: seeded initialisation)")
    c.add_argument("--random-weights", action="store_true",
                   help="randomise every tensor (batchnorm statistics too) instead of the default init")
    c.add_argument("--pipeline", default="O1")
    c.add_argument("--seed", default="0", help="seed of the weights and random inputs (0 or more)")
    c.add_argument("--json", action="store_true", help="the node-by-node report as JSON on stdout")
    c.set_defaults(fn=cmd_check)

    k = model_cmd("compile", "build every kernel the model needs ahead of time for a GPU target")
    k.add_argument("--target", default="sm_90", help="sm_80 or sm_90 (comma-separated for both)")
    k.add_argument("--dtype", default="fp16", metavar="DTYPE", help=_dtype_help("compile", "fp16"))
    k.add_argument("--dims", help="input sizes, e.g. N=8,H=224,W=224 (default: the file's defaults)")
    k.add_argument("--configs", default="default", choices=["default", "all"],
                   help="build the default launch config of each kernel, or every autotuning config")
    k.add_argument("--pipeline", default="O1")
    k.add_argument("--jobs", type=int, default=2, help="parallel build workers")
    k.add_argument("-o", "--output", metavar="DIR", help="write report.json, report.txt and every kernel's cubin and "
                                                         "PTX into DIR (created if missing; its parent must exist)")
    k.add_argument("--json", action="store_true", help="the build report as JSON on stdout")
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
