"""Metrics and health of one splitter process: `/metrics` (Prometheus text format) and `/healthz`.

Owns: the HTTP endpoint of a capture or worker process, the metric names and labels (every name
starts with `splitter_`, carries its unit, counters end in `_total`, labels are few and bounded:
`component`, `service`, `table`, `op`, `kind`, `slot`, `state`, `target`), the background poller that
reads source positions on its own connections, and the lag definitions below.  A worker's endpoint
also exports what operator commands record in its service database: the progress of `splitter
backfill` jobs and of a `splitter verify` (so Prometheus, which scrapes the daemon, sees commands run
from anywhere).

Must not: do work on the pipeline's hot path (collectors read the components' plain `stats`
attributes when Prometheus scrapes; histograms are observed from stats deltas by the poller), put
row contents or DSNs in a label or a log line (errors reach logs only through `wrap_db_error`, which
masks secrets), or decide anything about the pipeline: it only looks.

How it attaches (the CLI does this; tests do the same in threads)::

    with start_metrics(settings, "capture", port=9400) as metrics:
        run_with_retries("capture", metrics.instrument(lambda: Capture(settings)), stop)

`instrument` builds a fresh component per attempt (as `run_with_retries` expects), points the
collectors at its `stats`, counts its errors by kind and its retries, and hands its `run` a stop
event whose every poll is a heartbeat: each capture and worker loop polls `stop` once per iteration
(it must, to stop promptly on SIGTERM), so "polled `stop` recently" is "the loop ticked recently".
`/healthz` answers 200 while the component is starting (connecting, initial copy) or its loop
ticked within `health_max_age` seconds, and 503 (with the reason) in retry backoff, after a fatal
error, or when the loop has not ticked for longer.

Lag, in source terms (the source's WAL position, polled every `poll_interval` seconds):

* `splitter_worker_lag_bytes` = source current WAL LSN - the service's applied commit LSN (>= 0).
* `splitter_worker_lag_seconds` is 0 when the service is caught up, else now - the commit time of
  the last source transaction it applied.  Caught up means: the applied LSN is at or past where the
  source's WAL was `grace` seconds ago (the latest poll at least that old).  The bytes between that
  point and the current WAL are what heartbeats and the worker's idle position writes alone leave
  open on an idle source (capture emits a heartbeat every `heartbeat_interval`, an idle worker
  records its position every `worker.POSITION_WRITE_INTERVAL`); so `grace` = heartbeat interval +
  position write interval + poll interval (3 s with the defaults) and is the resolution of the
  metric: a service less than `grace` behind reads 0.  Times come from the source's commit
  timestamps (heartbeats: the capture host's clock), compared with this host's clock.
* `splitter_slot_lag_bytes` = current WAL - the slot's confirmed_flush_lsn; `splitter_slot_retained_wal_bytes`
  = current WAL - restart_lsn (what the server keeps on disk for the slot).
* `splitter_worker_kafka_lag_records` = last offset in the log - the applied offset: a second view.
  The log end comes from the broker's high watermark (`log_end="watermark"`, right on Apache Kafka)
  or, for brokers whose watermark is wrong (tansu after multi-record batches), from reading the log
  to its end with a separate consumer (`log_end="scan"`; reads every record once more, so tests only).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Protocol

import psycopg
from prometheus_client import CollectorRegistry, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from psycopg import sql

from connectors.kafka.log import ChangeLogConsumer
from connectors.pg.client import connect, wrap_db_error
from connectors.pg.source import current_wal_lsn
from connectors.pg.state import STATE_SCHEMA, verify_progress
from connectors.pg.state import backfills as backfill_store
from splitter.core.errors import (
    ConfigurationError,
    FatalError,
    MalformedMessageError,
    RetryableError,
    SplitterError,
    classify_sqlstate,
)
from splitter.core.lsn import str_to_lsn
from splitter.pipeline.config import Settings
from splitter.pipeline.worker import POSITION_WRITE_INTERVAL

log = logging.getLogger(__name__)

Component = Literal["capture", "worker"]
LogEndMode = Literal["watermark", "scan"]

#: Error kinds (`kind` label); each is exported from the start at 0 so rate() and alerts see a series.
ERROR_KINDS: tuple[str, ...] = ("retryable", "fatal", "configuration", "malformed_message", "unexpected")
#: Cutover states (splitter.cutover_state's names); the state-set gauge exports each, 1 for the current one,
#: plus any other state a row holds.
CUTOVER_STATES: tuple[str, ...] = (
    "streaming", "fenced", "caught_up", "verified", "switching", "switched", "reverse_streaming", "complete",
    "aborted", "rollback_fenced", "rollback_caught_up", "rollback_verified", "rollback_switching", "rolled_back")
# Batch sizes in rows, and apply times: buckets span one-row commits to the 5000-row batch limit.
BATCH_ROWS_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, float("inf"))
APPLY_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
# How often the poller looks at stats deltas (histograms); positions are read every poll_interval.
_SAMPLE_TICK = 0.25
# Source position samples kept for the lag-seconds reference (enough for any sane grace).
_SOURCE_HISTORY = 600


class _Runnable(Protocol):
    @property
    def stats(self) -> Any: ...

    def run(self, stop: threading.Event) -> None: ...


# -- lag ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceSample:
    """The source's current WAL LSN as read at `wall` (time.time())."""

    wall: float
    lsn: int


