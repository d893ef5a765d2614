"""The application after the switch hook: every write goes where `splitter.routing` says, with a ledger.

Owns: ``RoutedWorkload``: a few writer threads at a bounded rate run ``routed_ops.OPERATIONS``; before
each write it reads `SELECT home FROM splitter.routing WHERE service = %s` in bento_social (no row or no
table: 'source') for the service owning what it writes, and writes bento_social's table in source names,
or that service's database in its target names (``topology.py``: auth_db auth.users.password_hash,
interaction_db interaction.follows, ...), each value as the topology's expression makes it there.  On the
fence error (SQLSTATE SP001) it reads the routing again and retries, as docs/cutover.md asks applications
to.  Every write whose commit returned goes into the ``Ledger`` (``ledger_check.check`` compares it with
every database); an update or delete of a row the writing service owns that finds no row is an anomaly
(an acknowledged row lost), one of a row another service owns is skipped (the row has not reached this
database yet).  Per write it keeps when it was first tried and when it was acknowledged, so a cutover's
write pause can be read off (``longest_wait``).
Must not: write two services' data in one transaction, change schema, or use splitter's machinery beyond
reading the topology (it plays the application).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from pglast import ast
from psycopg import sql

from connectors.pg.fence import FENCE_SQLSTATE
from devtools.workload.driver import RETRY_SQLSTATES
from devtools.workload.ledger import Ledger, evaluate, truncate
from devtools.workload.routed_ops import OPERATIONS, Pools, Write
from splitter.topology import ownership
from splitter.topology.expressions import expression_columns, parse_expression
from splitter.topology.inversion import inverse_source_column
from splitter.topology.model import Route, Topology

SOURCE = "source"
POOL_TABLES = ("users", "posts", "topics", "comments", "notifications")
REF_TABLES = ("users", "posts", "topics")


@dataclass(frozen=True)
class Attempted:
    """One write as the application saw it."""

    service: str
    home: str
    started: float
    acked: float
    rejections: int  # fence errors before it went through


def target_column(route: Route, column: str) -> tuple[str, str] | None:
    """The target column of `route` that source `column` is written as, and its expression: the one it is
    written back from, else one computed from it alone, else a coalesce led by it."""
    columns = route.table.columns.items()
    for target, expr in columns:
        found = inverse_source_column(expr)
        if found is not None and found[0] == column:
            return target, expr
    for target, expr in columns:
        if expression_columns(expr) == {column}:
            return target, expr
    for target, expr in columns:
        node = parse_expression(expr)
        if isinstance(node, ast.CoalesceExpr) and node.args and plain_column_node(node.args[0]) == column:
            return target, expr
    return None


def plain_column_node(node: ast.Node) -> str | None:
    fields = node.fields if isinstance(node, ast.ColumnRef) else None
    return fields[0].sval if fields and len(fields) == 1 and isinstance(fields[0], ast.String) else None


class RoutedWorkload:
    """Writer threads following the routing; `ledger` holds what they were told was committed."""

    def __init__(self, topology: Topology, source_dsn: str, target_dsns: Mapping[str, str], *, seed: int = 0,
                 threads: int = 3, rate: float = 30.0, retry_for: float = 180.0) -> None:
        self.topology = topology
        self.dsns: dict[str, str] = {SOURCE: source_dsn, **target_dsns}
        self.threads = threads
        self.interval = threads / rate
        self.retry_for = retry_for
        self.seed = seed
        self.ledger = Ledger()
        self.anomalies: list[str] = []
        self.errors: list[BaseException] = []
        self.done: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.attempts: list[Attempted] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._busy = 0
        self._workers: list[threading.Thread] = []
        self._routes = {(r.service.name, r.source_table): r for r in topology.routes()}
        self._precision = {name: self._precisions(dsn) for name, dsn in self.dsns.items()}
        self._pools = self._seed_pools()

    # -- control ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._workers = [threading.Thread(target=self._main, args=(i,), name=f"routed-{i}", daemon=True)
                         for i in range(self.threads)]
        for worker in self._workers:
            worker.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._running.set()
        for worker in self._workers:
            worker.join(timeout)

    def pause(self) -> None:
        """Stop starting writes and wait until none is in flight."""
        self._running.clear()
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0)

    def resume(self) -> None:
        self._running.set()

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.anomalies)

    def total(self) -> int:
        with self._lock:
            return sum(self.done.values())

    def longest_wait(self, service: str, since: float, until: float | None = None) -> tuple[float, int]:
        """The longest a write of `service` waited (first try to acknowledgement) among writes acknowledged
        in [since, until], and how many of them met the fence first."""
        end = time.monotonic() if until is None else until
        with self._lock:
            mine = [a for a in self.attempts if a.service == service and since <= a.acked <= end]
        return max((a.acked - a.started for a in mine), default=0.0), sum(1 for a in mine if a.rejections)

    # -- setup -----------------------------------------------------------------------------------------

    @staticmethod
    def _precisions(dsn: str) -> dict[tuple[str, str, str], int]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT table_schema, table_name, column_name, datetime_precision "
                                "FROM information_schema.columns WHERE datetime_precision IS NOT NULL "
                                "AND table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
        return {(str(s), str(t), str(c)): int(p) for s, t, c, p in rows}

    def _seed_pools(self) -> list[Pools]:
        pools = [Pools({t: [] for t in POOL_TABLES}, {}) for _ in range(self.threads)]
        with psycopg.connect(self.dsns[SOURCE], autocommit=True) as conn:
            for table in POOL_TABLES:
                ids = [str(r[0]) for r in conn.execute(
                    sql.SQL("SELECT id FROM {} ORDER BY id LIMIT 600").format(sql.Identifier(table))).fetchall()]
                for i, pool in enumerate(pools):
                    pool.mine[table] = [{"id": v} for v in ids[i::self.threads]]
                    if table in REF_TABLES:
                        pool.refs[table] = ids
        return pools

    # -- the writer ------------------------------------------------------------------------------------

    def _main(self, index: int) -> None:
        rng = random.Random(self.seed * 1_000_003 + index)
        names = list(OPERATIONS)
        weights = [OPERATIONS[n][0] for n in names]
        pools = self._pools[index]
        conns: dict[str, psycopg.Connection[Any]] = {}
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                self._running.wait()
                if self._stop.is_set():
                    break
                with self._lock:
                    self._busy += 1
                try:
                    name = rng.choices(names, weights)[0]
                    write = OPERATIONS[name][1](rng, pools)
                    if write is not None:
                        self._perform(conns, name, write, pools)
                finally:
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()
                next_at = max(next_at + self.interval, time.monotonic() - 1.0)
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # reported by the caller through `errors`
            with self._lock:
                self.errors.append(exc)
        finally:
            for conn in conns.values():
                conn.close()

    def _conn(self, conns: dict[str, psycopg.Connection[Any]], name: str) -> psycopg.Connection[Any]:
        if name not in conns or conns[name].closed:
            conns[name] = psycopg.connect(self.dsns[name], autocommit=True)
        return conns[name]

    def _home(self, conns: dict[str, psycopg.Connection[Any]], service: str) -> str:
        try:
            row = self._conn(conns, SOURCE).execute("SELECT home FROM splitter.routing WHERE service = %s",
                                                    (service,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return SOURCE
        return service if row is not None and row[0] == "service" else SOURCE

    def _perform(self, conns: dict[str, psycopg.Connection[Any]], name: str, write: Write, pools: Pools) -> None:
        started = time.monotonic()
        rejections = 0
        attempt = 0
        while True:
            home = self._home(conns, write.service)
            statement, params, key, recorded = self._statement(home, write)
            try:
                rowcount = self._conn(conns, home).execute(statement, params).rowcount
                break
            except psycopg.Error as exc:
                if exc.sqlstate == FENCE_SQLSTATE and time.monotonic() - started < self.retry_for:
                    rejections += 1
                    time.sleep(0.02)
                    continue
                attempt += 1
                if exc.sqlstate in RETRY_SQLSTATES and attempt < 20:
                    time.sleep(min(0.5, 0.005 * 2**attempt))
                    continue
                raise RuntimeError(f"{name} ({write.service} {write.kind} {write.table} {write.key}) in "
                                   f"{home}: SQLSTATE {exc.sqlstate}: {exc}") from exc
        acked = time.monotonic()
        with self._lock:
            self.attempts.append(Attempted(write.service, home, started, acked, rejections))
            (self.done if rowcount else self.skipped)[name] += 1
        if rowcount:
            self._record(write, key, recorded, pools)
        elif write.kind != "insert" and self._owns_rows(write):
            with self._lock:
                self.anomalies.append(f"{name}: {write.kind} of {write.table} {write.key} found no row in "
                                      f"{home} although its service owns the rows and the ledger has it")

    def _record(self, write: Write, key: dict[str, Any], recorded: dict[str, Any], pools: Pools) -> None:
        if write.kind == "insert":
            self.ledger.inserted(write.table, key, recorded)
            pools.mine.setdefault(write.table, []).append(dict(write.key))
        elif write.kind == "update":
            self.ledger.updated(write.table, key, recorded)
        else:
            self.ledger.deleted(write.table, key)
            pools.mine[write.table].remove(write.key)

    def _owns_rows(self, write: Write) -> bool:
        owners = ownership.table_owners(self.topology, self.topology.source_schema, write.table)
        return owners is not None and owners.row_owner == write.service

    # -- statements ------------------------------------------------------------------------------------

    def _statement(self, home: str, write: Write) -> tuple[sql.Composed, list[Any], dict[str, Any], dict[str, Any]]:
        """The SQL of `write` in `home`, its parameters, and the key and values the ledger records (source
        names, as the written database holds them)."""
        if home == SOURCE:
            schema, table = self.topology.source_schema, write.table
            precision = self._precision[SOURCE]
            values = {c: truncate(v, precision.get((schema, table, c))) for c, v in write.values.items()}
            statement = self._render(write.kind, (schema, table), write.key, values)
            return statement, [*values.values(), *write.key.values()], dict(write.key), values
        route = self._routes[(home, write.table)]
        precision = self._precision[home]
        where = (route.target_schema, route.target_table)
        row = {**write.key, **write.values}
        mapped = {c: m for c in row if (m := target_column(route, c)) is not None}
        cut = {c: truncate(v, precision.get((*where, mapped[c][0]))) if c in mapped else v for c, v in row.items()}
        written = {c: evaluate(mapped[c][1], cut) for c in mapped}
        recorded_values = {c: written[c] for c in write.values if c in written}
        if write.kind == "insert" and self._owns_rows(write):
            owners = ownership.table_owners(self.topology, self.topology.source_schema, write.table)
            assert owners is not None
            for c, expr in owners.reverse_defaults.items():
                if c not in mapped:
                    recorded_values[c] = evaluate(expr, {})  # a constant (ownership_problems checks)
        target_key = {mapped[c][0]: v for c, v in write.key.items()}
        target_values = {mapped[c][0]: written[c] for c in write.values if c in mapped}
        statement = self._render(write.kind, where, target_key, target_values)
        return statement, [*target_values.values(), *target_key.values()], dict(write.key), recorded_values

    @staticmethod
    def _render(kind: str, table: tuple[str, str], key: Mapping[str, Any], values: Mapping[str, Any]) -> sql.Composed:
        ident = sql.Identifier(*table)
        where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in key)
        if kind == "insert":
            columns = [*values, *key]
            return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
                ident, sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                sql.SQL(", ").join(sql.Placeholder() for _ in columns))
        if kind == "update":
            sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values)
            return sql.SQL("UPDATE {} SET {} WHERE {}").format(ident, sets, where)
        return sql.SQL("DELETE FROM {} WHERE {}").format(ident, where)
