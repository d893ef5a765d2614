"""Capture starts while a service database is down: the others stream, and that service is copied once it answers.

interaction_db lives on a PostgreSQL server of its own, stopped before capture first starts (connection
refused).  Capture must create the slot, copy the six reachable services from its snapshot and stream;
once the server is back, capture copies interaction from a snapshot of its own (its checkpoint just
before that snapshot's consistent point), and its worker catches up.  A workload writes to the source the
whole time: every service, interaction included, must end equal to the source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from devtools import fixtures
from devtools.embedded.postgres import EmbeddedPostgres
from devtools.embedded.process import free_port
from devtools.workload.driver import Workload
from splitter.core.lsn import str_to_lsn
from tests.conftest import KafkaServer
from tests.harness import PipelineEnv, prepare

SERVICES = ("auth", "user", "post", "topic", "comment", "notification", "interaction")


def _checkpointed(env: PipelineEnv) -> set[str]:
    done = set()
    for service in SERVICES:
        try:
            with psycopg.connect(env.dsns[f"{service}_db"], autocommit=True, connect_timeout=5) as conn:
                if conn.execute("SELECT to_regclass('splitter.checkpoints') IS NOT NULL").fetchone() == (True,) and \
                        conn.execute("SELECT 1 FROM splitter.checkpoints WHERE service = %s", (service,)).fetchone():
                    done.add(service)
        except psycopg.OperationalError:
            pass  # its server is down
    return done


def _wait_caught_up(env: PipelineEnv, services: set[str], timeout: float = 120) -> None:
    """`env.wait_caught_up` for `services` only (it reads every service database, and one is down)."""
    target = env.source_lsn()
    deadline = time.monotonic() + timeout
    while True:
        behind = set()
        for service in services:
            with psycopg.connect(env.dsns[f"{service}_db"], autocommit=True) as conn:
                row = conn.execute("SELECT commit_lsn::text FROM splitter.checkpoints WHERE service = %s",
                                   (service,)).fetchone()
            if row is None or str_to_lsn(row[0]) < target:
                behind.add(service)
        if not behind:
            return
        assert time.monotonic() < deadline, f"{sorted(behind)} still behind {target:X}\n{env.logs()}"
        time.sleep(0.3)


@pytest.mark.timeout(400)
def test_capture_streams_while_a_service_database_is_down_and_copies_it_when_it_answers(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        pg_factory: Callable[..., EmbeddedPostgres], unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=100)
    own = pg_factory(port=free_port())
    with psycopg.connect(own.dsn(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE interaction_db")
    with psycopg.connect(own.dsn("interaction_db"), autocommit=True) as conn:
        fixtures.load_target_schema(conn, "interaction_db")
    env.dsns["interaction_db"] = own.dsn("interaction_db")
    env.own_server_databases.add("interaction_db")
    own.stop()

    workload = Workload(env.source, seed=33, threads=2)
    stop = threading.Event()
    runner = threading.Thread(target=workload.run, args=(stop,))
    runner.start()
    others = set(SERVICES) - {"interaction"}
    try:
        capture = env.start_capture()
        for service in SERVICES:
            env.start_worker(service)
        deadline = time.monotonic() + 90
        while _checkpointed(env) != others:
            assert capture.poll() is None, f"capture exited with {capture.returncode}\n{env.logs()}"
            assert time.monotonic() < deadline, f"the reachable services were never copied\n{env.logs()}"
            time.sleep(0.2)
        # The others stream while interaction_db is down: they follow the source.
        time.sleep(2)
        _wait_caught_up(env, others)
        assert capture.poll() is None, f"capture exited with {capture.returncode}\n{env.logs()}"
        assert "capture streams without it" in env.logs()

        own.start()
        deadline = time.monotonic() + 120
        while "interaction" not in _checkpointed(env):
            assert capture.poll() is None, f"capture exited with {capture.returncode}\n{env.logs()}"
            assert time.monotonic() < deadline, f"interaction was never copied\n{env.logs()}"
            time.sleep(0.5)
        time.sleep(2)  # the stream under the workload, interaction included
        stop.set()
        runner.join(60)
        assert sum(workload.counts().values()) > 50
        env.wait_caught_up(timeout=180)
        env.assert_all_match()
        assert capture.poll() is None, f"capture exited with {capture.returncode}\n{env.logs()}"
        assert "copying it from a snapshot of its own" in env.logs()
    finally:
        stop.set()
        runner.join(60)
        env.stop_all()