class SourceClock:
    """Recent samples of the source's WAL position: maps "how far" to "how long ago"."""

    def __init__(self, maxlen: int = _SOURCE_HISTORY) -> None:
        self._samples: deque[SourceSample] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, lsn: int, wall: float | None = None) -> None:
        with self._lock:
            self._samples.append(SourceSample(time.time() if wall is None else wall, lsn))

    def latest(self) -> SourceSample | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def reference(self, now: float, grace: float) -> SourceSample | None:
        """The newest sample at least `grace` old (or the oldest one, while none is that old yet)."""
        with self._lock:
            if not self._samples:
                return None
            chosen = self._samples[0]
            for sample in self._samples:
                if now - sample.wall < grace:
                    break
                chosen = sample
            return chosen


def lag_bytes(applied_lsn: int, source: SourceSample | None) -> int | None:
    if source is None:
        return None
    return max(0, source.lsn - applied_lsn)


def lag_seconds(applied_lsn: int, applied_ts_ms: int, clock: SourceClock, now: float, grace: float) -> float | None:
    """Seconds a service is behind the source (see the module docstring); None before the first sample."""
    reference = clock.reference(now, grace)
    if reference is None:
        return None
    if applied_lsn >= reference.lsn:
        return 0.0
    if applied_ts_ms > 0:
        return max(0.0, now - applied_ts_ms / 1000.0)
    # Nothing but a backfill applied so far (no commit time known): behind at least since the reference.
    return max(0.0, now - reference.wall)


def caught_up_grace(settings: Settings, poll_interval: float) -> float:
    return settings.heartbeat_interval + POSITION_WRITE_INTERVAL + poll_interval


# -- health ---------------------------------------------------------------------------------------------


class Health:
    """Where the component is: starting, running (ticking), backing off, or stopped."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._lock = threading.Lock()
        self._phase = "starting"  # starting | running | backoff | stopped
        self._last_tick = 0.0
        self._reason = "not started yet"

    def tick(self) -> None:
        # Called from the component's loop on every poll of its stop event: one attribute store.
        self._last_tick = time.monotonic()

    def entered(self) -> None:
        with self._lock:
            self._phase, self._last_tick, self._reason = "starting", 0.0, "starting"

    def left(self, reason: str, stopped: bool) -> None:
        with self._lock:
            self._phase, self._reason = ("stopped" if stopped else "backoff"), reason

    def check(self) -> tuple[bool, str, float | None]:
        """(healthy, reason, seconds since the last tick or None)."""
        with self._lock:
            phase, reason, last = self._phase, self._reason, self._last_tick
        age = time.monotonic() - last if last else None
        if phase in ("backoff", "stopped"):
            return False, reason, age
        if age is None:
            return True, "starting (connecting or copying)", None
        if age > self.max_age:
            return False, f"loop has not ticked for {age:.0f}s", age
        return True, "ok", age


class _TickingStop(threading.Event):
    """The stop event a component's run() gets: delegates to the real one, and each poll is a tick."""

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


