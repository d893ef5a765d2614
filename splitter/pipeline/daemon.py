"""The daemon skeleton: signals, retries with backoff, and stop records of one component.

Owns: running one component (capture, a worker, the reverse daemon) until SIGTERM/SIGINT, restarting it
after retryable faults with capped exponential backoff that starts again from the first delay as soon as
the component made progress after the fault (its loop still ticked `PROGRESS_AFTER` seconds into the
attempt: `TickingStop`, the stop event every component's `run` gets, counts each poll); turning fatal
and configuration errors into an exit code and a stop record in the component's database
(`ComponentRecord`, cleared once it runs again); the exit code of a stop on purpose (`stop_exit_code`);
and a supervised child's watch on its supervisor (`SUPERVISED_ENV`: it stops itself once that is gone).
The process tree of `splitter run` is `splitter.pipeline.supervisor`'s.  Must not: contain pipeline
logic, or import a database driver (a driver error a component lets through is told apart as
`connectors.pg.client.DatabaseError`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from connectors.pg.client import DatabaseError
from connectors.pg.state import components
from splitter.core import exit_codes
from splitter.core.dsn import mask_secrets
from splitter.core.errors import ConfigurationError, FatalError, RetryableError, SplitterError, classify_sqlstate

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF = 30.0
FIRST_BACKOFF = 0.5
#: An attempt whose loop still ticked this many seconds after it started got past connecting and ran: the
#: fault that ends it is a new one, and the backoff starts again from FIRST_BACKOFF.
PROGRESS_AFTER = 1.0
#: A child that exits with one of these is not started again: retrying cannot help (README "Exit codes").
FINAL_EXIT_CODES = frozenset({exit_codes.CONFIG, exit_codes.FATAL})
#: In the environment of every child a `Supervisor` starts: the supervisor's pid.
SUPERVISED_ENV = "SPLITTER_SUPERVISED"
#: How often a supervised child checks that its supervisor is still there.
PARENT_CHECK = 1.0

_stop_signals: list[int] = []  # the signals that asked this process to stop, in order


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`; so does the end of the supervisor, in a supervised child."""
    def handler(signum: int, frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        _stop_signals.append(signum)
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    supervisor = os.environ.get(SUPERVISED_ENV, "")
    if supervisor.isdigit():
        threading.Thread(target=_watch_parent, args=(int(supervisor), stop), name="supervisor-watch",
                         daemon=True).start()


def _watch_parent(supervisor: int, stop: threading.Event) -> None:
    # Its own process group keeps the terminal's signals from a child, so its supervisor's death (SIGKILL,
    # SIGHUP of a closed terminal) would leave it running on its own: it stops itself instead.
    while not stop.wait(PARENT_CHECK):
        if os.getppid() != supervisor:
            log.warning("the supervisor (pid %d) is gone: stopping", supervisor)
            stop.set()


def stop_exit_code(code: int) -> int:
    """`code`, or INTERRUPTED (130) for a clean stop that Ctrl-C (SIGINT) asked for: the exit code table
    (README "Exit codes") has 130 for Ctrl-C, while SIGTERM (a service manager's stop) is a clean 0."""
    if code == exit_codes.OK and signal.SIGINT in _stop_signals:
        return exit_codes.INTERRUPTED
    return code


def retry_until_done(name: str, attempt: Callable[[], T], stop: threading.Event) -> T | None:
    """`attempt()` until it returns, retrying retryable faults with `run_with_retries`' backoff and logged
    cause (issue 12: transient faults are retried, capped), e.g. `splitter run`'s read of the source before
    it starts anything; None if `stop` is set first.  Configuration and fatal errors propagate."""
    backoff = FIRST_BACKOFF
    while not stop.is_set():
        try:
            return attempt()
        except RetryableError as exc:
            error: Exception = exc
        except DatabaseError as exc:
            if classify_sqlstate(getattr(exc, "sqlstate", None)) is not RetryableError:
                raise FatalError(f"{name}: {type(exc).__name__} (SQLSTATE {exc.sqlstate})") from exc
            error = exc
        log.warning("%s: %s; retrying in %.1fs", name, _one_line(error), backoff)
        stop.wait(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)
    return None


class TickingStop(threading.Event):
    """The stop event a component's run() gets: delegates to the real one, and each poll is a tick.

    Capture, workers and the reverse daemon poll `stop` once per loop iteration (they must, to stop
    promptly on SIGTERM), so "polled recently" is "the loop ticked recently".
    """

    def __init__(self, inner: threading.Event, tick: Callable[[], None]) -> None:
        super().__init__()
        self._inner = inner
        self._tick = tick

    def is_set(self) -> bool:
        self._tick()
        return self._inner.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        self._tick()
        return self._inner.wait(timeout)

    def set(self) -> None:
        self._inner.set()

    def clear(self) -> None:
        self._inner.clear()


class _Progress:
    """When the current attempt started and its loop last ticked (one attribute store per tick)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.last_tick = 0.0
        self.ever = False  # some attempt made progress (the stop record may be cleared)

    def begin(self) -> None:
        self.started, self.last_tick = time.monotonic(), 0.0

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def made(self) -> bool:
        return self.last_tick - self.started >= PROGRESS_AFTER


@dataclass(frozen=True)
class ComponentRecord:
    """Where a component records that it stopped for good: `splitter.components` of the database it belongs
    to (a worker's service database; the source for capture and the reverse daemon)."""

    dsn: str
    what: str  # the database, as connection errors name it
    component: str  # capture | worker | reverse
    service: str = ""

    def stopped(self, exit_code: int, message: str) -> None:
        """Best effort: a database that cannot be reached is logged, the exit code stands."""
        exit_class = "configuration" if exit_code == exit_codes.CONFIG else "fatal"
        try:
            components.record_stopped(self.dsn, self.what, self.component, self.service, exit_class, exit_code,
                                      mask_secrets(message, self.dsn))
        except SplitterError as exc:  # e.g. the very password or database that stopped it: status, connecting
            # with the same settings, gets the same refusal and names its class and SQLSTATE
            log.warning("could not record the stop for `splitter status`: %s", _one_line(exc))

    def clear(self) -> None:
        components.clear_stopped(self.dsn, self.what, self.component, self.service)

    @contextlib.contextmanager
    def on_failure(self) -> Iterator[None]:
        """Record a configuration or fatal error raised before the component runs (metrics port taken, ...)."""
        try:
            yield
        except ConfigurationError as exc:
            self.stopped(exit_codes.CONFIG, str(exc))
            raise
        except FatalError as exc:
            self.stopped(exit_codes.FATAL, str(exc))
            raise


class _Clearer(threading.Thread):
    """Clears the stop record once the component has made progress: a database write, off its loop."""

    def __init__(self, name: str, record: ComponentRecord, progress: _Progress) -> None:
        super().__init__(name=f"{name}-stop-record", daemon=True)
        self._record = record
        self._progress = progress
        self._done = threading.Event()
        self._lock = threading.Lock()  # held while clearing: a stop recorded after close() is never cleared
        self.start()

    def run(self) -> None:
        warned = False
        while not self._done.wait(0.25):
            if not (self._progress.ever or self._progress.made()):
                continue
            with self._lock:
                if self._done.is_set():
                    return
                try:
                    self._record.clear()
                    return
                except SplitterError as exc:
                    if not warned:
                        log.warning("could not clear the stop record (will try again): %s", _one_line(exc))
                        warned = True
            self._done.wait(5.0)

    def close(self) -> None:
        self._done.set()
        with self._lock:
            pass


def run_with_retries(name: str, component: Callable[[threading.Event], None], stop: threading.Event,
                     record: ComponentRecord | None = None) -> int:
    """Run `component(stop)` until it returns with `stop` set; retry retryable faults.  Returns an exit code.

    The backoff doubles (up to MAX_BACKOFF) while attempts fail without progress, and starts again from
    FIRST_BACKOFF after an attempt that made progress.  With `record`, a configuration or fatal error is
    recorded in the component's database before this returns, and an earlier record is cleared once the
    component made progress.
    """
    progress = _Progress()
    clearer = _Clearer(name, record, progress) if record is not None else None
    try:
        code, message = _attempts(name, component, stop, progress)
    finally:
        if clearer is not None:
            clearer.close()
    if record is not None and code in FINAL_EXIT_CODES:
        record.stopped(code, message)
    return code


def _attempts(name: str, component: Callable[[threading.Event], None], stop: threading.Event,
              progress: _Progress) -> tuple[int, str]:
    backoff = FIRST_BACKOFF
    while not stop.is_set():
        progress.begin()
        try:
            component(TickingStop(stop, progress.tick))
            if stop.is_set():
                break
            raise RetryableError(f"{name} ended without being asked to")
        except RetryableError as exc:
            error: Exception = exc
        except DatabaseError as exc:  # a driver error a component let through: classified by its SQLSTATE
            kind = classify_sqlstate(getattr(exc, "sqlstate", None))
            if kind is not RetryableError:
                message = f"{type(exc).__name__} (SQLSTATE {exc.sqlstate})"
                log.error("%s: %s", name, message)
                return exit_codes.FATAL, message
            error = exc
        except ConfigurationError as exc:
            log.error("%s: %s", name, exc)
            return exit_codes.CONFIG, str(exc)
        except FatalError as exc:
            log.error("%s: %s", name, exc)
            return exit_codes.FATAL, str(exc)
        if progress.made():
            progress.ever = True
            backoff = FIRST_BACKOFF  # it ran again after the last fault: this is a new fault, not the same one
        log.warning("%s: %s; retrying in %.1fs", name, _one_line(error), backoff)
        stop.wait(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)
    log.info("%s stopped", name)
    return exit_codes.OK, ""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)


__all__ = ["FINAL_EXIT_CODES", "SUPERVISED_ENV", "ComponentRecord", "SplitterError", "TickingStop", "retry_until_done",
           "run_with_retries", "stop_exit_code"]
