"""Staging a batch's text values in the apply session with COPY, one temporary table per source relation.

Owns: the session's staging tables (`pg_temp`, created once per session and relation, emptied by each
commit and before they are filled again in one transaction), which of them exist and which hold rows of the open
transaction, and the COPY row layout (`sqlrender.stage_columns` gives the order).  Must not: apply
anything to the target tables (`apply` does), or commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import psycopg
from psycopg import sql

from splitter.core.batching import PartialRow, TableChanges
from splitter.core.envelope import Row
from splitter.topology import sqlrender
from splitter.topology.sqlrender import KIND_DELETE, KIND_PARTIAL, KIND_UPSERT


class Stages:
    """The staging tables of one apply session."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn
        self._created: set[str] = set()
        self._dirty: set[str] = set()  # filled in the open transaction

    def stage(self, changes: TableChanges) -> dict[int, PartialRow]:
        """Write the changes into the table's staging table; the partial updates by staged row number."""
        conn = self._conn
        relation = changes.relation
        name = sqlrender.stage_name(relation)
        if name not in self._created:
            conn.execute(sqlrender.create_stage(relation))
            self._created.add(name)
        if name in self._dirty:
            conn.execute(sql.SQL("DELETE FROM pg_temp.{}").format(sql.Identifier(name)))
        self._dirty.add(name)
        columns = [c.name for c in relation.columns]
        keys = relation.key_columns
        n = 0
        partial_rows: dict[int, PartialRow] = {}
        with conn.cursor().copy(sqlrender.copy_into_stage(relation)) as copy:
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
        return partial_rows

    def committed(self) -> None:
        """The open transaction committed, which emptied every stage (ON COMMIT DELETE ROWS)."""
        self._dirty.clear()

    def rolled_back(self) -> None:
        """The open transaction was rolled back, which may have rolled back the CREATE of a stage table too."""
        self._dirty.clear()
        self._created.clear()

    def savepoint_rolled_back(self) -> None:
        """Rolled back to a savepoint: a stage created inside it is gone."""
        self._created.clear()


def _stage_row(n: int, kind: str, partial: PartialRow | None, values: Mapping[str, str | None] | Row,
               columns: Sequence[str], n_keys: int) -> tuple[object, ...]:
    """One COPY row of the staging table (see `sqlrender.stage_columns` for the order)."""
    unchanged = sorted(partial.unchanged) if partial is not None else None
    old: Sequence[str | None] = partial.db_key if partial is not None else (None,) * n_keys
    return (n, kind, unchanged, *(values.get(c) for c in columns), *old)