def error_kind(exc: BaseException) -> str:
    """The `kind` label of an error: splitter's class, or a driver error classified by SQLSTATE."""
    if not isinstance(exc, SplitterError) and hasattr(exc, "sqlstate"):
        klass = classify_sqlstate(getattr(exc, "sqlstate", None))
        exc = klass("")
    if isinstance(exc, MalformedMessageError):
        return "malformed_message"
    if isinstance(exc, FatalError):
        return "fatal"
    if isinstance(exc, ConfigurationError):
        return "configuration"
    if isinstance(exc, RetryableError):
        return "retryable"
    return "unexpected"


# -- the component's view -------------------------------------------------------------------------------------


class _Counters:
    """Counters that survive the component being rebuilt by a retry.

    Most stats count from zero in every attempt, so what earlier attempts counted is added.  A
    worker's row and transaction totals come from its checkpoint (they persist across restarts):
    those are taken as they are, and never shown lower than already exported, because a fresh
    worker reads 0 until it has loaded its checkpoint.
    """

    def __init__(self) -> None:
        self._base: dict[Any, float] = {}
        self._last: dict[Any, float] = {}
        self._persistent: set[Any] = set()
        self._lock = threading.Lock()

    def rebase(self) -> None:
        """A new attempt starts: what the last one counted becomes the base."""
        with self._lock:
            for key, value in self._last.items():
                if key not in self._persistent:
                    self._base[key] = self._base.get(key, 0) + value
                    self._last[key] = 0

    def value(self, key: Any, current: float, *, persistent: bool = False) -> float:
        with self._lock:
            if persistent:
                self._persistent.add(key)
                shown = max(current, self._last.get(key, 0))
                self._last[key] = shown
                return shown
            self._last[key] = current
            return self._base.get(key, 0) + current


