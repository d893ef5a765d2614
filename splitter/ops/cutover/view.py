"""The cutover section of `splitter status`: each service's state, home and source fences, read-only.

Owns: gathering that view from the source (state and routing through `connectors.pg.state.cutover`,
fences through `connectors.pg.fence`: per service and table, which columns and whether the rows) and
rendering it as a table.  Must not: write anything, or decide states (the cutover flows do).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.pg import fence
from connectors.pg.client import DatabaseError, connect, wrap_db_error
from connectors.pg.state import cutover as st
from splitter.core.dsn import SOURCE_DATABASE
from splitter.pipeline.config import Settings

STALE = "soft (stale: its cutover is gone, writes pass)"


@dataclass(frozen=True)
class TableFence:
    """One service's fence of one source table: what it stops, and how firmly."""

    table: str
    mode: str  # 'soft', 'hard' or STALE
    columns: tuple[str, ...] | None  # None: updates of any column
    rows: bool

    def stops(self) -> str:
        """What the fence stops, in words: "every write", or the inserts/deletes and the columns."""
        if self.columns is None and self.rows:
            return "every write"
        parts = ["inserts, deletes"] if self.rows else []
        if self.columns is None:
            parts.append("updates")
        elif self.columns:
            parts.append(f"updates of {', '.join(self.columns)}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "mode": self.mode,
                "columns": list(self.columns) if self.columns is not None else None, "rows": self.rows}


@dataclass(frozen=True)
class ServiceCutoverStatus:
    """One line of `splitter status`'s cutover section, and the service's fences below it."""

    service: str
    state: str
    home: str
    updated_at: datetime | None
    fenced: str  # 'no', 'soft', 'hard', or STALE: the firmest of `fences`
    error: str | None
    fences: tuple[TableFence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "state": self.state, "home": self.home, "fenced": self.fenced,
                "fences": [f.to_dict() for f in self.fences],
                "updated_at": self.updated_at.isoformat() if self.updated_at else None, "error": self.error}


def _table_fence(found: fence.Fence) -> TableFence:
    mode = STALE if found.mode == fence.SOFT and not found.lock_held else found.mode
    return TableFence(f"{found.schema}.{found.table}", mode, found.columns, found.rows)


def _summary(fences: tuple[TableFence, ...]) -> str:
    modes = {f.mode for f in fences}
    for mode in (fence.HARD, fence.SOFT, STALE):
        if mode in modes:
            return mode
    return "no"


def status(settings: Settings) -> list[ServiceCutoverStatus]:
    """Each service's cutover state, home and source fences, for `splitter status`."""
    out: list[ServiceCutoverStatus] = []
    try:
        with connect(settings.source_dsn, SOURCE_DATABASE, autocommit=True,
                     application_name="splitter-status") as conn:
            # Read-only: before the first cutover there is no state, and every service streams.
            have = st.has_tables(conn)
            for svc in settings.topology.services:
                row = st.load(conn, svc.name) if have else None
                tables = [(r.source_schema, r.source_table) for r in settings.topology.routes_for(svc)]
                # A soft fence is stale when the lock it checks (its command's, maybe a group's lead) is gone.
                fences = tuple(_table_fence(f) for f in fence.fences(conn, tables, svc.name))
                out.append(ServiceCutoverStatus(
                    svc.name, row.state if row else st.STREAMING,
                    st.routing_home(conn, svc.name) if have else st.HOME_SOURCE,
                    row.updated_at if row else None, _summary(fences), row.error if row else None, fences))
    except DatabaseError as exc:
        raise wrap_db_error(exc, "cannot read the cutover states", settings.source_dsn) from exc
    return out


def _columns(lines: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]


def render_status(rows: list[ServiceCutoverStatus]) -> str:
    header = ("SERVICE", "CUTOVER", "HOME", "FENCE", "SINCE", "LAST ERROR")
    out = _columns([header] + [
        (r.service, r.state, r.home, r.fenced, r.updated_at.strftime("%Y-%m-%d %H:%M:%S") if r.updated_at else "-",
         (r.error or "")[:80]) for r in rows])
    fenced = [(r.service, f.table, f.mode, f.stops()) for r in rows for f in r.fences]
    if fenced:
        out += ["", "source fences:"] + ["  " + line for line in _columns([("SERVICE", "TABLE", "MODE", "STOPS"),
                                                                          *fenced])]
    return "\n".join(out)


def history_json(row: st.CutoverRow) -> str:
    """A service's transition history (the audit record) as indented JSON."""
    return json.dumps(row.history, indent=2, default=str)


__all__ = ["STALE", "ServiceCutoverStatus", "TableFence", "history_json", "render_status", "status"]
