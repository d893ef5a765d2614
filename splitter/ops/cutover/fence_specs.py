"""What a cutover fences, computed from the topology's ownership: the specs `connectors.pg.fence` applies.

Owns: for one service S, the source fence (what S owns of each source table: its columns, and the rows if
it owns them), the service fence (S's whole target tables: after a rollback, and during a handover), the
read-copy fence (what S reads in its own database but another service owns), and the messages a fenced
writer gets, which name the columns when only some are fenced and say where to write.
Must not: run SQL or decide when a fence goes up or comes down (`forward` and `rollback` do).
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.pg.fence import FenceSpec
from splitter.topology.expressions import expression_columns
from splitter.topology.model import Topology
from splitter.topology.ownership import owns_rows, read_copy_columns, route_owners


def _names(table: str, columns: Sequence[str]) -> str:
    return ", ".join(f"{table}.{c}" for c in columns)


def moved_message(table: str, columns: Sequence[str] | None, rows: bool, where: str) -> str:
    """The error of a write to what moved: the whole table (`columns` None) or its named columns (and rows)."""
    if columns is None:
        return f"{table} moved to {where}; write there"
    what = _names(table, columns)
    if rows:
        what = f"inserts and deletes of {table}, and {what}" if columns else f"inserts and deletes of {table}"
    return f"{what} moved to {where}; write there"


def _owners_text(owners: Sequence[str]) -> tuple[str, str]:
    """("service a" | "services a, b", how to refer to them again)."""
    if len(owners) == 1:
        return f"service {owners[0]}", f"service {owners[0]}"
    return f"services {', '.join(owners)}", "them"


def read_copy_message(table: str, database: str, columns: Sequence[str], rows: bool, whole: bool,
                      owners: Sequence[str]) -> str:
    """The error of a write to a read copy: what is read-only, who owns it and where to write it."""
    named, again = _owners_text(owners)
    if whole:
        return (f"{table} in {database} is a read copy owned by {named}; write it where splitter.routing "
                f"sends {again}")
    what = _names(table, columns)
    if rows:
        what = f"{what} and the rows of {table}"
    are, them = ("are", "them") if rows or len(columns) > 1 else ("is", "it")
    return (f"{what} in {database} {are} a read copy owned by {named}; write {them} where splitter.routing "
            f"sends {again}")


def source_fence(topology: Topology, service: str) -> list[FenceSpec]:
    """The fence of what `service` owns in the source: the whole table when it owns all of it, otherwise
    updates of its columns and, when it owns the rows, inserts and deletes; tables it owns nothing of
    are left out (user's followers, a read copy)."""
    svc = topology.service(service)
    where = f"service {service} ({svc.database})"
    specs = []
    for route in topology.routes_for(svc):
        owners = route_owners(topology, route)
        owned = tuple(c for c, owner in owners.column_owner.items() if owner == service)
        rows = owners.row_owner == service
        if not owned and not rows:
            continue
        columns = None if owners.owners == (service,) else owned
        specs.append(FenceSpec(route.source_schema, route.source_table,
                               moved_message(route.source_table, columns, rows, where), service, columns, rows))
    return specs


def service_fence(topology: Topology, service: str) -> list[FenceSpec]:
    """The fence of `service`'s whole target tables in its own database (its writes go to the source)."""
    svc = topology.service(service)
    where = f"{topology.source_database} (service {service} was rolled back)"
    return [FenceSpec(r.target_schema, r.target_table, moved_message(r.target_table, None, True, where), service)
            for r in topology.routes_for(svc)]


def read_copy_fence(topology: Topology, service: str) -> list[FenceSpec]:
    """The read-copy fence of `service`'s target tables after its switch: updates of the columns another
    service owns and, when another service owns the rows, inserts and deletes (the forward stream keeps
    writing them; a write there would be overwritten or would diverge from the source); and, for the
    row owner of a table another service owns columns of, updates of its key."""
    svc = topology.service(service)
    specs = []
    for route in topology.routes_for(svc):
        read_copy = read_copy_columns(topology, route)
        rows = not owns_rows(topology, route)
        if not read_copy and not rows and not set(route_owners(topology, route).owners) - {service}:
            continue
        columns = tuple(c for c in route.table.columns if c in read_copy)
        owners = route_owners(topology, route)
        owning = {owners.column_owner[c] for t in columns for c in expression_columns(route.table.columns[t])
                  if c in owners.column_owner}
        if rows:
            owning.add(owners.row_owner)
        owning.discard(service)
        named = [s for s in owners.services if s in owning]
        whole = rows and len(columns) == len(route.table.columns)
        message = read_copy_message(route.target_table, svc.database, columns, rows, whole, named) if (
            columns or rows) else ""
        if not rows and set(owners.owners) - {service}:
            # The row owner's key update would reach the source as a delete and an insert, which drops what
            # the other services own of that row: the key of a shared table does not change.
            key = tuple(k for k in route.table.key if k not in columns)
            columns += key
            message = "; ".join(filter(None, [message, (
                f"the key ({', '.join(key)}) of {route.target_table} in {svc.database} cannot change: other "
                f"services own parts of its rows (insert a new row and delete the old one instead)")]))
        specs.append(FenceSpec(route.target_schema, route.target_table, message, service, columns, rows))
    return specs


__all__ = ["moved_message", "read_copy_fence", "read_copy_message", "service_fence", "source_fence"]
