"""The metrics of a capture or worker: every name, label and help text splitter exports.

Owns: the Prometheus collector that, when Prometheus scrapes, reads the component's plain `stats`, its
health, error counts, the poller's last readings and (capture) the stop records of the other components
(splitter.observe.components), and the two worker histograms (observed by the poller).  Every name
starts with `splitter_`, carries its unit, counters end in `_total`, labels are few and bounded:
`component`, `service`, `table`, `op`, `kind`, `slot`, `state`, `status`, `target`.
Names, labels and help texts are what dashboards (grafana/), alerts (prometheus/) and
docs/observability.md use: keep them.  Lag comes from splitter.observe.lag (the definitions status shares);
the slot's numbers are the source's (current WAL - confirmed_flush_lsn, current WAL - restart_lsn); the
Kafka lag is a second view: the log end - 1 - the applied offset.
Must not: read a database or the broker (the poller and the watcher do), change anything, or put row contents or DSNs in
a label.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connectors.pg.state import cutover as cutover_store
from splitter.observe.components import StoppedWatcher
from splitter.observe.health import Health
from splitter.observe.lag import SourceClock, SourceSample, lag
from splitter.observe.poller import Poller, ServiceState
from splitter.pipeline.config import Settings

# Batch sizes in rows, and apply times: buckets span one-row commits to the 5000-row batch limit.
BATCH_ROWS_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, float("inf"))
#: The `kind` of splitter_component_stopped: the exit classes of splitter.components.
STOPPED_KINDS = ("configuration", "fatal")
APPLY_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


class Watched(Protocol):
    """What the collector reads of one component's metrics (splitter.observe.metrics.ComponentMetrics)."""

    @property
    def component(self) -> str: ...

    @property
    def service(self) -> str: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def health(self) -> Health: ...

    @property
    def clock(self) -> SourceClock: ...

    @property
    def grace(self) -> float: ...

    @property
    def poller(self) -> Poller: ...

    @property
    def components(self) -> StoppedWatcher | None: ...

    @property
    def stats(self) -> Any: ...

    def errors(self) -> dict[str, int]: ...

    def retries(self) -> int: ...

    def counter(self, key: Any, current: float, *, persistent: bool = False) -> float: ...


def worker_histograms(registry: CollectorRegistry) -> tuple[Histogram, Histogram]:
    """(rows per batch, apply seconds), registered in `registry`, labelled by service."""
    labels = ["service"]
    batch_rows = Histogram("splitter_worker_batch_rows", "Rows per target transaction the worker committed",
                           labels, buckets=BATCH_ROWS_BUCKETS, registry=registry)
    apply_seconds = Histogram("splitter_worker_apply_duration_seconds",
                              "Time to apply and commit one batch in the service database", labels,
                              buckets=APPLY_SECONDS_BUCKETS, registry=registry)
    return batch_rows, apply_seconds


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


