"""`splitter demo`: the whole migration on one machine, with nothing but Python and the package registries.

Owns: starting an embedded PostgreSQL 18 (wal_level=logical) with `bento_social` and the seven
service databases, an embedded Kafka-protocol broker, filling the source with generated data,
running capture and one worker per service as the same process tree `splitter run` uses, a live
write workload, a per-service progress and lag view, and, with --duration, a final verification
whose result is the exit code.  Must not: be used against real servers (it creates and drops
databases) or contain pipeline logic.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

from devtools import datagen, fixtures
from devtools.embedded.kafka import EmbeddedKafka
from devtools.embedded.postgres import EmbeddedPostgres
from devtools.progress import Progress, positions
from splitter.cli.options import metrics_argv
from splitter.observe.http import DEFAULT_METRICS_HOST
from splitter.pipeline.config import Settings, build_settings
from splitter.pipeline.daemon import Supervisor, child_argv

log = logging.getLogger(__name__)

REPO_TOPOLOGY = Path(__file__).resolve().parent.parent / "topology.py"


def _render(progress: list[Progress], ops: int, started: float, previous: dict[str, int]) -> str:
    elapsed = time.monotonic() - started
    lines = [f"splitter demo — {elapsed:5.0f}s, workload {ops} operations  (Ctrl-C to stop and verify)", "",
             f"{'service':<14}{'state':<11}{'applied LSN':>14}{'lag bytes':>12}{'lag s':>8}{'rows':>10}{'rows/s':>9}"]
    for p in progress:
        rate = p.rows - previous.get(p.service, p.rows)
        previous[p.service] = p.rows
        lines.append(f"{p.service:<14}{p.state:<11}{p.applied_lsn:>14X}{p.lag_bytes:>12}{p.lag_seconds:>8.1f}"
                     f"{p.rows:>10}{rate:>9}")
    return "\n".join(lines)


def _create_databases(pg: EmbeddedPostgres) -> dict[str, str]:
    names = ["bento_social", *fixtures.TARGET_DATABASES]
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        for slot in admin.execute("SELECT slot_name FROM pg_replication_slots").fetchall():
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot[0],))
        for name in names:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return {name: pg.dsn(name) for name in names}


def prepare(pg: EmbeddedPostgres, broker: EmbeddedKafka, scale: int) -> tuple[Settings, dict[str, str]]:
    """Fresh databases with the shipped DDL and generated data; the Settings and the children's environment."""
    dsns = _create_databases(pg)
    with psycopg.connect(dsns["bento_social"], autocommit=True) as conn:
        fixtures.load_source_schema(conn)
        print(f"generating bento_social data (scale {scale})...", flush=True)
        counts = datagen.generate(conn, scale)
    print("  " + ", ".join(f"{t} {n}" for t, n in counts.items()), flush=True)
    for database in fixtures.TARGET_DATABASES:
        with psycopg.connect(dsns[database], autocommit=True) as conn:
            fixtures.load_target_schema(conn, database)
    settings = build_settings(topology_path=str(REPO_TOPOLOGY), source_dsn=dsns["bento_social"],
                              kafka=broker.bootstrap, env={})
    env = dict(os.environ)
    env.update({"SPLITTER_TOPOLOGY": str(REPO_TOPOLOGY), "SPLITTER_SOURCE_DSN": settings.source_dsn,
                "SPLITTER_KAFKA": broker.bootstrap})
    return settings, env


def run_demo(*, duration: float | None, scale: int, data_dir: str | None, rate: float | None,
             log_level: str = "INFO", migrate: bool = False, metrics_port: int | None = None,
             metrics_host: str = DEFAULT_METRICS_HOST) -> int:
    """With `metrics_port` P, capture serves /metrics on P and worker i on P+i (as `splitter run` does)."""
    from devtools.workload.driver import Workload

    keep = data_dir is not None
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="splitter-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"starting embedded PostgreSQL 18 and a Kafka-protocol broker (data in {root})", flush=True)
    if migrate:
        from devtools.migrate import run_migration

        with EmbeddedPostgres(root / "pg") as pg, EmbeddedKafka(log_path=root / "broker.log") as broker:
            settings, env = prepare(pg, broker, scale)
            code = run_migration(settings, env, root, phase=duration, rate=rate, log_level=log_level, stop=stop,
                                 metrics=metrics_argv(metrics_port, metrics_host, 0))
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        return code
    with EmbeddedPostgres(root / "pg") as pg, EmbeddedKafka(log_path=root / "broker.log") as broker:
        settings, env = prepare(pg, broker, scale)
        children = [("capture", child_argv([], ["capture", "--log-level", log_level,
                                                *metrics_argv(metrics_port, metrics_host, 0)]))]
        children += [(f"worker[{s.name}]", child_argv([], ["worker", "--service", s.name, "--log-level", log_level,
                                                           *metrics_argv(metrics_port, metrics_host, i)]))
                     for i, s in enumerate(settings.topology.services, start=1)]
        log_path = root / "splitter.log"
        with open(log_path, "ab") as log_file:
            supervisor = Supervisor(children, env=env, output=log_file)
            sup_stop = threading.Event()
            sup_thread = threading.Thread(target=supervisor.run, args=(sup_stop,), name="supervisor")
            sup_thread.start()
            print(f"pipeline started: capture + {len(settings.topology.services)} workers (log: {log_path})",
                  flush=True)
            workload = Workload(settings.source_dsn, seed=int(time.time()), threads=2, rate=rate)
            wl_stop = threading.Event()
            wl_thread = threading.Thread(target=workload.run, args=(wl_stop,), name="workload", daemon=True)
            started = time.monotonic()
            previous: dict[str, int] = {}
            tty = sys.stdout.isatty()
            workload_started = False
            try:
                while not stop.is_set():
                    _, progress = positions(settings)
                    if not workload_started and all(p.state == "streaming" for p in progress):
                        wl_thread.start()  # the initial copy is done: now the live writes
                        workload_started = True
                    screen = _render(progress, workload.total, started, previous)
                    print(("\033[2J\033[H" if tty else "\n") + screen, flush=True)
                    if duration is not None and time.monotonic() - started >= duration:
                        break
                    stop.wait(1.0 if tty else 5.0)
                wl_stop.set()
                if workload_started:
                    wl_thread.join(60)
                print("\nworkload stopped; waiting for every service to catch up...", flush=True)
                ok = _finish(settings)
            finally:
                sup_stop.set()
                sup_thread.join(60)
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


def _finish(settings: Settings, timeout: float = 180.0) -> bool:
    from splitter.ops.verify.run import verify

    target, _ = positions(settings)
    deadline = time.monotonic() + timeout
    while True:
        _, progress = positions(settings)
        if all(p.applied_lsn >= target for p in progress):
            break
        if time.monotonic() > deadline:
            print("not every service caught up in time:", {p.service: p.lag_bytes for p in progress})
            return False
        time.sleep(0.5)
    print("all services caught up; verifying every service table against the source...", flush=True)
    report = verify(settings, consistent=False)
    print(report.render())
    print("verification: " + ("every service database matches" if report.ok else "DIFFERENCES FOUND"))
    return bool(report.ok)
