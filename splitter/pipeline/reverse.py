"""The reverse stream: after a cutover, changes a service makes in its own database flow back to the source.

Owns: the inverse of a service's routes (a Topology built in code whose one service writes the original
source tables from the service's tables), the names of the reverse slot, publication, topic and
checkpoint row, the Settings that point a Capture at the service database and a Worker at the source,
the preflight that says whether a service can be reversed at all, and the `splitter reverse` daemon that
runs a reverse Capture and Worker for every service whose cutover state needs one.
Must not: decide or persist cutover states (`splitter.cutover_state` / `splitter.cutover` do), write SQL
for applying rows (the same sink as the forward stream does that), or start a copy: the cutover writes
the reverse checkpoint at the reverse slot's consistent point before the reverse capture ever runs.

Why the same machinery: the reverse direction is the forward pipeline with the roles swapped.  The
reverse Capture streams with `origin 'none'`, so the forward worker's writes into the service database
(made under origin `splitter_<service>`) are never sent back; the reverse Worker applies with
session_replication_role = replica (the source's fence triggers do not fire for it) and under origin
`splitter_<service>.reverse`, so the forward capture never sends its writes forward again.

Inversion (what can be copied back): a target column whose expression is a plain source column `c`, or
`coalesce(c, <constants>)`, is written back into `c` (for coalesce a source NULL comes back as the
default the target holds; the forward projection of it is unchanged, so verify still matches).  Source
columns no target column maps back to are left out of the reverse route: an update keeps their values and
an insert takes their defaults.  Anything else (date_trunc, casts, arithmetic, constants) is not carried
back; see docs/cutover.md.
"""

from __future__ import annotations

import logging
import re
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg
from pglast import ast

from splitter.core.errors import ConfigurationError, FatalError
from splitter.pipeline.config import Settings
from splitter.topology.model import Route, Service, Table, Topology, parse_expression

log = logging.getLogger(__name__)

STATE_POLL_INTERVAL = 0.5
_SLOT_CHARS = re.compile(r"[^a-z0-9_]")


@dataclass(frozen=True)
class ReverseNames:
    """Where one service's reverse stream lives."""

    service: str  # the reverse Worker's service name: its checkpoint row in the source, its origin suffix
    slot: str  # in the service database
    publication: str  # in the service database
    topic: str


def _derived(base: str, suffix: str) -> str:
    """`base_suffix` as a slot/publication name (at most 63 bytes; a hash keeps long bases unique)."""
    name = f"{base}_{suffix}"
    if len(name) <= 63:
        return name
    digest = f"{zlib.crc32(base.encode()):08x}"
    return f"{base[:63 - len(suffix) - len(digest) - 2]}_{digest}_{suffix}"


