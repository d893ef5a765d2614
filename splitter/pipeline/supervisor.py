"""The process tree of `splitter run` (and of the demo): capture, the workers and the reverse stream as children.

Owns: `Supervisor` (starting each child in a process group of its own, restarting one that exits with
capped backoff, keeping down one that exits with a configuration or fatal code, ending the run once
nothing can make progress, and stopping every child with SIGTERM, then SIGKILL) and `child_argv`.
Ctrl-C is the supervisor's: a terminal signals its whole foreground process group, so each child has a
group of its own (else a child still starting would die of it, and the demo, which keeps its children
running to verify after Ctrl-C, would lose them), stops on the supervisor's SIGTERM, and stops itself
when its supervisor (`SUPERVISED_ENV`, watched in `splitter.pipeline.daemon`) is gone.
Must not: run a component itself, or read any database.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from splitter.core import exit_codes
from splitter.pipeline.daemon import FINAL_EXIT_CODES, FIRST_BACKOFF, MAX_BACKOFF, SUPERVISED_ENV

log = logging.getLogger("splitter.pipeline.daemon")  # the name operators' log filters already know


@dataclass
class _Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    down: int | None = None  # the exit code it stopped with for good (one of FINAL_EXIT_CODES)


class Supervisor:
    """Keeps child processes running until stopped; stops them all with SIGTERM, then SIGKILL.

    A child that exits with a configuration or fatal code stays down (it recorded why in its database,
    where `splitter status` reads it).  `needed` names groups of children the run cannot do without: once
    every child of one group is down for good (or every child at all), nothing can make progress and
    `run` stops the others and returns the highest exit code among that group.  Once `stop` is set (or
    `run` ends) it is stopping: a child that exits then is not restarted nor warned about.
    """

    def __init__(self, children: Sequence[tuple[str, list[str]]], env: dict[str, str] | None = None,
                 grace: float = 15.0, output: IO[bytes] | None = None,
                 needed: Sequence[Sequence[str]] = ()) -> None:
        self._children = [_Child(name, argv) for name, argv in children]
        by_name = {c.name: c for c in self._children}
        self._groups = [[by_name[n] for n in group] for group in needed if group]
        self._groups.append(list(self._children))
        self._env = env
        self._grace = grace
        self._output = output
        self._stopping = False

    def pids(self) -> dict[str, int]:
        return {c.name: c.process.pid for c in self._children if c.process is not None and c.process.poll() is None}

    def down(self) -> dict[str, int]:
        """Children that stopped for good, with their exit codes."""
        return {c.name: c.down for c in self._children if c.down is not None}

    def run(self, stop: threading.Event) -> int:
        try:
            while not stop.is_set():
                now = time.monotonic()
                for child in self._children:
                    if stop.is_set():  # a child that exited because of the same stop is no fault
                        break
                    self._tend(child, now)
                blocked = self._blocked()
                if blocked is not None:
                    return blocked
                stop.wait(0.2)
            return exit_codes.OK
        finally:
            self.stop_children()

    def _tend(self, child: _Child, now: float) -> None:
        if child.down is not None or self._stopping:
            return
        code = child.process.poll() if child.process is not None else None
        if child.process is not None and code is None:
            return
        if child.process is not None:
            child.process = None
            if code in FINAL_EXIT_CODES:
                child.down = code
                log.error("%s exited with code %s: it stays down (retrying cannot help; `splitter status` shows "
                          "why); restart `splitter run` once the cause is fixed", child.name, code)
                return
            delay = min(FIRST_BACKOFF * 2 ** min(child.restarts, 6), MAX_BACKOFF)
            log.warning("%s exited with code %s; restarting in %.1fs", child.name, code, delay)
            child.restarts += 1
            child.next_start = now + delay
        if now >= child.next_start:
            env = dict(self._env if self._env is not None else os.environ)
            env[SUPERVISED_ENV] = str(os.getpid())
            # A process group of its own: the terminal's Ctrl-C reaches the supervisor only (module docstring).
            child.process = subprocess.Popen(child.argv, env=env, stdout=self._output,
                                             stderr=subprocess.STDOUT if self._output else None, process_group=0)

    def _blocked(self) -> int | None:
        """The exit code once some needed group is down for good; None while the run can make progress."""
        for group in self._groups:
            codes = [c.down for c in group]
            if group and all(code is not None for code in codes):
                log.error("nothing can make progress: %s down for good; stopping the rest",
                          ", ".join(f"{c.name} (exit {c.down})" for c in group))
                return max(code for code in codes if code is not None)
        return None

    def stop_children(self) -> None:
        """SIGTERM to every running child, SIGKILL after the grace period; one log line says what stopped."""
        self._stopping = True
        running = [c for c in self._children if c.process is not None and c.process.poll() is None]
        if not running:
            return
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        killed = []
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs: killing it", child.name, self._grace)
                child.process.kill()
                child.process.wait()
                killed.append(child.name)
        log.info("stopped %d child process(es): %s%s; each resumes from its checkpoint when started again",
                 len(running), ", ".join(c.name for c in running),
                 f" ({', '.join(killed)} killed after {self._grace:.0f}s)" if killed else "")


def child_argv(global_args: Sequence[str], command: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "splitter", *global_args, *command]


__all__ = ["Supervisor", "child_argv"]
