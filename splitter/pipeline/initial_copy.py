"""The initial copy: every service database filled from a consistent snapshot of the source.

Owns: deciding which service databases need the initial copy (no checkpoint, empty tables) and whether
the replication slot can still serve them, copying each route's projection from an exported snapshot into
the target (the COPY pipes are `connectors.pg.copy.ServiceCopy`'s), and writing each service's first
checkpoint in the same transaction as its rows.  That checkpoint is one byte before the snapshot's
consistent point P: the snapshot holds the transactions committed before P, the slot streams every commit
at or after P, and workers apply commit LSNs above their checkpoint, so a commit exactly at P is applied
once (docs/DESIGN-NOTES.md, "Positions are LSNs").
Services are copied in parallel and do NOT commit together: each commits its rows and checkpoint on its
own, so a copy that fails part way keeps the services it finished.  The next start copies the rest from
a new snapshot (a temporary slot's), their checkpoints just before its consistent point, and keeps the
slot: each service skips what its own snapshot holds (`plan_copies`).  A service whose database does not
answer is copied the same way once it does (capture's `copy_plan`), and is never taken for "not copied".
Rows a service database refuses are handled by their table's `on_error` (its own, else the service's:
`copy_refusals`); two copies of one service never both commit (`ServiceCopy.claim`).
Progress: each service is a task (`initial copy <service>`: rows copied of about the catalog's estimate
of its source tables, the table as its stage), reported while a table is piped (every `ROWS_PER_REPORT`
rows), after each table and when committed; capture, a daemon, logs it as plain lines at most every
`PLAIN_INTERVAL` seconds per service, and the last (`splitter.core.progress.Periodic`), so a copy of
many small tables does not take a line each.
Must not: stream changes, copy into a database that already holds rows it did not write, or run SQL
itself.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from connectors.pg.catalog import target_columns
from connectors.pg.client import DatabaseError, connect
from connectors.pg.copy import ServiceCopy, table_has_rows
from connectors.pg.source import ReplicationConnection, SlotInfo, estimated_rows
from connectors.pg.state.schema import (
    FROM_BEGINNING,
    Checkpoint,
    ensure_state_schema,
    read_checkpoint,
)
from splitter.core.dsn import SOURCE_DATABASE, service_database
from splitter.core.errors import ConfigurationError, DataRejectedError, FatalError, RetryableError
from splitter.core.lsn import lsn_to_str
from splitter.core.progress import Periodic, Progress, ProgressSink
from splitter.pipeline.config import Settings
from splitter.pipeline.copy_refusals import copy_refused_route
from splitter.topology.model import Service

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopyResult:
    service: str
    rows: dict[str, int]
    seconds: float
    dead_letters: int = 0  # rows the service database refused, set aside (their table's on_error = "dead_letter")
    already: bool = False  # another copy committed this service first: nothing was copied here


@dataclass(frozen=True)
class CopyOutcome:
    """Every service attempted: those that committed, and those that failed with why."""

    results: list[CopyResult]
    failed: list[tuple[Service, BaseException]]

    def raise_first(self) -> list[CopyResult]:
        """The results, or the first failure raised once the others are logged."""
        if self.failed:
            for service, exc in self.failed[1:]:
                log.error("initial copy of service %s failed too: %s", service.name, exc)
            if self.results:
                log.warning("initial copy: service(s) %s copied and kept; the next start copies %s",
                            ", ".join(r.service for r in self.results), ", ".join(s.name for s, _ in self.failed))
            raise self.failed[0][1]
        return self.results


@dataclass(frozen=True)
class CopyPlan:
    """What the initial copy must do before capture streams (`plan_copies`)."""

    now: list[Service]  # reachable, without a checkpoint: copied before the stream starts
    later: list[Service]  # their database did not answer: copied from a snapshot of their own once it does
    copied: list[str]  # reachable, with a checkpoint
    recreate_slot: bool = False  # the slot exists but serves nobody: no service copied, none unknown


def service_state(settings: Settings, service: Service) -> Checkpoint | None:
    """The service's checkpoint; refuses a database whose tables hold rows splitter did not write."""
    dsn = settings.target_dsn(service.name)
    with connect(dsn, service_database(service.name), autocommit=True) as conn:
        ensure_state_schema(conn)
        cp = read_checkpoint(conn, service.name)
        if cp is not None:
            return cp
        for route in settings.topology.routes_for(service):
            target_columns(conn, route)  # the table and its columns must exist
            if table_has_rows(conn, route.target_schema, route.target_table):
                raise ConfigurationError(
                    f"service {service.name}: table {route.target_schema}.{route.target_table} in database "
                    f"{service.database} already has rows but splitter has no checkpoint there; refusing to copy "
                    f"over it. Empty the table (or point the service at an empty database) and start again")
        return None


