"""The initial copy: every service database filled from one consistent snapshot of the source.

Owns: deciding which service databases need the initial copy (no checkpoint, empty tables),
copying each route's projection from the slot's exported snapshot into the target (the COPY pipes
are `connectors.pg.copy.ServiceCopy`'s), and writing each service's first checkpoint (the slot's
consistent point) in the same transaction as its rows, so nothing is missed or doubled between the
copy and the stream.  All services are copied in parallel and committed together at the end, so a
crash mid-copy leaves none half filled.  Must not: stream changes, copy into a database that
already holds rows it did not write, or run SQL itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from connectors.pg.catalog import target_columns
from connectors.pg.client import connect
from connectors.pg.copy import ServiceCopy, table_has_rows
from connectors.pg.state.schema import (
    FROM_BEGINNING,
    Checkpoint,
    ensure_state_schema,
    read_checkpoint,
)
from splitter.core.errors import ConfigurationError, FatalError
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
    """Copy `services` from `snapshot`; their checkpoints say consistent_lsn.  All commit together."""
    if not services:
        return []
    opened: list[ServiceCopy] = []

    def copy_one(service: Service) -> CopyResult:
        started = time.monotonic()
        copy = ServiceCopy(settings.source_dsn, settings.target_dsn(service.name), service.name)
        opened.append(copy)
        copy.begin(snapshot)
        rows = {}
        for route in settings.topology.routes_for(service):
            rows[route.describe()] = copy.copy(route)
            progress(f"copied {rows[route.describe()]} rows: {route.describe()}")
        copy.write_checkpoint(service.name, Checkpoint(settings.topic, 0, FROM_BEGINNING, consistent_lsn, None))
        return CopyResult(service.name, rows, time.monotonic() - started)

    try:
        with ThreadPoolExecutor(max_workers=min(4, len(services)), thread_name_prefix="backfill") as pool:
            results = list(pool.map(copy_one, services))
        for copy in opened:
            copy.commit()
        return results
    except Exception:
        for copy in opened:
            copy.rollback()
        raise
    finally:
        for copy in opened:
            copy.close()


def plan_initial_copy(settings: Settings, slot_exists: bool) -> list[Service]:
    """The services the initial copy must fill; refuses states where the stream would miss changes."""
    states = {s.name: service_state(settings, s) for s in settings.topology.services}
    missing = [s for s in settings.topology.services if states[s.name] is None]
    if slot_exists and missing:
        if len(missing) == len(states):
            return missing  # the slot was created but no copy committed: the caller re-creates it
        raise FatalError(
            f"service(s) {', '.join(s.name for s in missing)} have no checkpoint but the replication slot "
            f"{settings.slot!r} already streams: an initial copy from the slot's snapshot is no longer possible. "
            f"Fill them online with `splitter backfill --service S --table T` (or drop the slot and empty every "
            f"service database to start over)")
    if not slot_exists and len(missing) != len(states):
        have = [n for n, cp in states.items() if cp is not None]
        raise FatalError(
            f"replication slot {settings.slot!r} does not exist but service(s) {', '.join(have)} have checkpoints: "
            f"changes since those checkpoints are lost. Re-snapshot: empty those service databases (drop their "
            f"splitter schema and truncate their tables) and start again")
    return missing
