"""Capture's problems while it runs, recorded in the source where `splitter status` reads them.

Owns: `watch(settings, stats)`, which capture's heartbeat calls on every beat, and the one reporter per
source and slot behind it: a background thread that reads the stats' problems (heartbeats failing,
broker unreachable: `problems`) every second and keeps capture's row of the source's
`splitter.components` in step (state `degraded` with the problems' kinds and message while there are
any, no row once they are gone; connectors.pg.state.components).  It holds its own session open from
the first beat on, so a source that refuses new connections (the usual reason heartbeats fail: too
many clients, ALLOW_CONNECTIONS off, pg_hba changed) still gets the record through a session made
while it could; when even that fails, status reads what the source itself shows (see
splitter.ops.status).  Must not: run on capture's loop (`watch` is one attribute store), block it, or
hold anything but masked messages (the stats' errors are masked where they are set).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from connectors.pg.client import Connection, connect
from connectors.pg.state.components import clear_degraded, record_degraded
from splitter.core.dsn import SOURCE_DATABASE
from splitter.core.errors import SplitterError
from splitter.pipeline.config import Settings

log = logging.getLogger(__name__)

_APPLICATION_NAME = "splitter-capture-health"
#: How often the reporter looks at the stats, and rewrites an unchanged problem's message at most.
_EVERY = 1.0
_REFRESH = 10.0
#: A reporter no beat has reached for this long stops (its capture stopped); the next beat starts another.
_IDLE = 60.0

_reporters: dict[tuple[str, str], _Reporter] = {}
_lock = threading.Lock()


def problems(stats: Any) -> tuple[tuple[str, ...], str]:
    """(kinds, message) of what is wrong with a running capture: () when nothing is."""
    kinds: list[str] = []
    parts: list[str] = []
    if getattr(stats, "heartbeat_failing", False):
        kinds.append("heartbeat")
        parts.append(f"heartbeats failing: {getattr(stats, 'heartbeat_failures', 0)} in a row "
                     f"({getattr(stats, 'last_heartbeat_error', None)}); retained WAL grows while they fail")
    if getattr(stats, "broker_unreachable", False):
        kinds.append("broker")
        parts.append(f"broker unreachable ({getattr(stats, 'last_broker_error', None)}); nothing new reaches "
                     "the change log and retained WAL grows")
    return tuple(kinds), "; ".join(parts)


def watch(settings: Settings, stats: Any) -> None:
    """Have capture's problems in `stats` recorded (called from capture's heartbeat: cheap, never blocks)."""
    key = (settings.source_dsn, settings.slot)
    with _lock:
        reporter = _reporters.get(key)
        if reporter is None or not reporter.is_alive():
            reporter = _reporters[key] = _Reporter(settings.source_dsn, settings.slot)
            reporter.start()
        reporter.watched = (stats, time.monotonic())


class _Reporter(threading.Thread):
    def __init__(self, dsn: str, slot: str) -> None:
        super().__init__(name=f"capture-health-{slot}", daemon=True)
        self._dsn = dsn
        self.watched: tuple[Any, float] = (None, time.monotonic())
        self._conn: Connection | None = None
        # What the row says: None until written once (a row left by an earlier process is cleared then).
        self._written: tuple[tuple[str, ...], str] | None = None
        self._written_at = 0.0
        self._failing = False

    def run(self) -> None:
        try:
            while True:
                stats, seen = self.watched
                if time.monotonic() - seen > _IDLE:
                    return
                self._report(problems(stats))
                time.sleep(_EVERY)
        finally:
            self._close()

    def _report(self, wanted: tuple[tuple[str, ...], str]) -> None:
        kinds, message = wanted
        written = self._written
        now = time.monotonic()
        if written is not None and written[0] == kinds and (written[1] == message or now - self._written_at < _REFRESH):
            return
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self._dsn, SOURCE_DATABASE, autocommit=True,
                                     application_name=_APPLICATION_NAME)
            if kinds:
                record_degraded(self._conn, "capture", "", kinds, message)
            else:
                clear_degraded(self._conn, "capture", "")
        except SplitterError as exc:
            self._close()
            if not self._failing:
                log.warning("could not record capture's health for `splitter status` (will try again): %s",
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                self._failing = True
            return
        if self._failing:
            log.info("capture's health is recorded for `splitter status` again")
            self._failing = False
        if kinds and (written is None or written[0] != kinds):
            log.warning("capture runs degraded: %s", message)
        self._written, self._written_at = wanted, now

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


__all__ = ["problems", "watch"]
