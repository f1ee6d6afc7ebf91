"""The pass manager: named passes, named pipelines, verification between passes, IR dumps.

A pass is a pure function ``Graph -> (Graph, summary)``: the new graph, and one line saying what it
changed ("53 folded"). A pipeline is a named list of pass names. ``run_pipeline`` runs one, logs
``name: summary`` per pass, checks the graph after every pass and prints the IR after the passes
named by ``dump_after`` (or the ``NETDSL_DUMP_AFTER`` environment variable: a pass name, a
comma-separated list, or ``all``).

Checking after every pass: the full verifier (netdsl.ops.verify.verify) re-infers every node's type,
which costs more than all the passes together on ResNet-50. Passes keep unchanged nodes as the same
objects, so by default the verifier runs on the nodes a pass created (with their outside inputs as
the inputs of a small graph), and the whole graph gets the cheap structural checks: every value
defined once and before its uses, with the type it was defined with, and every output defined.
``verify="full"`` (or ``NETDSL_VERIFY=full``) runs the full verifier on the whole graph instead.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from ..errors import NetDSLError, did_you_mean
from ..ir.graph import Graph, Node
from ..ir.printer import format_graph
from ..ir.verify import IRError
from ..ops.printing import attr_defaults
from ..ops.verify import verify as verify_graph
from .cleanup import eliminate_common_subexpressions, eliminate_dead_code, remove_dropout
from .fusion import (fold_batchnorm, fold_parameter_linear, fuse_attention, fuse_conv_epilogue, fuse_norm_activation,
                     fuse_pointwise)
from .layout import mark_layout
from .memory import plan_memory


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Graph], tuple[Graph, str]]
    doc: str = ""


def _pass(name: str, fn) -> Pass:
    return Pass(name, fn, (fn.__doc__ or "").strip().split("\n")[0])


PASSES: dict[str, Pass] = {p.name: p for p in (
    _pass("remove_dropout", remove_dropout),
    _pass("cse", eliminate_common_subexpressions),
    _pass("dce", eliminate_dead_code),
    _pass("fold_parameter_linear", fold_parameter_linear),
    _pass("fold_batchnorm", fold_batchnorm),
    _pass("fuse_attention", fuse_attention),
    _pass("fuse_norm_activation", fuse_norm_activation),
    _pass("fuse_conv_epilogue", fuse_conv_epilogue),
    _pass("fuse_pointwise", fuse_pointwise),
    _pass("mark_layout", mark_layout),
    _pass("plan_memory", plan_memory),
)}

CLEANUP = ("remove_dropout", "cse", "dce")
FUSION = ("fold_parameter_linear", "fold_batchnorm", "fuse_attention", "fuse_norm_activation", "fuse_conv_epilogue", "fuse_pointwise")
ANALYSIS = ("mark_layout", "plan_memory")

PIPELINES: dict[str, tuple[str, ...]] = {
    "O0": (),
    "O1": CLEANUP + FUSION + ANALYSIS,
}


def pipeline_passes(pipeline: str | Sequence[str | Pass]) -> list[Pass]:
    """A pipeline by name ("O1"), as a comma-separated string of pass names, or as a list of pass
    names and Pass objects."""
    if isinstance(pipeline, str):
        items = PIPELINES.get(pipeline)
        if items is None:
            items = tuple(p.strip() for p in pipeline.split(",") if p.strip())
    else:
        items = tuple(pipeline)
    out = []
    for item in items:
        if isinstance(item, Pass):
            out.append(item)
        elif item in PASSES:
            out.append(PASSES[item])
        else:
            raise NetDSLError(f"unknown pass or pipeline `{item}`",
                              hint=did_you_mean(item, list(PASSES) + list(PIPELINES))
                              or f"pipelines: {', '.join(PIPELINES)}; passes: {', '.join(PASSES)}")
    return out


# ---------------------------------------------------------------------------------------------
# checking between passes
# ---------------------------------------------------------------------------------------------

def verify_changed(graph: Graph, checked: dict[int, Node]) -> None:
    """Verify the nodes not in ``checked`` (by identity) against the registry, the whole graph structurally."""
    new = [n for n in graph.nodes if id(n) not in checked]
    verify_graph(graph, new)
    for n in new:
        checked[id(n)] = n  # holding the node keeps its id from being reused


# ---------------------------------------------------------------------------------------------
# running a pipeline
# ---------------------------------------------------------------------------------------------

def format_annotated(graph: Graph) -> str:
    """The IR text with each node's output layout as a trailing comment, when it is known."""
    layout = graph.annotations.get("layout")
    text = format_graph(graph, attr_defaults=attr_defaults)
    if not layout:
        return text
    lines = text.split("\n")
    lines[0] += "".join(f"  # %{v.name} also as {layout.converted[v.name]}" for v in graph.inputs
                        if v.name in layout.converted)
    for i, node in enumerate(graph.nodes, start=1):
        name = node.outputs[0].name
        tags = [layout.get(name)] if layout.get(name) else []
        if name in layout.fixups:
            tags.append(f"fix-up: dim {layout.fixups[name]} moved last")
        if name in layout.hwc_flatten:
            tags.append("view in (H, W, C) order")
        if name in layout.strided_views:
            tags.append("strided view, no copy")
        if name in layout.converted:
            tags.append(f"also as {layout.converted[name]}")
        if tags:
            lines[i] += f"  # {', '.join(tags)}"
    plan = graph.annotations.get("memory")
    if plan is not None:
        lines.append(f"// memory: {plan.summary()}")
    return "\n".join(lines)


