"""Applying collapsed steps to one service database's target tables, in the apply session's open transaction.

Owns: running the statements `splitter.topology.sqlrender` renders for each route of a source table
(delete, partial update, upsert, truncate) within each route's `WriteScope` (the table's own, or the one
the pipeline set for the route since an ownership move; a route set to None is retired: nothing of it
applies), applying one change or one group of steps alone in a savepoint, the count of rows applied (as
committed: a rollback takes back what it undid), and reporting the facts the pipeline decides on: a
change whose data the database refused (`Rejected`, naming the constraint and table), partial updates
that found no row (`MissingRows`, with the running backfill of that table if there is one; when the
pipeline answers "note", it records their keys for the backfill in the same transaction), and what
stands in the way of replacing a table's rows (`Replacement`).  Must not: decide what a miss or a
rejection means (the pipeline's `ApplyMode` does), commit or roll back the transaction (`sink` does), or
read Kafka.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import psycopg

from connectors.pg.sink_values import ApplyMode, Key, MissingRows, Rejected, Replacement, RouteKey, route_key
from connectors.pg.staging import Stages
from connectors.pg.state import backfills as backfill_store
from connectors.pg.unique_conflicts import replacement_blockers
from splitter.core.batching import Batch, PartialRow, Segment, Step, TableChanges, Truncate
from splitter.core.envelope import RelationSchema, RowChange
from splitter.core.errors import is_data_rejection
from splitter.topology import partial_sql, sqlrender
from splitter.topology.model import Route, WriteScope
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
        self._scopes: dict[RouteKey, WriteScope | None] = {}
        self.set_routes(routes, columns)
        self.rows_applied = 0
        self._rows_before: int | None = None  # rows_applied when the open transaction began writing
        self.noted_missed = False  # the open transaction noted keys a backfill must copy again

    def set_routes(self, routes: Sequence[Route], columns: dict[int, list[TargetColumn]]) -> None:
        """Take the routes (a reloaded topology's, when a table was added while streaming) and their columns."""
        self._routes_by_source = {}
        for route in routes:
            self._routes_by_source.setdefault(f"{route.source_schema}.{route.source_table}", []).append(route)
        self._columns = columns
        self._blockers: dict[int, list[str]] = {}  # by id(route), read once per session and routes

    def set_scopes(self, scopes: Mapping[RouteKey, WriteScope | None]) -> None:
        """From now on, write each route named in `scopes` within its scope (None: not at all); the others
        within their table's own scope."""
        self._scopes = dict(scopes)

    def _scope(self, route: Route) -> WriteScope | None:
        key = route_key(route)
        return self._scopes.get(key, route.table.scope)

    def routes_of(self, table: str) -> Sequence[Route]:
        """The routes of one source table (`schema.table`)."""
        return self._routes_by_source.get(table, ())

    def steps(self, steps: Iterable[Step], mode: ApplyMode) -> None:
        for step in steps:
            self._step(step, mode)

    def one(self, change: RowChange, relation: RelationSchema, mode: ApplyMode) -> Rejected | None:
        """Apply one change in a savepoint; the database's rejection of its data, if it rejected it."""
        single = Batch()
        single.add(change, relation)
        return self.in_savepoint(single.steps(), mode)

    def in_savepoint(self, steps: Sequence[Step], mode: ApplyMode, keep: bool = True) -> Rejected | None:
        """Apply `steps` in a savepoint; the database's rejection of their data, if it rejected it (then only
        they are undone).  `keep=False` undoes them anyway: a trial of whether the database would take them.
        """
        conn = self._conn
        rows = self.rows_applied
        conn.execute("SAVEPOINT splitter_steps")
        try:
            self.steps(steps, mode)
        except psycopg.Error as exc:
            if not is_data_rejection(exc.sqlstate):
                raise
            self._undo_savepoint(rows)
            diag = exc.diag
            table = f"{diag.schema_name}.{diag.table_name}" if diag.schema_name and diag.table_name else None
            return Rejected(exc.sqlstate, str(exc).strip(), diag.constraint_name, table)
        if keep:
            conn.execute("RELEASE SAVEPOINT splitter_steps")
        else:
            self._undo_savepoint(rows)
        return None

    def _undo_savepoint(self, rows: int) -> None:
        self._conn.execute("ROLLBACK TO SAVEPOINT splitter_steps")
        self._stages.savepoint_rolled_back()
        self.rows_applied = rows

    def replacement(self, target: str | None, tables: Collection[str]) -> Replacement:
        """Which of `tables` (source tables) feed the `target` table (all, when it is None), and what stands
        in the way of writing their rows as delete-then-insert in every target table they feed."""
        chosen = frozenset(t for t in tables if target is None or any(
            f"{r.target_schema}.{r.target_table}" == target for r in self._routes_by_source.get(t, ())))
        blockers: list[str] = []
        for table in sorted(chosen):
            for route in self._routes_by_source.get(table, ()):
                scope = self._scope(route)
                if scope is None:
                    continue
                if id(route) not in self._blockers:
                    self._blockers[id(route)] = replacement_blockers(self._conn, route)
                blockers += self._blockers[id(route)]
                if not scope.full:  # a delete-then-insert would write what the stream may not
                    blockers.append(_partial_scope(route, scope))
        return Replacement(chosen, tuple(blockers))

    def committed(self) -> None:
        """The open transaction committed (its noted keys were stamped by the commit)."""
        self._stages.committed()
        self.noted_missed = False
        self._rows_before = None

    def committed_request(self) -> None:
        """An operator request's transaction committed (it stamps no noted keys: the next commit does)."""
        self._stages.committed()
        self._rows_before = None

    def rolled_back(self) -> None:
        self.noted_missed = False
        self._stages.rolled_back()
        if self._rows_before is not None:
            self.rows_applied, self._rows_before = self._rows_before, None

    def _step(self, step: Step, mode: ApplyMode) -> None:
        if isinstance(step, Truncate):
            for table in step.tables:
                for route in self._routes_by_source.get(table, ()):
                    scope = self._scope(route)
                    stmt = None if scope is None else sqlrender.truncate_target(route, scope)
                    if stmt is not None:
                        self._conn.execute(stmt)
        else:
            self._segment(step, mode)

    def _segment(self, segment: Segment, mode: ApplyMode) -> None:
        for table, changes in segment.tables.items():
            routes = self._routes_by_source.get(table)
            if not routes or changes.is_empty():
                continue
            partial_rows = self._stages.stage(changes)
            if self._rows_before is None:
                self._rows_before = self.rows_applied
            self.rows_applied += len(changes.deletes) + len(changes.full) + len(changes.partial)
            for route in routes:
                scope = self._scope(route)
                if scope is not None:
                    self._route(route, scope, changes, partial_rows, mode)

    def _route(self, route: Route, scope: WriteScope, changes: TableChanges, partial_rows: Mapping[int, PartialRow],
               mode: ApplyMode) -> None:
        """Apply one route's share within `scope`; partial updates that find no row are reported to
        `mode.on_missing`, unless the scope leaves the rows to another service (it deleted them)."""
        conn = self._conn
        relation = changes.relation
        columns = self._columns[id(route)]
        # No statement here takes parameters: they carry the topology's SQL and the tables' names, where a
        # `%` is no placeholder (sqlrender.topology_sql).
        if changes.deletes and (delete := sqlrender.apply_delete(route, relation, columns, scope)) is not None:
            conn.execute(delete)
        if changes.partial:
            groups: dict[frozenset[str], list[int]] = {}
            for n, partial in partial_rows.items():
                groups.setdefault(partial.unchanged, []).append(n)
            for unchanged, rows in groups.items():
                left = partial_sql.delete_partial_filtered_out(route, relation, columns, unchanged, scope)
                if left is not None:  # moved out of the route's row filter
                    conn.execute(left)
                    kept = partial_sql.partial_rows_kept(route, relation, columns, unchanged)
                    inside = {r[0] for r in conn.execute(kept).fetchall()}
                    rows = [n for n in rows if n in inside]
                stmt = partial_sql.apply_partial(route, relation, columns, unchanged, scope)
                if stmt is None:
                    continue
                if mode.replaying:
                    # Over the present state, the key a row moves to may already be taken by its own future.
                    moves = partial_sql.delete_partial_move_targets(route, relation, columns, unchanged, scope)
                    if moves is not None:
                        conn.execute(moves)
                found = {r[0] for r in conn.execute(stmt).fetchall()}
                lost = [n for n in rows if n not in found]
                if lost and scope.rows and not partial_sql.outside_filter_when_missing(route, unchanged):
                    self._missing(route, unchanged, lost, partial_rows, relation, mode)
        if changes.full:
            if (left := sqlrender.apply_filtered_out(route, relation, columns, scope)) is not None:
                conn.execute(left)  # moved out of the route's row filter, or never in it
            if (upsert := sqlrender.apply_upsert(route, relation, columns, scope)) is not None:
                conn.execute(upsert)

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


def _partial_scope(route: Route, scope: WriteScope) -> str:
    parts = [f"never updates {', '.join(sorted(scope.frozen))}"] if scope.frozen else []
    parts += [] if scope.rows else ["neither inserts nor deletes rows"]
    return f"{route.describe()} writes only part of its target: it {' and '.join(parts)} (another service owns them)"


def _new_source_key(partial: PartialRow, relation: RelationSchema) -> Key:
    """Where the row of a partial update is in the source after it (a key column is never left out)."""
    return tuple(partial.values.get(k) if k not in partial.unchanged else old
                 for k, old in zip(relation.key_columns, partial.db_key, strict=True))
