"""Grammar-aware fuzzing of the front end and the O1 pipeline: every program either compiles or fails with
a NetDSLError; any other exception is a bug.

    python benchmarks/fuzz.py [--programs 100000] [--seed 0] [--jobs 2]

Programs are mutations of the examples and the standard library, made at the level of the language's
tokens (so most of them get past the lexer and exercise the parser, the elaborator and the passes): a
token deleted, duplicated or swapped with its neighbour; a number replaced by an extreme one (0, -1, huge,
1e999, a float where an int goes); a name replaced by another name of the file, a keyword or an op;
a bracket or an arrow inserted; a line duplicated or removed. A program that loads is also run through
O1. Progress is printed every 1000 programs; a crash prints the program and its traceback and counts.
tests/test_fuzz.py runs a few hundred of these in the suite.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = re.compile(r'#[^\n]*|"[^"\n]*"|[A-Za-z_]\w*|\d+\.\d*(?:[eE][-+]?\d+)?|\d+|->|//|\S|\n')
EXTREME_NUMBERS = ["0", "-1", "1", "2", "3", "99999999999999999999", "1e999", "0.5", "-0.0", "65536", "7"]
INSERTIONS = ["(", ")", "[", "]", "->", ",", ":", "=", "*", "+", "-", "//", "x", "output", "input", "block",
              "network", "param", "import", "relu", "conv2d(", "linear(", "chunk(2)", "_", "1", "{", "}",
              "sdpa(", "true", '"same"', "N", "T", "[:, 0]", ".weight"]


def seeds() -> list[str]:
    files = sorted((ROOT / "examples").glob("*.net")) + sorted((ROOT / "stdlib").glob("*.net"))
    return [f.read_text() for f in files]


def mutate(source: str, rng: random.Random) -> str:
    tokens = [t for t in TOKEN.findall(source) if not t.startswith("#")]
    names = sorted({t for t in tokens if t[0].isalpha() or t[0] == "_"})
    for _ in range(rng.randint(1, 4)):
        if not tokens:
            break
        i = rng.randrange(len(tokens))
        kind = rng.randrange(8)
        if kind == 0:
            del tokens[i]
        elif kind == 1:
            tokens.insert(i, tokens[i])
        elif kind == 2 and i + 1 < len(tokens):
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
        elif kind == 3 and tokens[i][0].isdigit():
            tokens[i] = rng.choice(EXTREME_NUMBERS)
        elif kind == 4 and (tokens[i][0].isalpha() or tokens[i][0] == "_"):
            tokens[i] = rng.choice(names)
        elif kind == 5:
            tokens.insert(i, rng.choice(INSERTIONS))
        elif kind == 6:  # a line duplicated or removed
            lines = "".join(_spaced(tokens)).split("\n")
            j = rng.randrange(len(lines))
            lines[j:j + 1] = [lines[j]] * rng.choice((0, 2))
            return "\n".join(lines)
        else:
            tokens[i] = rng.choice(EXTREME_NUMBERS + INSERTIONS)
    return "".join(_spaced(tokens))


def _spaced(tokens: list[str]) -> list[str]:
    return [t if t == "\n" else t + " " for t in tokens]


def compile_one(source: str):
    """Load and run O1; a NetDSLError (or the IR verifier's error on a compiler bug: not expected) is the
    program's answer."""
    import netdsl
    from netdsl.passes import run_pipeline

    graph = netdsl.load_source(source, "fuzz.net")
    run_pipeline(graph, "O1")


def run(programs: int, seed: int, report=print) -> list[tuple[str, str]]:
    """Fuzz ``programs`` programs; return the crashes as (program, traceback)."""
    from netdsl import NetDSLError

    rng = random.Random(seed)
    pool = seeds()
    crashes = []
    start = time.perf_counter()
    for k in range(programs):
        source = mutate(rng.choice(pool), rng)
        try:
            compile_one(source)
        except NetDSLError:
            pass
        except Exception:  # noqa: BLE001 - anything else is what this looks for
            crashes.append((source, traceback.format_exc()))
        if (k + 1) % 1000 == 0:
            report(f"{k + 1} programs, {len(crashes)} crashes, {time.perf_counter() - start:.0f} s")
    return crashes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    crashes = run(args.programs, args.seed, report=lambda line: print(line, flush=True))
    for source, tb in crashes[:5]:
        print("=" * 80, "\n", source[:2000], "\n", tb, file=sys.stderr)
    print(f"{args.programs} programs, {len(crashes)} crashes (exceptions other than NetDSLError)")
    return 1 if crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
