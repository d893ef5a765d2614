"""The PostgreSQL sink: applies collapsed batches to one service database, with its checkpoint.

Owns: the service database side of exactly-once: the `splitter` schema (checkpoint table),
the apply session's settings (session_replication_role = replica, replication origin, one
advisory lock per service so two workers never apply at once), staging text values with COPY,
running the statements `splitter.sqlrender` renders, and writing the checkpoint in the same
transaction as the data it covers.  Must not: read Kafka, decide batching, or commit anywhere
but `commit()`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import orjson
import psycopg
from psycopg import sql

from connectors.pg.catalog import target_columns
from connectors.pg.client import connect, lock_key, wrap_db_error
from connectors.pg.state import STATE_SCHEMA, dead_letters
from connectors.pg.state import backfills as backfill_store
from connectors.pg.state.schema import (
    Checkpoint,
    ensure_state_schema,
    read_checkpoint,
    write_checkpoint,
)
from splitter.core.batching import Batch, PartialRow, Segment, Step, TableChanges, Truncate
from splitter.core.dsn import mask_secrets
from splitter.core.envelope import RelationSchema, Row, RowChange, decode_row
from splitter.core.errors import (
    DataRejectedError,
    FatalError,
    RetryableError,
    is_data_rejection,
)
from splitter.core.lsn import lsn_to_str, str_to_lsn
from splitter.topology import sqlrender
from splitter.topology.model import Route
from splitter.topology.sqlrender import KIND_DELETE, KIND_PARTIAL, KIND_UPSERT

log = logging.getLogger(__name__)
T = TypeVar("T")

@dataclass(frozen=True)
class ChunkDone:
    """A backfill chunk applied in this transaction (its progress is recorded with it)."""

    job_id: int
    chunk: int
    copied: int
    skipped: int
    last_key: Sequence[str | None] | None
    final: bool
    repaired: Sequence[Sequence[str | None]] = ()
    copied_keys: Sequence[Sequence[str | None]] = ()  # source keys of the rows it copied
    high_lsn: int = 0  # where its high watermark is in the log


class ServiceSink:
    """An apply session on one service database."""

    def __init__(self, dsn: str, service: str, routes: Sequence[Route], *, topic: str, partition: int = 0) -> None:
        self.service = service
        self.topic = topic
        self.partition = partition
        self._dsn = dsn
        self.conn = connect(dsn, f"database of service {service}", application_name=f"splitter-worker-{service}")
        self._routes_by_source: dict[str, list[Route]] = {}
        for route in routes:
            self._routes_by_source.setdefault(f"{route.source_schema}.{route.source_table}", []).append(route)
        self._staged: set[str] = set()
        self._dirty_stages: set[str] = set()
        self.rows_applied = 0
        self.transactions_applied = 0
        self._noted_missed = False  # this transaction noted keys a backfill must copy again
        # Set while re-applying what the database already saw (a replay): a later change in the log has
        # since deleted or re-keyed rows that partial updates look for, so a miss there is expected.
        self.replaying = False
        try:
            self.conn.autocommit = True
            ensure_state_schema(self.conn)
            locked = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(f"splitter.worker.{service}"),))
            row = locked.fetchone()
            if not row or not row[0]:
                raise RetryableError(
                    f"another worker holds the apply lock of service {service!r} in its database; waiting for it")
            self.conn.execute("SET session_replication_role = replica")
            self.conn.execute("SET synchronous_commit = on")
            self._setup_origin()
            self.columns = {id(r): target_columns(self.conn, r) for r in routes}
            self.conn.autocommit = False
            cp = read_checkpoint(self.conn, service)
            self.conn.rollback()
        except psycopg.Error as exc:
            self.conn.close()
            raise wrap_db_error(exc, f"cannot prepare the apply session of service {service}", dsn) from exc
        except Exception:
            self.conn.close()
            raise
        if cp is not None:
            self.rows_applied, self.transactions_applied = cp.rows_applied, cp.transactions_applied

    def _setup_origin(self) -> None:
        """Mark this session's writes with a replication origin so they are never captured back."""
        name = f"splitter_{self.service}"
        try:
            with self.conn.transaction():
                exists = self.conn.execute("SELECT 1 FROM pg_replication_origin WHERE roname = %s", (name,)).fetchone()
                if not exists:
                    self.conn.execute("SELECT pg_replication_origin_create(%s)", (name,))
            self.conn.execute("SELECT pg_replication_origin_session_setup(%s)", (name,))
        except psycopg.errors.InsufficientPrivilege as exc:
            log.warning("service %s: cannot use replication origin %s (%s); its writes are not marked",
                        self.service, name, exc.sqlstate)

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()

    def checkpoint(self) -> Checkpoint | None:
        try:
            cp = read_checkpoint(self.conn, self.service)
            self.conn.rollback()
            return cp
        except psycopg.Error as exc:
            raise wrap_db_error(exc, f"cannot read the checkpoint of service {self.service}", self._dsn) from exc

    def apply(self, steps: Iterable[Step], checkpoint: Checkpoint, transactions: int,
              paused: tuple[int, int] | None = None,
              letters: Sequence[dead_letters.DeadLetter] = (),
              chunks: Sequence[ChunkDone] = ()) -> None:
        """Apply `steps` and `checkpoint` in one transaction, and commit it.

        The transaction may already hold parts of a large source transaction (`apply_part`).
        `paused` = (requested LSN, held LSN) also reports, in the same transaction, that the worker
        now holds: the data committed here is exactly the source before the requested LSN.
        `letters` are stored in the same transaction (records the worker could not read).
        Raises DataRejectedError (nothing applied, parts included) when the database refuses a row's data.
        """
        self.apply_part(steps, f"applying changes up to offset {checkpoint.offset}")
        self._guarded("committing", lambda: self._finish(checkpoint, transactions, paused, letters, chunks))

    def apply_part(self, steps: Iterable[Step], what: str = "applying part of a large transaction") -> None:
        """Apply `steps` in the open transaction without committing (a source transaction too large to hold
        in memory goes in parts; `apply` or `apply_isolated` commits it with its checkpoint, `abandon` drops it).
        """
        def run() -> None:
            for step in steps:
                self._apply_step(step)

        self._guarded(what, run)

    def apply_isolated(self, units: Sequence[tuple[int, RowChange, RelationSchema]], checkpoint: Checkpoint,
                       transactions: int, parked: set[tuple[str, tuple[str | None, ...]]],
                       letters: Sequence[dead_letters.DeadLetter] = (),
                       chunks: Sequence[ChunkDone] = ()) -> list[dead_letters.DeadLetter]:
        """Apply changes one by one; each the database rejects becomes a dead letter, the rest commit.

        A change to a row that already has an open dead letter (`parked`) is dead-lettered behind
        it unapplied, so a later retry replays that row's changes in their original order.
        """
        stored = [*letters, *self.apply_part_isolated(units, parked)]
        self._guarded("committing changes applied one by one",
                      lambda: self._finish(checkpoint, transactions, None, stored, chunks))
        return stored

    def apply_part_isolated(self, units: Sequence[tuple[int, RowChange, RelationSchema]],
                            parked: set[tuple[str, tuple[str | None, ...]]]) -> list[dead_letters.DeadLetter]:
        """`apply_isolated` without the commit: the dead letters to store with it."""
        stored: list[dead_letters.DeadLetter] = []

        def run() -> None:
            for offset, change, relation in units:
                key = _source_key(change, relation)
                if key is not None and (change.table, key) in parked:
                    stored.append(_letter(offset, change, relation, None,
                                          "waits behind an earlier dead letter of the same row"))
                    continue
                rejected = self._apply_one(change, relation)
                if rejected is not None:
                    stored.append(_letter(offset, change, relation, rejected.sqlstate, str(rejected).strip()))
                    if key is not None:
                        parked.add((change.table, key))

        self._guarded("applying changes one by one", run)
        return stored

    def abandon(self) -> None:
        """Drop what the open transaction holds (parts of a source transaction that will be read again)."""
        self._rollback_quietly()

    def _guarded(self, what: str, run: Callable[[], None]) -> None:
        """Run a write in the open transaction; on any failure roll all of it back and say why."""
        try:
            run()
        except psycopg.Error as exc:
            self._rollback_quietly()
            message = f"service {self.service}: {what} failed"
            if is_data_rejection(exc.sqlstate):
                raise DataRejectedError(mask_secrets(f"{message}: {exc}", self._dsn), exc.sqlstate) from exc
            raise wrap_db_error(exc, message, self._dsn) from exc
        except Exception:
            self._rollback_quietly()
            raise

    def _apply_one(self, change: RowChange, relation: RelationSchema) -> psycopg.Error | None:
        """Apply one change in a savepoint; the database's rejection of its data, if it rejected it."""
        self.conn.execute("SAVEPOINT splitter_one")
        try:
            single = Batch()
            single.add(change, relation)
            for step in single.steps():
                self._apply_step(step)
            self.conn.execute("RELEASE SAVEPOINT splitter_one")
            return None
        except psycopg.Error as exc:
            if not is_data_rejection(exc.sqlstate):
                raise
            self.conn.execute("ROLLBACK TO SAVEPOINT splitter_one")
            self._staged.clear()  # a stage created inside the savepoint is gone
            return exc

    def _apply_step(self, step: Step) -> None:
        if isinstance(step, Truncate):
            self._truncate(step)
        else:
            self._apply_segment(step)

    def _finish(self, checkpoint: Checkpoint, transactions: int, paused: tuple[int, int] | None,
                letters: Sequence[dead_letters.DeadLetter], chunks: Sequence[ChunkDone] = ()) -> None:
        for chunk in chunks:
            backfill_store.chunk_applied(self.conn, chunk.job_id, chunk.chunk, chunk.copied, chunk.skipped,
                                         chunk.last_key, chunk.final, chunk.repaired, chunk.copied_keys,
                                         lsn_to_str(chunk.high_lsn))
        if self._noted_missed:
            backfill_store.missed_noted_at(self.conn, lsn_to_str(checkpoint.commit_lsn))
        self.transactions_applied += transactions
        write_checkpoint(self.conn, self.service, Checkpoint(
            checkpoint.topic, checkpoint.partition, checkpoint.offset, checkpoint.commit_lsn,
            checkpoint.source_ts, self.rows_applied, self.transactions_applied))
        dead_letters.insert(self.conn, self.service, letters)
        if paused is not None:
            self.conn.execute(
                sql.SQL("UPDATE {}.control SET paused_lsn = %s::pg_lsn, paused_at = now() "
                        "WHERE service = %s AND pause_at_lsn = %s::pg_lsn").format(sql.Identifier(STATE_SCHEMA)),
                (lsn_to_str(paused[1]), self.service, lsn_to_str(paused[0])))
        self.conn.commit()
        self._dirty_stages.clear()
        self._noted_missed = False

    # -- operator requests, performed by the worker in its own session -------------------------

    def _read(self, what: str, read: Callable[[psycopg.Connection], T]) -> T:
        """A read in the apply session, its transaction ended at once (the session must not idle in one)."""
        try:
            value = read(self.conn)
            self.conn.rollback()
            return value
        except psycopg.Error as exc:
            self._rollback_quietly()
            raise wrap_db_error(exc, what, self._dsn) from exc

    def poll_control(self) -> tuple[dead_letters.Request | None, int | None]:
        """In one round trip: the oldest pending operator request, and the LSN a hold was asked at."""
        row = self._read(f"cannot read the control state of service {self.service}", lambda conn: conn.execute(
            sql.SQL("SELECT r.id, r.action, r.from_offset, r.from_lsn::text, r.ids, "
                    "(SELECT c.pause_at_lsn::text FROM {schema}.control c WHERE c.service = %(s)s) "
                    "FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT * FROM {schema}.requests q "
                    "WHERE q.service = %(s)s AND q.done_at IS NULL ORDER BY q.id LIMIT 1) AS r ON true")
            .format(schema=sql.Identifier(STATE_SCHEMA)), {"s": self.service}).fetchone())
        assert row is not None
        request = dead_letters.Request(*row[:5]) if row[0] is not None else None
        return request, (str_to_lsn(row[5]) if row[5] else None)

    def backfill_chunk(self, job_id: int, chunk: int) -> tuple[backfill_store.Job | None, list[dict[str, object]]]:
        """The job and rows of one backfill chunk (read in the apply session, committed by `apply`)."""
        def read(conn: psycopg.Connection) -> tuple[backfill_store.Job | None, list[dict[str, object]]]:
            found = backfill_store.job(conn, job_id)
            return found, backfill_store.take_chunk(conn, job_id, chunk) if found else []

        return self._read(f"cannot read backfill chunk {chunk} of job {job_id}", read)

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Take a reloaded topology's routes (a table added while streaming)."""
        self._routes_by_source = {}
        for route in routes:
            self._routes_by_source.setdefault(f"{route.source_schema}.{route.source_table}", []).append(route)
        self.columns = self._read(f"cannot read the tables of service {self.service}",
                                  lambda conn: {id(r): target_columns(conn, r) for r in routes})

    def parked_keys(self) -> set[tuple[str, tuple[str | None, ...]]]:
        return self._read(f"cannot read dead letters of service {self.service}",
                          lambda conn: dead_letters.open_keys(conn, self.service))

    def rewind_to(self, request: dead_letters.Request, checkpoint: Checkpoint) -> None:
        """Replay: move the checkpoint back and close the request, in one transaction."""
        try:
            write_checkpoint(self.conn, self.service, checkpoint)
            dead_letters.finish_request(self.conn, request.id, f"rewound to offset {checkpoint.offset + 1}")
            self.conn.commit()
        except psycopg.Error as exc:
            self._rollback_quietly()
            raise wrap_db_error(exc, f"service {self.service}: replay request failed", self._dsn) from exc

    def resolve_dead_letters(self, request: dead_letters.Request) -> str:
        """dlq retry (apply in order; those still rejected stay open) or dlq drop, in one transaction."""
        try:
            letters = dead_letters.fetch(self.conn, self.service, ids=request.ids)
            if request.action == "dlq_drop":
                dead_letters.mark(self.conn, [d.id for d in letters], "dropped")
                result = f"dropped {len(letters)} dead letter(s)"
            else:
                done, failed = self._retry(letters)
                result = f"retried {len(letters)}: {done} applied, {failed} still rejected"
            dead_letters.finish_request(self.conn, request.id, result)
            self.conn.commit()
            self._dirty_stages.clear()
            return result
        except psycopg.Error as exc:
            self._rollback_quietly()
            raise wrap_db_error(exc, f"service {self.service}: dead-letter request failed", self._dsn) from exc

    def _retry(self, letters: Sequence[dead_letters.StoredDeadLetter]) -> tuple[int, int]:
        done: list[int] = []
        blocked: set[tuple[str | None, tuple[str | None, ...]]] = set()
        for letter in letters:
            key = (letter.source_table, tuple(letter.source_key or ()))
            if letter.event is None or "__schema" not in letter.event or key in blocked:
                blocked.add(key)
                continue
            event = dict(letter.event)
            relation = RelationSchema.from_header(str(letter.source_table), str(event.pop("__schema")).encode())
            change = decode_row(orjson.dumps(event))
            if self._apply_one(change, relation) is None:
                done.append(letter.id)
            else:
                blocked.add(key)  # keep this row's later changes behind it, in order
        dead_letters.mark(self.conn, done, "retried")
        return len(done), len(letters) - len(done)

    def _rollback_quietly(self) -> None:
        self._noted_missed = False
        with contextlib.suppress(psycopg.Error):
            self.conn.rollback()
        self._dirty_stages.clear()
        # A failed transaction may have rolled back the CREATE of a stage table too.
        self._staged.clear()

    def _truncate(self, step: Truncate) -> None:
        for table in step.tables:
            for route in self._routes_by_source.get(table, ()):
                self.conn.execute(sqlrender.truncate_target(route))

    def _apply_segment(self, segment: Segment) -> None:
        for table, changes in segment.tables.items():
            routes = self._routes_by_source.get(table)
            if not routes or changes.is_empty():
                continue
            partial_rows = self._stage(changes)
            for route in routes:
                self._apply_route(route, changes, partial_rows)

    def _stage(self, changes: TableChanges) -> dict[int, PartialRow]:
        """Write the changes into the table's staging table; the partial updates by staged row number."""
        relation = changes.relation
        name = sqlrender.stage_name(relation)
        if name not in self._staged:
            self.conn.execute(sqlrender.create_stage(relation))
            self._staged.add(name)
        if name in self._dirty_stages:
            self.conn.execute(sql.SQL("DELETE FROM pg_temp.{}").format(sql.Identifier(name)))
        self._dirty_stages.add(name)
        columns = [c.name for c in relation.columns]
        keys = relation.key_columns
        n = 0
        partial_rows: dict[int, PartialRow] = {}
        with self.conn.cursor().copy(sqlrender.copy_into_stage(relation)) as copy:
            for key in changes.deletes:
                n += 1
                copy.write_row(_stage_row(n, KIND_DELETE, None, dict(zip(keys, key, strict=True)), columns, len(keys)))
            for row in changes.full.values():
                n += 1
                copy.write_row(_stage_row(n, KIND_UPSERT, None, row, columns, len(keys)))
            for partial in changes.partial.values():
                n += 1
                partial_rows[n] = partial
                copy.write_row(_stage_row(n, KIND_PARTIAL, partial, partial.values, columns, len(keys)))
        self.rows_applied += len(changes.deletes) + len(changes.full) + len(changes.partial)
        return partial_rows

    def _apply_route(self, route: Route, changes: TableChanges, partial_rows: Mapping[int, PartialRow]) -> None:
        """Apply one route's share; partial updates that find no row during a backfill are noted for it."""
        relation = changes.relation
        columns = self.columns[id(route)]
        if changes.deletes:
            self.conn.execute(sqlrender.apply_delete(route, relation, columns))
        if changes.partial:
            groups: dict[frozenset[str], list[int]] = {}
            for n, partial in partial_rows.items():
                groups.setdefault(partial.unchanged, []).append(n)
            for unchanged, rows in groups.items():
                stmt = sqlrender.apply_partial(route, relation, columns, unchanged)
                if stmt is None:
                    continue
                names = sorted(unchanged)
                if self.replaying:
                    # Over the present state, the key a row moves to may already be taken by its own future.
                    self.conn.execute(sqlrender.delete_partial_move_targets(route, relation, columns), (names, names))
                found = {r[0] for r in self.conn.execute(stmt, (names, names)).fetchall()}
                lost = [n for n in rows if n not in found]
                if not lost:
                    continue
                job_id = backfill_store.running_job_id(self.conn, self.service,
                                                       f"{route.source_schema}.{route.source_table}")
                if job_id is not None:
                    # The copy has not reached the row, or has passed the key the update moved it to; either
                    # way the stream cannot rebuild it without the unchanged columns: the backfill copies it.
                    backfill_store.note_missed(self.conn, job_id,
                                               {_new_source_key(partial_rows[n], relation) for n in lost})
                    self._noted_missed = True
                    log.info("service %s: %d update(s) of %s found no row while the table is re-copied; the copy "
                             "brings them", self.service, len(lost), route.describe())
                elif self.replaying:
                    log.info("service %s: replay: %d update(s) of %s with unchanged TOASTed columns found no row "
                             "(deleted or re-keyed later in the log); skipped", self.service, len(lost),
                             route.describe())
                else:
                    raise FatalError(
                        f"service {self.service}: {len(lost)} update(s) of {route.describe()} with "
                        f"unchanged TOASTed columns ({', '.join(sorted(unchanged))}) found no row in the target: the "
                        f"target is missing rows the source has (run `splitter verify --service {self.service}`)")
        if changes.full:
            self.conn.execute(sqlrender.apply_upsert(route, relation, columns))


