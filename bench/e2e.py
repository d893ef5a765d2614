"""End to end: the highest sustained bento workload rate splitter keeps within 1 s, vs native logical replication.

The workload is `devtools.workload.driver.Workload` (the realistic mix of small application transactions),
4 connections, throttled to a target operation rate.  A stepped search runs steps of `seconds` each
at geometrically rising rates; a step is *sustained* when the workload reached >= 90 % of the asked
rate and every service database's lag stayed <= 1 s for the whole step (after its first second).
The rate reported is row changes per second on the published source tables (pg_stat_user_tables
ins+upd+del deltas, read after the step's connections closed so their counters are flushed).

Lag is sampled every 0.1 s: the source's pg_current_wal_lsn() with the time it was read, and each
consumer's applied source position; lag = now - the time the source's WAL passed that position
(`bench.common.LsnClock`, the same definition as PostgreSQL's replay_lag):

* splitter: capture and one worker per service run as child processes (`python -m splitter capture`,
  `python -m splitter worker --service S`), as `splitter run` deploys them; the position is the
  commit LSN in each service database's `splitter.checkpoints` row (what the worker committed).
* native: one publication per service with column lists (the source columns the service's
  expressions read), one subscription per service into database native_<service db>, whose tables
  are copies of the *source* tables restricted to those columns (native logical replication maps
  tables by schema-qualified name and cannot compute expressions, renames, constants, or enum
  remaps -- it does the row movement, not the reshaping).  Position: replay_lsn of the
  subscription's walsender in pg_stat_replication.  The subscriptions start with copy_data, so the
  time their table sync takes is reported too (a second backfill peer, column lists only).

Splitter runs first, from a fresh initial copy (bench.backfill.reset), after draining whatever its
slot holds (reported as catch-up, including process start); the half-rate step (the p99 goal) runs
at half of splitter's sustained rate.  Native runs second.  Unless --no-profile, one extra splitter
step at the first rate it failed (or the highest tried) runs under py-spy on the capture process and
the busiest worker.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import (
    LAG_UNKNOWN,
    ROOT,
    BackgroundWorkload,
    LsnClock,
    Profiler,
    Servers,
    current_lsn,
    percentile,
    settings_env,
)
from splitter.pipeline.config import Settings

SAMPLE_INTERVAL = 0.1
#: application_name of the bench's own reading sessions (left out of CPU accounting).
BENCH_APP = "splitter-bench"
LAG_LIMIT = 1.0
Positions = Callable[[], dict[str, int | None]]


class LagSampler:
    """Samples source WAL position and consumer positions every 0.1 s in a thread."""

    def __init__(self, source_dsn: str, positions: Positions) -> None:
        self.clock = LsnClock()
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._positions = positions
        self._conn = psycopg.connect(source_dsn, autocommit=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lag-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            self.clock.add(t, current_lsn(self._conn))
            pos = self._positions()
            now = time.monotonic()
            self.samples.append((now, {s: self.clock.lag(now, a) if a is not None else LAG_UNKNOWN
                                       for s, a in pos.items()}))
            self._stop.wait(max(0.0, SAMPLE_INTERVAL - (time.monotonic() - t)))

    def window(self, t0: float, t1: float) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for t, lags in list(self.samples):
            if t0 <= t <= t1:
                for s, lag in lags.items():
                    out.setdefault(s, []).append(lag)
        return out

    def latest(self) -> dict[str, float]:
        return self.samples[-1][1] if self.samples else {}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()


def _published_rows(conn: psycopg.Connection[Any], tables: list[str]) -> int:
    row = conn.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
                       "WHERE schemaname = 'public' AND relname = ANY (%s)", (tables,)).fetchone()
    return int(row[0]) if row else 0


def _wait_caught_up(sampler: LagSampler, limit: float, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        time.sleep(0.2)
        lags = sampler.latest()
        if lags and max(lags.values()) <= limit:
            return time.monotonic() - started
    return float("nan")


def run_step(source_dsn: str, tables: list[str], sampler: LagSampler, rate: float, seconds: float,
             threads: int, seed: int) -> dict[str, Any]:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        rows0 = _published_rows(conn, tables)
        load = BackgroundWorkload(source_dsn, seed=seed, threads=threads, rate=rate)
        t0 = load.started
        time.sleep(seconds)
        t1 = load.stop(30)
        wl = load.workload
        time.sleep(0.5)  # the workload's backends have exited and flushed their statistics
        rows = _published_rows(conn, tables) - rows0
    elapsed = t1 - t0
    lags = sampler.window(t0 + 1.0, t1)
    per_service = {s: {"p50_ms": round(1000 * percentile(v, 50)), "p99_ms": round(1000 * percentile(v, 99)),
                       "max_ms": round(1000 * max(v))} for s, v in sorted(lags.items())}
    worst = max((max(v) for v in lags.values()), default=LAG_UNKNOWN)
    ops = wl.total / elapsed
    return {
        "asked_ops_per_s": round(rate, 1),
        "ops_per_s": round(ops, 1),
        "rows_per_s": round(rows / elapsed),
        "max_lag_ms": round(1000 * worst),
        # The workload could not offer the asked rate: the step still counts (at the rate reached) if the
        # lag held, but the search cannot go higher.
        "generator_bound": ops < 0.9 * rate,
        "sustained": worst <= LAG_LIMIT,
        "lag": per_service,
    }


def search(source_dsn: str, tables: list[str], sampler: LagSampler, rates: list[float], seconds: float,
           threads: int, log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for i, rate in enumerate(rates):
        step = run_step(source_dsn, tables, sampler, rate, seconds, threads, seed=100 + i)
        steps.append(step)
        log(f"    {rate:7.0f} ops/s asked: {step['ops_per_s']:7.1f} ops/s, {step['rows_per_s']:6d} rows/s, "
            f"max lag {step['max_lag_ms']} ms -> {'sustained' if step['sustained'] else 'NOT sustained'}")
        if step["sustained"]:
            best = step
        if not step["sustained"] or step["generator_bound"]:
            break
        # Let a short tail settle; an idle native subscriber only reports its position every few seconds.
        _wait_caught_up(sampler, 0.5, 5)
    return steps, best


# ---------------------------------------------------------------------------------------- splitter


class SplitterProcesses:
    """capture + one worker per service as child processes, like `splitter run`.

    `names` picks some of them ("capture" and/or service names; default all), so that the catch-up
    stage can run capture alone and start the workers later; logs go to <logdir>/<log_prefix><name>.log.
    """

    def __init__(self, settings: Settings, logdir: Path, names: list[str] | None = None,
                 log_prefix: str = "splitter-") -> None:
        env = settings_env(settings)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs = []
        if names is None:
            names = ["capture", *(s.name for s in settings.topology.services)]
        for name in names:
            argv = [sys.executable, "-m", "splitter", "capture"] if name == "capture" else \
                [sys.executable, "-m", "splitter", "worker", "--service", name]
            out = open(logdir / f"{log_prefix}{name}.log", "wb")  # noqa: SIM115 - closed in stop()
            self._logs.append(out)
            self.procs[name] = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"splitter {name} exited with {proc.returncode} (see its log in bench/results)")

    def stop(self) -> None:
        from bench.common import stop_process

        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            stop_process(proc)
        for out in self._logs:
            out.close()


def splitter_positions(settings: Settings) -> tuple[Positions, Callable[[], None], Callable[[], dict[str, int]]]:
    # Named, so that the catch-up stage's CPU accounting can leave the bench's own sessions out.
    conns = {s.name: psycopg.connect(settings.target_dsn(s.name), autocommit=True, application_name=BENCH_APP)
             for s in settings.topology.services}

    def positions() -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for name, conn in conns.items():
            row = conn.execute("SELECT commit_lsn - '0/0'::pg_lsn FROM splitter.checkpoints WHERE service = %s",
                               (name,)).fetchone()
            out[name] = int(row[0]) if row else None
        return out

    def rows_applied() -> dict[str, int]:
        out = {}
        for name, conn in conns.items():
            row = conn.execute("SELECT rows_applied FROM splitter.checkpoints WHERE service = %s", (name,)).fetchone()
            out[name] = int(row[0]) if row else 0
        return out

    def close() -> None:
        for conn in conns.values():
            conn.close()

    return positions, close, rows_applied


def run_splitter(settings: Settings, rates: list[float], half_of: float | None, seconds: float, threads: int,
                 logdir: Path, profile_dir: Path | None, log: Callable[[str], None]) -> dict[str, Any]:
    tables = [t for _, t in settings.topology.source_tables()]
    positions, close, rows_applied = splitter_positions(settings)
    with psycopg.connect(settings.source_dsn, autocommit=True) as conn:
        slot = conn.execute("SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots "
                            "WHERE slot_name = %s", (settings.slot,)).fetchone()
    backlog_bytes = int(slot[0]) if slot else 0
    applied0 = sum(rows_applied().values())
    procs = SplitterProcesses(settings, logdir)
    sampler = LagSampler(settings.source_dsn, positions)
    try:
        started = time.monotonic()
        catch_up = _wait_caught_up(sampler, 0.5, 120)
        procs.check()
        caught_rows = sum(rows_applied().values()) - applied0
        log(f"    caught up a backlog of {backlog_bytes / 1e6:.1f} MB WAL ({caught_rows} target rows) in "
            f"{catch_up:.1f} s (incl. process start)")
        before = rows_applied()
        steps, best = search(settings.source_dsn, tables, sampler, rates, seconds, threads, log)
        procs.check()
        applied = {k: v - before[k] for k, v in rows_applied().items()}
        result: dict[str, Any] = {
            "catch_up": {"wal_bytes": backlog_bytes, "target_rows": caught_rows, "seconds": round(catch_up, 1),
                         "started_after_s": round(time.monotonic() - started, 1)},
            "steps": steps, "best": best,
        }
        reference = min(x for x in (best["ops_per_s"] if best else None, half_of) if x) if (best or half_of) else None
        if reference:
            half = run_step(settings.source_dsn, tables, sampler, reference / 2, seconds, threads, seed=7)
            log(f"    half rate {reference / 2:.0f} ops/s: {half['rows_per_s']} rows/s, p99 lag per service "
                f"{ {s: v['p99_ms'] for s, v in half['lag'].items()} } ms")
            result["half_rate"] = half
        if profile_dir is not None:
            failing = next((s for s in steps if not s["sustained"]), steps[-1])
            busiest = max(applied, key=lambda k: applied[k])
            _wait_caught_up(sampler, 0.5, 60)
            profs = {"capture": Profiler(procs.procs["capture"].pid, profile_dir / "e2e-capture.raw"),
                     f"worker[{busiest}]": Profiler(procs.procs[busiest].pid, profile_dir / f"e2e-{busiest}.raw")}
            step = run_step(settings.source_dsn, tables, sampler, failing["asked_ops_per_s"], seconds, threads, seed=9)
            result["profile"] = {"rate": step, **{k: p.stop() for k, p in profs.items()}}
            log(f"    profiled step at {failing['asked_ops_per_s']} ops/s (capture, worker[{busiest}])")
        return result
    finally:
        sampler.close()
        procs.stop()
        close()


# ------------------------------------------------------------------------------------------ native


def _source_columns(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str, bool]]:
    """(name, type for the copy, is primary key) of a source table, in column order; enums as text."""
    return [(r[0], r[1], r[2]) for r in conn.execute(
        """SELECT a.attname, CASE WHEN t.typtype = 'e' THEN 'text' ELSE format_type(a.atttypid, a.atttypmod) END,
                  coalesce(a.attnum = ANY (i.indkey::int2[]), false)
           FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
           WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        (f"public.{table}",))]


