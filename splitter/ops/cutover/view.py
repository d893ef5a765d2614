"""The cutover section of `splitter status`: each service's state, home and source fence, read-only.

Owns: gathering that view from the source (state and routing through `connectors.pg.state.cutover`,
fences through `connectors.pg.fence`) and rendering it as a table.  Must not: write anything, or
decide states (the cutover flows do).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.pg import fence
from connectors.pg.client import DatabaseError, connect, wrap_db_error
from connectors.pg.state import cutover as st
from splitter.pipeline.config import Settings


@dataclass(frozen=True)
class ServiceCutoverStatus:
    """One line of `splitter status`'s cutover section."""

    service: str
    state: str
    home: str
    updated_at: datetime | None
    fenced: str  # 'no', 'soft', 'hard', or 'soft (stale: its cutover is gone, writes pass)'
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "state": self.state, "home": self.home, "fenced": self.fenced,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None, "error": self.error}


def status(settings: Settings) -> list[ServiceCutoverStatus]:
    """Each service's cutover state, home and source fence, for `splitter status`."""
    out: list[ServiceCutoverStatus] = []
    try:
        with connect(settings.source_dsn, "the source database", autocommit=True,
                     application_name="splitter-status") as conn:
            # Read-only: before the first cutover there is no state, and every service streams.
            have = st.has_tables(conn)
            for svc in settings.topology.services:
                row = st.load(conn, svc.name) if have else None
                tables = [(r.source_schema, r.source_table) for r in settings.topology.routes_for(svc)]
                modes = set(fence.fences(conn, tables).values())
                fenced = "no"
                if modes:
                    fenced = fence.HARD if fence.HARD in modes else fence.SOFT
                    if fenced == fence.SOFT and not fence.lock_holder_alive(conn, svc.name):
                        fenced = "soft (stale: its cutover is gone, writes pass)"
                out.append(ServiceCutoverStatus(
                    svc.name, row.state if row else st.STREAMING,
                    st.routing_home(conn, svc.name) if have else st.HOME_SOURCE,
                    row.updated_at if row else None, fenced, row.error if row else None))
    except DatabaseError as exc:
        raise wrap_db_error(exc, "cannot read the cutover states", settings.source_dsn) from exc
    return out


def render_status(rows: list[ServiceCutoverStatus]) -> str:
    header = ("SERVICE", "CUTOVER", "HOME", "FENCE", "SINCE", "LAST ERROR")
    lines = [header] + [
        (r.service, r.state, r.home, r.fenced, r.updated_at.strftime("%Y-%m-%d %H:%M:%S") if r.updated_at else "-",
         (r.error or "")[:80]) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def history_json(row: st.CutoverRow) -> str:
    """A service's transition history (the audit record) as indented JSON."""
    return json.dumps(row.history, indent=2, default=str)


__all__ = ["ServiceCutoverStatus", "history_json", "render_status", "status"]
