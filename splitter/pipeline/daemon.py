"""The daemon skeleton: signals, retries with backoff, and the process tree of `splitter run`.

Owns: running one component (capture or a worker) until SIGTERM/SIGINT, restarting it after
retryable faults with capped exponential backoff, turning fatal and configuration errors into an
exit code, and supervising child processes (one capture, one worker per service) for
`splitter run`.  Must not: contain pipeline logic, or import a database driver (a driver error a
component lets through is told apart as `connectors.pg.client.DatabaseError`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from connectors.pg.client import DatabaseError
from splitter.core import exit_codes
from splitter.core.errors import ConfigurationError, FatalError, RetryableError, SplitterError, classify_sqlstate

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


def install_stop_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_with_retries(name: str, component: Callable[[threading.Event], None], stop: threading.Event) -> int:
    """Run `component(stop)` until it returns with `stop` set; retry retryable faults.  Returns an exit code."""
    backoff = 0.5
    while not stop.is_set():
        started = time.monotonic()
        try:
            component(stop)
            if stop.is_set():
                break
            raise RetryableError(f"{name} ended without being asked to")
        except RetryableError as exc:
            error: Exception = exc
        except DatabaseError as exc:  # a driver error a component let through: classified by its SQLSTATE
            kind = classify_sqlstate(getattr(exc, "sqlstate", None))
            if kind is not RetryableError:
                log.error("%s: %s (SQLSTATE %s)", name, type(exc).__name__, exc.sqlstate)
                return exit_codes.FATAL
            error = exc
        except ConfigurationError as exc:
            log.error("%s: %s", name, exc)
            return exit_codes.CONFIG
        except FatalError as exc:
            log.error("%s: %s", name, exc)
            return exit_codes.FATAL
        if time.monotonic() - started > 60:
            backoff = 0.5  # it ran well for a while: this is a new fault, not the same one again
        log.warning("%s: %s; retrying in %.1fs", name, _one_line(error), backoff)
        stop.wait(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)
    log.info("%s stopped", name)
    return exit_codes.OK


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass
class _Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0


class Supervisor:
    """Keeps child processes running until stopped; stops them all with SIGTERM, then SIGKILL."""

    def __init__(self, children: Sequence[tuple[str, list[str]]], env: dict[str, str] | None = None,
                 grace: float = 15.0, output: IO[bytes] | None = None) -> None:
        self._children = [_Child(name, argv) for name, argv in children]
        self._env = env
        self._grace = grace
        self._output = output

    def pids(self) -> dict[str, int]:
        return {c.name: c.process.pid for c in self._children if c.process is not None and c.process.poll() is None}

    def run(self, stop: threading.Event) -> int:
        try:
            while not stop.is_set():
                now = time.monotonic()
                for child in self._children:
                    code = child.process.poll() if child.process is not None else None
                    if child.process is not None and code is None:
                        continue
                    if child.process is not None:
                        delay = min(0.5 * 2 ** min(child.restarts, 6), MAX_BACKOFF)
                        log.warning("%s exited with code %s; restarting in %.1fs", child.name, code, delay)
                        child.restarts += 1
                        child.next_start = now + delay
                        child.process = None
                    if now >= child.next_start:
                        child.process = subprocess.Popen(child.argv, env=self._env, stdout=self._output,
                                                         stderr=subprocess.STDOUT if self._output else None)
                stop.wait(0.2)
            return exit_codes.OK
        finally:
            self.stop_children()

    def stop_children(self) -> None:
        running = [c for c in self._children if c.process is not None and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs: killing it", child.name, self._grace)
                child.process.kill()
                child.process.wait()


def child_argv(global_args: Sequence[str], command: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "splitter", *global_args, *command]


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)


__all__ = ["SplitterError", "Supervisor", "run_with_retries"]
