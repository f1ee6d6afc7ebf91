"""Progress on stderr for the long commands (`netdsl check`, `netdsl compile`, a reference `run`).

On a terminal one line is redrawn in place ("check: Triton kernels 7/23 nodes, 12s: layer1.0.conv1")
and erased at the end, so that the report on stdout reads as it would without it. When stderr is not a
terminal (a log file, CI, a pipe) nothing is printed for work that finishes quickly, and a plain line
every ``heartbeat_s`` seconds (10 by default) for work that does not: a long build is never silent for
minutes, and a log never fills with carriage returns. stdout is never touched.

Why not tqdm: the non-terminal behaviour above (quiet, then a heartbeat) is ours either way, the line
is a few dozen lines of code, and a dependency for it would be one more package in every install.

A background thread redraws the line (once a second on a terminal) and writes the heartbeat, because
one step of the work can itself take minutes (a large convolution in Triton's interpreter, one kernel
build) and no ``update`` would come in that time. ``NETDSL_PROGRESS=0`` turns all of it off; ``=1``
draws the terminal line even when stderr is not a terminal.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import Callable, TextIO

PROGRESS_ENV = "NETDSL_PROGRESS"
HEARTBEAT_S = 10.0  # when stderr is not a terminal: a line after this many seconds without one
REDRAW_S = 1.0  # on a terminal: the elapsed time is redrawn this often even without an update


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class Progress:
    """One command's progress: stages (``stage``), each with a count of items (``update``).

    ``tty``: draw the redrawn line (default: whether ``stream`` is a terminal, or NETDSL_PROGRESS);
    ``clock`` and ``ticker`` are for tests (a fake clock, no background thread: call ``poll``).
    """

    def __init__(self, command: str, stream: TextIO | None = None, *, tty: bool | None = None,
                 heartbeat_s: float = HEARTBEAT_S, clock: Callable[[], float] = time.monotonic,
                 ticker: bool = True) -> None:
        self.command = command
        self.stream = stream if stream is not None else sys.stderr
        setting = os.environ.get(PROGRESS_ENV, "").strip().lower()
        self.enabled = setting not in ("0", "off", "no", "false")
        self.tty = tty if tty is not None else (setting in ("1", "on", "yes", "true") or _is_tty(self.stream))
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self.what, self.unit, self.label = "", "", ""
        self.done, self.total = 0, None
        self.started = self.last_line = self.last_draw = clock()
        self.drawn = False  # a terminal line is on screen
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = None
        if self.enabled and ticker:
            self.thread = threading.Thread(target=self._tick, name="netdsl-progress", daemon=True)
            self.thread.start()

    # ------------------------------------------------------------------ what the work calls

    def stage(self, what: str, total: int | None = None, unit: str = "") -> None:
        """A new stage of ``total`` items (None: unknown), e.g. ("Triton kernels", 23, "nodes")."""
        with self.lock:
            self.what, self.total, self.unit, self.done, self.label = what, total, unit, 0, ""
        self.poll(force_draw=True)

    def update(self, done: int, label: str = "") -> None:
        """``done`` items of the stage are finished; ``label`` names the one in hand (a node, a kernel)."""
        with self.lock:
            self.done, self.label = done, label
        self.poll()

    def poll(self, force_draw: bool = False) -> None:
        """Draw what is due: the terminal line (at most every 0.1 s), or a heartbeat line."""
        if not self.enabled:
            return
        with self.lock:
            now = self.clock()
            if self.tty and (force_draw or now - self.last_draw >= 0.1):
                self._write("\r" + self._fit(self.line(now)) + "\x1b[K")
                self.last_draw, self.drawn = now, True
            elif not self.tty and now - self.last_line >= self.heartbeat_s:
                self._write(self.line(now) + "\n")
                self.last_line = now

    def close(self) -> None:
        """Stop the thread and erase the terminal line (nothing to erase off a terminal)."""
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
        with self.lock:
            if self.drawn:
                self._write("\r\x1b[K")
                self.drawn = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ drawing

    def line(self, now: float) -> str:
        """The progress text, e.g. "check: Triton kernels 7/23 nodes, 12s: layer1.0.conv1"."""
        count = f" {self.done}/{self.total}" if self.total is not None else ""
        head = f"{self.command}: {self.what or 'working'}{count}{' ' + self.unit if self.unit and count else ''}"
        text = f"{head}, {now - self.started:.0f}s"
        return f"{text}: {self.label}" if self.label else text

    def _fit(self, text: str) -> str:
        width = shutil.get_terminal_size((80, 24)).columns - 1
        return text if len(text) <= width else text[: max(0, width - 3)] + "..."

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: progress is not worth failing for
            self.enabled = False

    def _tick(self) -> None:
        interval = REDRAW_S if self.tty else min(self.heartbeat_s, REDRAW_S)
        while not self.stopped.wait(interval):
            self.poll(force_draw=True)


def quiet() -> Progress:
    """A Progress that prints nothing (the default of the library functions that take one)."""
    p = Progress("", ticker=False)
    p.enabled = False
    return p
