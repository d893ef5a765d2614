"""`splitter status`: where every service stands, read from the databases alone.

Owns: `StatusReader`, which reads the source's WAL position, replication slot, cutover rows and stopped
components and each service database's checkpoint, control row, stopped worker and open dead letters
(through connectors.pg.positions and connectors.pg.state, the reads the metrics poller uses too), and
turns them into one picture per refresh (`snapshot`: splitter.ops.status_model's values): state, lag in
seconds and bytes, rows/s, dead letters and the last problem seen; a component that stopped for good
(splitter.components) is listed with its exit class and error, and its service's state is "stopped"; a
capture that runs degraded (heartbeats failing, broker unreachable: its `degraded` row) is listed too.
A database status cannot connect to is named with the class and SQLSTATE of the refusal
(`error_class`, `sqlstate`): a wrong password or a missing database makes a service "misconfigured"
(its worker, using the same settings, cannot run either, and could not record why in that database).
It needs no daemon port, so it works while splitter is down (that is when it matters most).  Lag is
splitter.observe.lag's `lag` (the one definition /metrics uses too): `settle` samples the source for
up to the caught-up grace (about 2.5 s; less when every service is caught up) before the first
picture, `--watch` keeps its samples.

Must not: write anything (it only reads; the hold/cutover rows are other commands' business),
print a DSN unmasked, or keep a transaction open between refreshes.  The cutover section (home,
fence) is splitter.ops.cutover.view's, the ownership section (per source table) splitter.ops.status_ownership's,
both shown under the table when the source answers; the text is splitter.ops.status_render's, the exit
code splitter.ops.status_verdict's, the live table splitter.cli.status_view's.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from connectors.pg.client import Connection, sqlstate_of
from connectors.pg.positions import ReadSession, source_positions
from connectors.pg.privileges import NO_REPLICATION_SQLSTATE, can_replicate
from connectors.pg.state import dead_letters
from connectors.pg.state.components import DegradedComponent, StoppedComponent, read_degraded, read_stopped
from connectors.pg.state.control import HoldState, hold_state
from connectors.pg.state.cutover import read_states
from connectors.pg.state.schema import AppliedCheckpoint, read_applied, state_tables_exist
from splitter.core.dsn import SOURCE_DATABASE, service_database
from splitter.core.errors import SplitterError
from splitter.core.lsn import lsn_to_str
from splitter.observe.lag import SourceClock, caught_up_grace, lag
from splitter.ops.status_components import ComponentStatus, DegradedStatus, error_class
from splitter.ops.status_model import ServiceStatus, SourceStatus, Status, Verdict
from splitter.ops.status_ownership import ownership_section
from splitter.ops.status_render import emit, render_table
from splitter.pipeline.config import Settings

# A service whose checkpoint has not moved for this long while the source moved is stalled: an idle
# worker still records its position every second (capture's heartbeats keep the log moving).
STALL_AFTER = 60.0
# Rows/s is measured over at most this much history (watch mode) and at least MIN_RATE_WINDOW.
RATE_WINDOW = 60.0
MIN_RATE_WINDOW = 0.5
SAMPLE_EVERY = 0.25
ONE_SHOT_MIN = 1.0
_APPLICATION_NAME = "splitter-status"


@dataclass
class _Reading:
    """One read of a service database."""

    ok: bool
    error: str | None = None
    error_class: str | None = None
    sqlstate: str | None = None
    has_checkpoint: bool = False
    offset: int = -1
    commit_lsn: int = 0
    source_ts_ms: int = 0
    applied_at: datetime | None = None
    rows: int = 0
    transactions: int = 0
    pause_at: int | None = None
    paused_lsn: int | None = None
    requested_by: str | None = None
    stopped: StoppedComponent | None = None
    dead_letters: int | None = None


class StatusReader:
    """Samples the source and the service databases; keeps what lag and rates need between samples."""

    def __init__(self, settings: Settings, services: Sequence[str] | None = None) -> None:
        self.settings = settings
        names = [s.name for s in settings.topology.services]
        if services:
            for name in services:
                settings.topology.service(name)  # raises naming the known services
            names = [n for n in names if n in services]
        self.services = names
        self.grace = caught_up_grace(settings, SAMPLE_EVERY)
        self.clock = SourceClock()
        self.source = SourceStatus(settings.topology.source_database, slot=settings.slot)
        self.readings: dict[str, _Reading] = {}
        # service -> (state, last error) from the source's splitter.cutover (connectors.pg.state.cutover).
        self.cutover: dict[str, tuple[str, str | None]] = {}
        self.source_stopped: list[StoppedComponent] = []  # capture and reverse, from the source
        self.source_degraded: list[DegradedComponent] = []
        self._rows: dict[str, deque[tuple[float, int]]] = {n: deque() for n in names}
        self._source = ReadSession(settings.source_dsn, SOURCE_DATABASE, _APPLICATION_NAME)
        self._targets: dict[str, ReadSession] = {}

    def close(self) -> None:
        for session in (self._source, *self._targets.values()):
            session.close()

    # -- sampling -----------------------------------------------------------------------------------

    def sample(self) -> None:
        self._sample_source()
        now = time.time()
        for name in self.services:
            reading = self._read_service(name)
            self.readings[name] = reading
            if reading.ok and reading.has_checkpoint:
                rows = self._rows[name]
                rows.append((now, reading.rows))
                while rows and now - rows[0][0] > RATE_WINDOW:
                    rows.popleft()

    def _sample_source(self) -> None:
        s = self.settings
        src = self.source
        try:
            positions = self._source.read("reading the source", lambda conn: source_positions(conn, s.slot))
        except SplitterError as exc:
            self._source.close()
            src.reachable, src.error, src.slot_state = False, _message(exc), "unknown"
            src.error_class, src.sqlstate = error_class(exc), sqlstate_of(exc)
            return
        self.clock.add(positions.wal_lsn)
        src.reachable, src.error, src.current_lsn = True, None, lsn_to_str(positions.wal_lsn)
        src.error_class = src.sqlstate = None
        src.slot_lag_bytes, src.retained_wal_bytes = positions.slot_lag_bytes, positions.retained_wal_bytes
        slot = positions.slot
        if slot is None:
            src.slot_state = "missing"
            src.error = f"replication slot {s.slot!r} does not exist (capture has not started yet)"
        elif slot.wal_status == "lost":
            src.slot_state = "lost"
            src.error = f"replication slot {s.slot!r} was invalidated: changes were lost, copy again"
        else:
            src.slot_state = "streaming" if slot.active else "inactive"
        try:
            states = self._source.read("reading the cutover states", read_states)
            stopped = self._source.read("reading the stopped components", read_stopped)
            degraded = self._source.read("reading the degraded components", read_degraded)
            replicates = self._source.read("reading the source role's attributes", can_replicate)
        except SplitterError as exc:
            self._source.close()
            src.error = _message(exc)
            return
        if not replicates:  # capture cannot record why it stops when the same role may not create its table
            src.error = ("the source role has no REPLICATION attribute: capture cannot open its stream "
                         f"(SQLSTATE {NO_REPLICATION_SQLSTATE})")
            src.error_class, src.sqlstate = "configuration", NO_REPLICATION_SQLSTATE
        self.cutover, self.source_stopped, self.source_degraded = states, stopped, degraded

    def _read_service(self, name: str) -> _Reading:
        session = self._targets.get(name)
        if session is None:
            session = ReadSession(self.settings.target_dsn(name), service_database(name), _APPLICATION_NAME)
            self._targets[name] = session

        def read(conn: Connection) -> tuple[AppliedCheckpoint | None, HoldState, list[StoppedComponent], int | None]:
            # The dead-letter table comes with the other state tables (none before the worker's first start).
            letters = dead_letters.count_open(conn, name) if state_tables_exist(conn) else None
            return read_applied(conn, name), hold_state(conn, name), read_stopped(conn), letters

        try:
            applied, hold, stopped, letters = session.read(f"reading the database of service {name}", read)
        except SplitterError as exc:
            session.close()
            return _Reading(ok=False, error=_message(exc), error_class=error_class(exc), sqlstate=sqlstate_of(exc))
        reading = _Reading(ok=True, dead_letters=letters)
        reading.stopped = next((c for c in stopped if c.component == "worker" and c.service == name), None)
        if applied is not None:
            cp = applied.checkpoint
            reading.has_checkpoint = True
            reading.offset, reading.commit_lsn = cp.offset, cp.commit_lsn
            reading.source_ts_ms = int(cp.source_ts.timestamp() * 1000) if cp.source_ts else 0
            reading.applied_at, reading.rows, reading.transactions = (applied.applied_at, cp.rows_applied,
                                                                      cp.transactions_applied)
        if hold.pause_at_lsn is not None:
            reading.pause_at, reading.paused_lsn, reading.requested_by = (hold.pause_at_lsn, hold.paused_lsn,
                                                                          hold.requested_by)
        return reading

    # -- the picture ------------------------------------------------------------------------------------

    def caught_up(self, since_lsn: int) -> bool:
        """Every service's applied position is at or past `since_lsn` (or there is nothing to wait for)."""
        for reading in self.readings.values():
            if reading.ok and reading.has_checkpoint and reading.pause_at is None and reading.commit_lsn < since_lsn:
                return False
        return True

    def snapshot(self) -> Status:
        now = time.time()
        out = Status(datetime.now(UTC).isoformat(timespec="seconds"), self.source)
        out.stopped = [ComponentStatus.of(c) for c in self.source_stopped]
        out.degraded = [DegradedStatus.of(c) for c in self.source_degraded]
        for name in self.services:
            reading = self.readings.get(name) or _Reading(ok=False, error="not read yet")
            st = ServiceStatus(name, self.settings.topology.service(name).database)
            out.services.append(st)
            cutover_state, cutover_error = self.cutover.get(name, (None, None))
            st.cutover_state = cutover_state
            st.dead_letters = reading.dead_letters
            if not reading.ok:
                st.state = "misconfigured" if reading.error_class == "configuration" else "unreachable"
                st.last_error, st.error_class, st.sqlstate = reading.error, reading.error_class, reading.sqlstate
                continue
            stopped = ComponentStatus.of(reading.stopped) if reading.stopped is not None else None
            if stopped is not None:
                out.stopped.append(stopped)
            if not reading.has_checkpoint:
                st.state = "not started"
                st.last_error = "no checkpoint yet: the initial copy has not finished (or capture never ran)"
                if stopped is not None:
                    st.state, st.last_error = "stopped", f"worker {stopped.summary()}"
                continue
            st.applied_lsn, st.applied_offset = lsn_to_str(reading.commit_lsn), reading.offset
            st.applied_at = reading.applied_at.isoformat(timespec="seconds") if reading.applied_at else None
            st.rows_applied, st.transactions_applied = reading.rows, reading.transactions
            behind = lag(reading.commit_lsn, reading.source_ts_ms, self.clock, now, self.grace)
            if behind is not None:  # one definition for both numbers (splitter.observe.lag)
                st.lag_bytes, st.lag_seconds = behind.bytes, round(behind.seconds, 3)
            rows = self._rows[name]
            if len(rows) >= 2 and rows[-1][0] - rows[0][0] >= MIN_RATE_WINDOW:
                st.rows_per_second = round(max(0, rows[-1][1] - rows[0][1]) / (rows[-1][0] - rows[0][0]), 1)
            idle_for = (now - reading.applied_at.timestamp()) if reading.applied_at else None
            if reading.pause_at is not None:
                st.held_at_lsn = lsn_to_str(reading.pause_at)
                st.state = "held" if reading.paused_lsn is not None else "holding"
                st.last_error = f"held at {lsn_to_str(reading.pause_at)} by {reading.requested_by or 'unknown'}"
            elif idle_for is not None and idle_for > STALL_AFTER and (st.lag_bytes or 0) > 0:
                st.state = "stalled"
                st.last_error = (f"no progress for {idle_for:.0f}s while the source moved"
                                 + ("" if self.source.slot_state == "streaming" else
                                    f" (capture is not streaming: slot {self.source.slot_state})"))
            else:
                st.state = "streaming"
            if stopped is not None:  # it does not run: whatever else holds, this is what to fix first
                st.state, st.last_error = "stopped", f"worker {stopped.summary()}"
            # A cutover in progress names the state; `streaming` is what the worker does anyway.
            if cutover_state and cutover_state != "streaming":
                st.state = cutover_state if st.state == "streaming" else f"{cutover_state} ({st.state})"
            if cutover_error and st.last_error is None:
                st.last_error = f"cutover: {cutover_error.strip().splitlines()[0]}"
        return out


