"""The ownership section of `splitter status`: per source table, who owns its rows and columns and where the
writes of each owner go now.

Owns: `ownership_section` (the topology's ownership, `splitter.topology.ownership`, joined with the cutover
states and routing rows of the source, read through `connectors.pg.state.cutover`) and `render_ownership`.
An owner's writes go to `bento_social` (the source) while its routing home is the source, to its own
database once its cutover switched it there; a table is "retired" once every owner of it is complete
(`ownership.retired_tables`): no stream feeds it any more.
Must not: write anything, decide states (the cutover flows do), or print a DSN (errors are masked where
they are raised).
"""

from __future__ import annotations

from typing import Any

from connectors.pg.client import DatabaseError, connect, wrap_db_error
from connectors.pg.state import cutover as st
from splitter.core.dsn import SOURCE_DATABASE
from splitter.core.errors import SplitterError
from splitter.pipeline.config import Settings
from splitter.topology.ownership import all_owners, read_copies, retired_tables


def _homes(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """service → cutover state, service → routing home, for every service of the topology."""
    try:
        with connect(settings.source_dsn, SOURCE_DATABASE, autocommit=True,
                     application_name="splitter-status") as conn:
            if not st.has_tables(conn):  # before the first cutover: every service streams, writes go to the source
                return {}, {}
            states = {service: state for service, (state, _) in st.read_states(conn).items()}
            homes = {s.name: st.routing_home(conn, s.name) for s in settings.topology.services}
    except DatabaseError as exc:
        raise wrap_db_error(exc, "cannot read the cutover states", settings.source_dsn) from exc
    return states, homes


def ownership_section(settings: Settings) -> list[dict[str, Any]] | None:
    """One entry per source table; None when the source does not answer (status.source says why)."""
    try:
        states, homes = _homes(settings)
    except SplitterError:
        return None
    topology = settings.topology
    retired = {t.table for t in retired_tables(topology, [s for s, state in states.items() if state == st.COMPLETE])}
    out: list[dict[str, Any]] = []
    for owners in all_owners(topology):
        entries = []
        for service in owners.owners:
            home = homes.get(service, st.HOME_SOURCE)
            writes_to = topology.service(service).database if home == st.HOME_SERVICE else topology.source_database
            entries.append({
                "service": service, "rows": service == owners.row_owner, "columns": sorted(owners.owned_by(service)),
                "state": states.get(service, st.STREAMING), "home": home,
                "writes_to": "retired" if owners.table in retired else writes_to})
        copies = [{"service": s, "columns": sorted(c)} for s, c in read_copies(topology, owners).items()]
        out.append({"table": owners.name, "shared": owners.shared, "rows": owners.row_owner,
                    "retired": owners.table in retired,
                    "owners": entries, "read_copies": copies})
    return out


def render_ownership(tables: list[dict[str, Any]]) -> str:
    lines = ["TABLE OWNERSHIP (where each owner's writes go now)"]
    for table in tables:
        lines.append(f"{table['table']}  rows: {table['rows']}" + ("  retired: every owner is complete"
                                                                    if table["retired"] else ""))
        rows = []
        for owner in table["owners"]:
            owned = ("rows and every column" if not table["shared"]
                     else ", ".join((["rows"] if owner["rows"] else []) + owner["columns"]))
            where = "retired" if table["retired"] else f"writes go to {owner['writes_to']}"
            rows.append((owner["service"], where, f"({owner['state']})", f"owns {owned}"))
        width = max(len(s) for s in [*(r[0] for r in rows), *(c["service"] for c in table["read_copies"])])
        widths = [width, *(max(len(r[i]) for r in rows) for i in (1, 2)), 0]
        lines += ["    " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines += [f"    {c['service']:<{width}}  reads a copy of {', '.join(c['columns']) or 'the rows'}"
                  for c in table["read_copies"]]
    return "\n".join(lines)


__all__ = ["ownership_section", "render_ownership"]
