"""`splitter grants`: exactly what splitter's own role needs, for the loaded topology and settings.

Owns: deciding, from the topology, which privileges the role needs in which database and why: the
source's tables (read by copy, verify and backfill; fenced at a cutover; written back by the reverse
streams as far as services own them), each service's tables (copied into, applied to, verified,
fenced after the switch), the sequences a cutover moves, and the publications (capture's in the
source, each service's reverse one in its database).  The statements are `connectors.pg.grants_sql`'s.
Must not: connect to a database or grant anything the pipeline does not use.

What the administrator does once (this script) and what splitter does at run time: the role, the
`splitter` schema (owned by the role, so no CREATE on any database) and the publications (CREATE and
ALTER PUBLICATION need the tables' owner) are the script's; slots, the state tables, the fence function
and triggers, origins and temporary tables are splitter's.
"""

from __future__ import annotations

from collections.abc import Iterable

from connectors.pg.grants_sql import DatabaseGrants, Publication, TableGrant, psql_script
from splitter.core.dsn import dsn_database
from splitter.core.errors import ConfigurationError
from splitter.pipeline.config import Settings
from splitter.pipeline.reverse import reverse_names, reverse_topology

DEFAULT_ROLE = "splitter"

_SOURCE_READ = ("SELECT", "TRIGGER")
_SOURCE_READ_WHY = ("Source tables: the initial copy, verify and backfill read them (SELECT); a cutover fences "
                    "writes to them with statement triggers (TRIGGER).")
_WRITE_BACK_WHY = ("Source tables a service writes back after its cutover (the reverse stream, as far as it owns "
                   "them): UPDATE of the columns it owns; INSERT, DELETE and TRUNCATE where it owns the rows.")
_TARGET = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER")
_TARGET_WHY = ("The service's tables: the initial copy and the worker write them (INSERT, UPDATE, DELETE, "
               "TRUNCATE), verify and the reverse stream read them (SELECT), the cutover fences its read "
               "copies (TRIGGER).")
_ORDER = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER")


def _database(dsn: str, fallback: str) -> str:
    return dsn_database(dsn) or fallback


class _Database:
    def __init__(self, name: str) -> None:
        self.name = name
        self.privileges: dict[tuple[str, str], dict[str, set[str]]] = {}
        self.sequences: dict[tuple[str, str], None] = {}
        self.publications: list[Publication] = []

    def grant(self, tables: Iterable[tuple[str, str]], privileges: Iterable[str], why: str) -> None:
        wanted = set(privileges)
        for table in tables:
            self.privileges.setdefault(table, {}).setdefault(why, set()).update(wanted)
            self.sequences.setdefault(table, None)

    def built(self) -> DatabaseGrants:
        grants = []
        for (schema, table), by_reason in self.privileges.items():
            privileges = set().union(*by_reason.values())
            grants.append(TableGrant(schema, table, tuple(p for p in _ORDER if p in privileges),
                                     " ".join(by_reason)))
        return DatabaseGrants(self.name, tuple(dict.fromkeys(s for s, _ in self.privileges)), tuple(grants),
                              tuple(self.sequences), tuple(self.publications))


def database_grants(settings: Settings) -> list[DatabaseGrants]:
    """What the role needs in each database the settings name: the source first, then the service
    databases in topology order."""
    topology = settings.topology
    source = _Database(_database(settings.source_dsn, topology.source_database))
    databases: dict[str, _Database] = {source.name: source}
    source.grant(topology.source_tables(), _SOURCE_READ, _SOURCE_READ_WHY)
    source.publications.append(Publication(
        settings.publication, tuple(topology.source_tables()),
        "What capture streams: every source table the topology takes (CREATE and ALTER PUBLICATION need the "
        "tables' owner, so the owner creates it; splitter finds it complete and leaves it alone)."))
    for service in topology.services:
        name = _database(settings.target_dsn(service.name), service.database)
        target = databases.setdefault(name, _Database(name))
        target.grant([(r.target_schema, r.target_table) for r in topology.routes_for(service)], _TARGET,
                     _TARGET_WHY)
        try:
            reverse = reverse_topology(settings, service.name)
        except ConfigurationError:
            continue  # nothing of the service can be written back: it has no reverse stream
        if not reverse.services[0].tables:
            continue  # the service owns nothing it takes (read copies only): nothing to write back
        for route in reverse.routes():
            written = ("INSERT", "UPDATE", "DELETE", "TRUNCATE") if route.table.scope.rows else ("UPDATE",)
            source.grant([(route.target_schema, route.target_table)], written, _WRITE_BACK_WHY)
        target.publications.append(Publication(
            reverse_names(settings, service.name).publication, tuple(reverse.source_tables()),
            f"Service {service.name}'s reverse stream after its cutover: the tables it writes back from."))
    return [d.built() for d in databases.values()]


def grants_script(settings: Settings, role: str = DEFAULT_ROLE) -> str:
    """The psql script that creates `role` and grants it what the settings' topology needs."""
    header = (
        f"splitter's role {role}: everything it needs and nothing more, for the topology "
        f"{settings.topology.source_database} -> {', '.join(s.name for s in settings.topology.services)}.",
        f"Generated by `splitter grants --role {role}` (tests/unit/test_grants_script.py keeps the shipped",
        "deploy/postgres/splitter-role.sql equal to it).",
        "Run once as a superuser (again after the topology changes):",
        "  SPLITTER_DB_PASSWORD=... psql -v ON_ERROR_STOP=1 -U postgres -d postgres -f splitter-role.sql",
    )
    return psql_script(role, database_grants(settings), header)


__all__ = ["DEFAULT_ROLE", "database_grants", "grants_script"]
