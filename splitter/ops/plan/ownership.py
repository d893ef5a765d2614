"""`splitter plan`'s ownership section: who owns what of every source table, the cutover order, and whether
each owner's reverse stream could write what it owns back into the source.

Owns: `describe_ownership` (per source table the rows' owner, each owner's columns, the read copies and the
reverse defaults; and `ownership.recommended_order`), `render_ownership` (that, for people), and
`ownership_findings`: the cutover's own reversibility verdicts (`splitter.topology.inversion.reverse_problems`
on the catalog facts `connectors.pg.cutover_sql.writeback_columns` read, the same the cutover preflight
judges), an ERROR for the owners of a shared table (its Ownership declares the cutover: a row owner whose
inserts could not make a valid source row is refused here, before any data moves), a WARNING for a table
one service takes (streaming is unaffected; that service's cutover would be refused).
Must not: read a database (`gather` does), or judge the declarations themselves: a column with two owners or
none is refused when the topology loads (`splitter.topology.ownership.ownership_problems`), so `splitter plan`
exits with a configuration error (code 2) naming the file, line, table and column before connecting.
"""

from __future__ import annotations

from typing import Any, TextIO

from splitter.core.errors import ConfigurationError
from splitter.ops.plan.facts import ERROR, WARNING, Finding, SourceFacts
from splitter.topology.inversion import invert_route, reverse_problems
from splitter.topology.model import Topology
from splitter.topology.ownership import all_owners, read_copies, recommended_order, route_owners


def describe_ownership(topology: Topology) -> dict[str, Any]:
    """The ownership table (`tables`, one entry per source table) and the recommended cutover `order`."""
    tables = []
    for owners in all_owners(topology):
        tables.append({
            "table": owners.name,
            "shared": owners.shared,
            "rows": owners.row_owner,
            "owners": [{"service": s, "rows": s == owners.row_owner, "columns": sorted(owners.owned_by(s))}
                       for s in owners.owners],
            "read_copies": [{"service": s, "rows": s != owners.row_owner, "columns": sorted(columns)}
                            for s, columns in read_copies(topology, owners).items()],
            "reverse_defaults": dict(owners.reverse_defaults),
            "origin": str(owners.declared.origin) if owners.declared else None,
        })
    return {"tables": tables, "order": recommended_order(topology)}


def _owned(entry: dict[str, Any]) -> str:
    return ", ".join((["rows"] if entry["rows"] else []) + entry["columns"])


def render_ownership(doc: dict[str, Any], out: TextIO) -> None:
    print("\nOWNERSHIP (after each service's cutover: what it writes; the rest is a read copy fed from the "
          "source)", file=out)
    for table in doc["tables"]:
        if not table["shared"]:
            print(f"\n{table['table']}  rows and every column: {table['rows']}", file=out)
            continue
        print(f"\n{table['table']}  rows: {table['rows']}  [{table['origin']}]", file=out)
        width = max(len(o["service"]) for o in table["owners"])
        for owner in table["owners"]:
            print(f"    {owner['service']:<{width}}  owns {_owned(owner)}", file=out)
        for copy in table["read_copies"]:
            print(f"    {copy['service']:<{width}}  reads {_owned(copy)} (read copy)", file=out)
        if table["reverse_defaults"]:
            defaults = ", ".join(f"{c} = {e}" for c, e in table["reverse_defaults"].items())
            print(f"    reverse defaults (rows inserted by {table['rows']}): {defaults}", file=out)
    print(f"\nRECOMMENDED CUTOVER ORDER\n    {', '.join(doc['order'])}", file=out)


def ownership_findings(topology: Topology, source: SourceFacts) -> list[Finding]:
    """For every route whose service owns part of its source table: what its reverse stream could not write."""
    findings: list[Finding] = []
    for route in topology.routes():
        key = (route.source_schema, route.source_table)
        if key not in source.tables:
            continue  # source-table-missing says so
        owners = route_owners(topology, route)
        service = route.service.name
        severity = ERROR if owners.shared else WARNING
        origin = str(owners.declared.origin if owners.declared else route.table.origin)
        consequence = ("" if owners.shared else "; streaming is unaffected, but "
                       f"`splitter cutover --service {service}` would be refused")
        try:
            rtable = invert_route(route, topology)
        except ConfigurationError as exc:
            findings.append(Finding(severity, "reverse-key-computed", f"{exc}{consequence}", service, owners.name,
                                    None, str(route.table.origin)))
            continue
        if rtable is None:
            continue  # it owns nothing here: its reverse stream does not write this table
        for problem in reverse_problems(rtable, source.writeback.get(key, ())):
            if problem.code != "source-table-missing":
                findings.append(Finding(severity, problem.code, f"service {service}: {problem.message}{consequence}",
                                        service, rtable.name, problem.column, origin))
    return findings


__all__ = ["describe_ownership", "ownership_findings", "render_ownership"]