def _estimates(settings: Settings, services: list[Service]) -> dict[str, int]:
    """The catalog's row estimate of each route's source table (by `route.describe()`); {} if unreadable:
    progress then has no total, and the copy goes on."""
    try:
        with connect(settings.source_dsn, SOURCE_DATABASE, autocommit=True,
                     application_name="splitter-backfill") as conn:
            return {route.describe(): estimated_rows(conn, route.source_schema, route.source_table)
                    for service in services for route in settings.topology.routes_for(service)}
    except (DatabaseError, RetryableError) as exc:
        log.warning("initial copy: no row estimates, progress shows rows without a total (%s)", exc)
        return {}


def copy_services(settings: Settings, snapshot: str, consistent_lsn: int, services: list[Service],
                  progress: ProgressSink | None = None) -> CopyOutcome:
    """Copy `services` from `snapshot` (taken at `consistent_lsn`), each service committing on its own.

    Every service is attempted even when another fails; the services that committed keep their rows and
    checkpoints.  A route the service database refuses rows of is copied as its table's `on_error` says
    (`copy_refusals`).  `progress` gets each service's reports (default: plain lines in the log, at most
    every `PLAIN_INTERVAL` seconds per service).
    """
    if not services:
        return CopyOutcome([], [])
    sink = progress if progress is not None else Periodic(log.info)
    estimates = _estimates(settings, services)
    # The last commit the snapshot holds is before the consistent point; a commit at it is streamed.
    checkpoint = Checkpoint(settings.topic, 0, FROM_BEGINNING, consistent_lsn - 1, None)

    def copy_one(service: Service) -> CopyResult:
        started = time.monotonic()
        routes = settings.topology.routes_for(service)
        task = f"initial copy {service.name}"
        # No total when a table was never analyzed (estimate 0): a bar at 100% from the start would lie.
        known = all(estimates.get(r.describe()) for r in routes)
        total = sum(estimates.get(r.describe(), 0) for r in routes) if known else None

        def report(stage: str, finished: bool = False, piping: int = 0) -> None:
            # `piping`: rows of the table being copied so far, not yet in `rows`.
            sink(Progress(task, sum(rows.values()) + piping, total, "rows", time.monotonic() - started,
                          stage=stage, finished=finished))

        copy = ServiceCopy(settings.source_dsn, settings.target_dsn(service.name), service.name)
        rows: dict[str, int] = {}
        letters = 0
        try:
            copy.begin(snapshot)
            if not copy.claim():
                copy.rollback()
                log.info("service %s was copied meanwhile by another copy: nothing to do", service.name)
                return CopyResult(service.name, {}, time.monotonic() - started, already=True)
            # A report while a table's rows are piped and after each table; the last once the rows and the
            # checkpoint are committed.
            stage = f"0/{len(routes)} tables"
            for i, route in enumerate(routes):
                piping_stage = f"{route.describe()}, {i}/{len(routes)} tables"
                try:
                    rows[route.describe()] = copy.copy(route, partial(report, piping_stage, False))
                except DataRejectedError as exc:
                    rows[route.describe()], refused = copy_refused_route(copy, service, route, checkpoint, exc)
                    letters += refused
                log.debug("initial copy of service %s: copied %d rows: %s", service.name, rows[route.describe()],
                          route.describe())
                stage = f"{route.describe()}, {i + 1}/{len(routes)} tables"
                if i + 1 < len(routes):
                    report(stage)
            copy.write_checkpoint(service.name, checkpoint, routes)
            copy.commit()
            report(stage, finished=True)
        except BaseException:
            copy.rollback()
            raise
        finally:
            copy.close()
        return CopyResult(service.name, rows, time.monotonic() - started, letters)

    with ThreadPoolExecutor(max_workers=min(4, len(services)), thread_name_prefix="backfill") as pool:
        futures = [(service, pool.submit(copy_one, service)) for service in services]
    failed: list[tuple[Service, BaseException]] = [(s, exc) for s, f in futures if (exc := f.exception()) is not None]
    return CopyOutcome([f.result() for _, f in futures if f.exception() is None], failed)


