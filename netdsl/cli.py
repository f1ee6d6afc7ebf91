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


def _parse_dims(text: str | None) -> dict[str, int]:
    dims: dict[str, int] = {}
    if not text:
        return dims
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip().isdigit():
            raise NetDSLError(f"bad --dims entry `{item}`", hint="write --dims N=1,H=224,W=224")
        dims[key.strip()] = int(value)
    return dims


def _load(args):
    from .frontend import load

    return load(args.model, getattr(args, "network", None))


def concrete_dims(graph, overrides: dict[str, int]) -> dict[str, int]:
    """Bind every symbolic input dim: --dims, then the file's defaults (`H=224`), then N=1."""
    env = {**graph.dim_defaults, **overrides}
    for v in graph.inputs:
        for sym in sorted(v.type.symbols()):
            if sym not in env:
                if sym == "N":
                    env[sym] = 1
                else:
                    raise NetDSLError(f"input dimension `{sym}` has no size",
                                      hint=f"give one with --dims {sym}=SIZE, or a default in the file ({sym}=224)")
    return env


def cmd_show(args) -> int:
    from .report import show

    graph = _load(args)
    print(show(graph, concrete_dims(graph, _parse_dims(args.dims)), pipeline=args.pipeline,
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
        env = concrete_dims(graph, _parse_dims(args.dims))
        rng = np.random.default_rng(args.seed)
        inputs = {v.name: rng.standard_normal(v.type.concrete(env)).astype(np.float32) for v in graph.inputs}
    if args.pipeline != "O0":
        from .passes import run_pipeline

        graph, weights = run_pipeline(graph, weights, args.pipeline)
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
        np.save(args.output, next(iter(outputs.values())))
    return 0


def cmd_init(args) -> int:
    from .params import init_weights, parameter_count, save_weights

    graph = _load(args)
    save_weights(args.output, init_weights(graph, args.seed))
    print(f"wrote {parameter_count(graph):,} parameters of `{graph.name}` to {args.output}")
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
    s.add_argument("--pipeline", default="O0", help="pass pipeline to run first (O0 = none, O1 = all)")
    s.add_argument("--dump-after", default=None, help="print the IR after this pass (or 'all')")
    s.add_argument("--cost", action="store_true", help="print the memory-traffic and launch cost report")
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

    for register in _EXTRA_COMMANDS:
        register(sub, model_cmd)
    return p


_EXTRA_COMMANDS: list = []  # backends add subcommands here (check, compile)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except NetDSLError as e:
        print(e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