def _stage_row(n: int, kind: str, partial: PartialRow | None, values: Mapping[str, str | None] | Row,
               columns: Sequence[str], n_keys: int) -> tuple[object, ...]:
    """One COPY row of the staging table (see `sqlrender.stage_columns` for the order)."""
    unchanged = sorted(partial.unchanged) if partial is not None else None
    old: Sequence[str | None] = partial.db_key if partial is not None else (None,) * n_keys
    return (n, kind, unchanged, *(values.get(c) for c in columns), *old)


def _new_source_key(partial: PartialRow, relation: RelationSchema) -> tuple[str | None, ...]:
    """Where the row of a partial update is in the source after it (a key column is never left out)."""
    return tuple(partial.values.get(k) if k not in partial.unchanged else old
                 for k, old in zip(relation.key_columns, partial.db_key, strict=True))


def _source_key(change: RowChange, relation: RelationSchema) -> tuple[str | None, ...] | None:
    image = change.after if change.after is not None else change.before
    if image is None:
        return None
    return tuple(image.get(c) for c in relation.key_columns)


def _letter(offset: int, change: RowChange, relation: RelationSchema, sqlstate: str | None,
            error: str) -> dead_letters.DeadLetter:
    key = _source_key(change, relation)
    event = {
        "before": change.before, "after": change.after, "op": change.op,
        "unchanged_toast": list(change.unchanged_toast),
        "source": {"schema": relation.schema, "table": relation.table, "lsn": change.commit_lsn,
                   "txId": change.xid, "sequence": change.sequence, "ts_ms": change.ts_ms},
        "__schema": relation.header_bytes().decode(),
    }
    return dead_letters.DeadLetter(change.table, change.op, list(key) if key is not None else None, event, None,
                                   sqlstate, error, offset, change.commit_lsn)


def now_utc() -> datetime:
    return datetime.now(UTC)
