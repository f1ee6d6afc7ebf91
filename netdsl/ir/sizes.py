"""Concrete sizes for a graph's symbolic input dims (``N``, ``H``, ...), and the memory they cost.

Everything that needs concrete shapes binds them the same way: the sizes asked for (``--dims``), then
the file's defaults (``input x: f32[N, 3, H=224, W=224]``), then N=1. Used by the command line,
ahead-of-time builds and the benchmarks. Once the dims are bound, every value's shape is checked
(``check_sizes``): a layer whose output would be empty (a 3x3 convolution of a 2x2 image) is an error
located at that layer, before anything runs.

Every array the package allocates for a user (weights, random inputs, a loaded file, a value of a
reference run) is first checked against int64 and against a memory budget (``check_allocation``), so
that a typo in a size is an error naming the bytes, never an allocation of 98 TiB. The budget is half
of the machine's physical memory unless ``NETDSL_MEMORY_BUDGET`` (or the command line's
``--memory-budget``) says otherwise, e.g. ``64G``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from typing import Iterator, Mapping

from ..errors import NetDSLError, SourceLoc
from .graph import Graph
from .types import DTYPES, INT64_MAX

BUDGET_ENV = "NETDSL_MEMORY_BUDGET"
_FALLBACK_MEMORY = 16 * 2**30  # when the machine's memory cannot be read: a budget of half of this
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_budget_override: int | None = None


def parse_dims(text: str | None) -> dict[str, int]:
    """Sizes written as ``N=1,H=224,W=224`` (the form of ``--dims``); empty for None or "".
    A size is a whole number (ASCII digits) of at least 1."""
    dims: dict[str, int] = {}
    if not text:
        return dims
    for item in text.split(","):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key, re.ASCII):
            raise NetDSLError(f"bad --dims entry `{item}`: expected NAME=SIZE", hint="write --dims N=1,H=224,W=224")
        if not re.fullmatch(r"[0-9]+", value, re.ASCII) or int(value) < 1:
            raise NetDSLError(f"bad --dims entry `{item}`: a size is a whole number of at least 1, written "
                              f"in the digits 0-9", hint=f"write e.g. --dims {key}=8")
        if int(value) > INT64_MAX:
            raise NetDSLError(f"bad --dims entry `{item}`: {key} does not fit a 64-bit integer",
                              hint=f"sizes go up to {INT64_MAX:,}")
        if key in dims:
            raise NetDSLError(f"--dims gives `{key}` twice", hint="give each dimension once")
        dims[key] = int(value)
    return dims


def concrete_dims(graph: Graph, overrides: Mapping[str, int]) -> dict[str, int]:
    """Bind every symbolic input dim: ``overrides``, then the file's defaults, then N=1; any other
    symbol left without a size is a NetDSLError (at the input that names it), and so is a size given for
    a dim no input has (a typo would otherwise be ignored), or a value whose shape would be empty or
    beyond int64 at these sizes (``check_sizes``)."""
    from ..errors import did_you_mean

    symbols = sorted({s for v in graph.inputs for s in v.type.symbols()})
    locs = graph.annotations.get("dim_locs", {})
    unknown = sorted(set(overrides) - set(symbols))
    if unknown:
        name = unknown[0]
        raise NetDSLError(f"--dims gives `{name}`, but no input of `{graph.name}` has a dimension `{name}`",
                          hint=did_you_mean(name, symbols) or (f"its symbolic dims are {', '.join(symbols)}"
                                                               if symbols else "its inputs have static shapes"))
    env = {**graph.dim_defaults, **overrides}
    for sym in symbols:
        if sym not in env:
            if sym == "N":
                env[sym] = 1
            else:
                raise NetDSLError(f"input dimension `{sym}` has no size", locs.get(sym),
                                  hint=f"give one with --dims {sym}=SIZE, or a default in the file ({sym}=224)")
    check_sizes(graph, env)
    return env


def _format_env(dims: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(dims.items())) or "these sizes"


def check_sizes(graph: Graph, dims: Mapping[str, int], itemsize: Mapping[str, int] | None = None) -> None:
    """Check every value's concrete shape at ``dims``: each dimension that depends on them at least 1 and
    the element count within int64 — a NetDSLError located at the first node whose output fails. With ``itemsize``
    (element type -> bytes, as the values will be held), each value and each node's inputs and outputs
    together (a lower bound of what must be live while it runs) must also fit the memory budget."""
    for sym, size in dims.items():
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= INT64_MAX:
            raise NetDSLError(f"dimension `{sym}` is {size!r}; a size is a whole number of at least 1",
                              hint=f"give it a size of at least 1 (--dims {sym}=1)")
    producers = {v.name: n for n in graph.nodes for v in n.outputs}
    byte_count: dict[str, int] = {}
    for v in graph.values():
        if not v.type.symbols() <= set(dims):
            continue  # a size that is not bound here (not an input dim): nothing to check
        shape = v.type.concrete(dims)
        node = producers.get(v.name)
        what = f"input `{v.name}`" if node is None else f"`{node.op}`" + (f" `{node.name}`" if node.name else "")
        loc = node.loc if node is not None else None
        for i, (d, got) in enumerate(zip(v.type.shape, shape)):
            # a size of the file's own (an empty slice, `split` with a 0 section) is the front end's to judge
            if got < 1 and not isinstance(d, int):
                raise NetDSLError(
                    f"{what} would give an empty output at {_format_env(dims)}: dimension {i} of {v.type} is "
                    f"`{d}` = {got}", loc,
                    hint=f"the input is too small for this layer; give larger sizes (--dims), so that {d} is at "
                         f"least 1")
        elements = math.prod(shape)
        if elements > INT64_MAX:
            raise NetDSLError(f"{what} would have {elements:,} elements at {_format_env(dims)}, more than "
                              f"a 64-bit index holds", loc, hint="give smaller sizes (--dims)")
        if itemsize is not None:
            byte_count[v.name] = elements * itemsize.get(v.type.dtype, DTYPES.get(v.type.dtype, 8))
            check_allocation(byte_count[v.name], f"the value of {what} ({v.type} at {_format_env(dims)})", loc)
    if itemsize is None:
        return
    for node in graph.nodes:
        live = sum(byte_count.get(v.name, 0) for v in (*node.inputs, *node.outputs))
        what = f"`{node.op}`" + (f" `{node.name}`" if node.name else "")
        check_allocation(live, f"{what} (its inputs and outputs, live together at {_format_env(dims)})", node.loc)


# --- memory -------------------------------------------------------------------------------------------


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where it cannot be read."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or the name is unknown
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def parse_bytes(text: str, origin: str) -> int:
    """A byte count written as ``12000000``, ``512M``, ``64G``, ``1.5GiB`` or ``2T`` (powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGTP]?)(?:I?B)?\s*", str(text), re.ASCII | re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise NetDSLError(f"{origin}: `{text}` is not an amount of memory",
                          hint="write a byte count, or a number with K, M, G or T (powers of 1024), e.g. 64G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def memory_budget() -> int:
    """The most bytes one allocation (or one group of them) may take: ``--memory-budget`` when the
    command line set it, else ``NETDSL_MEMORY_BUDGET``, else half of physical memory."""
    if _budget_override is not None:
        return _budget_override
    env = os.environ.get(BUDGET_ENV)
    if env:
        return parse_bytes(env, BUDGET_ENV)
    return (physical_memory() or _FALLBACK_MEMORY) // 2