def native_setup(servers: Servers, settings: Settings) -> tuple[list[str], dict[str, Any]]:
    """Create native_<db> databases, publications with column lists, slots and subscriptions; wait for sync."""
    topo = settings.topology
    subs: list[str] = []
    layout: dict[str, dict[str, list[str]]] = {}
    src = psycopg.connect(settings.source_dsn, autocommit=True)
    admin = psycopg.connect(servers.dsn("postgres"), autocommit=True)
    try:
        for service in topo.services:
            wanted: dict[str, set[str]] = {}
            for route in topo.routes_for(service):
                wanted.setdefault(route.source_table, set()).update(route.table.source_columns_read())
            db, name = f"native_{service.database}", f"native_{service.name}"
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
            columns: dict[str, list[str]] = {}
            with psycopg.connect(servers.dsn(db), autocommit=True) as tgt:
                for table, cols in wanted.items():
                    spec = [c for c in _source_columns(src, table) if c[0] in cols or c[2]]
                    columns[table] = [c[0] for c in spec]
                    tgt.execute(sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(
                        sql.Identifier("public", table),
                        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t, _ in spec),
                        sql.SQL(", ").join(sql.Identifier(c) for c, _, pk in spec if pk)))
            layout[service.name] = columns
            src.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(name), sql.SQL(", ").join(
                    sql.SQL("{} ({})").format(sql.Identifier("public", t), sql.SQL(", ").join(map(sql.Identifier, c)))
                    for t, c in columns.items())))
            src.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
            subs.append(name)
        started = time.monotonic()
        for service, name in zip(topo.services, subs, strict=True):
            with psycopg.connect(servers.dsn(f"native_{service.database}"), autocommit=True) as tgt:
                tgt.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH "
                                    "(create_slot = false, slot_name = {}, copy_data = true)").format(
                    sql.Identifier(name), sql.Literal(settings.source_dsn), sql.Identifier(name), sql.Literal(name)))
        for service in topo.services:
            with psycopg.connect(servers.dsn(f"native_{service.database}"), autocommit=True) as tgt:
                while tgt.execute("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'").fetchone()[0]:
                    time.sleep(0.1)
        sync_s = time.monotonic() - started
        rows = 0
        for service in topo.services:
            with psycopg.connect(servers.dsn(f"native_{service.database}"), autocommit=True) as tgt:
                for table in layout[service.name]:
                    rows += tgt.execute(sql.SQL("SELECT count(*) FROM {}").format(
                        sql.Identifier("public", table))).fetchone()[0]
    finally:
        src.close()
        admin.close()
    return subs, {"table_sync_seconds": round(sync_s, 2), "rows": rows, "rows_per_s": round(rows / sync_s),
                  "layout": layout}


