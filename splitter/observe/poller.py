"""The metrics poller: a background thread that reads positions on its own connections.

Owns: what `/metrics` needs beyond the component's `stats`, read every `poll_interval` seconds: the
source's WAL position (into the `SourceClock` lag is measured with), and for a capture the slot's state
and every service's cutover state; for a worker what its service database holds (the hold request,
backfill and verify progress) and the change log's end offset.  Also the batch histograms, observed from
stats deltas every `_SAMPLE_TICK` (so the worker's hot path only counts).  Failed reads are counted by
target and logged once per outage; the last good reading stays.
Must not: touch the component or its connections, write anything, or read the `splitter` schema other
than through connectors.pg.state (the same functions `splitter status` uses).  The log end comes from the
broker's high watermark (`log_end="watermark"`, right on Apache Kafka) or, for brokers whose watermark is
wrong (tansu after multi-record batches), from reading the log to its end with a separate consumer
(`log_end="scan"`; reads every record once more, so tests only).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import Histogram

from connectors.kafka.consumer import ChangeLogConsumer
from connectors.pg.client import Connection
from connectors.pg.positions import ReadSession, SourcePositions, current_wal_lsn, source_positions
from connectors.pg.state import backfills as backfill_store
from connectors.pg.state import cutover as cutover_store
from connectors.pg.state import verify_progress
from connectors.pg.state.control import hold_state
from connectors.pg.state.schema import state_tables_exist
from splitter.core.errors import SplitterError
from splitter.observe.lag import SourceClock
from splitter.pipeline.config import Settings

log = logging.getLogger(__name__)

Component = Literal["capture", "worker"]
LogEndMode = Literal["watermark", "scan"]

# How often the poller looks at stats deltas (histograms); positions are read every poll_interval.
_SAMPLE_TICK = 0.25
_APPLICATION_NAME = "splitter-metrics"


@dataclass(frozen=True)
class ServiceState:
    """What a worker's service database holds for metrics; `hold_requested` None before the state tables exist."""

    hold_requested: bool | None = None
    backfills: tuple[backfill_store.Progress, ...] = ()
    verify: verify_progress.VerifyProgress | None = None


def _cutover_states(conn: Connection) -> dict[str, str] | None:
    """service -> cutover state; None before the first cutover created the tables."""
    if not cutover_store.has_tables(conn):
        return None
    return {service: state for service, (state, _error) in cutover_store.read_states(conn).items()}


