"""`splitter status` against real servers: its exit codes (issue 16, defect 3), lag seconds and bytes that
agree (defect 4), and `--watch`'s exit code on Ctrl-C.

Exit codes (README "Exit codes of splitter status"): 0 every service streams within --max-lag, 1 a service
lags past it or has not caught up, 3 a database cannot be read (down, wrong password) or a component stopped.
A private PostgreSQL with password authentication for one role serves the unreachable and wrong-password
cases (no pipeline needed: status reads the databases alone).  The lag cases run capture and the topic
worker in threads on the session's servers (tests.integration.test_replay's Stack and Pipeline): WAL that
holds nothing for the service (a table no service routes, written to while status runs) must read 0 bytes
and 0 s; a held service with writes waiting must read both above 0 and exit 1 past --max-lag.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from devtools.embedded.postgres import EmbeddedPostgres
from devtools.embedded.process import free_port
from splitter.core import exit_codes
from splitter.core.lsn import str_to_lsn
from splitter.topology.loading import load_topology
from tests.conftest import KafkaServer
from tests.integration.test_replay import ROOT, TOPOLOGY, Pipeline, Stack, make_stack, pipelines, run_cli

__all__ = ["pipelines"]  # the fixture, imported so pytest finds it here

PASSWORD = "St4tus-pw-1234"
WRONG_PASSWORD = "Wr0ng-st4tus-99"
ROLE = "status_pw"
SERVICES = [s.name for s in load_topology(TOPOLOGY).services]


@dataclass
class Private:
    pg: EmbeddedPostgres

    def dsn(self, dbname: str, user: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@127.0.0.1:{self.pg.port}/{dbname}"


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("status_cli") / "pg")
    pg.start()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(PASSWORD)))
            conn.execute("CREATE DATABASE status_src")
        hba = pg.data_dir / "pg_hba.conf"
        hba.write_text(f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        yield Private(pg)
    finally:
        pg.cleanup()


def _args(source: str, targets: dict[str, str], *extra: str) -> list[str]:
    out = ["status", "--json", "--topology", str(TOPOLOGY), "--source-dsn", source, "--kafka", "127.0.0.1:9",
           "--slot", "status_cli", "--publication", "status_cli", "--topic", "status_cli", *extra]
    for service, dsn in targets.items():
        out += ["--target-dsn", f"{service}={dsn}"]
    return out


def _report(out: str) -> dict[str, Any]:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # exactly one JSON object per report
    report: dict[str, Any] = json.loads(lines[0])
    return report


def test_every_service_unreachable_or_refusing_the_password_exits_3(
        private: Private, capsys: pytest.CaptureFixture[str]) -> None:
    source = private.dsn("status_src")
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing_listens_here"

    code, out, err = run_cli(capsys, *_args(source, dict.fromkeys(SERVICES, closed)))
    report = _report(out)
    assert {s["service"]: s["state"] for s in report["services"]} == dict.fromkeys(SERVICES, "unreachable"), report
    assert code == exit_codes.UNREACHABLE == 3, (code, err)
    assert report["verdict"]["exit_code"] == 3 and report["verdict"]["meaning"] == "unreachable", report
    assert len(report["verdict"]["reasons"]) == len(SERVICES), report

    wrong = private.dsn("status_src", ROLE, WRONG_PASSWORD)
    code, out, err = run_cli(capsys, *_args(source, dict.fromkeys(SERVICES, wrong)))
    report = _report(out)
    assert {(s["state"], s["sqlstate"]) for s in report["services"]} == {("misconfigured", "28P01")}, report
    assert code == 3, (code, err)

    # The source refuses the password (every service database answers): 3 as well.
    right = private.dsn("status_src", ROLE, PASSWORD)
    code, out, err = run_cli(capsys, *_args(wrong, dict.fromkeys(SERVICES, right)))
    report = _report(out)
    assert (report["source"]["reachable"], report["source"]["sqlstate"]) == (False, "28P01"), report
    assert code == 3, (code, err)
    assert PASSWORD not in out + err and WRONG_PASSWORD not in out + err

    # Everything answers with the right password, but nothing was ever copied (no slot, no checkpoint): 1.
    code, out, err = run_cli(capsys, *_args(right, dict.fromkeys(SERVICES, right)))
    report = _report(out)
    assert {s["state"] for s in report["services"]} == {"not started"}, report
    assert (code, report["verdict"]["meaning"]) == (exit_codes.LAGGING, "lagging"), (code, err, report)


def test_an_unknown_service_is_a_usage_error(private: Private, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_cli(capsys, *_args(private.dsn("status_src"), {}, "--service", "nope"))
    assert code == exit_codes.CONFIG and "nope" in err, (code, err)


class _Noise:
    """Writes to a table no service routes, in the source, until stopped: the source's WAL moves on with
    nothing in it for any service to apply."""

    def __init__(self, source: str) -> None:
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("CREATE TABLE status_noise (id bigserial PRIMARY KEY, pad text NOT NULL)")
        self._source = source
        self._stop = threading.Event()
        self.writes = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self._source, autocommit=True) as conn:
            while not self._stop.is_set():
                conn.execute("INSERT INTO status_noise (pad) SELECT repeat('n', 2000) FROM generate_series(1, 5)")
                self.writes += 1
                self._stop.wait(0.05)

    def __enter__(self) -> _Noise:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _service(report: dict[str, Any], name: str = "topic") -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in report["services"] if s["service"] == name)
    return found


def _hold(stack: Stack, on: bool) -> None:
    with psycopg.connect(stack.dsn("topic"), autocommit=True) as conn:
        if on:
            conn.execute("INSERT INTO splitter.control(service, pause_at_lsn, requested_by, requested_at) "
                         "VALUES ('topic', '0/1', 'test_status_cli', now())")
        else:
            conn.execute("DELETE FROM splitter.control WHERE service = 'topic'")


def _watch(stack: Stack, refreshes: int, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    """`splitter status --watch 0.5 --json` as a child process, interrupted (SIGINT) after `refreshes` refreshes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITTER_")}
    proc = subprocess.Popen([sys.executable, "-m", "splitter", "status", "--watch", "0.5", "--json",
                             "--service", "topic", *extra, *stack.cli_args()], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while len(lines) < refreshes:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(lines) == refreshes, (lines, proc.stderr.read() if proc.stderr else "")
    return code, [json.loads(line) for line in lines]


def _streaming_topic(make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
                     unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> tuple[Stack, Pipeline]:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["topic"], scale=10)
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline, timeout=120)
    return stack, pipeline