def reverse_names(settings: Settings, service: str) -> ReverseNames:
    settings.topology.service(service)  # raises naming the known services
    safe = _SLOT_CHARS.sub("_", service.lower())
    return ReverseNames(
        service=f"{service}.reverse",
        slot=_derived(settings.slot, f"rev_{safe}"),
        publication=_derived(settings.publication, f"rev_{safe}"),
        # Derived from the forward topic, so two pipelines sharing a broker never share a reverse topic.
        topic=f"{settings.topic}.reverse.{service}",
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def inverse_source_column(expr: str) -> tuple[str, bool] | None:
    """The source column a target column's expression can be written back into, and whether exactly.

    `c` → (c, True); `coalesce(c, constants...)` → (c, False); anything else → None.
    """
    node = parse_expression(expr)
    exact = True
    if isinstance(node, ast.CoalesceExpr):
        args = node.args or ()
        if len(args) < 2 or not all(isinstance(a, ast.A_Const | ast.TypeCast) for a in args[1:]):
            return None
        node, exact = args[0], False
    if isinstance(node, ast.ColumnRef):
        fields = node.fields or ()
        if len(fields) == 1 and isinstance(fields[0], ast.String) and fields[0].sval:
            return fields[0].sval, exact
    return None


def invert_route(route: Route) -> Table:
    """The reverse table: fills `route`'s source table from its target table (see the module docstring)."""
    columns: dict[str, str] = {}
    exact_for: dict[str, bool] = {}
    for target_column, expr in route.table.columns.items():
        found = inverse_source_column(expr)
        if found is None:
            continue
        source_column, exact = found
        # Several target columns may read one source column: prefer the one that copies it exactly.
        if source_column not in columns or (exact and not exact_for[source_column]):
            columns[source_column] = _quote(target_column)
            exact_for[source_column] = exact
    key: list[str] = []
    for target_key in route.table.key:
        found = inverse_source_column(route.table.columns[target_key])
        if found is None or not found[1]:
            raise ConfigurationError(
                f"{route.table.origin}: {route.describe()}: key column {target_key!r} is computed "
                f"({route.table.columns[target_key]!r}), so rows written in the service cannot be matched to "
                f"source rows; this service cannot be cut over with a reverse stream")
        key.append(found[0])
    return Table(
        name=f"{route.source_schema}.{route.source_table}",
        source=f"{route.target_schema}.{route.target_table}",
        key=tuple(key),
        columns=columns,
    )


def reverse_topology(settings: Settings, service: str) -> Topology:
    """A topology whose one service writes `service`'s source tables, reading the service database."""
    forward = settings.topology
    svc = forward.service(service)
    routes = forward.routes_for(svc)
    tables = tuple(invert_route(r) for r in routes)
    names = reverse_names(settings, service)
    topology = Topology(
        source_database=svc.database,
        services=(Service(names.service, database=forward.source_database, schema=forward.source_schema,
                          tables=tables),),
        source_schema=svc.schema,
    )
    topology.validate()
    return topology


def reverse_settings(settings: Settings, service: str) -> Settings:
    """Settings for a Capture on the service database and a Worker applying into the source."""
    names = reverse_names(settings, service)
    return Settings(
        topology=reverse_topology(settings, service),
        source_dsn=settings.target_dsn(service),
        kafka_bootstrap=settings.kafka_bootstrap,
        target_dsns={names.service: settings.source_dsn},
        topic=names.topic,
        slot=names.slot,
        publication=names.publication,
        heartbeat_interval=settings.heartbeat_interval,
        batch_max_rows=settings.batch_max_rows,
        batch_max_wait=settings.batch_max_wait,
        status_interval=settings.status_interval,
        kafka_extra=settings.kafka_extra,
    )


def reversibility_problems(settings: Settings, service: str, source: psycopg.Connection) -> list[str]:
    """Why `service` cannot be cut over with a reverse stream (empty: it can).  `source`: the source DB."""
    forward = settings.topology
    svc = forward.service(service)
    problems: list[str] = []
    routes = forward.routes_for(svc)
    seen: dict[tuple[str, str], Route] = {}
    for route in routes:
        table = (route.source_schema, route.source_table)
        if table in seen:
            problems.append(f"{route.describe()} and {seen[table].describe()} both come from "
                            f"{'.'.join(table)}: two routes cannot both be written back into one table")
        seen[table] = route
        others = sorted({r.service.name for r in forward.routes()
                         if (r.source_schema, r.source_table) == table and r.service.name != service})
        if others:
            problems.append(f"source table {'.'.join(table)} is also taken by service(s) {', '.join(others)}: "
                            f"fencing it would stop their writes too (cut over services that share a table "
                            f"together is not supported)")
    try:
        reverse = reverse_topology(settings, service)
    except ConfigurationError as exc:
        return [*problems, str(exc)]
    for rtable in reverse.services[0].tables:
        schema, name = rtable.name.split(".", 1)
        rows = source.execute(
            """SELECT a.attname, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated,
                      coalesce(a.attnum = ANY (pk.indkey::int2[]), false)
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
                WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
            (schema, name)).fetchall()
        if not rows:
            problems.append(f"source table {rtable.name} does not exist")
            continue
        pk = {r[0] for r in rows if r[5]}
        if set(rtable.key) != pk:
            problems.append(f"{rtable.name}: the service's key maps back to ({', '.join(rtable.key)}) but the source "
                            f"primary key is ({', '.join(sorted(pk))})")
        for column, notnull, hasdef, identity, generated, _ in rows:
            if column in rtable.columns:
                if generated:
                    problems.append(f"{rtable.name}.{column} is a generated column: it cannot be written back")
                elif identity == "a":
                    problems.append(f"{rtable.name}.{column} is GENERATED ALWAYS AS IDENTITY: rows written in "
                                    f"the service cannot be copied back with their ids")
            elif notnull and not hasdef and not identity and not generated:
                problems.append(f"{rtable.name}.{column} is NOT NULL without a default and no column of "
                                f"{rtable.source} maps back to it: rows inserted in the service could not be "
                                f"copied back")
    return problems


# --- the daemon ----------------------------------------------------------------------------------------


class _Running:
    def __init__(self, service: str, stop: threading.Event, threads: list[threading.Thread],
                 codes: dict[str, int]) -> None:
        self.service = service
        self.stop = stop
        self.threads = threads
        self.codes = codes


class ReverseDaemon:
    """Runs a reverse Capture and Worker (as threads) for each service whose cutover state needs one."""

    def __init__(self, settings: Settings, services: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.services = list(services) if services else [s.name for s in settings.topology.services]
        for name in self.services:
            settings.topology.service(name)
        self._running: dict[str, _Running] = {}

    def run(self, stop: threading.Event) -> None:
        from splitter.ops import cutover_state

        try:
            while not stop.is_set():
                wanted = cutover_state.services_needing_reverse(self.settings, self.services)
                for service in self.services:
                    running = self._running.get(service)
                    if service in wanted and running is None:
                        self._start(service)
                    elif service not in wanted and running is not None:
                        log.info("service %s: its cutover no longer needs the reverse stream: stopping it", service)
                        self._stop(running)
                    elif running is not None:
                        failed = {n: c for n, c in running.codes.items() if c != 0}
                        if failed:
                            self._stop(running)
                            raise FatalError(f"reverse stream of service {service} stopped: {failed}")
                stop.wait(STATE_POLL_INTERVAL)
        finally:
            for running in list(self._running.values()):
                self._stop(running)

    def _start(self, service: str) -> None:
        from splitter.pipeline.capture import Capture
        from splitter.pipeline.daemon import run_with_retries
        from splitter.pipeline.worker import Worker

        rs = reverse_settings(self.settings, service)
        names = reverse_names(self.settings, service)
        ev = threading.Event()
        codes: dict[str, int] = {}

        def thread(name: str, component: Callable[[threading.Event], None]) -> threading.Thread:
            def main() -> None:
                codes[name] = run_with_retries(name, component, ev)
            return threading.Thread(target=main, name=name, daemon=True)

        threads = [
            thread(f"reverse-capture[{service}]", lambda e: Capture(rs).run(e)),
            thread(f"reverse-worker[{service}]", lambda e: Worker(rs, names.service).run(e)),
        ]
        log.info("service %s: starting the reverse stream (slot %s, topic %s)", service, names.slot, names.topic)
        for t in threads:
            t.start()
        self._running[service] = _Running(service, ev, threads, codes)

    def _stop(self, running: _Running) -> None:
        running.stop.set()
        for t in running.threads:
            t.join(30)
        self._running.pop(running.service, None)


__all__ = [
    "ReverseDaemon",
    "ReverseNames",
    "inverse_source_column",
    "invert_route",
    "reverse_names",
    "reverse_settings",
    "reverse_topology",
    "reversibility_problems",
]