class ComponentMetrics:
    """Metrics, health and the poller of one capture or worker; `close()` (or `with`) stops them."""

    def __init__(self, settings: Settings, component: Component, *, service: str | None = None,
                 port: int | None = None, host: str = "0.0.0.0", poll_interval: float = 1.0,
                 health_max_age: float = 30.0, log_end: LogEndMode = "watermark") -> None:
        if component == "worker":
            if service is None:
                raise ConfigurationError("a worker's metrics need its service name")
            settings.topology.service(service)  # raises naming the known services
        self.settings = settings
        self.component: Component = component
        self.service = service or ""
        self.poll_interval = poll_interval
        self.grace = caught_up_grace(settings, poll_interval)
        self.health = Health(health_max_age)
        self.clock = SourceClock()
        self.registry = CollectorRegistry(auto_describe=False)
        self._stats: Any = None
        self._counters = _Counters()
        self._errors = dict.fromkeys(ERROR_KINDS, 0)
        self._poll_errors: dict[str, int] = {}
        self._attempts = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = _Poller(self, log_end)
        self.registry.register(_ComponentCollector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        labels = ["service"]
        self.batch_rows = Histogram("splitter_worker_batch_rows", "Rows per target transaction the worker committed",
                                    labels, buckets=BATCH_ROWS_BUCKETS, registry=self.registry)
        self.apply_seconds = Histogram("splitter_worker_apply_duration_seconds",
                                       "Time to apply and commit one batch in the service database", labels,
                                       buckets=APPLY_SECONDS_BUCKETS, registry=self.registry)
        self._server: ThreadingHTTPServer | None = None
        self._server_thread: threading.Thread | None = None
        self.port: int | None = None
        if port is not None:
            self._serve(host, port)
        self._poller.start()

    # -- attaching to the component --------------------------------------------------------------------

    def instrument(self, factory: Callable[[], _Runnable]) -> Callable[[threading.Event], None]:
        """`run(stop)` for run_with_retries: a fresh component per attempt, watched by these metrics."""

        def run(stop: threading.Event) -> None:
            with self._lock:
                self._attempts += 1
            self.health.entered()
            try:
                component = factory()
                self.attach(component.stats)
                component.run(_TickingStop(stop, self.health.tick))
            except BaseException as exc:
                kind = error_kind(exc)
                if isinstance(exc, Exception):  # not KeyboardInterrupt / SystemExit
                    with self._lock:
                        self._errors[kind] = self._errors.get(kind, 0) + 1
                retrying = kind == "retryable" and not stop.is_set()
                self.health.left(f"{kind} error ({type(exc).__name__}){'; retrying' if retrying else ''}",
                                 stopped=not retrying)
                raise
            if stop.is_set():
                self.health.left("stopped", stopped=True)
            else:
                self.health.left("the component ended without being asked to; retrying", stopped=False)

        return run

    def attach(self, stats: Any) -> None:
        """Read `stats` from now on (a new CaptureStats/WorkerStats after a retry)."""
        with self._lock:
            if self._stats is not None and stats is not self._stats:
                self._counters.rebase()
            self._stats = stats
        self._poller.reset_deltas()

    @property
    def stats(self) -> Any:
        return self._stats

    def errors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._errors)

    def retries(self) -> int:
        with self._lock:
            return max(0, self._attempts - 1)

    def poll_errors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._poll_errors)

    def count_poll_error(self, target: str) -> None:
        with self._lock:
            self._poll_errors[target] = self._poll_errors.get(target, 0) + 1

    def counter(self, key: Any, current: float, *, persistent: bool = False) -> float:
        return self._counters.value(key, current, persistent=persistent)

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _serve(self, host: str, port: int) -> None:
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
                elif path == "/healthz":
                    ok, reason, _age = metrics.health.check()
                    self._reply(200 if ok else 503, "text/plain; charset=utf-8", f"{reason}\n".encode())
                else:
                    self._reply(404, "text/plain; charset=utf-8", b"see /metrics and /healthz\n")

            def _reply(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
                pass  # one line per scrape is noise; errors surface as failed scrapes in Prometheus

        try:
            server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        name = f"metrics-http-{self.component}{'-' + self.service if self.service else ''}"
        self._server_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                               name=name, daemon=True)
        self._server_thread.start()
        log.info("%s%s: metrics on http://%s:%d/metrics", self.component,
                 f"[{self.service}]" if self.service else "", host, self.port)

    def close(self) -> None:
        self._stop.set()
        self._poller.join(10)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ComponentMetrics:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def start_metrics(settings: Settings, component: Component, *, service: str | None = None, port: int | None = None,
                  host: str = "0.0.0.0", poll_interval: float = 1.0, health_max_age: float = 30.0,
                  log_end: LogEndMode = "watermark") -> ComponentMetrics:
    """Start the metrics of one component; with `port` None nothing listens (errors are still counted).

    `port=0` picks a free port (read it back from `.port`).
    """
    return ComponentMetrics(settings, component, service=service, port=port, host=host, poll_interval=poll_interval,
                            health_max_age=health_max_age, log_end=log_end)


# -- the poller ----------------------------------------------------------------------------------------------


@dataclass
class _SlotState:
    confirmed_lsn: int | None = None
    restart_lsn: int | None = None
    lag_bytes: int | None = None
    retained_bytes: int | None = None
    active: bool = False
    wal_status: str | None = None
    exists: bool = False


@dataclass
class _ServiceState:
    hold_requested: bool | None = None
    backfills: tuple[backfill_store.Progress, ...] = ()
    verify: verify_progress.VerifyProgress | None = None


