"""Applying collapsed steps to one service database's target tables, in the apply session's open transaction.

Owns: running the statements `splitter.topology.sqlrender` renders for each route of a source table
(delete, partial update, upsert, truncate), applying one change alone in a savepoint, the count of rows
applied, and reporting the facts the pipeline decides on: a change whose data the database refused
(`Rejected`) and partial updates that found no row (`MissingRows`, with the running backfill of that
table if there is one); when the pipeline answers "note", it records their keys for the backfill in
the same transaction.  Must not: decide what a miss or a rejection means (the pipeline's `ApplyMode`
does), commit or roll back the transaction (`sink` does), or read Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import psycopg

from connectors.pg.sink_values import ApplyMode, Key, MissingRows, Rejected
from connectors.pg.staging import Stages
from connectors.pg.state import backfills as backfill_store
from splitter.core.batching import Batch, PartialRow, Segment, Step, TableChanges, Truncate
from splitter.core.envelope import RelationSchema, RowChange
from splitter.core.errors import is_data_rejection
from splitter.topology import sqlrender
from splitter.topology.model import Route
from splitter.topology.sqlrender import TargetColumn


class Applier:
    """Writes steps into the target tables of one service, through one connection."""

    def __init__(self, conn: psycopg.Connection, service: str, routes: Sequence[Route],
                 columns: dict[int, list[TargetColumn]]) -> None:
        self._conn = conn
        self._service = service
        self._stages = Stages(conn)
        self._routes_by_source: dict[str, list[Route]] = {}
        self._columns: dict[int, list[TargetColumn]] = {}
        self.set_routes(routes, columns)
        self.rows_applied = 0
        self.noted_missed = False  # the open transaction noted keys a backfill must copy again

    def set_routes(self, routes: Sequence[Route], columns: dict[int, list[TargetColumn]]) -> None:
        """Take the routes (a reloaded topology's, when a table was added while streaming) and their columns."""
        self._routes_by_source = {}
        for route in routes:
            self._routes_by_source.setdefault(f"{route.source_schema}.{route.source_table}", []).append(route)
        self._columns = columns

    def steps(self, steps: Iterable[Step], mode: ApplyMode) -> None:
        for step in steps:
            self._step(step, mode)

    def one(self, change: RowChange, relation: RelationSchema, mode: ApplyMode) -> Rejected | None:
        """Apply one change in a savepoint; the database's rejection of its data, if it rejected it."""
        conn = self._conn
        conn.execute("SAVEPOINT splitter_one")
        try:
            single = Batch()
            single.add(change, relation)
            for step in single.steps():
                self._step(step, mode)
            conn.execute("RELEASE SAVEPOINT splitter_one")
            return None
        except psycopg.Error as exc:
            if not is_data_rejection(exc.sqlstate):
                raise
            conn.execute("ROLLBACK TO SAVEPOINT splitter_one")
            self._stages.savepoint_rolled_back()
            return Rejected(exc.sqlstate, str(exc).strip())

    def committed(self) -> None:
        """The open transaction committed (its noted keys were stamped by the commit)."""
        self._stages.committed()
        self.noted_missed = False

    def committed_request(self) -> None:
        """An operator request's transaction committed (it stamps no noted keys: the next commit does)."""
        self._stages.committed()

    def rolled_back(self) -> None:
        self.noted_missed = False
        self._stages.rolled_back()

    def _step(self, step: Step, mode: ApplyMode) -> None:
        if isinstance(step, Truncate):
            for table in step.tables:
                for route in self._routes_by_source.get(table, ()):
                    self._conn.execute(sqlrender.truncate_target(route))
        else:
            self._segment(step, mode)

    def _segment(self, segment: Segment, mode: ApplyMode) -> None:
        for table, changes in segment.tables.items():
            routes = self._routes_by_source.get(table)
            if not routes or changes.is_empty():
                continue
            partial_rows = self._stages.stage(changes)
            self.rows_applied += len(changes.deletes) + len(changes.full) + len(changes.partial)
            for route in routes:
                self._route(route, changes, partial_rows, mode)

    def _route(self, route: Route, changes: TableChanges, partial_rows: Mapping[int, PartialRow],
               mode: ApplyMode) -> None:
        """Apply one route's share; partial updates that find no row are reported to `mode.on_missing`."""
        conn = self._conn
        relation = changes.relation
        columns = self._columns[id(route)]
        if changes.deletes:
            conn.execute(sqlrender.apply_delete(route, relation, columns))
        if changes.partial:
            groups: dict[frozenset[str], list[int]] = {}
            for n, partial in partial_rows.items():
                groups.setdefault(partial.unchanged, []).append(n)
            for unchanged, rows in groups.items():
                stmt = sqlrender.apply_partial(route, relation, columns, unchanged)
                if stmt is None:
                    continue
                names = sorted(unchanged)
                if mode.replaying:
                    # Over the present state, the key a row moves to may already be taken by its own future.
                    conn.execute(sqlrender.delete_partial_move_targets(route, relation, columns), (names, names))
                found = {r[0] for r in conn.execute(stmt, (names, names)).fetchall()}
                lost = [n for n in rows if n not in found]
                if lost:
                    self._missing(route, unchanged, lost, partial_rows, relation, mode)
        if changes.full:
            conn.execute(sqlrender.apply_upsert(route, relation, columns))

    def _missing(self, route: Route, unchanged: frozenset[str], lost: list[int],
                 partial_rows: Mapping[int, PartialRow], relation: RelationSchema, mode: ApplyMode) -> None:
        """Report updates that found no row; note their keys for the running backfill if the pipeline says so."""
        job_id = backfill_store.running_job_id(self._conn, self._service,
                                               f"{route.source_schema}.{route.source_table}")
        keys = frozenset(_new_source_key(partial_rows[n], relation) for n in lost)
        action = mode.on_missing(MissingRows(route, unchanged, len(lost), keys, job_id))
        if action == "note" and job_id is not None:
            backfill_store.note_missed(self._conn, job_id, keys)
            self.noted_missed = True


def _new_source_key(partial: PartialRow, relation: RelationSchema) -> Key:
    """Where the row of a partial update is in the source after it (a key column is never left out)."""
    return tuple(partial.values.get(k) if k not in partial.unchanged else old
                 for k, old in zip(relation.key_columns, partial.db_key, strict=True))
