"""Capture's heartbeats failing: counted, visible in /metrics and /healthz, and recovered by reconnecting.

Capture runs in-process with its metrics endpoint.  The test makes heartbeats fail for real: it stops
new connections to the source database (ALLOW_CONNECTIONS false; the replication stream, already
connected, keeps running) and terminates capture's catalog session (the `splitter-capture` client
backend that holds no advisory lock).  Every heartbeat then fails (the session is gone and reconnecting
is refused), so the consecutive-failure gauge rises past the error threshold and /healthz says so.
Once connections are allowed again, capture opens a new catalog session (a new backend pid, read from
pg_stat_activity) and heartbeats succeed: the gauge is back to 0 and the slot's confirmed position moves
past the WAL written after recovery.
"""

from __future__ import annotations

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
                _wait("capture streaming", lambda: confirmed() > 0 and len(catalog_pids()) == 1, 45)
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