_SLOT_SQL = """
SELECT pg_current_wal_lsn()::text, s.slot_name IS NOT NULL, s.confirmed_flush_lsn::text, s.restart_lsn::text,
       coalesce(s.active, false), s.wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint
  FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = %s
"""


class _Poller(threading.Thread):
    """Reads positions on its own connections every poll_interval, and stats deltas more often."""

    def __init__(self, owner: ComponentMetrics, log_end: LogEndMode) -> None:
        super().__init__(name=f"metrics-poll-{owner.component}{'-' + owner.service if owner.service else ''}",
                         daemon=True)
        self.owner = owner
        self.slot = _SlotState()
        self.service_state = _ServiceState()
        self.cutover_states: dict[str, str] | None = None  # capture: service -> state; None: no cutover table
        self.log_end_offset: int | None = None
        self._log_end_mode = log_end
        self._source: psycopg.Connection | None = None
        self._target: psycopg.Connection | None = None
        self._consumer: ChangeLogConsumer | None = None
        self._scan_next: int | None = None
        self._failing: set[str] = set()
        self._seen_batches: int | None = None
        self._seen_rows = 0
        self._delta_lock = threading.Lock()

    def reset_deltas(self) -> None:
        with self._delta_lock:
            self._seen_batches = None

    def run(self) -> None:
        owner = self.owner
        next_poll = 0.0
        try:
            while not owner._stop.is_set():
                if owner.component == "worker":
                    self._observe_batches()
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + owner.poll_interval
                    self._poll_once()
                owner._stop.wait(_SAMPLE_TICK)
        finally:
            self._close_all()

    def _poll_once(self) -> None:
        s = self.owner.settings
        self._guard("source", lambda: self._poll_source(s))
        if self.owner.component == "worker":
            self._guard("service_db", lambda: self._poll_service(s))
            self._guard("kafka", self._poll_log_end)

    def _guard(self, target: str, poll: Callable[[], None]) -> None:
        try:
            poll()
        except (psycopg.Error, SplitterError) as exc:
            self.owner.count_poll_error(target)
            if target not in self._failing:
                # Logged once per outage; the message is masked (wrap_db_error / splitter errors never hold DSNs).
                message = str(wrap_db_error(exc, f"metrics: reading {target}") if isinstance(exc, psycopg.Error)
                              else exc)
                log.warning("%s; retrying every %.0fs", message.splitlines()[0], self.owner.poll_interval)
                self._failing.add(target)
            self._drop(target)
        else:
            if target in self._failing:
                log.info("metrics: reading %s works again", target)
                self._failing.discard(target)

    def _poll_source(self, s: Settings) -> None:
        if self._source is None:
            self._source = connect(s.source_dsn, "the source database (metrics)", autocommit=True,
                                   application_name="splitter-metrics")
        conn = self._source
        if self.owner.component == "worker":
            self.owner.clock.add(current_wal_lsn(conn))
            return
        row = conn.execute(_SLOT_SQL, (s.slot,)).fetchone()
        assert row is not None
        self.owner.clock.add(str_to_lsn(row[0]))
        self.slot = _SlotState(
            confirmed_lsn=str_to_lsn(row[2]) if row[2] else None, restart_lsn=str_to_lsn(row[3]) if row[3] else None,
            active=bool(row[4]), wal_status=row[5], lag_bytes=row[6], retained_bytes=row[7], exists=bool(row[1]))
        # Cutover states live in the source's splitter schema (splitter.cutover_state owns the table).
        # Capture exports them for every service: a service whose cutover completed has no worker left.
        have = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{STATE_SCHEMA}.cutover",)).fetchone()
        if have and have[0]:
            rows = conn.execute(sql.SQL("SELECT service, state::text FROM {}.cutover")
                                .format(sql.Identifier(STATE_SCHEMA))).fetchall()
            self.cutover_states = {service: state for service, state in rows}
        else:
            self.cutover_states = None

    def _poll_service(self, s: Settings) -> None:
        if self._target is None:
            self._target = connect(s.target_dsn(self.owner.service), f"database of service {self.owner.service} "
                                   "(metrics)", autocommit=True, application_name="splitter-metrics")
        conn, service = self._target, self.owner.service
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{STATE_SCHEMA}.verify_progress",)).fetchone()
        state = _ServiceState()
        if row and row[0]:  # the worker created its state tables (all at once)
            held = conn.execute(sql.SQL("SELECT pause_at_lsn IS NOT NULL FROM {}.control WHERE service = %s")
                                .format(sql.Identifier(STATE_SCHEMA)), (service,)).fetchone()
            state.hold_requested = bool(held and held[0])
            state.backfills = tuple(backfill_store.progress(conn, service))
            state.verify = verify_progress.read(conn, service)
        self.service_state = state

    def _poll_log_end(self) -> None:
        s, owner = self.owner.settings, self.owner
        if self._consumer is None:
            self._consumer = ChangeLogConsumer(s.kafka_bootstrap, s.topic, f"{s.group_id(owner.service)}.metrics",
                                               extra=dict(s.kafka_extra))
        if self._log_end_mode == "watermark":
            _low, high = self._consumer.watermarks(timeout=5.0)
            self.log_end_offset = high
            return
        stats = owner.stats
        if self._scan_next is None:
            start = max(0, getattr(stats, "applied_offset", -1) + 1) if stats is not None else 0
            self._consumer.seek(start)
            self._scan_next = start
            self.log_end_offset = start
        deadline = time.monotonic() + owner.poll_interval
        while time.monotonic() < deadline:
            records = self._consumer.read(5000, timeout=0.1)
            if not records:
                break
            self._scan_next = records[-1].offset + 1
        self.log_end_offset = self._scan_next

    def _observe_batches(self) -> None:
        stats = self.owner.stats
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
        service = self.owner.service
        for _ in range(min(new, 1000)):
            self.owner.batch_rows.labels(service).observe(added_rows / new)
            self.owner.apply_seconds.labels(service).observe(last_seconds)

    def _drop(self, target: str) -> None:
        if target == "source" and self._source is not None:
            self._source.close()
            self._source = None
        elif target == "service_db" and self._target is not None:
            self._target.close()
            self._target = None
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