def _dump_set(dump_after: str | Iterable[str] | None, passes: list[Pass]) -> set[str]:
    """The passes to dump after; a name given explicitly must be in the pipeline (a name from the
    environment variable only has to be a pass: the variable applies to every pipeline)."""
    explicit = dump_after is not None
    if dump_after is None:
        dump_after = os.environ.get("NETDSL_DUMP_AFTER") or ()
    if isinstance(dump_after, str):
        dump_after = [p.strip() for p in dump_after.split(",") if p.strip()]
    names = set(dump_after)
    running = [p.name for p in passes]
    for name in names - {"all"}:
        if name not in PASSES:
            raise NetDSLError(f"dump after an unknown pass `{name}`",
                              hint=did_you_mean(name, PASSES) or f"passes: {', '.join(PASSES)}")
        if explicit and name not in running:
            raise NetDSLError(f"pass `{name}` is not in the pipeline, so there is no IR to dump after it",
                              hint="run a pipeline that has it, e.g. --pipeline O1")
    return names


def run_pipeline(graph: Graph, pipeline: str | Sequence[str | Pass] = "O1",
                 dump_after: str | Iterable[str] | None = None, log: Callable[[str], None] | None = None,
                 dims: Mapping[str, int] | None = None, verify: str | None = None) -> Graph:
    """Run a pipeline on ``graph``; return the new graph.

    ``log`` receives one line per pass ("fold_batchnorm: 53 folded") and the IR dumps (default: no
    log; dumps then go to stderr). ``dims`` gives concrete sizes for the analyses that need them (the
    memory plan). ``verify``: "changed" (default) or "full", see the module docstring.
    """
    with _collector_paused():
        return _run_pipeline(graph, pipeline, dump_after, log, dims, verify)


@contextlib.contextmanager
def _collector_paused():
    """Python's cycle collector paused while the passes run: they allocate many small containers while the
    graph keeps every node alive, so each collection would walk the whole graph again (time growing with the
    square of the graph's size: 100k nodes took minutes). The passes make no reference cycles that need it;
    whatever they leave is collected once they are done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _run_pipeline(graph, pipeline, dump_after, log, dims, verify) -> Graph:
    passes = pipeline_passes(pipeline)
    dumps = _dump_set(dump_after, passes)
    mode = verify or os.environ.get("NETDSL_VERIFY", "changed")
    if dims is not None:
        graph = graph.replace(annotations={**graph.annotations, "dims": dict(dims)})
    checked = {id(n): n for n in graph.nodes}  # the front end inferred these with the registry itself
    for p in passes:
        before = graph
        graph, summary = p.run(graph)
        if graph is not before and graph.nodes is not before.nodes:
            try:
                if mode == "full":
                    verify_graph(graph)
                else:
                    verify_changed(graph, checked)
            except IRError as e:
                raise IRError(f"after pass {p.name}: {e}") from None
        if log is not None:
            log(f"{p.name}: {summary}")
        if p.name in dumps or "all" in dumps:
            text = f"// IR after {p.name} ({summary})\n{format_annotated(graph)}"
            (log or (lambda s: print(s, file=sys.stderr)))(text)
    return graph
