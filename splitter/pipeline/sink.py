"""The sink contract: the calls a worker makes on a service database, and the decisions it keeps for itself.

Owns: the Protocols a sink implements (`ApplySession`: one open transaction that the worker fills with
`apply`/`apply_one`/`apply_in_savepoint` and ends with `commit` or `abandon`; `RequestSession`: control
and operator requests served in the same session; `BackfillSession`: backfill chunks and reloaded
routes; `ScopeSession`: the ownership moves recorded and the write scopes they give; `SchemaStopSession`:
the source schema changes the worker stopped at; `Sink`: all five),
and the policy the sink must not hold: what a partial update that found no row means (`apply_mode`: a
backfill miss the copy brings, a replay's expected leniency, or a fatal gap in the target), and what a
change set aside is stored as and read back as (`dead_letter`, `unreadable_letter`, `stored_change`).
`connectors.pg.sink.ServiceSink` implements `Sink`; the values both sides pass are in
`connectors.pg.sink_values`.  Must not: import a driver, or order commits (`worker.commit` does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol

from connectors.pg.backfill_deletes import KeyRange
from connectors.pg.sink_values import (
    ApplyMode,
    CommitExtras,
    Key,
    MissingRows,
    MissingRowsAction,
    Rejected,
    Replacement,
    Resolution,
    RouteKey,
)
from connectors.pg.state import backfills as backfill_store
from connectors.pg.state import dead_letters
from connectors.pg.state.ownership_moves import StoredMove
from connectors.pg.state.schema import Checkpoint
from splitter.core.batching import Step
from splitter.core.envelope import RelationSchema, RowChange, row_change
from splitter.core.errors import FatalError
from splitter.topology.model import Route, WriteScope

log = logging.getLogger(__name__)

ParkedKeys = set[tuple[str, tuple[str | None, ...]]]


class ApplySession(Protocol):
    """One open transaction on the service database: filled in calls, ended by `commit` or `abandon`.

    Every failure rolls back all of it (parts of a large transaction included) and raises a splitter
    error; DataRejectedError when the database refused a row's data.  `what` names the work in the error.
    """

    @property
    def rows_applied(self) -> int: ...

    @property
    def transactions_applied(self) -> int: ...

    def checkpoint(self) -> Checkpoint | None:
        """The position the database holds (its own transaction, ended at once)."""

    def apply(self, steps: Iterable[Step], mode: ApplyMode, what: str) -> None:
        """Apply collapsed steps in the open transaction, uncommitted."""

    def apply_one(self, change: RowChange, relation: RelationSchema, mode: ApplyMode, what: str) -> Rejected | None:
        """Apply one change alone; if the database refuses its data only that change is undone, and said so."""

    def apply_in_savepoint(self, steps: Sequence[Step], mode: ApplyMode, what: str, *,
                           keep: bool = True) -> Rejected | None:
        """Apply steps in a savepoint; if the database refuses their data only they are undone, and said so.
        `keep=False` undoes them in any case (a trial)."""

    def defer_constraints(self, what: str) -> None:
        """Check deferrable constraints at the commit of the open transaction."""

    def replacement(self, target: str | None, tables: Collection[str], what: str) -> Replacement:
        """Which of `tables` feed the target table `target` (all when None), and what stands in the way of
        writing their rows as delete-then-insert."""

    def commit(self, checkpoint: Checkpoint, extras: CommitExtras, what: str) -> None:
        """Write the checkpoint and `extras` into the open transaction and commit it."""

    def abandon(self) -> None:
        """Roll back the open transaction."""

    def close(self) -> None: ...


class RequestSession(Protocol):
    """Holds and operator requests, read and settled in the apply session."""

    def poll_control(self) -> tuple[dead_letters.Request | None, int | None]:
        """The oldest pending request, and the LSN a hold was asked at."""

    def parked_keys(self) -> ParkedKeys:
        """(table, key) of every open dead letter: later changes of those rows wait behind them."""

    def rewind_to(self, request: dead_letters.Request, checkpoint: Checkpoint) -> None:
        """Move the checkpoint back and close the replay request, in one transaction."""

    def resolve_dead_letters(self, request: dead_letters.Request,
                             decide: Callable[[Sequence[dead_letters.StoredDeadLetter]], Resolution]) -> str:
        """Settle a dlq retry or drop as `decide` says, in one transaction; the request's result."""


class BackfillSession(Protocol):
    """What an online backfill needs from the apply session."""

    def backfill_chunk(self, job_id: int, chunk: int) -> tuple[backfill_store.Job | None, list[dict[str, object]]]:
        """The job and the rows of one chunk (applied, and its progress recorded, by the next commit)."""

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Take a reloaded topology's routes."""

    def backfill_absent_keys(self, table: str, relation: RelationSchema, key_range: KeyRange,
                             present: Collection[Key]) -> list[Key]:
        """Source keys in `key_range` of rows the target tables of `table` hold and `present` lacks."""