# -- the collector -----------------------------------------------------------------------------------------


def _gauge(name: str, doc: str, labels: list[str], *samples: tuple[list[str], float | None]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        if value is not None:
            family.add_metric(values, value)
    return family


def _counter(name: str, doc: str, labels: list[str], *samples: tuple[list[str], float]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


class _ComponentCollector(Collector):
    """Reads the component's stats and the poller's last readings when Prometheus scrapes."""

    def __init__(self, owner: ComponentMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        o = self.owner
        who = [o.component, o.service]
        healthy, _reason, age = o.health.check()
        yield _gauge("splitter_component_info", "The splitter component this endpoint belongs to",
                     ["component", "service", "topic"], ([o.component, o.service, o.settings.topic], 1))
        yield _gauge("splitter_healthy", "1 when /healthz answers 200", ["component", "service"],
                     (who, 1 if healthy else 0))
        yield _gauge("splitter_loop_tick_age_seconds", "Seconds since the component's loop last ticked",
                     ["component", "service"], (who, age))
        errors = o.errors()
        yield _counter("splitter_errors", "Errors that ended an attempt of the component, by kind",
                       ["component", "service", "kind"], *[([*who, k], float(v)) for k, v in sorted(errors.items())])
        yield _counter("splitter_retries", "Times the component was restarted after an error",
                       ["component", "service"], (who, float(o.retries())))
        poll_errors = o.poll_errors()
        targets = ("source", "service_db", "kafka") if o.component == "worker" else ("source",)
        yield _counter("splitter_metrics_poll_errors", "Failed reads of positions by the metrics poller",
                       ["component", "service", "target"],
                       *[([*who, t], float(poll_errors.get(t, 0))) for t in targets])
        latest = o.clock.latest()
        yield _gauge("splitter_source_wal_lsn_bytes", "The source's current WAL position (pg_current_wal_lsn)",
                     ["component", "service"], (who, latest.lsn if latest else None))
        if o.component == "capture":
            yield from self._capture(o, latest)
        else:
            yield from self._worker(o, latest)

    def _capture(self, o: ComponentMetrics, latest: SourceSample | None) -> Iterator[Metric]:
        st = o.stats
        poller = o._poller
        slot = poller.slot
        sl = [o.settings.slot]
        if slot.exists:
            yield _gauge("splitter_slot_lag_bytes", "Source WAL not yet confirmed by the slot", ["slot"],
                         (sl, slot.lag_bytes))
            yield _gauge("splitter_slot_retained_wal_bytes", "WAL the source keeps for the slot (from restart_lsn)",
                         ["slot"], (sl, slot.retained_bytes))
            yield _gauge("splitter_slot_confirmed_flush_lsn_bytes", "The slot's confirmed_flush_lsn", ["slot"],
                         (sl, slot.confirmed_lsn))
            yield _gauge("splitter_slot_restart_lsn_bytes", "The slot's restart_lsn", ["slot"], (sl, slot.restart_lsn))
            yield _gauge("splitter_slot_active", "1 when a walsender streams from the slot", ["slot"],
                         (sl, 1 if slot.active else 0))
            if slot.wal_status is not None:
                yield _gauge("splitter_slot_wal_status", "The slot's wal_status (state set; 'lost' means data loss)",
                             ["slot", "status"],
                             *[([o.settings.slot, s], 1 if slot.wal_status == s else 0)
                               for s in sorted({"reserved", "extended", "unreserved", "lost", slot.wal_status})])
        cutover = poller.cutover_states
        if cutover is not None:
            yield _gauge("splitter_cutover_state", "Each service's cutover state (state set, from splitter.cutover)",
                         ["service", "state"],
                         *[([service, s], 1 if s == current else 0)
                           for service, current in sorted(cutover.items())
                           for s in dict.fromkeys((*CUTOVER_STATES, current))])
        if st is None:
            return
        by_table_op = dict(st.by_table_op)
        yield _counter("splitter_capture_records", "Row change records produced, by source table and operation",
                       ["table", "op"], *[([t, op], o.counter(("rec", t, op), n))
                                          for (t, op), n in sorted(by_table_op.items())])
        yield _counter("splitter_capture_records_produced", "Records produced to the change log (rows and messages)",
                       [], ([], o.counter("produced", st.records_produced)))
        yield _counter("splitter_capture_transactions", "Source transactions written to the change log", [],
                       ([], o.counter("txns", st.transactions)))
        yield _gauge("splitter_capture_received_lsn_bytes", "Last WAL position received from the source", [],
                     ([], st.received_lsn or None))
        yield _gauge("splitter_capture_confirmed_lsn_bytes", "Last position confirmed to the slot", [],
                     ([], st.confirmed_lsn or None))
        yield _gauge("splitter_capture_last_commit_timestamp_seconds",
                     "Commit time of the last source transaction produced", [],
                     ([], st.last_commit_ts_ms / 1000 if st.last_commit_ts_ms else None))

    def _worker(self, o: ComponentMetrics, latest: SourceSample | None) -> Iterator[Metric]:
        svc = [o.service]
        poller = o._poller
        state = poller.service_state
        if state.hold_requested is not None:
            yield _gauge("splitter_worker_hold_requested", "1 while verify or cutover holds the worker", ["service"],
                         (svc, 1 if state.hold_requested else 0))
        yield from self._operator_progress(o.service, state)
        st = o.stats
        if st is not None:
            yield _counter("splitter_dead_letter_events", "Change events set aside instead of applied", ["service"],
                           (svc, o.counter("dead_letters", st.dead_lettered)))
        if st is None or (st.applied_offset < 0 and st.applied_lsn == 0):
            return  # not positioned yet (waiting for its checkpoint)
        now = time.time()
        yield _gauge("splitter_worker_applied_lsn_bytes", "Source commit LSN the service database has applied",
                     ["service"], (svc, st.applied_lsn))
        yield _gauge("splitter_worker_applied_offset", "Change-log offset the service database has applied",
                     ["service"], (svc, st.applied_offset))
        yield _gauge("splitter_worker_applied_source_timestamp_seconds",
                     "Source commit time of the last applied transaction (or heartbeat)", ["service"],
                     (svc, st.applied_source_ts_ms / 1000 if st.applied_source_ts_ms else None))
        yield _gauge("splitter_worker_lag_bytes", "Source WAL bytes the service has not applied", ["service"],
                     (svc, lag_bytes(st.applied_lsn, latest)))
        yield _gauge("splitter_worker_lag_seconds", "Seconds the service is behind the source (0 when caught up)",
                     ["service"], (svc, lag_seconds(st.applied_lsn, st.applied_source_ts_ms, o.clock, now, o.grace)))
        end = poller.log_end_offset
        if end is not None:
            yield _gauge("splitter_worker_log_end_offset", "Next offset to be written to the change log", ["service"],
                         (svc, end))
            yield _gauge("splitter_worker_kafka_lag_records", "Change-log records after the applied offset",
                         ["service"], (svc, max(0, end - 1 - st.applied_offset)))
        yield _counter("splitter_worker_transactions_applied", "Source transactions applied to the service database",
                       ["service"], (svc, o.counter("txns", st.transactions_applied, persistent=True)))
        yield _counter("splitter_worker_rows_applied", "Rows applied to the service database", ["service"],
                       (svc, o.counter("rows", st.rows_applied, persistent=True)))
        yield _counter("splitter_worker_batches", "Target transactions committed", ["service"],
                       (svc, o.counter("batches", st.batches)))
        yield _counter("splitter_worker_transactions_applied_in_parts",
                       "Source transactions too large to hold in memory, applied in parts in one target transaction",
                       ["service"], (svc, o.counter("parts", st.transactions_applied_in_parts)))
        yield _counter("splitter_worker_discarded_partial_transactions",
                       "Incomplete transaction copies dropped (capture re-sent them whole)", ["service"],
                       (svc, o.counter("discarded", st.discarded_partial_transactions)))

    def _operator_progress(self, service: str, state: _ServiceState) -> Iterator[Metric]:
        """What `splitter backfill` and `splitter verify` recorded in the service database."""
        if state.backfills:
            yield _gauge("splitter_backfill_rows_copied", "Rows the newest backfill of each source table has done",
                         ["service", "table"], *[([service, b.source_table], b.rows_done) for b in state.backfills])
            yield _gauge("splitter_backfill_rows_estimated", "Planner's estimate of the rows that backfill copies",
                         ["service", "table"], *[([service, b.source_table], b.rows_estimated)
                                                 for b in state.backfills])
            yield _gauge("splitter_backfill_running", "1 while that backfill has chunks left", ["service", "table"],
                         *[([service, b.source_table], 1 if b.running else 0) for b in state.backfills])
        v = state.verify
        if v is not None:
            yield _gauge("splitter_verify_tables_checked", "Tables the latest verify has compared", ["service"],
                         ([service], v.tables_checked))
            yield _gauge("splitter_verify_tables", "Tables the latest verify compares", ["service"],
                         ([service], v.tables_total))
            yield _gauge("splitter_verify_tables_mismatched", "Tables the latest verify found different", ["service"],
                         ([service], v.tables_mismatched))
            yield _gauge("splitter_verify_running", "1 while a verify of the service runs", ["service"],
                         ([service], 0 if v.finished else 1))


__all__ = [
    "CUTOVER_STATES",
    "ERROR_KINDS",
    "ComponentMetrics",
    "Health",
    "SourceClock",
    "caught_up_grace",
    "error_kind",
    "lag_bytes",
    "lag_seconds",
    "start_metrics",
]