def initial_copy(settings: Settings, snapshot: str, consistent_lsn: int, services: list[Service],
                 progress: ProgressSink | None = None) -> list[CopyResult]:
    """`copy_services`, raising the first failure once every service was attempted."""
    return copy_services(settings, snapshot, consistent_lsn, services, progress).raise_first()


def copy_from_own_snapshot(settings: Settings, services: list[Service]) -> list[CopyResult]:
    """Copy `services` from a snapshot of their own: a temporary slot's, gone with its connection.

    For services left without a checkpoint while the slot already exists (an earlier copy failed part
    way, or their database did not answer when the stream started): the slot streams from an older
    position, so the change log holds every commit from this snapshot's consistent point on, and each
    service skips what its own snapshot holds.
    """
    repl = ReplicationConnection(settings.source_dsn)
    try:
        consistent, snapshot = repl.create_slot(f"splitter_copy_{uuid.uuid4().hex[:16]}", temporary=True)
        log.info("copying %d service(s) from snapshot %s at %s", len(services), snapshot, lsn_to_str(consistent))
        return initial_copy(settings, snapshot, consistent, services)
    finally:
        repl.close()


def plan_copies(settings: Settings, slot: SlotInfo | None) -> CopyPlan:
    """Which services to copy now and which once their database answers; refuses states that lost changes.

    A service whose database does not answer (RetryableError) is neither copied nor "never copied": it may
    hold a checkpoint, so the slot is kept for it, and it is copied from a snapshot of its own later if it
    turns out to need it.  With the slot in place, a service without a checkpoint is copied from a
    snapshot of its own, whether or not the stream has started: the slot feeds the change log from a
    position at or before that snapshot's consistent point, so the log holds every commit the service
    must apply on top of its copy.
    """
    states: dict[str, Checkpoint | None] = {}
    later: list[Service] = []
    for service in settings.topology.services:
        try:
            states[service.name] = service_state(settings, service)
        except RetryableError as exc:
            log.warning("service %s: its database does not answer (%s); capture streams without it and copies it "
                        "once it answers, if it needs its copy", service.name, str(exc).strip().splitlines()[0])
            later.append(service)
    if slot is None and not states:  # a slot for nobody would only hold WAL
        raise RetryableError(f"no service database answers ({', '.join(s.name for s in later)}); waiting for one")
    now = [s for s in settings.topology.services if s.name in states and states[s.name] is None]
    copied = [n for n, cp in states.items() if cp is not None]
    if slot is None and copied:
        raise FatalError(
            f"replication slot {settings.slot!r} does not exist but service(s) {', '.join(copied)} have checkpoints: "
            f"changes since those checkpoints are lost. Re-snapshot: empty those service databases (drop their "
            f"splitter schema and truncate their tables) and start again")
    # No checkpoint anywhere and every database answered: the slot serves nobody; a fresh one is as good.
    return CopyPlan(now, later, copied, recreate_slot=slot is not None and not copied and not later)


def plan_initial_copy(settings: Settings, slot: SlotInfo | None) -> list[Service]:
    """The services the initial copy must fill now (`plan_copies`), waiting while a service database does not
    answer."""
    plan = plan_copies(settings, slot)
    if plan.later:
        raise RetryableError(f"database of service(s) {', '.join(s.name for s in plan.later)} does not answer")
    return plan.now
