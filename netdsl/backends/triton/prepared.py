"""Prepared calls: a step's kernel launches, decided once per input shape and then repeated as they are.

A step's ``run`` checks its arguments, computes grids, picks configs and builds epilogue arguments
on every call; for a known input shape every one of those decisions comes out the same, because
the launch plan (``plan.LaunchPlan``) gives every value the same memory on every call. So the
first call for a shape runs each step normally while ``netdsl.kernels._host.capturing`` lists the
launches it makes (with the config each ran with: the autotuner's pick on a GPU), and later calls
repeat those launches (``_host.prepare``) without planning them again.

That is only right when the launches are all the step does. A step may also run torch ops (layout
fix-ups that copy operands, a counter zeroed before a kernel and read after it, a table built on
first use): those must run on every call. The first call watches the torch ops a step runs (a
dispatch mode) and repeats the launches alone only when no op but a view or an allocation touched
memory a launch reads or writes, or the plan's memory; otherwise the step's ``run`` is called again
(correct, just not lean). Allocations are kept: scratch memory a kernel writes before it reads it.
A split-K launch pair's fp32 workspace, allocated by the kernel wrapper, is moved into the launch
plan's planned workspace (``in_workspace``): the prepared calls use the plan's memory, not the scratch
of the first call. Work a step does once and keeps for later calls (a table built on first use) is not
work to repeat: the step does it inside ``kept_across_calls()``, which the watch does not see.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

from ...kernels import _host

Call = Callable[[], None]

# ops that only make fresh memory (nothing is read, nothing depends on what was there)
_ALLOCATIONS = frozenset({"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided"})


def storage_id(t: torch.Tensor) -> int:
    """Which memory a tensor (or view) lives in: its storage's identity (meta tensors have no address)."""
    return t.untyped_storage()._cdata


class _Touched(TorchDispatchMode):
    """The storages that torch ops other than views and allocations read or write."""

    def __init__(self) -> None:
        super().__init__()
        self.storages: set[int] = set()

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never under torch.compile: keep torch from importing its compiler on first use

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if not func.is_view and func.overloadpacket.__name__ not in _ALLOCATIONS:
            for t in tree_leaves((args, kwargs, result)):
                if isinstance(t, torch.Tensor):
                    self.storages.add(storage_id(t))
        return result


@contextlib.contextmanager
def kept_across_calls():
    """Torch work whose result a step keeps for every later call (a constant built on first use): not
    work a prepared call must repeat, so ``run_and_prepare``'s watch does not see it."""
    with _disable_current_modes():
        yield


def in_workspace(launches: list, workspace: torch.Tensor | None) -> list:
    """``launches`` (``(launch, config, tuned)``) of a split-K step with its workspace (the ``ws_ptr`` the
    partial and the reduction kernels share) replaced by the same shape at the start of ``workspace``;
    None: not a split-K step (other kernels' ``ws_ptr`` is theirs), the launches as they are."""
    out = []
    for launch, config, tuned in launches:
        ws = launch.args.get("ws_ptr")
        if workspace is not None and isinstance(ws, torch.Tensor):
            if ws.numel() > workspace.numel():
                raise AssertionError(f"a split-K workspace of {ws.numel()} floats outgrows the planned "
                                     f"{workspace.numel()}")
            planned = workspace[:ws.numel()].view(ws.shape)
            launch = dataclasses.replace(launch, args={**launch.args, "ws_ptr": planned})
        out.append((launch, config, tuned))
    return out


def run_and_prepare(run: Callable[[], object], persistent: Iterable[int],
                    workspace: torch.Tensor | None = None) -> tuple[object, list[Call] | None]:
    """Run a step (``run()``), and say how to repeat it: its launches as prepared calls, or None when
    it did other work that must run again (then call the step again). ``persistent``: the storages of
    the launch plan (arena, inputs, outputs); ``workspace``: the plan's split-K workspace."""
    with _host.capturing() as launches, _Touched() as seen:
        result = run()
    used = set(persistent)
    for launch, _, _ in launches:
        used.update(storage_id(t) for t in launch.args.values() if isinstance(t, torch.Tensor))
    if seen.storages & used:
        return result, None
    return result, [_host.prepare(launch, config, tuned) for launch, config, tuned in in_workspace(launches, workspace)]


def copy_call(dst: torch.Tensor, src: torch.Tensor) -> Call:
    """A layout conversion made by torch (``dst.copy_(src)``), as a prepared call."""
    def call() -> None:
        dst.copy_(src)
    return call

