"""Bad input against real servers: credentials, hosts and privileges that are wrong, a lost slot, a
service database that drops the worker's session, and source tables altered while streaming.

Operator-facing failures run `python -m splitter ...` as a real child process (settings in the
environment, as `splitter run` hands them on) and look at what a person would see: the exit code, the
lines on stderr and `splitter status --json`.  A wrong password, a missing database or a role without
REPLICATION stops `capture` or `worker` at once (exit code 2, one error line naming the SQLSTATE);
what may heal by itself (a closed port) is retried forever, with backoff: for those the test reads the
warning lines for a few seconds, then stops the process with SIGTERM.  A private
PostgreSQL (password authentication for two roles, max_slot_wal_keep_size = 1MB) serves the credential
and slot tests; the rest share the session's servers and run the pipeline in threads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from psycopg import sql

from devtools import datagen, fixtures
from devtools.embedded.postgres import EmbeddedPostgres
from devtools.embedded.process import free_port
from devtools.workload.driver import Workload
from splitter.core.errors import FatalError, RetryableError
from splitter.core.exit_codes import CONFIG as EXIT_CONFIG
from splitter.core.exit_codes import FATAL as EXIT_FATAL
from splitter.core.exit_codes import UNREACHABLE as EXIT_UNREACHABLE
from splitter.pipeline.config import Settings
from tests.conftest import KafkaServer
from tests.integration.test_replay import ROOT, TOPOLOGY, Pipeline, make_stack, pipelines, subset

__all__ = ["pipelines"]  # the fixture, imported so pytest finds it here

PASSWORD = "Pw-s3cret-4711"
WRONG_PASSWORD = "Wr0ng-pw-0815"
NOREPL_PASSWORD = "N0repl-pw-2323"


@dataclass
class PrivateServer:
    pg: EmbeddedPostgres
    topology_file: Path  # topology.py with the topic service only

    def dsn(self, dbname: str, user: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@127.0.0.1:{self.pg.port}/{dbname}"

    def create_database(self, name: str, *, source: bool = False, scale: int = 5) -> str:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with psycopg.connect(self.dsn(name), autocommit=True) as conn:
            if source:
                fixtures.load_source_schema(conn)
                datagen.generate(conn, scale)
            else:
                fixtures.load_target_schema(conn, "topic_db")
        return self.dsn(name)


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    base = tmp_path_factory.mktemp("bad_input")
    pg = EmbeddedPostgres(base / "pg", extra_settings={"max_slot_wal_keep_size": "1MB", "wal_keep_size": "0"})
    pg.start()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE splitter_pw LOGIN SUPERUSER PASSWORD {}").format(sql.Literal(PASSWORD)))
            conn.execute(sql.SQL("CREATE ROLE splitter_norepl LOGIN PASSWORD {}").format(
                sql.Literal(NOREPL_PASSWORD)))
        hba = pg.data_dir / "pg_hba.conf"
        hba.write_text("host all splitter_pw 127.0.0.1/32 scram-sha-256\n"
                       "host all splitter_norepl 127.0.0.1/32 scram-sha-256\n"
                       "host replication splitter_norepl 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        topology_file = base / "topology_topic.py"
        topology_file.write_text(
            "import runpy\n\n"
            f"_FULL = runpy.run_path({str(TOPOLOGY)!r})['TOPOLOGY']\n"
            "TOPOLOGY = _FULL.subset(['topic'])\n")
        yield PrivateServer(pg, topology_file)
    finally:
        pg.cleanup()


class Child:
    """`python -m splitter <args>` with settings in its environment; stderr collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("SPLITTER_")}
        full.update(env)
        full["SPLITTER_LOG_LEVEL"] = "INFO"
        self.proc = subprocess.Popen([sys.executable, "-m", "splitter", *args], env=full, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self._out: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def out(self) -> str:
        return "\n".join(self._out)

    def warnings(self) -> list[str]:
        return [line for line in self.err if " WARNING " in line and "retrying in" in line]

    def finish(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.finish(20)

    def text(self) -> str:
        return self.out + "\n" + "\n".join(self.err)


def _env(topology: Path, source: str, kafka: str, *, topic_dsn: str | None = None, name: str = "x") -> dict[str, str]:
    env = {"SPLITTER_TOPOLOGY": str(topology), "SPLITTER_SOURCE_DSN": source, "SPLITTER_KAFKA": kafka,
           "SPLITTER_TOPIC": f"bad_input_{name}", "SPLITTER_SLOT": f"bad_input_{name}",
           "SPLITTER_PUBLICATION": f"bad_input_{name}"}
    if topic_dsn is not None:
        env["SPLITTER_TARGET_DSN_TOPIC"] = topic_dsn
    return env


def _status(env: dict[str, str]) -> dict[str, Any]:
    """`splitter status --json`; every picture here has a database status cannot read: exit code 3."""
    child = Child(["status", "--json"], env)
    assert child.finish(60) == EXIT_UNREACHABLE, child.text()
    report: dict[str, Any] = json.loads(child.out.strip().splitlines()[-1])
    return report


def test_wrong_password_missing_database_and_missing_privilege_stop_at_once_naming_the_sqlstate(
        private: PrivateServer, kafka_server: KafkaServer) -> None:
    source = private.create_database("cred_src", source=True)
    topic_db = private.create_database("cred_topic")
    with psycopg.connect(source, autocommit=True) as conn:  # so capture gets as far as the replication connection
        conn.execute("CREATE PUBLICATION bad_input_norepl FOR TABLE topics")
    wrong = private.dsn("cred_src", "splitter_pw", WRONG_PASSWORD)
    wrong_topic = private.dsn("cred_topic", "splitter_pw", WRONG_PASSWORD)
    norepl = private.dsn("cred_src", "splitter_norepl", NOREPL_PASSWORD)
    missing_src, missing_topic = private.dsn("cred_src_missing"), private.dsn("cred_topic_missing")
    kafka, topo = kafka_server.bootstrap, private.topology_file
    # (command, environment, the SQLSTATE its one error line names); all run at once, to keep the test short.
    final = {
        "capture, wrong password": (["capture"], _env(topo, wrong, kafka, topic_dsn=topic_db), "28P01"),
        "worker, wrong password": (["worker", "--service", "topic"], _env(topo, source, kafka, topic_dsn=wrong_topic),
                                   "28P01"),
        "capture, no REPLICATION": (["capture"], _env(topo, norepl, kafka, topic_dsn=topic_db, name="norepl"),
                                    "42501"),
        "capture, missing database": (["capture"], _env(topo, missing_src, kafka, topic_dsn=topic_db), "3D000"),
        "worker, missing database": (["worker", "--service", "topic"],
                                     _env(topo, source, kafka, topic_dsn=missing_topic), "3D000"),
    }
    children = {name: Child(args, env) for name, (args, env, _) in final.items()}
    plan = Child(["plan"], _env(topo, wrong, kafka, topic_dsn=topic_db))
    try:
        assert plan.finish(60) == 1, plan.text()
        failed = [line for line in plan.out.splitlines() if line.startswith("ERROR") and "connection-failed" in line]
        assert len(failed) == 1, plan.out
        assert "cred_src" in failed[0] and "password authentication failed" in failed[0], failed[0]
        codes = {name: child.finish(30) for name, child in children.items()}  # none retries: each exits by itself
    finally:
        for child in children.values():
            child.terminate()
    for name, (_, _, sqlstate) in final.items():
        child = children[name]
        assert codes[name] == EXIT_CONFIG, f"{name}: {child.text()}"
        errors = [line for line in child.err if " ERROR " in line]
        assert len(errors) == 1 and f"SQLSTATE {sqlstate}" in errors[0], f"{name}: {child.text()}"
        assert "configuration" in errors[0] and not child.warnings(), f"{name}: {child.text()}"

    # `splitter status` (same settings, so the same refusal) names the class and the SQLSTATE; where the stop
    # record could not be written (that very database refused it), that is the true picture.
    report = _status(_env(topo, wrong, kafka, topic_dsn=wrong_topic))
    assert (report["source"]["reachable"], report["source"]["error_class"], report["source"]["sqlstate"]) == (
        False, "configuration", "28P01"), report
    (topic,) = report["services"]
    assert (topic["state"], topic["error_class"], topic["sqlstate"]) == ("misconfigured", "configuration", "28P01")
    report = _status(_env(topo, source, kafka, topic_dsn=missing_topic))
    (topic,) = report["services"]
    assert (topic["state"], topic["sqlstate"]) == ("misconfigured", "3D000"), report
    assert report["source"]["reachable"] and report["source"]["error_class"] is None, report
    report = _status(_env(topo, norepl, kafka, topic_dsn=topic_db, name="norepl"))
    assert (report["source"]["error_class"], report["source"]["sqlstate"]) == ("configuration", "42501"), report
    for child in [plan, *children.values()]:
        text = child.text()
        assert "Traceback" not in text, text
        assert PASSWORD not in text and WRONG_PASSWORD not in text and NOREPL_PASSWORD not in text, text


def test_a_closed_port_is_retried_with_growing_backoff(private: PrivateServer, kafka_server: KafkaServer) -> None:
    source = private.create_database("closed_src", source=True)
    topic_db = private.create_database("closed_topic")
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/closed_src"
    kafka, topo = kafka_server.bootstrap, private.topology_file
    retrying = {
        "capture": (["capture"], _env(topo, closed, kafka, topic_dsn=topic_db),
                    "cannot connect to the source database"),
        "worker": (["worker", "--service", "topic"], _env(topo, source, kafka, topic_dsn=closed),
                   "cannot connect to database of service topic"),
    }
    children = {name: Child(args, env) for name, (args, env, _) in retrying.items()}
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(len(c.warnings()) < 3 for c in children.values()):
            time.sleep(0.2)
        report = _status(_env(topo, source, kafka, topic_dsn=closed))
    finally:
        codes = {name: child.terminate() for name, child in children.items()}
    for name, (_, _, needle) in retrying.items():
        child = children[name]
        warnings = child.warnings()
        assert len(warnings) >= 3 and all(needle in w for w in warnings), f"{name}: {child.text()}"
        delays = [float(m.group(1)) for w in warnings if (m := re.search(r"retrying in (\d+(?:\.\d+)?)s", w))]
        assert delays[:3] == [0.5, 1.0, 2.0], f"{name}: {delays}"
        assert codes[name] == 0, f"{name}: SIGTERM should stop it cleanly: {child.text()}"
        assert "Traceback" not in child.text() and "SQLSTATE" not in child.text(), child.text()
    (topic,) = report["services"]
    assert (topic["state"], topic["error_class"], topic["sqlstate"]) == ("unreachable", "retryable", None), report


def test_capture_refuses_a_slot_postgres_invalidated(private: PrivateServer, kafka_server: KafkaServer,
                                                     unique_name: Callable[[str], str]) -> None:
    source = private.create_database("lost_src", source=True)
    topic_db = private.create_database("lost_topic")
    settings = Settings(topology=subset(["topic"]), source_dsn=source, kafka_bootstrap=kafka_server.bootstrap,
                        target_dsns={"topic": topic_db}, topic=unique_name("t"), slot="lost_slot",
                        publication="lost_pub")
    pipeline = Pipeline(settings)
    try:
        pipeline.start_all()
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("UPDATE topics SET name = name || '!'")
        deadline = time.monotonic() + 60
        while True:
            with psycopg.connect(topic_db, autocommit=True) as conn:
                try:
                    n = conn.execute("SELECT count(*) FROM topic.topics WHERE name LIKE '%!'").fetchone()
                except psycopg.errors.UndefinedTable:
                    n = None
            if n and n[0] > 0:
                break
            assert time.monotonic() < deadline, pipeline.errors
            time.sleep(0.2)
    finally:
        pipeline.close()

    # Capture is down; the source keeps writing WAL past max_slot_wal_keep_size (1MB) until PostgreSQL drops it.
    with psycopg.connect(source, autocommit=True) as conn:
        for _ in range(50):
            conn.execute("INSERT INTO topics (id, name, color, created_at, updated_at) "
                         "SELECT gen_random_uuid()::text, 'w', '#000', now(), now() FROM generate_series(1, 200)")
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'lost_slot'").fetchone()
            if row is not None and row[0] == "lost":
                break
        assert row is not None and row[0] == "lost", row

    child = Child(["capture"], {
        "SPLITTER_TOPOLOGY": str(private.topology_file), "SPLITTER_SOURCE_DSN": source,
        "SPLITTER_KAFKA": settings.kafka_bootstrap, "SPLITTER_TOPIC": settings.topic,
        "SPLITTER_SLOT": settings.slot, "SPLITTER_PUBLICATION": settings.publication,
        "SPLITTER_TARGET_DSN_TOPIC": topic_db})
    try:
        code = child.finish(60)
    finally:
        child.terminate()
    text = child.text()
    assert code == EXIT_FATAL, text
    errors = [line for line in child.err if " ERROR " in line]
    assert len(errors) == 1, text
    assert "replication slot 'lost_slot' was invalidated" in errors[0], errors[0]
    assert "SELECT pg_drop_replication_slot('lost_slot')" in errors[0] and "re-copy" in errors[0], errors[0]
    assert "Traceback" not in text and not child.warnings(), text


def test_worker_reconnects_after_its_session_is_terminated_and_resumes_exactly(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"], scale=20)
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline)
    post_db = stack.dsn("post")
    workload = Workload(stack.source, seed=41, threads=2)
    stop = threading.Event()
    runner = threading.Thread(target=workload.run, args=(stop,))
    runner.start()
    killed = 0
    try:
        with psycopg.connect(post_db, autocommit=True) as admin:
            for _ in range(3):
                time.sleep(1.2)
                deadline = time.monotonic() + 15
                while True:  # the worker's session, once it has (re)connected
                    rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE application_name = 'splitter-worker-post'").fetchall()
                    if rows:
                        killed += sum(1 for r in rows if r[0])
                        break
                    assert time.monotonic() < deadline, pipeline.errors
                    time.sleep(0.1)
    finally:
        stop.set()
        runner.join(60)
    assert killed >= 3 and workload.total > 50
    stack.wait_caught_up(pipeline=pipeline, timeout=90)
    stack.matches("post")
    retried = [e for e in pipeline.errors["post"] if isinstance(e, RetryableError)]
    assert len(retried) >= 3, pipeline.errors["post"]
    assert all("service post" in str(e) for e in retried), retried
    assert len(retried) == len(pipeline.errors["post"]) and pipeline.running("post")


def test_source_table_altered_while_streaming(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post", "topic"], scale=10)
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline)

    # A column nobody reads: the topic worker goes on and stays exact.
    stack.source_exec("ALTER TABLE topics ADD COLUMN description text DEFAULT 'new'",
                      "UPDATE topics SET description = 'about ' || name, post_count = coalesce(post_count, 0) + 1",
                      "INSERT INTO topics (id, name, color, created_at, updated_at, description) "
                      "VALUES ('added-topic', 'Added', '#abc', now(), now(), 'x')")
    stack.wait_caught_up(pipeline=pipeline)
    stack.matches("topic")
    stack.matches("post")

    # A column topology.py reads is dropped: the topic worker stops there, naming table and column.
    topic_before = stack.checkpoint("topic")
    stack.source_exec("ALTER TABLE topics DROP COLUMN color",
                      "UPDATE topics SET name = name || ' (renamed)' WHERE id = 'added-topic'",
                      "UPDATE posts SET liked_count = coalesce(liked_count, 0) + 1")
    assert pipeline.wait_exit("topic") == EXIT_FATAL
    error = pipeline.errors["topic"][-1]
    assert isinstance(error, FatalError)
    assert "source table public.topics no longer has column(s) color" in str(error), error
    assert "service topic" in str(error)
    with psycopg.connect(stack.dsn("topic")) as conn:
        row = conn.execute("SELECT name FROM topic.topics WHERE id = 'added-topic'").fetchone()
    assert row is not None and row[0] == "Added"  # nothing applied from the drop on
    after = stack.checkpoint("topic")
    assert topic_before is not None and after is not None and after[1] >= topic_before[1]

    # Other services go on.
    stack.source_exec("INSERT INTO posts (id, content, author_id, topic_id, created_at, updated_at) "
                      "VALUES ('after-drop', 'still flowing', 'a', 'added-topic', now(), now())")
    stack.wait_caught_up(["post"], pipeline=pipeline)
    stack.matches("post")
    assert pipeline.running("post") and not pipeline.errors["post"]
