"""Start-up cost of the command line: CPU time of a fresh `netdsl show --pipeline O1` process, with the
parser cache empty (cold) and filled (warm), against a bare `python -c "import numpy"` process measured
in the same run (the floor any netdsl process pays).

    python benchmarks/cold_start.py [--repeat 5] [--model examples/resnet50.net]

CPU time (user + system, from the kernel's accounting of each waited child) rather than wall time, so
that other work on the machine disturbs the numbers less; each row is the median of --repeat runs. The
cold runs each get a fresh, empty NETDSL_CACHE_DIR; the warm runs share one filled by a first run.
`python -X importtime -m netdsl show ...` says where the rest of the start-up time goes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(cmd: list[str], env: dict[str, str]) -> float:
    """User + system CPU seconds of one run of ``cmd`` (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(repeat: int, model: str) -> dict[str, float]:
    """Median CPU seconds of each kind of process, the kinds interleaved so that drift hits all alike."""
    show = [sys.executable, "-m", "netdsl", "show", "--pipeline", "O1", model]
    peer = [sys.executable, "-c", "import numpy"]
    times: dict[str, list[float]] = {"python -c 'import numpy' (peer)": [], "netdsl show, cold cache": [],
                                     "netdsl show, warm cache": []}
    with tempfile.TemporaryDirectory() as tmp:
        warm_env = {**os.environ, "NETDSL_CACHE_DIR": str(Path(tmp) / "warm")}
        cpu_seconds(show, warm_env)  # fills the warm cache
        for i in range(repeat):
            cold_env = {**os.environ, "NETDSL_CACHE_DIR": str(Path(tmp) / f"cold{i}")}
            peer_t, cold_t, warm_t = times.values()
            peer_t.append(cpu_seconds(peer, dict(os.environ)))
            cold_t.append(cpu_seconds(show, cold_env))
            warm_t.append(cpu_seconds(show, warm_env))
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--model", default="examples/resnet50.net")
    args = ap.parse_args(argv)
    result = measure(args.repeat, args.model)
    peer = result["python -c 'import numpy' (peer)"]
    print(f"{'process':<34} {'CPU s (median)':>15} {'x peer':>8}")
    for name, t in result.items():
        print(f"{name:<34} {t:>15.3f} {t / peer:>8.2f}")
    cold, warm = result["netdsl show, cold cache"], result["netdsl show, warm cache"]
    print(f"the warm cache saves {cold - warm:.3f} CPU s per process ({cold / warm:.2f}x less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
