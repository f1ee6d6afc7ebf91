"""Progress on stderr (netdsl.progress): a line redrawn in place on a terminal and erased at the end;
off a terminal, silence for quick work and a plain heartbeat line every 10 s for slow work; stdout
never touched. The clock is a fake one (no test waits for real time), and `netdsl check` runs once
with a fake terminal as stderr and once without."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("NETDSL_QUIET_INTERPRETER", "1")

from netdsl.cli import main  # noqa: E402
from netdsl.progress import PROGRESS_ENV, Progress, quiet  # noqa: E402

TINY = """\
network tiny {
    input x: f32[N, 3, H=6, W=6]
    y = x -> c1: conv2d(4, 3) -> relu -> global_avgpool -> flatten -> fc: linear(2)
    output y
}
"""


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_setting(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)


def test_off_a_terminal_quick_work_prints_nothing_and_slow_work_a_heartbeat():
    clock, out = Clock(), io.StringIO()
    p = Progress("check", out, clock=clock, ticker=False)
    assert not p.tty  # a StringIO is not a terminal
    p.stage("running Triton kernels", 5, "nodes")
    for i in range(5):
        clock.now += 1.9  # 9.5 s in all: under the heartbeat
        p.update(i + 1, f"n{i}")
    assert out.getvalue() == ""
    clock.now += 0.5  # 10 s since the start: one line
    p.poll()
    assert out.getvalue() == "check: running Triton kernels 5/5 nodes, 10s: n4\n"
    clock.now += 9.9
    p.poll()
    assert out.getvalue().count("\n") == 1  # the next one 10 s after the last
    clock.now += 0.1
    p.poll()
    p.close()
    assert out.getvalue().count("\n") == 2 and "\r" not in out.getvalue()


def test_on_a_terminal_the_line_is_redrawn_and_erased():
    clock, out = Clock(), io.StringIO()
    with Progress("compile", out, tty=True, clock=clock, ticker=False) as p:
        p.stage("building", 4, "kernels")
        clock.now += 2
        p.update(3, "conv2d_kernel sm_90")
        drawn = out.getvalue()
    assert drawn.startswith("\rcompile: building 0/4 kernels, 0s\x1b[K")
    assert drawn.endswith("\rcompile: building 3/4 kernels, 2s: conv2d_kernel sm_90\x1b[K")
    assert out.getvalue() == drawn + "\r\x1b[K"  # closing erases the line


def test_a_stage_without_a_count_shows_the_time_only():
    clock, out = Clock(), io.StringIO()
    p = Progress("run", out, tty=True, clock=clock, ticker=False)
    p.stage("reference backend")
    clock.now += 3
    p.poll(force_draw=True)
    assert out.getvalue().endswith("\rrun: reference backend, 3s\x1b[K")
    p.close()


def test_the_setting_turns_it_off_or_on(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "0")
    out = Terminal()
    with Progress("check", out, clock=Clock(), ticker=False) as p:
        p.stage("checking", 3, "nodes")
        p.update(2)
    assert out.getvalue() == ""
    monkeypatch.setenv(PROGRESS_ENV, "1")
    out = io.StringIO()
    with Progress("check", out, clock=Clock(), ticker=False) as p:
        p.stage("checking", 3, "nodes")
    assert "\rcheck: checking 0/3 nodes" in out.getvalue()


def test_quiet_prints_nothing_and_the_thread_stops_on_close(capsys):
    q = quiet()
    q.stage("x", 2)
    q.update(1, "a")
    q.close()
    p = Progress("check", Terminal())
    assert p.thread is not None and p.thread.is_alive()
    p.close()
    assert not p.thread.is_alive()
    assert capsys.readouterr() == ("", "")


def test_a_closed_stderr_does_not_fail_the_command():
    out = Terminal()
    out.close()
    p = Progress("check", out, clock=Clock(), ticker=False)
    p.stage("checking", 1)  # writing raises ValueError on a closed stream: progress turns itself off
    assert not p.enabled
    p.close()


def test_check_shows_progress_on_a_terminal_and_keeps_stdout_the_same(tmp_path, capsys, monkeypatch):
    model = tmp_path / "tiny.net"
    model.write_text(TINY)
    assert main(["check", str(model)]) == 0
    plain = capsys.readouterr()
    assert "\r" not in plain.err  # off a terminal: no redrawn line
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["check", str(model)]) == 0
    assert capsys.readouterr().out == plain.out
    shown = terminal.getvalue()
    assert "\rcheck: running Triton kernels 0/4 nodes" in shown
    assert "\rcheck: checking 0/4 nodes" in shown
    assert shown.endswith("\r\x1b[K")  # (updates closer than 0.1 s apart are not all drawn: see below)


class Recorder(Progress):
    """A Progress that keeps every stage and update it is told of."""

    def __init__(self) -> None:
        super().__init__("check", io.StringIO(), ticker=False)
        self.told: list[tuple] = []

    def stage(self, what: str, total: int | None = None, unit: str = "") -> None:
        self.told.append(("stage", what, total))

    def update(self, done: int, label: str = "") -> None:
        self.told.append(("update", done, label))


def test_check_reports_every_node_whose_kernels_run(tmp_path):
    from netdsl.backends.triton.check import check
    from netdsl.compiler import prepare
    from netdsl.ir.sizes import concrete_dims
    from netdsl.params import random_inputs

    model = tmp_path / "tiny.net"
    model.write_text(TINY)
    graph, fused, weights = prepare(model)
    recorder = Recorder()
    checks = check(fused, weights, random_inputs(graph, concrete_dims(graph, {}), 0), progress=recorder)
    names = [n.outputs[0].name for n in fused.nodes]
    assert names == ["relu_0", "global_avgpool_0", "flatten_0", "fc"]
    told = recorder.told
    assert told[0] == ("stage", "running Triton kernels", 4)
    running = told[1:told.index(("stage", "running the reference", None))]
    # each node with kernels: started (done = its index) and finished (index + 1); the flatten is a view
    assert running == [("update", 0, "relu_0"), ("update", 1, "relu_0"), ("update", 1, "global_avgpool_0"),
                       ("update", 2, "global_avgpool_0"), ("update", 3, "fc"), ("update", 4, "fc")]
    checking = told[told.index(("stage", "checking", 4)) + 1:]
    assert checking == [("update", i, name) for i, name in enumerate(names)] + [("update", 4, "")]
    assert [c.name for c in checks] == names


def test_the_progress_module_stands_alone():
    """Any layer may report progress: the module imports nothing from netdsl."""
    text = (Path(__file__).resolve().parent.parent / "netdsl" / "progress.py").read_text()
    assert "from ." not in text and "import netdsl" not in text


def test_compile_shows_each_build_on_a_terminal(tmp_path, capsys, monkeypatch):
    model = tmp_path / "tiny.net"
    model.write_text(TINY)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["compile", str(model), "--target", "sm_90"]) == 0
    shown = terminal.getvalue()
    assert "\rcompile: planning launches, " in shown and "\rcompile: building 0/3 kernels, " in shown
    assert shown.endswith("\r\x1b[K") and "conv2d_kernel" in capsys.readouterr().out
