"""Backlog catch-up: rows/s and CPU per row change of splitter draining a backlog, vs native logical replication.

Owns: the stage's measurement (`run`).  Must not: render tables (bench.report does), or change splitter's
settings or code paths (the processes run as `splitter run` deploys them, with the tree's code).

For each backlog size (row changes on the published source tables):

1. splitter's capture runs (it stays up for the whole stage), its seven workers are stopped; native's
   seven subscriptions (bench.e2e.native_setup) are DISABLED, so their slots keep the WAL;
2. the backlog is loaded with the application's write mix (`Workload`, unthrottled, `threads`
   connections) until the published tables' row changes (pg_stat_user_tables deltas) reach the size:
   the load's own rows/s is the load generator's ceiling;
3. end mark L = `pg_logical_emit_message(false, 'splitter.heartbeat', '')`; wait until capture confirmed
   up to it (the "capture running" variant: capture drained during the load);
4. splitter: start the seven workers; time until every service's checkpoint covers L (process start
   included; the first checkpoint move is reported too);
5. native: ENABLE the seven subscriptions; time until every walsender's replay_lsn covers L;
6. both sides stopped again (workers stopped, subscriptions disabled and their walsenders gone), and the
   row counts of every route compared between source, splitter's targets and native's (a warning only).

"Covers L" is >= L - 1: pgoutput reports a non-transactional message at its end LSN (which is what the
function returns) and splitter records it one less (it covers the commits strictly before it).

CPU (bench.cpu) is sampled per group during each timed catch-up, and for capture's side (capture,
its sessions, its walsender, the broker) also during the load, because in this variant capture did its
work for the backlog while the backlog was being written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import BackgroundWorkload, Servers, current_lsn
from bench.cpu import CpuWindow, per_row_us, process_cpu, with_descendants
from bench.e2e import BENCH_APP, SplitterProcesses, _published_rows, native_setup, native_teardown, splitter_positions
from splitter.core.messages import HEARTBEAT
from splitter.pipeline.config import Settings

POLL = 0.05
Log = Callable[[str], None]


def _connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, application_name=BENCH_APP)


def _mark(src: psycopg.Connection[Any]) -> int:
    row = src.execute("SELECT pg_logical_emit_message(false, %s, '') - '0/0'::pg_lsn", (HEARTBEAT,)).fetchone()
    assert row is not None
    return int(row[0])


def _slot_lsns(src: psycopg.Connection[Any], slots: list[str]) -> dict[str, int | None]:
    """Each slot's position: its walsender's replay_lsn, or its confirmed_flush_lsn, whichever is further."""
    rows = src.execute(
        "SELECT s.slot_name, greatest(r.replay_lsn, s.confirmed_flush_lsn) - '0/0'::pg_lsn "
        "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
        "WHERE s.slot_name = ANY (%s)", (slots,)).fetchall()
    got = {name: (int(v) if v is not None else None) for name, v in rows}
    return {s: got.get(s) for s in slots}


def _wait(what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], None] | None = None) -> float:
    started = time.monotonic()
    while not check():
        if alive is not None:
            alive()
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: not done within {timeout:.0f} s")
        time.sleep(POLL)
    return time.monotonic() - started


def _drop_native(servers: Servers, settings: Settings) -> None:
    """Databases and publications native_* that an earlier stage (e2e) left behind."""
    with _connect(servers.dsn("postgres")) as admin:
        for service in settings.topology.services:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(f"native_{service.database}")))
    with _connect(settings.source_dsn) as src:
        for service in settings.topology.services:
            src.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(f"native_{service.name}")))


class Stage:
    """The stage's long-lived state: capture, connections, the native subscriptions, the CPU groups."""

    def __init__(self, servers: Servers, settings: Settings, logdir: Path) -> None:
        self.servers, self.settings, self.logdir = servers, settings, logdir
        topo = settings.topology
        self.services = [s.name for s in topo.services]
        self.tables = [t for _, t in topo.source_tables()]
        self.src = _connect(settings.source_dsn)
        self.lister = _connect(settings.source_dsn)  # used by the CPU samplers only (under their lock)
        self.positions, self._close_positions, self.rows_applied = splitter_positions(settings)
        self.capture = SplitterProcesses(settings, logdir, ["capture"], "catchup-")
        self.workers: SplitterProcesses | None = None
        self.subs: list[str] = []
        self.native_dbs = [f"native_{s.database}" for s in topo.services]
        self.native_conns: dict[str, psycopg.Connection[Any]] = {}

    def close(self) -> None:
        self.stop_workers()
        self.capture.stop()
        self._close_positions()
        for conn in (*self.native_conns.values(), self.src, self.lister):
            conn.close()
        if self.subs:
            native_teardown(self.servers, self.settings, self.subs)

    # ------------------------------------------------------------------------- CPU groups

    def _sessions(self) -> dict[str, list[int]]:
        rows = self.lister.execute(
            "SELECT CASE WHEN application_name LIKE 'splitter-capture%%' THEN 'capture sessions' "
            "ELSE 'worker sessions' END, pid FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> %s "
            "AND (datname = ANY (%s) OR (application_name LIKE 'splitter-%%' AND NOT datname = ANY (%s)))",
            (BENCH_APP, [s.database for s in self.settings.topology.services], self.native_dbs)).fetchall()
        out: dict[str, list[int]] = {"capture sessions": [], "worker sessions": []}
        for group, pid in rows:
            out[group].append(pid)
        return out

    def _walsenders(self, slots: list[str]) -> list[int]:
        rows = self.lister.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = ANY (%s) "
                                   "AND active_pid IS NOT NULL", (slots,)).fetchall()
        return [r[0] for r in rows]

    def capture_groups(self) -> dict[str, list[int]]:
        broker = self.servers.kafka.pid
        return {"capture": with_descendants([self.capture.procs["capture"].pid]),
                "capture sessions": self._sessions()["capture sessions"],
                "walsender": self._walsenders([self.settings.slot]),
                "broker": with_descendants([broker] if broker else [])}

    def splitter_groups(self) -> dict[str, list[int]]:
        workers = self.workers
        return {**self.capture_groups(), "worker sessions": self._sessions()["worker sessions"],
                "workers": with_descendants([p.pid for p in workers.procs.values()] if workers else [])}

    def native_groups(self) -> dict[str, list[int]]:
        rows = self.lister.execute("SELECT pid FROM pg_stat_activity WHERE backend_type LIKE "
                                   "'logical replication %%worker' AND datname = ANY (%s)", (self.native_dbs,))
        return {"walsenders": self._walsenders(self.subs), "apply workers": [r[0] for r in rows.fetchall()]}

    # --------------------------------------------------------------------------- splitter

    def start_workers(self, tag: str) -> None:
        self.workers = SplitterProcesses(self.settings, self.logdir, self.services, f"catchup-{tag}-")

    def stop_workers(self) -> None:
        if self.workers is not None:
            self.workers.stop()
            self.workers = None

    def alive(self) -> None:
        self.capture.check()
        if self.workers is not None:
            self.workers.check()

    def splitter_catch_up(self, target: int, tag: str, timeout: float) -> dict[str, Any]:
        """Start the workers; time until every checkpoint covers `target`; stop them again."""
        before, applied0 = self.positions(), self.rows_applied()
        window = CpuWindow(self.splitter_groups)
        started = time.monotonic()
        self.start_workers(tag)
        moved: dict[str, float] = {}
        done: dict[str, float] = {}
        startup_cpu: dict[str, float] = {}
        try:
            while len(done) < len(self.services):
                self.alive()
                now = time.monotonic() - started
                if now > timeout:
                    raise RuntimeError(f"splitter catch-up not done within {timeout:.0f} s: {done}")
                for service, pos in self.positions().items():
                    if pos is not None and pos != before.get(service) and service not in moved:
                        moved[service] = now
                        startup_cpu[service] = self._worker_cpu(service)
                    if pos is not None and pos >= target:
                        done.setdefault(service, time.monotonic() - started)
                time.sleep(POLL)
            cpu = window.stop()
            # A worker's CPU until its first checkpoint move: its start-up (imports, connections), not rows.
            cpu["worker_startup_seconds"] = round(sum(startup_cpu.values()), 3)
        finally:
            self.stop_workers()
        applied = self.rows_applied()
        return {"seconds": round(max(done.values()), 2), "first_checkpoint_move_s": round(min(moved.values()), 2),
                "per_service_s": {k: round(v, 2) for k, v in sorted(done.items())},
                "target_rows": sum(applied.values()) - sum(applied0.values()), "cpu": cpu}

    def _worker_cpu(self, service: str) -> float:
        assert self.workers is not None
        got = (process_cpu(p) for p in with_descendants([self.workers.procs[service].pid]))
        return sum(g[1] for g in got if g is not None)

    def settle_splitter(self, timeout: float) -> float:
        """Workers up until their checkpoints cover a fresh mark, then stopped: splitter is caught up and idle."""
        mark = _mark(self.src)
        started = time.monotonic()
        self.start_workers("settle")
        try:
            _wait("splitter settle", lambda: all(p is not None and p >= mark - 1 for p in self.positions().values()),
                  timeout, self.alive)
        finally:
            self.stop_workers()
        return time.monotonic() - started

    # ----------------------------------------------------------------------------- native

    def setup_native(self, timeout: float) -> dict[str, Any]:
        _drop_native(self.servers, self.settings)
        self.subs, sync = native_setup(self.servers, self.settings)
        self.native_conns = {sub: _connect(self.servers.dsn(db)) for sub, db in zip(self.subs, self.native_dbs,
                                                                                      strict=True)}
        mark = _mark(self.src)
        _wait("native settle", lambda: all(p is not None and p >= mark - 1 for p in _slot_lsns(self.src, self.subs)
                                           .values()), timeout)
        self.disable_native()
        return sync

    def _alter(self, action: str) -> None:
        for sub, conn in self.native_conns.items():
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} {}").format(sql.Identifier(sub), sql.SQL(action)))

    def disable_native(self) -> None:
        self._alter("DISABLE")
        # The apply workers exit, then their walsenders: only then do the slots keep everything from here.
        _wait("native walsenders to exit", lambda: not self._walsenders(self.subs) and
              not self.native_groups()["apply workers"], 60)

    def native_catch_up(self, target: int, timeout: float) -> dict[str, Any]:
        before = _slot_lsns(self.src, self.subs)
        window = CpuWindow(self.native_groups)
        started = time.monotonic()
        self._alter("ENABLE")
        moved: dict[str, float] = {}
        done: dict[str, float] = {}
        while len(done) < len(self.subs):
            now = time.monotonic() - started
            if now > timeout:
                raise RuntimeError(f"native catch-up not done within {timeout:.0f} s: {done}")
            for sub, pos in _slot_lsns(self.src, self.subs).items():
                if pos is not None and pos != before.get(sub):
                    moved.setdefault(sub, now)
                if pos is not None and pos >= target:
                    done.setdefault(sub, time.monotonic() - started)
            time.sleep(POLL)
        cpu = window.stop()
        self.disable_native()
        return {"seconds": round(max(done.values()), 2), "first_move_s": round(min(moved.values()), 2),
                "per_service_s": {k.removeprefix("native_"): round(v, 2) for k, v in sorted(done.items())},
                "cpu": cpu}

    # ------------------------------------------------------------------------------- load

    def load(self, size: int, threads: int, seed: int, timeout: float) -> dict[str, Any]:
        """Write about `size` row changes unthrottled; then the end mark, and wait for capture to confirm it."""
        rows0, lsn0 = _published_rows(self.src, self.tables), current_lsn(self.src)
        window = CpuWindow(self.capture_groups)
        load = BackgroundWorkload(self.settings.source_dsn, seed=seed, threads=threads, rate=None,
                                  name="catchup-load")
        # The counters lag by up to a second (backends flush their statistics at most once a second), so
        # the backlog overshoots the size a little; the figure uses the count read after the load.
        while load.alive() and _published_rows(self.src, self.tables) - rows0 < size:
            time.sleep(0.1)
        load_s = load.stop(60) - load.started
        wl = load.workload
        mark = _mark(self.src)
        drain = _wait("capture drain", lambda: self._confirmed() >= mark - 1, timeout, self.alive)
        cpu = window.stop()
        time.sleep(max(0.0, 0.6 - drain))  # the workload's backends have exited and flushed their statistics
        rows = _published_rows(self.src, self.tables) - rows0
        return {"rows": rows, "seconds": round(load_s, 2), "rows_per_s": round(rows / load_s),
                "ops_per_s": round(wl.total / load_s, 1), "wal_bytes": mark - lsn0, "mark": mark,
                "capture_drained_after_s": round(drain, 2), "cpu": cpu}

    def _confirmed(self) -> int:
        """What capture confirmed to its slot: only what the broker acknowledged."""
        row = self.src.execute("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
                               "WHERE slot_name = %s", (self.settings.slot,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # ------------------------------------------------------------------------------ guard

    def compare_counts(self) -> list[str]:
        """Routes whose row counts differ between source, splitter's target and native's target."""
        source: dict[str, int] = {}
        out = []
        for route in self.settings.topology.routes():
            table = route.source_table
            if table not in source:
                source[table] = _count(self.src, sql.Identifier("public", table))
            with _connect(self.settings.target_dsn(route.service.name)) as tgt:
                split = _count(tgt, sql.Identifier(route.target_schema, route.target_table))
            native = _count(self.native_conns[f"native_{route.service.name}"], sql.Identifier("public", table))
            if not source[table] == split == native:
                out.append(f"{route.describe()}: source {source[table]}, splitter {split}, native {native}")
        return out


def _count(conn: psycopg.Connection[Any], table: sql.Composable) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    return int(row[0]) if row else 0


def _cpu_figures(rows: int, load: dict[str, Any], split: dict[str, Any], native: dict[str, Any]) -> dict[str, Any]:
    capture_side = load["cpu"]["seconds"]
    catch = split["cpu"]["seconds"]
    # What splitter spent on this backlog: its catch-up, plus capture's side while the backlog was written.
    whole = {g: round(catch.get(g, 0.0) + capture_side.get(g, 0.0), 3) for g in {*catch, *capture_side}}
    out: dict[str, Any] = {
        "during_load_us_per_row": per_row_us(capture_side, rows),
        "splitter_catch_up_us_per_row": per_row_us(catch, rows),
        "splitter_us_per_row": per_row_us(whole, rows),
        "native_us_per_row": per_row_us(native["cpu"]["seconds"], rows),
        "worker_startup_us_per_row": round(1e6 * split["cpu"].get("worker_startup_seconds", 0.0) / rows, 1),
    }
    s, n = out["splitter_us_per_row"].get("total"), out["native_us_per_row"].get("total")
    out["ratio"] = round(s / n, 3) if s and n else None
    return out


def one_size(stage: Stage, size: int, threads: int, seed: int, log: Log) -> dict[str, Any]:
    timeout = max(300.0, size / 500)
    load = stage.load(size, threads, seed, timeout)
    rows, target = load["rows"], load["mark"] - 1
    log(f"    backlog {rows} row changes ({load['wal_bytes'] / 1e6:.1f} MB WAL) written in {load['seconds']} s "
        f"= {load['rows_per_s']} rows/s (load generator, {threads} connections); capture confirmed the mark "
        f"{load['capture_drained_after_s']} s after the load")
    split = stage.splitter_catch_up(target, str(size), timeout)
    split["rows_per_s"] = round(rows / split["seconds"])
    log(f"    splitter: {split['seconds']} s = {split['rows_per_s']} rows/s (first checkpoint move after "
        f"{split['first_checkpoint_move_s']} s; {split['target_rows']} target rows)")
    native = stage.native_catch_up(target, timeout)
    native["rows_per_s"] = round(rows / native["seconds"])
    log(f"    native: {native['seconds']} s = {native['rows_per_s']} rows/s (first move after "
        f"{native['first_move_s']} s)")
    cpu = _cpu_figures(rows, load, split, native)
    log(f"    CPU µs per row change: splitter {cpu['splitter_us_per_row']}, native {cpu['native_us_per_row']}")
    mismatches = stage.compare_counts()
    for m in mismatches:
        log(f"    WARNING: row counts differ after the catch-up: {m}")
    ratio = split["rows_per_s"] / native["rows_per_s"]
    return {"backlog": size, "load": load, "splitter": split, "native": native, "cpu": cpu,
            "ratio": round(ratio, 3), "goal": 1.5, "count_mismatches": mismatches}


def run(servers: Servers, settings: Settings, backlogs: list[int], threads: int, logdir: Path,
        log: Log) -> dict[str, Any]:
    """The stage; needs splitter's targets filled and its checkpoints set (backfill, e2e or backfill.reset)."""
    stage = Stage(servers, settings, logdir)
    try:
        settle = stage.settle_splitter(600)
        log(f"    splitter caught up with what its slot held in {settle:.1f} s (untimed)")
        sync = stage.setup_native(600)
        log(f"    native subscriptions synced ({sync['rows']} rows in {sync['table_sync_seconds']} s), disabled")
        sizes = []
        for i, size in enumerate(backlogs):
            log(f"  backlog {size} row changes")
            sizes.append(one_size(stage, size, threads, 300 + i, log))
        return {"threads": threads, "settle_seconds": round(settle, 1), "sizes": sizes}
    finally:
        stage.close()
        _drop_native(servers, settings)