class Poller(threading.Thread):
    """Reads positions on its own connections every poll_interval, and stats deltas more often."""

    def __init__(self, settings: Settings, component: Component, service: str, *, poll_interval: float,
                 clock: SourceClock, stats: Callable[[], Any], batch_rows: Histogram, apply_seconds: Histogram,
                 log_end: LogEndMode) -> None:
        super().__init__(name=f"metrics-poll-{component}{'-' + service if service else ''}", daemon=True)
        self.settings = settings
        self.component: Component = component
        self.service = service
        self.poll_interval = poll_interval
        self.clock = clock
        self._stats = stats
        self._batch_rows = batch_rows
        self._apply_seconds = apply_seconds
        #: capture: the source's positions and the slot, as last read (None before the first read).
        self.positions: SourcePositions | None = None
        self.service_state = ServiceState()
        self.cutover_states: dict[str, str] | None = None  # capture: service -> state; None: no cutover yet
        self.log_end_offset: int | None = None
        self._log_end_mode = log_end
        self._source = ReadSession(settings.source_dsn, "the source database (metrics)", _APPLICATION_NAME)
        self._service_db: ReadSession | None = None  # a worker's service database, opened on its first poll
        self._consumer: ChangeLogConsumer | None = None
        self._scan_next: int | None = None
        self._failing: set[str] = set()
        self._errors: dict[str, int] = {}
        self._errors_lock = threading.Lock()
        self._seen_batches: int | None = None
        self._seen_rows = 0
        self._delta_lock = threading.Lock()
        self._stopping = threading.Event()

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def reset_deltas(self) -> None:
        with self._delta_lock:
            self._seen_batches = None

    def errors(self) -> dict[str, int]:
        """Failed reads so far, by target (source, service_db, kafka)."""
        with self._errors_lock:
            return dict(self._errors)

    def run(self) -> None:
        next_poll = 0.0
        try:
            while not self._stopping.is_set():
                if self.component == "worker":
                    self._observe_batches()
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + self.poll_interval
                    self._poll_once()
                self._stopping.wait(_SAMPLE_TICK)
        finally:
            self._close_all()

    def _poll_once(self) -> None:
        self._guard("source", self._poll_source)
        if self.component == "worker":
            self._guard("service_db", self._poll_service)
            self._guard("kafka", self._poll_log_end)

    def _guard(self, target: str, poll: Callable[[str], None]) -> None:
        try:
            poll(f"metrics: reading {target}")
        except SplitterError as exc:
            with self._errors_lock:
                self._errors[target] = self._errors.get(target, 0) + 1
            if target not in self._failing:
                # Logged once per outage; the message is masked (wrap_db_error / splitter errors never hold DSNs).
                log.warning("%s; retrying every %.0fs", str(exc).splitlines()[0], self.poll_interval)
                self._failing.add(target)
            self._drop(target)
        else:
            if target in self._failing:
                log.info("metrics: reading %s works again", target)
                self._failing.discard(target)

    def _poll_source(self, what: str) -> None:
        if self.component == "worker":
            self.clock.add(self._source.read(what, current_wal_lsn))
            return
        slot = self.settings.slot
        positions = self._source.read(what, lambda conn: source_positions(conn, slot))
        self.clock.add(positions.wal_lsn)
        self.positions = positions
        # Cutover states live in the source's splitter schema (connectors.pg.state.cutover owns the tables).
        # Capture exports them for every service: a service whose cutover completed has no worker left.
        self.cutover_states = self._source.read(what, _cutover_states)

    def _poll_service(self, what: str) -> None:
        service = self.service
        if self._service_db is None:
            self._service_db = ReadSession(self.settings.target_dsn(service),
                                           f"database of service {service} (metrics)", _APPLICATION_NAME)

        def read(conn: Connection) -> ServiceState:
            if not state_tables_exist(conn):  # the worker has not created its state tables yet
                return ServiceState()
            return ServiceState(hold_requested=hold_state(conn, service).pause_at_lsn is not None,
                                backfills=tuple(backfill_store.progress(conn, service)),
                                verify=verify_progress.read(conn, service))

        self.service_state = self._service_db.read(what, read)

    def _poll_log_end(self, _what: str) -> None:
        s = self.settings
        if self._consumer is None:
            self._consumer = ChangeLogConsumer(s.kafka_bootstrap, s.topic, f"{s.group_id(self.service)}.metrics",
                                               extra=s.kafka_client("consumer"))
        if self._log_end_mode == "watermark":
            _low, high = self._consumer.watermarks(timeout=5.0)
            self.log_end_offset = high
            return
        stats = self._stats()
        if self._scan_next is None:
            start = max(0, getattr(stats, "applied_offset", -1) + 1) if stats is not None else 0
            self._consumer.seek(start)
            self._scan_next = start
            self.log_end_offset = start
        deadline = time.monotonic() + self.poll_interval
        while time.monotonic() < deadline:
            records = self._consumer.read(5000, timeout=0.1)
            if not records:
                break
            self._scan_next = records[-1].offset + 1
        self.log_end_offset = self._scan_next

    def _observe_batches(self) -> None:
        stats = self._stats()
        if stats is None:
            return
        batches, rows, last_seconds = stats.batches, stats.rows_applied, stats.last_apply_seconds
        with self._delta_lock:
            if self._seen_batches is None or batches < self._seen_batches:
                self._seen_batches, self._seen_rows = batches, rows
                return
            new = batches - self._seen_batches
            added_rows = max(0, rows - self._seen_rows)
            self._seen_batches, self._seen_rows = batches, rows
        if new <= 0:
            return
        # Several batches between two looks: each is counted, with the mean size (so the histogram's
        # sum is the exact row count) and the last batch's apply time (the only one stats keeps).
        for _ in range(min(new, 1000)):
            self._batch_rows.labels(self.service).observe(added_rows / new)
            self._apply_seconds.labels(self.service).observe(last_seconds)

    def _drop(self, target: str) -> None:
        if target == "source":
            self._source.close()
        elif target == "service_db" and self._service_db is not None:
            self._service_db.close()
        elif target == "kafka" and self._consumer is not None:
            self._consumer.close()
            self._consumer = None
            self._scan_next = None

    def _close_all(self) -> None:
        for target in ("source", "service_db", "kafka"):
            try:
                self._drop(target)
            except Exception as exc:  # closing is best effort at shutdown
                log.debug("metrics: closing %s: %s", target, type(exc).__name__)


__all__ = ["Component", "LogEndMode", "Poller", "ServiceState"]