@contextlib.contextmanager
def memory_budget_set(budget: int | str | None) -> Iterator[None]:
    """Within the block, the budget is ``budget`` (bytes, or text as ``64G``); None changes nothing."""
    global _budget_override
    if budget is None:
        yield
        return
    old = _budget_override
    _budget_override = parse_bytes(budget, "--memory-budget") if isinstance(budget, str) else int(budget)
    try:
        yield
    finally:
        _budget_override = old


def format_bytes(n: int, note: str = "") -> str:
    """``98.2 TiB (107,999,999,999,892 bytes)``, with ``note`` inside the parentheses after a semicolon."""
    unit, scale = next(((u, s) for u, s in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20),
                                              ("KiB", 2**10)) if n >= s), ("bytes", 1))
    exact = f"{n:,} bytes" + (f"; {note}" if note else "")
    return exact if scale == 1 and not note else f"{n / scale:.1f} {unit} ({exact})" if scale > 1 else \
        f"{n:,} bytes ({note})"


def tensor_bytes(shape: tuple[int, ...], itemsize: int) -> int:
    """The bytes of an array of ``shape`` (exact: Python integers never overflow)."""
    return math.prod(int(d) for d in shape) * itemsize


def check_allocation(nbytes: int, what: str, loc: SourceLoc | None = None) -> None:
    """A NetDSLError when ``what`` would take more than int64 or the memory budget allows."""
    if nbytes > INT64_MAX:
        raise NetDSLError(f"{what} would take {nbytes:,} bytes, more than a 64-bit size holds", loc,
                          hint="check the sizes: one of them is far too large")
    budget = memory_budget()
    if nbytes > budget:
        origin = ("--memory-budget" if _budget_override is not None
                  else BUDGET_ENV if os.environ.get(BUDGET_ENV) else "half of this machine's memory")
        raise NetDSLError(f"{what} would take {format_bytes(nbytes)}, over the memory budget of "
                          f"{format_bytes(budget, origin)}", loc,
                          hint=f"check the sizes; to allow more, set {BUDGET_ENV} or --memory-budget (e.g. 64G)")
