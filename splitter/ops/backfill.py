"""`splitter backfill --service S --table T`: re-copy one table into one service database while streaming.

Owns: the copying side of the DBLog watermark algorithm.  For each chunk of the source table, in
primary-key order: write a low watermark into the change log (`pg_logical_emit_message`), read the
chunk (once the transactions open at the low watermark have ended), hand its rows to the service
database, write a high watermark, and wait until the worker has applied the chunk.  The worker,
reading the log in order, drops from the chunk every row the stream changed between the two
watermarks (the stream carries newer values), so a copied value never overwrites a newer one, and
the service's stream is never paused.  Rows the stream could not rebuild meanwhile (an update with
unchanged TOASTed columns that moved a row the copy had not reached to a key it had passed) are noted
by the worker and copied again in repair chunks at the end.  Each scan chunk also names its key range
(the previous chunk's last key, its own last key], from the first key and to the last at the ends), and
the worker deletes the target rows in it that the chunk does not hold, under the same rule (rows the
stream changed inside the window are the stream's): so a backfill after a stretch of the log was lost
also removes the rows deleted in it.  A route whose target key cannot be compared with the source's key
ranges is refused before the first watermark, unless deletes are turned off.  Progress lives in the
service database (`splitter.backfills`), so a crashed backfill resumes from its last applied chunk (or
takes over the job `splitter replay --accept-gap` opened); `--rate` throttles it so it does not starve
the stream.  It reports `Progress` (task `backfill`: rows copied or left to the stream of about the
catalog's estimate, the chunk as its stage) after every chunk.  Must not: write the service's tables
itself, or run SQL (the watermarks are `connectors.pg.watermarks`', the chunk reads `connectors.pg.copy`'s,
the range check `connectors.pg.backfill_deletes`').
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from connectors.pg.backfill_deletes import range_problems
from connectors.pg.client import Connection, connect
from connectors.pg.copy import ChunkReader
from connectors.pg.source import ensure_publication, estimated_rows, relation_schema
from connectors.pg.state import backfills as backfill_store
from connectors.pg.state.schema import ensure_state_schema
from connectors.pg.watermarks import wait_for_transactions_before, write_watermark
from splitter.core.dsn import SOURCE_DATABASE, service_database
from splitter.core.errors import ConfigurationError, FatalError, RetryableError
from splitter.core.progress import Progress, ProgressSink, ignore
from splitter.pipeline.config import Settings
from splitter.topology.model import Route

DEFAULT_CHUNK_ROWS = 2000
TASK = "backfill"


@dataclass(frozen=True)
class BackfillResult:
    job_id: int
    chunks: int
    rows_copied: int
    rows_skipped: int
    seconds: float
    rows_deleted: int = 0
    service: str = ""
    table: str = ""  # the service's table, schema-qualified as in its database
    source_table: str = ""
    rows_estimated: int | None = None  # the catalog's estimate of the source table's rows (None: not analyzed)
    deletes: bool = True
    resumed: bool = False  # an earlier job's chunks were kept (a crashed backfill, or one a replay opened)


def _route(settings: Settings, service: str, table: str) -> Route:
    svc = settings.topology.service(service)
    routes = [r for r in settings.topology.routes_for(svc)
              if table in (r.table.name, f"{r.target_schema}.{r.target_table}", r.target_table)]
    if not routes:
        names = ", ".join(r.table.name for r in settings.topology.routes_for(svc))
        raise ConfigurationError(f"service {service} has no table {table!r} in the topology (it has: {names})")
    return routes[0]


def _refuse_deletes(service: str, source_table: str, problems: list[str]) -> ConfigurationError:
    return ConfigurationError(
        f"backfill of {source_table} into service {service} cannot remove the rows the source no longer has: "
        f"{'; '.join(problems)}. Pass --no-delete to copy without removing them (rows deleted while the "
        f"service missed the change stay; `splitter verify --service {service}` lists them)")


def run_backfill(settings: Settings, service: str, table: str, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 rate: float | None = None, chunk_timeout: float = 120.0, restart: bool = False,
                 progress: ProgressSink = ignore, deletes: bool = True) -> BackfillResult:
    """Re-copy `table`; with `deletes`, also remove the target rows the source no longer has.

    `progress` gets a report after every chunk (and one before the first), the last one `finished`."""
    route = _route(settings, service, table)
    source_table = f"{route.source_schema}.{route.source_table}"
    # The worker applies a chunk to every route of the source table in this service.
    routes = [r for r in settings.topology.routes_for(settings.topology.service(service))
              if (r.source_schema, r.source_table) == (route.source_schema, route.source_table)]
    started = time.monotonic()
    with connect(settings.source_dsn, SOURCE_DATABASE, autocommit=True,
                 application_name="splitter-backfill") as source, \
         connect(settings.target_dsn(service), service_database(service), autocommit=True,
                 application_name="splitter-backfill") as target:
        ensure_state_schema(target)
        relation = relation_schema(source, route.source_schema, route.source_table)
        if not relation.key_columns:
            raise ConfigurationError(f"source table {source_table} has no primary key: it cannot be copied in chunks")
        problems = range_problems(source, routes, relation) if deletes else []
        if problems:
            raise _refuse_deletes(service, source_table, problems)
        # The stream must carry the table's changes before the first low watermark (this table only: the
        # rest is capture's, and a role that owns no table can only find it published, not add it).
        ensure_publication(source, settings.publication, [(route.source_schema, route.source_table)])
        job = None if restart else backfill_store.running_job(target, service, source_table)
        if job is not None and (job.relation_header != relation.header_bytes().decode() or job.deletes != deletes):
            job = None  # the table changed shape since, or its earlier chunks did not delete: start again
        if job is not None and job.chunks_done == 0 and job.chunk_rows != chunk_rows:
            backfill_store.set_chunk_rows(target, job.id, chunk_rows)  # opened by a replay: nothing copied yet
            job = backfill_store.job(target, job.id)
            assert job is not None
        resumed = job is not None and job.chunks_done > 0
        if job is None:
            job = backfill_store.start_job(target, service, source_table, relation.header_bytes().decode(),
                                           chunk_rows, deletes)
        total = estimated_rows(source, route.source_schema, route.source_table)
        backfill_store.set_estimate(target, job.id, total)
        reader = ChunkReader(relation, job.chunk_rows)
        label = f"{service}.{route.target_table}"

        def report(rows: int, chunks: int, finished: bool = False) -> None:
            # A never analyzed table's estimate is 0: no total then, rather than a bar stuck at 100%.
            progress(Progress(TASK, rows, total or None, "rows", time.monotonic() - started,
                              stage=f"{label}, {chunks} chunks", finished=finished, before=resumed_rows))

        def copy_chunk(number: int, repair: list[list[str | None]] | None) -> int | None:
            """One chunk between its watermarks; the rows read, or None if the worker did not apply it.

            The chunk is the next `chunk_rows` keys after `last_key`, or the keys of `repair` if given.
            """
            mark = {"service": service, "table": source_table, "job": job.id, "chunk": number}
            extra: dict[str, Any] = {} if repair is None else {"repair": repair}
            write_watermark(source, {**mark, "mark": "low"})
            wait_for_transactions_before(source, chunk_timeout)
            rows = reader.after(source, last_key) if repair is None else reader.keys(source, repair)
            with target.transaction():
                backfill_store.put_chunk(target, job.id, number, rows)
            final = len(rows) < job.chunk_rows or "repair" in extra
            if repair is None and job.deletes:
                # The keys this read covers: every source key in it is in `rows`.
                through = None if final else [rows[-1][k] for k in relation.key_columns]
                extra["range"] = [last_key, through]
            write_watermark(source, {**mark, **extra, "mark": "high", "final": final})
            return len(rows) if _wait_applied(target, job.id, number, chunk_timeout) else None

        chunk = job.chunks_done
        last_key = job.last_key
        copied, skipped, deleted = job.rows_copied, job.rows_skipped, job.rows_deleted
        resumed_rows = copied + skipped  # the rate and ETA are this run's
        scanning = True
        report(copied + skipped, chunk)
        while True:
            chunk += 1
            # Once the scan is done: rows the stream could not rebuild while the copy ran (see
            # connectors.pg.state.backfills) are copied again, in a window of their own, until none is left.
            repair = None if scanning else backfill_store.missed_keys(target, job.id, job.chunk_rows)
            read = copy_chunk(chunk, repair)
            if read is None:
                chunk -= 1  # the worker did not see this chunk's watermarks (restarted mid-chunk): send it again
                continue
            state = backfill_store.job(target, job.id)
            assert state is not None
            copied, skipped, deleted = state.rows_copied, state.rows_skipped, state.rows_deleted
            last_key = state.last_key
            report(copied + skipped, chunk, finished=state.status == "done")
            if state.status == "done":
                break
            if state.status == "cancelled":
                raise FatalError(f"backfill job {job.id} of {source_table} was superseded by a newer job (a replay "
                                 f"past a gap, or a backfill with --restart); run `splitter backfill` again to take "
                                 f"the newer one over")
            scanning = scanning and read == job.chunk_rows
            if rate:
                time.sleep(read / rate)
    return BackfillResult(job.id, chunk, copied, skipped, time.monotonic() - started, deleted, service=service,
                          table=f"{route.target_schema}.{route.target_table}", source_table=source_table,
                          rows_estimated=total or None, deletes=job.deletes, resumed=resumed)


def _wait_applied(conn: Connection, job_id: int, chunk: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = backfill_store.job(conn, job_id)
        if state is None:
            raise RetryableError(f"backfill job {job_id} disappeared from the service database")
        if state.chunks_done >= chunk:
            return True
        time.sleep(0.05)
    return False