def native_teardown(servers: Servers, settings: Settings, subs: list[str]) -> None:
    for service, name in zip(settings.topology.services, subs, strict=True):
        with psycopg.connect(servers.dsn(f"native_{service.database}"), autocommit=True) as tgt:
            tgt.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sql.Identifier(name)))
            tgt.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(sql.Identifier(name)))
            tgt.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(name)))
    with psycopg.connect(settings.source_dsn, autocommit=True) as src:
        for name in subs:
            for _ in range(100):
                try:
                    src.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.2)


def run_native(servers: Servers, settings: Settings, rates: list[float], seconds: float, threads: int,
               log: Callable[[str], None]) -> dict[str, Any]:
    tables = [t for _, t in settings.topology.source_tables()]
    subs, sync = native_setup(servers, settings)
    log(f"    native table sync: {sync['rows']} rows in {sync['table_sync_seconds']} s")
    by_sub = {f"native_{s.name}": s.name for s in settings.topology.services}
    src = psycopg.connect(settings.source_dsn, autocommit=True)

    def positions() -> dict[str, int | None]:
        rows = src.execute("SELECT application_name, replay_lsn - '0/0'::pg_lsn FROM pg_stat_replication "
                           "WHERE application_name = ANY (%s)", (subs,)).fetchall()
        got = {by_sub[a]: (int(v) if v is not None else None) for a, v in rows}
        return {s: got.get(s) for s in by_sub.values()}

    sampler = LagSampler(settings.source_dsn, positions)
    try:
        _wait_caught_up(sampler, 0.5, 60)
        steps, best = search(settings.source_dsn, tables, sampler, rates, seconds, threads, log)
        return {"table_sync": sync, "steps": steps, "best": best}
    finally:
        sampler.close()
        src.close()
        native_teardown(servers, settings, subs)
