"""Metrics and health of one splitter process: what the CLI starts next to a capture or a worker.

Owns: `start_metrics` and `ComponentMetrics`, which put together the pieces of splitter.observe (lag:
the lag definitions; health: /healthz state and the heartbeat; poller: background reads; collectors:
the metric names; http: the endpoint), and the accounting of the component's attempts: errors by kind
(`error_kind`, `ERROR_KINDS`), retries, and counters that survive a retry rebuilding the component.  A
worker's endpoint also exports what operator commands record in its service database: the progress of
`splitter backfill` jobs and of a `splitter verify` (so Prometheus, which scrapes the daemon, sees
commands run from anywhere).  Capture's endpoint also reports the other components that stopped for
good (splitter.observe.components): a metric per component, and a line each on /healthz.

Must not: do work on the pipeline's hot path (collectors read the components' plain `stats`
attributes when Prometheus scrapes; histograms are observed from stats deltas by the poller), put
row contents or DSNs in a label or a log line (errors reach logs only through `wrap_db_error`, which
masks secrets), or decide anything about the pipeline: it only looks.

How it attaches (the CLI does this; tests do the same in threads)::

    with start_metrics(settings, "capture", port=9400) as metrics:
        run_with_retries("capture", metrics.instrument(lambda: Capture(settings)), stop)

`instrument` builds a fresh component per attempt (as `run_with_retries` expects), points the
collectors at its `stats`, counts its errors by kind and its retries, and hands its `run` a stop
event whose every poll is a heartbeat (splitter.observe.health; run_with_retries' own ticking stop
event, splitter.pipeline.daemon.TickingStop, is inside it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from splitter.core.errors import (
    ConfigurationError,
    FatalError,
    MalformedMessageError,
    RetryableError,
    SplitterError,
    classify_sqlstate,
)
from splitter.observe.collectors import ComponentCollector, worker_histograms
from splitter.observe.components import StoppedWatcher
from splitter.observe.health import Health
from splitter.observe.http import DEFAULT_METRICS_HOST, MetricsServer
from splitter.observe.lag import SourceClock, caught_up_grace
from splitter.observe.poller import Component, LogEndMode, Poller
from splitter.pipeline.config import Settings
from splitter.pipeline.daemon import TickingStop

log = logging.getLogger(__name__)

#: Error kinds (`kind` label); each is exported from the start at 0 so rate() and alerts see a series.
ERROR_KINDS: tuple[str, ...] = ("retryable", "fatal", "configuration", "malformed_message", "unexpected")
#: How often capture reads the other components' stop records (they change rarely).
STOPPED_POLL_INTERVAL = 2.0


class _Runnable(Protocol):
    @property
    def stats(self) -> Any: ...

    def run(self, stop: threading.Event) -> None: ...


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
                 port: int | None = None, host: str = DEFAULT_METRICS_HOST, poll_interval: float = 1.0,
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
        self._attempts = 0
        self._lock = threading.Lock()
        self.registry.register(ComponentCollector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.batch_rows, self.apply_seconds = worker_histograms(self.registry)
        self.poller = Poller(settings, component, self.service, poll_interval=poll_interval, clock=self.clock,
                             stats=lambda: self._stats, batch_rows=self.batch_rows,
                             apply_seconds=self.apply_seconds, log_end=log_end)
        #: capture: the stop records of the reverse daemon and every worker (their own endpoints are gone).
        self.components = (StoppedWatcher(settings, max(poll_interval, STOPPED_POLL_INTERVAL))
                           if component == "capture" else None)
        self._server: MetricsServer | None = None
        self.port: int | None = None
        if port is not None:
            self._serve(host, port)
        self.poller.start()
        if self.components is not None:
            self.components.start()

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
                component.run(TickingStop(stop, self.health.tick))
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
        self.health.watch(stats)
        self.poller.reset_deltas()

    @property
    def stats(self) -> Any:
        return self._stats

    def errors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._errors)

    def retries(self) -> int:
        with self._lock:
            return max(0, self._attempts - 1)

    def counter(self, key: Any, current: float, *, persistent: bool = False) -> float:
        return self._counters.value(key, current, persistent=persistent)

    # -- the endpoint ----------------------------------------------------------------------------------------

    def _serve(self, host: str, port: int) -> None:
        name = f"metrics-http-{self.component}{'-' + self.service if self.service else ''}"
        notes = self.components.describe if self.components is not None else None
        self._server = MetricsServer(self.registry, self.health, host, port, name, notes=notes)
        self.port = self._server.port
        log.info("%s%s: metrics on http://%s:%d/metrics", self.component,
                 f"[{self.service}]" if self.service else "", host, self.port)

    def close(self) -> None:
        self.poller.stop(10)
        if self.components is not None:
            self.components.close(10)
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> ComponentMetrics:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def start_metrics(settings: Settings, component: Component, *, service: str | None = None, port: int | None = None,
                  host: str = DEFAULT_METRICS_HOST, poll_interval: float = 1.0, health_max_age: float = 30.0,
                  log_end: LogEndMode = "watermark") -> ComponentMetrics:
    """Start the metrics of one component; with `port` None nothing listens (errors are still counted).

    `port=0` picks a free port (read it back from `.port`).
    """
    return ComponentMetrics(settings, component, service=service, port=port, host=host, poll_interval=poll_interval,
                            health_max_age=health_max_age, log_end=log_end)


__all__ = ["ERROR_KINDS", "ComponentMetrics", "error_kind", "start_metrics"]
