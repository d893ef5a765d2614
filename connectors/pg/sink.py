"""The PostgreSQL sink: one service database's apply session, the worker's side of exactly-once.

Owns: the session (session_replication_role = replica, a replication origin so its writes are never
captured back, one advisory lock per service so two workers never apply at once), its one open
transaction (`apply`, `apply_one` and `apply_in_savepoint` write into it through `apply.Applier`,
`defer_constraints` defers its deferrable constraints to its commit; `commit` writes the
checkpoint, dead letters, backfill progress, hold report and ownership moves into it and commits; `abandon` rolls it
back), turning driver errors into splitter errors, and the worker's reads and operator requests served
in the same session.  It implements `splitter.pipeline.sink.Sink`.  Must not: read Kafka, decide
batching or what a rejected or missing row means (the pipeline does), or commit anywhere but `commit`,
`rewind_to` and `resolve_dead_letters`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TypeVar

import psycopg

from connectors.pg import backfill_deletes
from connectors.pg.apply import Applier
from connectors.pg.catalog import target_columns
from connectors.pg.client import connect, lock_key, wrap_db_error
from connectors.pg.origins import origin_name, setup_origin
from connectors.pg.sink_values import ApplyMode, CommitExtras, Key, Rejected, Replacement, Resolution, RouteKey
from connectors.pg.state import backfills as backfill_store
from connectors.pg.state import control, dead_letters, ownership_moves, source_shapes
from connectors.pg.state.schema import Checkpoint, ensure_state_schema, read_checkpoint, write_checkpoint
from splitter.core.batching import Step
from splitter.core.dsn import mask_secrets, service_database
from splitter.core.envelope import RelationSchema, RowChange
from splitter.core.errors import DataRejectedError, RetryableError, is_data_rejection
from splitter.core.lsn import lsn_to_str
from splitter.topology.model import Route, WriteScope

log = logging.getLogger(__name__)
T = TypeVar("T")


class ServiceSink:
    """An apply session on one service database."""

    def __init__(self, dsn: str, service: str, routes: Sequence[Route], *, topic: str, partition: int = 0) -> None:
        self.service = service
        self.topic = topic
        self.partition = partition
        self._dsn = dsn
        self.conn = connect(dsn, service_database(service), application_name=f"splitter-worker-{service}")
        self._transactions_applied = 0
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
            self._applier = Applier(self.conn, service, routes, {id(r): target_columns(self.conn, r) for r in routes})
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
            self._applier.rows_applied, self._transactions_applied = cp.rows_applied, cp.transactions_applied

    def _setup_origin(self) -> None:
        """Mark this session's writes with a replication origin so they are never captured back.

        Without the privilege it warns and goes on unmarked: outside a cutover nothing captures the
        service database, so unmarked writes harm nothing; the cutover preflight refuses to start a
        reverse stream for a role that cannot mark them (`connectors.pg.origins`).
        """
        name = origin_name(self.service)
        access = setup_origin(self.conn, name)
        if not access.usable:
            log.warning("service %s: cannot use replication origin %s (%s); its writes are not marked",
                        self.service, name, access.refusal())

    @property
    def rows_applied(self) -> int:
        return self._applier.rows_applied

    @property
    def transactions_applied(self) -> int:
        return self._transactions_applied

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

    # -- the open transaction ------------------------------------------------------------------

    def apply(self, steps: Iterable[Step], mode: ApplyMode, what: str) -> None:
        """Apply `steps` in the open transaction, without committing (it may already hold earlier parts of a
        large source transaction).  On any failure all of the transaction is rolled back; DataRejectedError
        says the database refused a row's data.  `what` names the work in the error.
        """
        self._guarded(what, lambda: self._applier.steps(steps, mode))

    def apply_one(self, change: RowChange, relation: RelationSchema, mode: ApplyMode, what: str) -> Rejected | None:
        """Apply one change in a savepoint of the open transaction; its rejection, if the database refused it
        (only that change is rolled back).  Any other failure rolls back all of the transaction.
        """
        return self._guarded(what, lambda: self._applier.one(change, relation, mode))

    def apply_in_savepoint(self, steps: Sequence[Step], mode: ApplyMode, what: str, *,
                           keep: bool = True) -> Rejected | None:
        """Apply `steps` in a savepoint of the open transaction; their rejection, if the database refused their
        data (only they are rolled back).  `keep=False` rolls them back in any case (a trial).  Any other
        failure rolls back all of the transaction.
        """
        return self._guarded(what, lambda: self._applier.in_savepoint(steps, mode, keep))

    def defer_constraints(self, what: str) -> None:
        """Check the target's deferrable constraints at the commit of the open transaction, not per row."""
        self._guarded(what, lambda: self.conn.execute("SET CONSTRAINTS ALL DEFERRED"))

    def replacement(self, target: str | None, tables: Collection[str], what: str) -> Replacement:
        """Which of `tables` feed the target table `target`, and what stands in the way of writing their rows
        as delete-then-insert (read in the open transaction)."""
        return self._guarded(what, lambda: self._applier.replacement(target, tables))

    def commit(self, checkpoint: Checkpoint, extras: CommitExtras, what: str) -> None:
        """Write `checkpoint` and `extras` into the open transaction and commit it: the data and the position it
        covers, the dead letters set aside, backfill progress and the hold report, all at once or not at all.
        """
        self._guarded(what, lambda: self._finish(checkpoint, extras))

    def abandon(self) -> None:
        """Drop what the open transaction holds (parts of a source transaction that will be read again)."""
        self._rollback_quietly()

    def _finish(self, checkpoint: Checkpoint, extras: CommitExtras) -> None:
        conn = self.conn
        for chunk in extras.chunks:
            backfill_store.chunk_applied(conn, chunk.job_id, chunk.chunk, chunk.copied, chunk.skipped,
                                         chunk.last_key, chunk.final, chunk.repaired, chunk.copied_keys,
                                         lsn_to_str(chunk.high_lsn), chunk.deleted)
        if self._applier.noted_missed:  # after chunk_applied (see there), before the commit
            backfill_store.missed_noted_at(conn, lsn_to_str(checkpoint.commit_lsn))
        transactions = self._transactions_applied + extras.transactions  # counted once it commits
        write_checkpoint(conn, self.service, Checkpoint(
            checkpoint.topic, checkpoint.partition, checkpoint.offset, checkpoint.commit_lsn,
            checkpoint.source_ts, self._applier.rows_applied, transactions))
        dead_letters.insert(conn, self.service, extras.letters)
        ownership_moves.record(conn, self.service, extras.moves)
        source_shapes.store(conn, self.service, extras.shapes)
        if extras.paused is not None:
            control.mark_paused(conn, self.service, extras.paused[0], extras.paused[1])
        conn.commit()  # deferred constraints are checked here: a refusal leaves the counts as they were
        self._transactions_applied = transactions
        self._applier.committed()

    def _guarded(self, what: str, run: Callable[[], T]) -> T:
        """Run a write in the open transaction; on any failure roll all of it back and say why."""
        try:
            return run()
        except psycopg.Error as exc:
            self._rollback_quietly()
            message = f"service {self.service}: {what} failed"
            if is_data_rejection(exc.sqlstate):
                raise DataRejectedError(mask_secrets(f"{message}: {exc}", self._dsn), exc.sqlstate) from exc
            raise wrap_db_error(exc, message, self._dsn) from exc
        except Exception:
            self._rollback_quietly()
            raise

    def _rollback_quietly(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.rollback()
        self._applier.rolled_back()

    # -- reads and operator requests, in the same session ---------------------------------------

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
        return self._read(f"cannot read the control state of service {self.service}",
                          lambda conn: control.poll_control(conn, self.service))

    def backfill_chunk(self, job_id: int, chunk: int) -> tuple[backfill_store.Job | None, list[dict[str, object]]]:
        """The job and rows of one backfill chunk (read in the apply session, committed by `commit`)."""
        def read(conn: psycopg.Connection) -> tuple[backfill_store.Job | None, list[dict[str, object]]]:
            found = backfill_store.job(conn, job_id)
            return found, backfill_store.take_chunk(conn, job_id, chunk) if found else []

        return self._read(f"cannot read backfill chunk {chunk} of job {job_id}", read)

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Take a reloaded topology's routes (a table added while streaming)."""
        columns = self._read(f"cannot read the tables of service {self.service}",
                             lambda conn: {id(r): target_columns(conn, r) for r in routes})
        self._applier.set_routes(routes, columns)

    def set_scopes(self, scopes: Mapping[RouteKey, WriteScope | None]) -> None:
        """Write the routes named in `scopes` within those scopes from now on (None: not at all)."""
        self._applier.set_scopes(scopes)

    def ownership_moves(self, through_lsn: int) -> list[ownership_moves.StoredMove]:
        """The last ownership move of each source table this service recorded at or before `through_lsn`."""
        return self._read(f"cannot read the ownership moves of service {self.service}",
                          lambda conn: ownership_moves.latest(conn, self.service, through_lsn))

    def record_schema_stop(self, table: str, offset: int, shape: bytes) -> None:
        """Note the shape of `table` this worker stops at (log `offset`), committed at once."""
        try:
            source_shapes.record_stop(self.conn, self.service, table, offset, shape)
            self.conn.commit()
        except psycopg.Error as exc:
            self._rollback_quietly()
            raise wrap_db_error(exc, f"service {self.service}: cannot record the schema change it stops at",
                                self._dsn) from exc

    def source_shapes(self, checkpoint_offset: int) -> tuple[dict[str, bytes], frozenset[tuple[str, bytes]]]:
        """The tables' shapes stored with the checkpoint (at `checkpoint_offset`), and those this worker stopped
        at beyond it (restarting it acknowledged them)."""
        try:
            shapes = (source_shapes.stored(self.conn, self.service),
                      source_shapes.acknowledged(self.conn, self.service, checkpoint_offset))
            self.conn.commit()
            return shapes
        except psycopg.Error as exc:
            self._rollback_quietly()
            raise wrap_db_error(exc, f"cannot read the schema stops of service {self.service}", self._dsn) from exc

    def parked_keys(self) -> set[tuple[str, tuple[str | None, ...]]]:
        return self._read(f"cannot read dead letters of service {self.service}",
                          lambda conn: dead_letters.open_keys(conn, self.service))

    def rewind_to(self, request: dead_letters.Request, checkpoint: Checkpoint) -> None:
        """Replay: move the checkpoint back and close the request, in one transaction."""
        try:
            write_checkpoint(self.conn, self.service, checkpoint)
            source_shapes.forget_after(self.conn, self.service, checkpoint.offset)
            dead_letters.finish_request(self.conn, request.id, f"rewound to offset {checkpoint.offset + 1}")
            self.conn.commit()
        except psycopg.Error as exc:
            self._rollback_quietly()
            raise wrap_db_error(exc, f"service {self.service}: replay request failed", self._dsn) from exc

    def resolve_dead_letters(self, request: dead_letters.Request,
                             decide: Callable[[Sequence[dead_letters.StoredDeadLetter]], Resolution]) -> str:
        """A dlq retry or drop, in one transaction: the request's letters are read, `decide` (the pipeline;
        it may `apply_one` them) says how to mark which of them, and the request is closed with its result.
        """
        try:
            letters = dead_letters.fetch(self.conn, self.service, ids=request.ids)
            resolution = decide(letters)
            dead_letters.mark(self.conn, resolution.ids, resolution.status)
            dead_letters.finish_request(self.conn, request.id, resolution.result)
            self.conn.commit()
            self._applier.committed_request()
            return resolution.result
        except psycopg.Error as exc:
            self._rollback_quietly()
            raise wrap_db_error(exc, f"service {self.service}: dead-letter request failed", self._dsn) from exc

    def backfill_absent_keys(self, table: str, relation: RelationSchema, key_range: backfill_deletes.KeyRange,
                             present: Collection[Key]) -> list[Key]:
        """Source keys in `key_range` of rows the target tables of `table` hold and `present` lacks (a read in
        the apply session; the worker deletes them with the chunk, in the next commit)."""
        return self._read(f"cannot read the rows of {table} a backfill chunk removes",
                          lambda conn: backfill_deletes.absent_keys(conn, self._applier.routes_of(table), relation,
                                                                    key_range, present))
