"""Bounded grammar-aware fuzzing (benchmarks/fuzz.py runs 100k programs): mutations of the examples and the
standard library either compile through O1 or fail with a NetDSLError; no other exception escapes."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import netdsl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import fuzz  # noqa: E402


def test_mutated_programs_compile_or_fail_with_a_netdsl_error():
    crashes = fuzz.run(400, seed=2024, report=lambda _: None)
    assert not crashes, f"{len(crashes)} crashes; the first:\n{crashes[0][0][:1500]}\n{crashes[0][1]}"


def test_the_mutations_reach_past_the_parser():
    """The fuzzer is worth its time only if its programs exercise more than the lexer: some compile, and
    the failures are not all syntax errors."""
    rng, pool = random.Random(7), fuzz.seeds()
    compiled, semantic = 0, 0
    for _ in range(300):
        try:
            fuzz.compile_one(fuzz.mutate(rng.choice(pool), rng))
            compiled += 1
        except netdsl.NetDSLError as e:
            semantic += not e.message.startswith(("unexpected", "unmatched"))
    assert compiled >= 10 and semantic >= 10, (compiled, semantic)