def _message(exc: SplitterError) -> str:
    # Masked where it was raised (connect and ReadSession wrap driver errors with wrap_db_error).
    text = str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def settle(reader: StatusReader) -> None:
    """Sample until the picture is worth showing: for at least ONE_SHOT_MIN s and until every service is
    caught up with where the source was at the start, or the caught-up grace has passed (then the lag's
    reference sample is a grace old: a service behind reads behind by at least that much)."""
    started = time.monotonic()
    reader.sample()
    first = reader.clock.latest()
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= reader.grace:
            break
        if elapsed >= ONE_SHOT_MIN and (first is None or reader.caught_up(first.lsn)):
            break
        time.sleep(SAMPLE_EVERY)
        reader.sample()


def collect(settings: Settings, services: Sequence[str] | None = None) -> Status:
    """One status picture, once `settle` is done."""
    reader = StatusReader(settings, services)
    try:
        settle(reader)
        return reader.snapshot()
    finally:
        reader.close()


# -- the command ----------------------------------------------------------------------------------------------


def with_cutover(status: Status, settings: Settings) -> Status:
    """Add splitter.ops.cutover.view's section (home, fence) and the ownership section when the source answers."""
    from splitter.ops.cutover import view as module
    status.ownership = ownership_section(settings)
    try:
        rows = module.status(settings)
    except SplitterError:
        return status  # the source's problem is already in status.source.error
    status.cutover = [row.to_dict() for row in rows]
    status.cutover_text = module.render_status(rows)
    return status


__all__ = ["ComponentStatus", "DegradedStatus", "ServiceStatus", "SourceStatus", "Status", "StatusReader", "Verdict",
           "collect", "emit", "render_table", "settle", "with_cutover"]
