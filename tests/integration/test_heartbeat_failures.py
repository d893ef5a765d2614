"""Capture's heartbeats failing: counted, visible in /metrics, /healthz and `splitter status`, and recovered
by reconnecting.

Capture runs in-process with its metrics endpoint.  The test makes heartbeats fail for real: it stops
new connections to the source database (ALLOW_CONNECTIONS false; the replication stream, already
connected, keeps running) and terminates capture's catalog session (the `splitter-capture` client
backend that holds no advisory lock).  Every heartbeat then fails (the session is gone and reconnecting
is refused), so the consecutive-failure gauge rises past the error threshold and /healthz says so.
Once connections are allowed again, capture opens a new catalog session (a new backend pid, read from
pg_stat_activity) and heartbeats succeed: the gauge is back to 0 and the slot's confirmed position moves
past the WAL written after recovery.

For `splitter status` the source must still answer status while it refuses capture: capture runs as a
role of its own that the test makes NOLOGIN (new sessions of that role are refused with 28000, its open
ones go on), and status reads the source as the superuser.  Capture records the failure through the
session its health reporter opened at the first heartbeat (splitter.pipeline.capture_health).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from splitter.observe import metrics
from splitter.ops import status
from splitter.pipeline.capture import Capture
from splitter.pipeline.daemon import run_with_retries
from tests import harness
from tests.conftest import KafkaServer

CATALOG_SESSIONS = """
SELECT a.pid FROM pg_stat_activity a
 WHERE a.datname = %(db)s AND a.application_name = 'splitter-capture' AND a.backend_type = 'client backend'
   AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory')
"""


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _gauge(text: str, name: str) -> float | None:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def _every_service_copied(env: harness.PipelineEnv) -> Callable[[], bool]:
    return lambda: all(lsn > 0 for lsn in env.applied_lsns().values())


def _wait(what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_failing_heartbeats_are_counted_shown_and_recovered(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = harness.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=20)
    settings = env.settings(heartbeat_interval=0.2)
    db = str(conninfo_to_dict(env.source)["dbname"])
    admin_dsn = make_conninfo(env.source, dbname="postgres")
    copied = _every_service_copied(env)
    stop = threading.Event()
    with metrics.start_metrics(settings, "capture", port=0, host="127.0.0.1", poll_interval=0.5) as m:
        base = f"http://127.0.0.1:{m.port}"
        runner = threading.Thread(target=run_with_retries, args=("capture", m.instrument(lambda: Capture(settings)),
                                                                  stop), daemon=True)
        runner.start()
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            def catalog_pids() -> list[int]:
                return [r[0] for r in admin.execute(CATALOG_SESSIONS, {"db": db}).fetchall()]

            def confirmed() -> int:
                row = admin.execute("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
                                    "WHERE slot_name = %s", (settings.slot,)).fetchone()
                return int(row[0]) if row and row[0] is not None else 0

            def failures() -> float | None:
                return _gauge(_get(f"{base}/metrics")[1], "splitter_capture_heartbeat_failures")

            try:
                # Every service copied (the slot's confirmed position is set when it is created, before the copy).
                _wait("capture streaming", lambda: confirmed() > 0 and copied() and len(catalog_pids()) == 1, 90)
                _wait("a heartbeat gauge at 0", lambda: failures() == 0, 10)
                (old_pid,) = catalog_pids()
                admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(db)))
                try:
                    admin.execute("SELECT pg_terminate_backend(%s)", (old_pid,))
                    _wait("heartbeat failures past the threshold", lambda: (failures() or 0) >= 3, 15)
                    status, body = _get(f"{base}/healthz")
                    assert "heartbeat" in body and "failing" in body, (status, body)
                    assert catalog_pids() == []
                finally:
                    admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(db)))
                _wait("heartbeats succeeding again", lambda: failures() == 0, 15)
                new_pids = catalog_pids()
                assert len(new_pids) == 1 and new_pids[0] != old_pid, (old_pid, new_pids)
                status, body = _get(f"{base}/healthz")
                assert status == 200 and "heartbeat" not in body, (status, body)
                after = env.source_lsn()
                _wait("the slot confirmed past the WAL written after recovery", lambda: confirmed() >= after, 15)
                assert runner.is_alive()
            finally:
                stop.set()
                runner.join(30)


def test_failing_heartbeats_are_shown_by_status_and_cleared_after_recovery(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = harness.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=20)
    role = unique_name("hb")[:40]
    with psycopg.connect(env.source, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER REPLICATION").format(sql.Identifier(role)))
    granted = env.settings(heartbeat_interval=0.2)
    # status reads as the superuser of the fixtures: the tables capture creates belong to the test's role.
    observer = dataclasses.replace(granted, source_dsn=env.source,
                                   target_dsns={s: env.service_dsn(s) for s in granted.target_dsns})
    settings = dataclasses.replace(observer, source_dsn=make_conninfo(env.source, user=role))
    db = str(conninfo_to_dict(env.source)["dbname"])
    copied = _every_service_copied(env)
    stop = threading.Event()
    runner = threading.Thread(target=run_with_retries, args=("capture", lambda s: Capture(settings).run(s), stop),
                              daemon=True)

    def degraded() -> list[dict[str, object]]:
        picture = status.collect(observer)
        found: list[dict[str, object]] = json.loads(picture.as_json())["degraded"]
        return found

    runner.start()
    with psycopg.connect(make_conninfo(env.source, dbname="postgres"), autocommit=True) as admin:
        def catalog_pids() -> list[int]:
            return [r[0] for r in admin.execute(CATALOG_SESSIONS, {"db": db}).fetchall()]

        def health_sessions() -> int:
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                "AND application_name = 'splitter-capture-health'", (db,)).fetchone()
            return int(row[0]) if row else 0

        try:
            _wait("capture streaming, and the health reporter with its session",
                  lambda: copied() and len(catalog_pids()) == 1 and health_sessions() == 1, 90)
            assert degraded() == []
            admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
            try:
                admin.execute("SELECT pg_terminate_backend(%s)", (catalog_pids()[0],))
                _wait("status showing capture degraded", lambda: bool(degraded()), 30)
                picture = status.collect(observer)
                (row,) = json.loads(picture.as_json())["degraded"]
                assert (row["component"], row["service"], row["state"], row["problems"]) == (
                    "capture", "", "degraded", ["heartbeat"]), row
                assert "28000" in str(row["error"]), row  # the refusal's SQLSTATE, from the heartbeat's error
                table = status.render_table(picture)
                assert any(line.startswith("capture degraded (heartbeat) since") for line in table.splitlines()), table
            finally:
                admin.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role)))
            _wait("status clear again", lambda: degraded() == [], 30)
            assert "degraded" not in status.render_table(status.collect(observer))
            assert runner.is_alive()
        finally:
            stop.set()
            runner.join(30)
