"""Does every database hold what the routed workload was told it committed?  The ledger compared with them.

Owns: ``check`` (poll until bento_social and every service database agree with the ledger, through the
topology's projection, or a timeout passes; return the differences) and ``differences`` (one pass).
For each source table the ledger wrote: bento_social must hold every known column's last value and no
deleted row; every route taking the table must hold its row (none if deleted) with each target column
whose expression reads only known columns equal to ``ledger.evaluate`` of it.  A table is *retired* once
every owner of it has completed its cutover (``ownership.retired_tables``): then no stream feeds it, so
bento_social is not compared, and each service database only on what its service owns (rows only in the
row owner's database).
Must not: write anything, or take its expected values from splitter's own code (only the topology's
declarations and this package's evaluator).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from devtools.workload.ledger import Key, Ledger, Row, Unknown, evaluate
from splitter.topology import ownership
from splitter.topology.expressions import expression_columns, plain_column
from splitter.topology.model import Topology

MAX_REPORTED = 40


@dataclass(frozen=True)
class Place:
    """One table in one database, as the check reads it."""

    database: str
    dsn: str
    schema: str
    table: str
    key: Mapping[str, str]  # source key column -> this table's column
    columns: Mapping[str, str]  # this table's column -> expression over the source row
    rows: bool  # whether a row must exist (and a deleted one must not)
    # bento_social only: source column -> the expressions of every route reading that column alone.  A value
    # a service wrote back may differ from the ledger's where no route can tell them apart (a NULL that came
    # back as coalesce's fallback, a timestamp come back truncated): the source then holds an equal projection.
    projections: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _places(topology: Topology, source_dsn: str, target_dsns: Mapping[str, str], table: str,
            known: frozenset[str], retired: bool) -> list[Place]:
    schema = topology.source_schema
    places = []
    if not retired:
        identity = {c: _quoted(c) for c in sorted(known)}
        keys = _source_keys(topology, table)
        projections = {c: tuple(e for r in topology.routes() if (r.source_schema, r.source_table) == (schema, table)
                                for e in r.table.columns.values() if expression_columns(e) == {c})
                       for c in known}
        places.append(Place(topology.source_database, source_dsn, schema, table, {c: c for c in keys}, identity, True,
                            projections))
    for route in topology.routes():
        if (route.source_schema, route.source_table) != (schema, table):
            continue
        columns = {t: e for t, e in route.table.columns.items() if expression_columns(e)}
        rows = True
        if retired:
            owned = ownership.owned_target_columns(topology, route)
            columns = {t: e for t, e in columns.items() if t in owned}
            rows = ownership.owns_rows(topology, route)
        key = {}
        for target in route.table.key:
            source = plain_column(route.table.columns[target])
            assert source is not None, f"{route.describe()}: key column {target} is not a plain source column"
            key[source] = target
        places.append(Place(route.service.database, target_dsns[route.service.name], route.target_schema,
                            route.target_table, key, columns, rows))
    return places


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _source_keys(topology: Topology, table: str) -> list[str]:
    owners = ownership.table_owners(topology, topology.source_schema, table)
    assert owners is not None, f"no service takes {table}"
    route = next(r for r in topology.routes() if r.source_table == table and r.service.name == owners.row_owner)
    return sorted(route.table.key_source_columns())


def _fetch(conn: psycopg.Connection[Any], place: Place, keys: Sequence[Key]) -> dict[Key, dict[str, Any]]:
    source_keys = sorted(place.key)
    targets = [place.key[c] for c in source_keys]
    wanted = [c for c in place.columns if c not in targets]
    names = [f"k{i}" for i in range(len(targets))]
    query = sql.SQL("SELECT {keys}{sep}{cols} FROM {table} AS t JOIN unnest({arrays}) AS k({names}) ON {join}").format(
        keys=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in targets),
        sep=sql.SQL(", " if wanted else ""),
        cols=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in wanted),
        table=sql.Identifier(place.schema, place.table),
        arrays=sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in targets),
        names=sql.SQL(", ").join(sql.Identifier(n) for n in names),
        join=sql.SQL(" AND ").join(sql.SQL("t.{}::text = k.{}").format(sql.Identifier(c), sql.Identifier(n))
                                   for c, n in zip(targets, names, strict=True)),
    )
    params = [[str(dict(k)[c]) for k in keys] for c in source_keys]
    out: dict[Key, dict[str, Any]] = {}
    for record in conn.execute(query, params).fetchall():
        key = tuple(zip(source_keys, record[: len(targets)], strict=True))
        values = dict(zip(targets, record[: len(targets)], strict=True))
        values.update(zip(wanted, record[len(targets):], strict=True))
        out[key] = values
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _same_projection(place: Place, column: str, got: Any, expected: Any) -> bool:
    """Whether every route reading `column` projects the two values onto the same target value."""
    exprs = place.projections.get(column, ())
    try:
        return bool(exprs) and all(evaluate(e, {column: got}) == evaluate(e, {column: expected}) for e in exprs)
    except Unknown:
        return False


def _compare(place: Place, table: str, rows: Mapping[Key, Row | None],
             found: Mapping[Key, dict[str, Any]]) -> list[str]:
    out = []
    where = f"{place.database} {place.schema}.{place.table}"
    for key, row in rows.items():
        label = ", ".join(f"{c}={v}" for c, v in key)
        got = found.get(key)
        if row is None:
            if got is not None and place.rows:
                out.append(f"{where} ({label}): deleted from {table}, still present")
            continue
        if got is None:
            if place.rows:
                out.append(f"{where} ({label}): row of {table} missing")
            continue
        for column, expr in place.columns.items():
            try:
                expected = evaluate(expr, row)
            except Unknown:
                continue  # reads a column the ledger never wrote for this row
            if got.get(column) != expected and not _same_projection(place, column, got.get(column), expected):
                out.append(f"{where} ({label}): {column} is {_short(got.get(column))}, the ledger says "
                           f"{_short(expected)}")
    return out


def differences(ledger: Ledger, topology: Topology, source_dsn: str, target_dsns: Mapping[str, str],
                complete: Iterable[str] = ()) -> list[str]:
    """One comparison of every database with the ledger; each difference as a line."""
    snapshot = ledger.snapshot()
    retired = {t.table[1] for t in ownership.retired_tables(topology, complete)}
    out: list[str] = []
    for table, rows in sorted(snapshot.items()):
        known = frozenset(c for row in rows.values() if row is not None for c in row)
        for place in _places(topology, source_dsn, target_dsns, table, known, table in retired):
            with psycopg.connect(place.dsn, autocommit=True) as conn:
                found = _fetch(conn, place, list(rows))
            out += _compare(place, table, rows, found)
    return out


def check(ledger: Ledger, topology: Topology, source_dsn: str, target_dsns: Mapping[str, str],
          complete: Iterable[str] = (), timeout: float = 120.0, poll: float = 1.0) -> list[str]:
    """Poll until every database agrees with the ledger (returns []) or `timeout` passes (returns the
    differences of the last pass, at most MAX_REPORTED lines and a count of the rest)."""
    done = list(complete)
    deadline = time.monotonic() + timeout
    while True:
        found = differences(ledger, topology, source_dsn, target_dsns, done)
        if not found or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    if len(found) > MAX_REPORTED:
        # What differs where, counted, so the lines left out still say which tables and columns they are about.
        kinds = Counter(f"{line.split(' (', 1)[0]} {line.split('): ', 1)[-1].split(' ', 1)[0]}" for line in found)
        found = [*found[:MAX_REPORTED], f"... and {len(found) - MAX_REPORTED} more differences; all of them: "
                 + ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items()))]
    return found
