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
slot: it has not streamed yet, and each service skips what its own snapshot holds (`plan_initial_copy`).
Must not: stream changes, copy into a database that already holds rows it did not write, or run SQL
itself.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from connectors.pg.catalog import target_columns
from connectors.pg.client import connect
from connectors.pg.copy import ServiceCopy, table_has_rows
from connectors.pg.source import ReplicationConnection, SlotInfo
from connectors.pg.state.schema import (
    FROM_BEGINNING,
    Checkpoint,
    ensure_state_schema,
    read_checkpoint,
)
from splitter.core.errors import ConfigurationError, FatalError
from splitter.core.lsn import lsn_to_str
from splitter.pipeline.config import Settings
from splitter.topology.model import Service

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopyResult:
    service: str
    rows: dict[str, int]
    seconds: float


def service_state(settings: Settings, service: Service) -> Checkpoint | None:
    """The service's checkpoint; refuses a database whose tables hold rows splitter did not write."""
    dsn = settings.target_dsn(service.name)
    with connect(dsn, f"database of service {service.name}", autocommit=True) as conn:
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


def initial_copy(settings: Settings, snapshot: str, consistent_lsn: int, services: list[Service],
                 progress: Callable[[str], None] = log.info) -> list[CopyResult]:
    """Copy `services` from `snapshot` (taken at `consistent_lsn`), each service committing on its own.

    Every service is attempted even when another fails; the first failure is raised once all are done,
    and the services that committed keep their rows and checkpoints.
    """
    if not services:
        return []
    # The last commit the snapshot holds is before the consistent point; a commit at it is streamed.
    checkpoint = Checkpoint(settings.topic, 0, FROM_BEGINNING, consistent_lsn - 1, None)

    def copy_one(service: Service) -> CopyResult:
        started = time.monotonic()
        copy = ServiceCopy(settings.source_dsn, settings.target_dsn(service.name), service.name)
        try:
            copy.begin(snapshot)
            rows = {}
            for route in settings.topology.routes_for(service):
                rows[route.describe()] = copy.copy(route)
                progress(f"copied {rows[route.describe()]} rows: {route.describe()}")
            copy.write_checkpoint(service.name, checkpoint)
            copy.commit()
        except BaseException:
            copy.rollback()
            raise
        finally:
            copy.close()
        return CopyResult(service.name, rows, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=min(4, len(services)), thread_name_prefix="backfill") as pool:
        futures = [(service, pool.submit(copy_one, service)) for service in services]
    failed: list[tuple[Service, BaseException]] = [(s, exc) for s, f in futures if (exc := f.exception()) is not None]
    results = [f.result() for _, f in futures if f.exception() is None]
    if failed:
        for service, exc in failed[1:]:
            log.error("initial copy of service %s failed too: %s", service.name, exc)
        if results:
            log.warning("initial copy: service(s) %s copied and kept; the next start copies %s",
                        ", ".join(r.service for r in results), ", ".join(s.name for s, _ in failed))
        raise failed[0][1]
    return results


def copy_from_own_snapshot(settings: Settings, services: list[Service]) -> list[CopyResult]:
    """Copy `services` from a snapshot of their own: a temporary slot's, gone with its connection.

    For services an earlier copy left without a checkpoint while the slot already exists: the slot
    streams from its older consistent point, each service skips what its own snapshot holds.
    """
    repl = ReplicationConnection(settings.source_dsn)
    try:
        consistent, snapshot = repl.create_slot(f"splitter_copy_{uuid.uuid4().hex[:16]}", temporary=True)
        log.info("copying %d service(s) from snapshot %s at %s", len(services), snapshot, lsn_to_str(consistent))
        return initial_copy(settings, snapshot, consistent, services)
    finally:
        repl.close()


def plan_initial_copy(settings: Settings, slot: SlotInfo | None) -> list[Service]:
    """The services the initial copy must fill; refuses states where the stream would miss changes.

    With the slot in place, services without a checkpoint can still be copied (from a snapshot of their
    own) while the stream has not started: no copied service has applied anything from the log, and the
    slot has confirmed nothing past their checkpoints (capture streams only once every service is copied).
    """
    states = {s.name: service_state(settings, s) for s in settings.topology.services}
    missing = [s for s in settings.topology.services if states[s.name] is None]
    if slot is not None and missing:
        copied = [cp for cp in states.values() if cp is not None]
        if not copied:
            return missing  # the slot was created but no copy committed: the caller re-creates it
        # `+ 1`: a checkpoint is one byte before its consistent point (at it, when written by older versions).
        confirmed = slot.confirmed_flush_lsn or 0
        if all(cp.offset == FROM_BEGINNING and confirmed <= cp.commit_lsn + 1 for cp in copied):
            return missing
        raise FatalError(
            f"service(s) {', '.join(s.name for s in missing)} have no checkpoint but the replication slot "
            f"{settings.slot!r} already streams: an initial copy from the slot's snapshot is no longer possible. "
            f"Fill them online with `splitter backfill --service S --table T` (or drop the slot and empty every "
            f"service database to start over)")
    if slot is None and len(missing) != len(states):
        have = [n for n, cp in states.items() if cp is not None]
        raise FatalError(
            f"replication slot {settings.slot!r} does not exist but service(s) {', '.join(have)} have checkpoints: "
            f"changes since those checkpoints are lost. Re-snapshot: empty those service databases (drop their "
            f"splitter schema and truncate their tables) and start again")
    return missing