@pytest.mark.timeout(300)
def test_wal_with_nothing_for_the_service_reads_zero_bytes_and_zero_seconds(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], capsys: pytest.CaptureFixture[str]) -> None:
    stack, _pipeline = _streaming_topic(make_databases, kafka_server, unique_name, pipelines)
    # Caught up while the source's WAL moves on for a table no service routes: 0 bytes and 0 s, exit 0.
    with _Noise(stack.source) as noise:
        time.sleep(1.0)
        code, out, err = run_cli(capsys, "status", "--json", "--service", "topic", *stack.cli_args())
        assert noise.writes > 10
    report = _report(out)
    topic = _service(report)
    assert str_to_lsn(report["source"]["current_lsn"]) > str_to_lsn(topic["applied_lsn"]), report  # WAL moved on
    assert (topic["state"], topic["lag_bytes"], topic["lag_seconds"]) == ("streaming", 0, 0.0), report
    assert code == exit_codes.OK, (code, err, report)


@pytest.mark.timeout(300)
def test_a_held_service_with_work_left_reads_behind_and_exits_1_past_max_lag(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], capsys: pytest.CaptureFixture[str]) -> None:
    stack, pipeline = _streaming_topic(make_databases, kafka_server, unique_name, pipelines)
    status = ["status", "--json", "--service", "topic", *stack.cli_args()]
    code, out, err = run_cli(capsys, *status)
    assert code == exit_codes.OK, (code, err, out)  # healthy

    # Held, with changes for it waiting: both above 0; past --max-lag that is exit 1, within it 0.
    _hold(stack, True)
    stack.source_exec("UPDATE topics SET name = name || '.' WHERE id IN (SELECT id FROM topics ORDER BY id LIMIT 5)")
    time.sleep(4.0)  # more than the lag's resolution (about 2.5 s) and --max-lag below
    code, out, err = run_cli(capsys, *status, "--max-lag", "1s")
    report = _report(out)
    topic = _service(report)
    assert topic["state"] in ("held", "holding"), report
    assert topic["lag_bytes"] > 0 and topic["lag_seconds"] > 1.0, report
    assert code == exit_codes.LAGGING == 1, (code, err, report)
    assert report["verdict"]["reasons"] and "service topic" in report["verdict"]["reasons"][0], report
    code, out, _err = run_cli(capsys, *status, "--max-lag", "1h")
    assert code == exit_codes.OK, out

    # --watch: one JSON object per refresh; Ctrl-C returns the last refresh's code (1 here, as it lags).
    code, reports = _watch(stack, 2, "--max-lag", "1s")
    assert [r["verdict"]["exit_code"] for r in reports] == [1, 1] and code == 1, reports
    assert all(_service(r)["lag_bytes"] > 0 and _service(r)["lag_seconds"] > 0 for r in reports), reports

    # Released: caught up again, 0 bytes, 0 s, exit 0; and the watch's Ctrl-C then returns 0.
    _hold(stack, False)
    stack.wait_caught_up(["topic"], pipeline=pipeline)
    code, out, err = run_cli(capsys, *status)
    topic = _service(_report(out))
    assert (topic["lag_bytes"], topic["lag_seconds"], code) == (0, 0.0, exit_codes.OK), (err, out)
    code, reports = _watch(stack, 2)
    assert code == 0 and reports[-1]["verdict"]["exit_code"] == 0, reports