class ScopeSession(Protocol):
    """What a worker's routes may write since ownership moved (the moves are recorded by `commit`)."""

    def ownership_moves(self, through_lsn: int) -> list[StoredMove]:
        """The last move of each source table recorded at or before `through_lsn`."""

    def set_scopes(self, scopes: Mapping[RouteKey, WriteScope | None]) -> None:
        """Apply the routes named in `scopes` within those scopes from now on (None: nothing of them)."""


class SchemaStopSession(Protocol):
    """The source tables' shapes at the checkpoint, and the schema changes the worker stopped at (restarting
    it acknowledges them)."""

    def record_schema_stop(self, table: str, offset: int, shape: bytes) -> None:
        """Note, committed at once, that the worker stops at `offset` where `table` took `shape`."""

    def source_shapes(self, checkpoint_offset: int) -> tuple[dict[str, bytes], frozenset[tuple[str, bytes]]]:
        """The tables' shapes (schema headers, by table) stored with the checkpoint at `checkpoint_offset` (by
        `commit`'s `CommitExtras.shapes`), and the (table, shape) pairs it stopped at beyond it."""


class Sink(ApplySession, RequestSession, BackfillSession, ScopeSession, SchemaStopSession, Protocol):
    """Everything a worker asks of its service database."""


# -- the decisions the sink reports facts for -------------------------------------------------------


def apply_mode(service: str, replaying: bool) -> ApplyMode:
    """How to apply a batch: `replaying` when it re-applies what the database already saw (a replay)."""

    def on_missing(miss: MissingRows) -> MissingRowsAction:
        if miss.backfill_job is not None:
            # The copy has not reached the row, or has passed the key the update moved it to; either way the
            # stream cannot rebuild it without the unchanged columns: the backfill copies it.
            log.info("service %s: %d update(s) of %s found no row while the table is re-copied; the copy "
                     "brings them", service, miss.updates, miss.route.describe())
            return "note"
        if replaying:
            # A later change in the log has since deleted or re-keyed rows that the partial updates look for.
            log.info("service %s: replay: %d update(s) of %s with unchanged TOASTed columns found no row "
                     "(deleted or re-keyed later in the log); skipped", service, miss.updates, miss.route.describe())
            return "skip"
        moved_in = "" if miss.route.table.where is None else (
            f", or they moved rows into the route's row filter ({miss.route.table.where!r}) without the unchanged "
            f"values a new row needs (REPLICA IDENTITY FULL on {miss.route.source_schema}.{miss.route.source_table} "
            f"makes every update carry them)")
        raise FatalError(
            f"service {service}: {miss.updates} update(s) of {miss.route.describe()} with "
            f"unchanged TOASTed columns ({', '.join(sorted(miss.unchanged))}) found no row in the target: the "
            f"target is missing rows the source has (run `splitter verify --service {service}`){moved_in}")

    return ApplyMode(replaying, on_missing)


def source_key(change: RowChange, relation: RelationSchema) -> tuple[str | None, ...] | None:
    image = change.after if change.after is not None else change.before
    if image is None:
        return None
    return tuple(image.get(c) for c in relation.key_columns)


def dead_letter(offset: int, change: RowChange, relation: RelationSchema, sqlstate: str | None,
                error: str) -> dead_letters.DeadLetter:
    """A change set aside, stored with what `stored_change` needs to apply it again."""
    key = source_key(change, relation)
    event = {
        "before": change.before, "after": change.after, "op": change.op,
        "unchanged_toast": list(change.unchanged_toast),
        "source": {"schema": relation.schema, "table": relation.table, "lsn": change.commit_lsn,
                   "txId": change.xid, "sequence": change.sequence, "ts_ms": change.ts_ms},
        "__schema": relation.header_bytes().decode(),
    }
    return dead_letters.DeadLetter(change.table, change.op, list(key) if key is not None else None, event, None,
                                   sqlstate, error, offset, change.commit_lsn)


def unreadable_letter(offset: int, value: bytes | None, error: str) -> dead_letters.DeadLetter:
    """A record that is not a valid splitter event, stored as it came (once per offset)."""
    return dead_letters.DeadLetter(None, None, None, dead_letters.event_json(value), value or b"", None, error,
                                   offset, None)


def can_apply_again(letter: dead_letters.StoredDeadLetter) -> bool:
    """Whether the letter holds a change `stored_change` can read (an unreadable record does not)."""
    return letter.event is not None and "__schema" in letter.event


def stored_change(letter: dead_letters.StoredDeadLetter) -> tuple[RowChange, RelationSchema]:
    """The change a `dead_letter` holds, read back by the envelope's own reader of row records."""
    assert letter.event is not None
    event = dict(letter.event)
    relation = RelationSchema.from_header(str(letter.source_table), str(event.pop("__schema")).encode())
    return row_change(event), relation