class ComponentCollector(Collector):
    """Reads the component's stats and the poller's last readings when Prometheus scrapes."""

    def __init__(self, owner: Watched) -> None:
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
        poll_errors = o.poller.errors()
        targets = ("source", "service_db", "kafka") if o.component == "worker" else ("source",)
        yield _counter("splitter_metrics_poll_errors", "Failed reads of positions by the metrics poller",
                       ["component", "service", "target"],
                       *[([*who, t], float(poll_errors.get(t, 0))) for t in targets])
        latest = o.clock.latest()
        yield _gauge("splitter_source_wal_lsn_bytes", "The source's current WAL position (pg_current_wal_lsn)",
                     ["component", "service"], (who, latest.lsn if latest else None))
        if o.component == "capture":
            yield from self._capture(o)
        else:
            yield from self._worker(o, latest)

    def _capture(self, o: Watched) -> Iterator[Metric]:
        st = o.stats
        poller = o.poller
        positions = poller.positions
        slot = positions.slot if positions is not None else None
        sl = [o.settings.slot]
        if positions is not None and slot is not None:
            yield _gauge("splitter_slot_lag_bytes", "Source WAL not yet confirmed by the slot", ["slot"],
                         (sl, positions.slot_lag_bytes))
            yield _gauge("splitter_slot_retained_wal_bytes", "WAL the source keeps for the slot (from restart_lsn)",
                         ["slot"], (sl, positions.retained_wal_bytes))
            yield _gauge("splitter_slot_confirmed_flush_lsn_bytes", "The slot's confirmed_flush_lsn", ["slot"],
                         (sl, slot.confirmed_flush_lsn))
            yield _gauge("splitter_slot_restart_lsn_bytes", "The slot's restart_lsn", ["slot"],
                         (sl, slot.restart_lsn))
            yield _gauge("splitter_slot_active", "1 when a walsender streams from the slot", ["slot"],
                         (sl, 1 if slot.active else 0))
            if slot.wal_status is not None:
                yield _gauge("splitter_slot_wal_status", "The slot's wal_status (state set; 'lost' means data loss)",
                             ["slot", "status"],
                             *[([o.settings.slot, s], 1 if slot.wal_status == s else 0)
                               for s in sorted({"reserved", "extended", "unreserved", "lost", slot.wal_status})])
        watcher = o.components
        if watcher is not None:  # a state set per component: 1 for the kind it stopped with, all 0 while it may run
            stopped = watcher.stopped()
            yield _gauge("splitter_component_stopped",
                         "1 for a component that stopped for good with this kind of error (splitter.components)",
                         ["component", "service", "kind"],
                         *[([component, service, kind], 1 if (c := stopped.get((component, service))) is not None
                            and c.exit_class == kind else 0)
                           for component, service in watcher.watched for kind in STOPPED_KINDS])
            refused = watcher.unreachable()
            yield _gauge("splitter_component_database_unreachable",
                         "1 while capture cannot read the database a component records its stop in, by the class "
                         "and SQLSTATE of the refusal (configuration: the component cannot run with these settings)",
                         ["component", "service", "kind", "sqlstate"],
                         *[([component, service, r.kind, r.sqlstate or ""], 1)
                           for (component, service), r in sorted(refused.items())])
        cutover = poller.cutover_states
        if cutover is not None:  # a state set: every known state (1 for the current one) and any other a row holds
            yield _gauge("splitter_cutover_state", "Each service's cutover state (state set, from splitter.cutover)",
                         ["service", "state"],
                         *[([service, s], 1 if s == current else 0)
                           for service, current in sorted(cutover.items())
                           for s in dict.fromkeys((*cutover_store.STATES, current))])
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
        yield _gauge("splitter_capture_heartbeat_failures",
                     "Consecutive failed heartbeats (0 after a successful one); retained WAL grows while they fail",
                     [], ([], st.heartbeat_failures))
        yield _gauge("splitter_capture_broker_unreachable",
                     "1 while capture cannot reach the broker; nothing new reaches the change log and retained WAL "
                     "grows", [], ([], 1 if getattr(st, "broker_unreachable", False) else 0))

    def _worker(self, o: Watched, latest: SourceSample | None) -> Iterator[Metric]:
        svc = [o.service]
        state = o.poller.service_state
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
        behind = lag(st.applied_lsn, st.applied_source_ts_ms, o.clock, now, o.grace)  # one definition for both
        yield _gauge("splitter_worker_lag_bytes", "Source WAL bytes the service has not applied (0 when caught up)",
                     ["service"], (svc, behind.bytes if behind else None))
        yield _gauge("splitter_worker_lag_seconds", "Seconds the service is behind the source (0 when caught up)",
                     ["service"], (svc, behind.seconds if behind else None))
        end = o.poller.log_end_offset
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

    def _operator_progress(self, service: str, state: ServiceState) -> Iterator[Metric]:
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


__all__ = ["APPLY_SECONDS_BUCKETS", "BATCH_ROWS_BUCKETS", "ComponentCollector", "Watched", "worker_histograms"]
