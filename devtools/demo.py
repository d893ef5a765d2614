"""`splitter demo`: the whole migration on one machine, with nothing but Python and the package registries.

Owns: starting an embedded PostgreSQL 18 (wal_level=logical, scram-sha-256 with a generated password kept
only in a pgpass file of mode 0600) with `bento_social` and the seven service databases, an embedded
Kafka-protocol broker, filling the source with generated data, the ready block that says where the
servers are (`export SPLITTER_... PGPASSFILE=...`, so `splitter status`, `verify` and psql reach them
from another terminal), running capture and one worker per service as the same process tree `splitter
run` uses, a live write workload, a per-service progress and lag view, and the end: on Ctrl-C or after
--duration, the workload stops, every service catches up and is verified, the exit code says whether all
match, the log file is kept (its path said at start and at exit) and, with --json, one JSON object on
stdout sums it up (the human lines then go to stderr).  Must not: be used against real servers (it
creates and drops databases), contain pipeline logic, or print or log the password.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from devtools import datagen, fixtures
from devtools.embedded.kafka import EmbeddedKafka
from devtools.embedded.postgres import EmbeddedPostgres
from devtools.progress import Positions, Progress, positions, verify_summary
from splitter.cli.options import metrics_argv
from splitter.core import exit_codes
from splitter.observe.http import DEFAULT_METRICS_HOST
from splitter.pipeline.config import Settings, build_settings
from splitter.pipeline.supervisor import Supervisor, child_argv

log = logging.getLogger(__name__)

REPO_TOPOLOGY = Path(__file__).resolve().parent.parent / "topology.py"
PGPASS = "pgpass"
LOG = "splitter.log"


def _render(progress: list[Progress], ops: int, started: float, previous: dict[str, int], footer: str) -> str:
    elapsed = time.monotonic() - started
    lines = [f"splitter demo — {elapsed:5.0f}s, workload {ops} operations  (Ctrl-C to stop and verify)", "",
             f"{'service':<14}{'state':<11}{'applied LSN':>14}{'lag bytes':>12}{'lag s':>8}{'rows':>10}{'rows/s':>9}"]
    for p in progress:
        rate = p.rows - previous.get(p.service, p.rows)
        previous[p.service] = p.rows
        lines.append(f"{p.service:<14}{p.state:<11}{p.applied_lsn:>14X}{p.lag_bytes:>12}{p.lag_seconds:>8.1f}"
                     f"{p.rows:>10}{rate:>9}")
    return "\n".join(lines + (["", *footer.splitlines()] if footer else []))


def _password(root: Path) -> str:
    """The postgres password: the one in an earlier run's pgpass when its cluster is reused (--data-dir),
    else a new one.  It lives only in that file (and in PostgreSQL's catalog, as a SCRAM verifier)."""
    passfile = root / PGPASS
    if (root / "pg" / "PG_VERSION").exists() and passfile.exists():
        line = passfile.read_text().splitlines()[0]
        return line.split(":", 4)[4].replace("\\:", ":").replace("\\\\", "\\")
    return secrets.token_urlsafe(24)


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
    env = dict(os.environ)  # PGPASSFILE included: the children find the password where libpq looks
    env.update({"SPLITTER_TOPOLOGY": str(REPO_TOPOLOGY), "SPLITTER_SOURCE_DSN": settings.source_dsn,
                "SPLITTER_KAFKA": broker.bootstrap})
    return settings, env


def exports(settings: Settings, passfile: Path) -> dict[str, str]:
    """What `splitter status`/`verify` and psql need to reach the demo's servers (no password: PGPASSFILE)."""
    return {"SPLITTER_TOPOLOGY": str(REPO_TOPOLOGY), "SPLITTER_SOURCE_DSN": settings.source_dsn,
            "SPLITTER_KAFKA": settings.kafka_bootstrap, "PGPASSFILE": str(passfile)}


def ready_block(settings: Settings, passfile: Path, log_path: Path) -> str:
    line = "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in exports(settings, passfile).items())
    return ("the demo's servers: in another terminal run this line, then `splitter status`, `splitter verify` or "
            'psql "$SPLITTER_SOURCE_DSN"\n'
            f"  {line}\n"
            f"log: {log_path}")


class _Stop:
    """Ctrl-C / SIGTERM: the first stops the workload and goes on to catch up and verify; a second Ctrl-C
    stops at once (KeyboardInterrupt: the servers and the pipeline are stopped, nothing is verified)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.interrupted = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.interrupted = True
        self.event.set()  # no print here: a handler writing to the stream the main thread writes can fail


@contextlib.contextmanager
def _human_output(json_out: bool) -> Iterator[Any]:
    """With --json the people's lines go to stderr, so stdout carries the one JSON object; yields stdout."""
    stdout = sys.stdout
    if not json_out:
        yield stdout
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield stdout


def run_demo(*, duration: float | None, scale: int, data_dir: str | None, rate: float | None,
             log_level: str = "INFO", migrate: bool = False, metrics_port: int | None = None,
             metrics_host: str = DEFAULT_METRICS_HOST, json_out: bool = False) -> int:
    """With `metrics_port` P, capture serves /metrics on P and worker i on P+i (as `splitter run` does)."""
    keep = data_dir is not None
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="splitter-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / LOG
    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    summary: dict[str, Any] = {"command": "demo", "mode": "migrate" if migrate else "stream", "ok": False,
                               "exit_code": exit_codes.INTERRUPTED, "interrupted": False, "caught_up": None,
                               "verify": None, "workload_operations": 0, "log": str(log_path),
                               "data_dir": str(root), "data_kept": keep, "servers": None}
    with _human_output(json_out) as stdout:
        print(f"starting embedded PostgreSQL 18 and a Kafka-protocol broker (data in {root}; log {log_path})",
              flush=True)
        try:
            with EmbeddedPostgres(root / "pg", password=_password(root)) as pg, \
                    EmbeddedKafka(log_path=root / "broker.log") as broker:
                passfile = pg.write_pgpass(root / PGPASS)
                os.environ["PGPASSFILE"] = str(passfile)  # this process's connections, and its children's
                settings, env = prepare(pg, broker, scale)
                summary["servers"] = exports(settings, passfile)
                print(ready_block(settings, passfile, log_path), flush=True)
                if migrate:
                    from devtools.migrate import run_migration

                    code = run_migration(settings, env, root, phase=duration, rate=rate, log_level=log_level,
                                         stop=stop.event, metrics=metrics_argv(metrics_port, metrics_host, 0),
                                         summary=summary)
                else:
                    code = _stream(settings, env, log_path, duration=duration, rate=rate, log_level=log_level,
                                   stop=stop.event, metrics=(metrics_port, metrics_host), summary=summary,
                                   footer=ready_block(settings, passfile, log_path))
        except KeyboardInterrupt:
            code = exit_codes.INTERRUPTED
            print("\nstopped without verifying", flush=True)
        finally:
            if not keep:
                # The data goes; the logs stay (their path was said at start and is said again now).
                shutil.rmtree(root / "pg", ignore_errors=True)
                (root / PGPASS).unlink(missing_ok=True)
            print(f"log kept: {log_path}" + ("" if keep else f" (the servers' data in {root} was removed)"),
                  flush=True)
        summary.update(ok=code == exit_codes.OK, exit_code=code, interrupted=stop.interrupted)
        if json_out:
            stdout.write(json.dumps(summary) + "\n")
            stdout.flush()
    return code


def _stream(settings: Settings, env: dict[str, str], log_path: Path, *, duration: float | None, rate: float | None,
            log_level: str, stop: threading.Event, metrics: tuple[int | None, str], summary: dict[str, Any],
            footer: str) -> int:
    from devtools.workload.driver import Workload

    port, host = metrics
    children = [("capture", child_argv([], ["capture", "--log-level", log_level, *metrics_argv(port, host, 0)]))]
    children += [(f"worker[{s.name}]", child_argv([], ["worker", "--service", s.name, "--log-level", log_level,
                                                       *metrics_argv(port, host, i)]))
                 for i, s in enumerate(settings.topology.services, start=1)]
    with open(log_path, "ab") as log_file:
        supervisor = Supervisor(children, env=env, output=log_file)
        sup_stop = threading.Event()
        sup_thread = threading.Thread(target=supervisor.run, args=(sup_stop,), name="supervisor")
        sup_thread.start()
        print(f"pipeline started: capture + {len(settings.topology.services)} workers (log: {log_path})", flush=True)
        workload = Workload(settings.source_dsn, seed=int(time.time()), threads=2, rate=rate)
        wl_stop = threading.Event()
        wl_thread = threading.Thread(target=workload.run, args=(wl_stop,), name="workload", daemon=True)
        started = time.monotonic()
        previous: dict[str, int] = {}
        tty = sys.stdout.isatty()
        workload_started = False
        view = Positions(settings, refresh=1.0 if tty else 5.0)
        try:
            while not stop.is_set():
                _, progress = view.read()
                if not workload_started and all(p.state == "streaming" for p in progress):
                    wl_thread.start()  # the initial copy is done: now the live writes
                    workload_started = True
                # On a terminal the screen is redrawn: the ready block is part of it, or it would scroll away.
                screen = _render(progress, workload.total, started, previous, footer if tty else "")
                print(("\033[2J\033[H" if tty else "\n") + screen, flush=True)
                if duration is not None and time.monotonic() - started >= duration:
                    break
                stop.wait(1.0 if tty else 5.0)
            wl_stop.set()
            if stop.is_set():
                print("\nstopping: the workload first, then every service catches up and is verified "
                      "(Ctrl-C again to stop at once without verifying)", flush=True)
            if workload_started:
                wl_thread.join(60)
            summary["workload_operations"] = workload.total
            print("\nworkload stopped; waiting for every service to catch up...", flush=True)
            ok = _finish(settings, summary)
        finally:
            sup_stop.set()
            sup_thread.join(60)
    return exit_codes.OK if ok else exit_codes.DIFFERENT


def _finish(settings: Settings, summary: dict[str, Any], timeout: float = 180.0) -> bool:
    from splitter.ops.verify.run import verify

    target, _ = positions(settings)
    deadline = time.monotonic() + timeout
    while True:
        _, progress = positions(settings)
        if all(p.applied_lsn >= target for p in progress):
            break
        if time.monotonic() > deadline:
            print("not every service caught up in time:", {p.service: p.lag_bytes for p in progress})
            summary["caught_up"] = False
            return False
        time.sleep(0.5)
    summary["caught_up"] = True
    print("all services caught up; verifying every service table against the source...", flush=True)
    report = verify(settings, consistent=False)
    print(report.render())
    print("verification: " + ("every service database matches" if report.ok else "DIFFERENCES FOUND"))
    summary["verify"] = verify_summary(report.to_dict())
    return bool(report.ok)
