"""Metrics, dashboards, alert rules and `splitter status` against a running pipeline and a real Prometheus.

The pipeline runs in-process (capture and seven workers in threads, each with its own metrics port)
under a workload; Debian's `/usr/bin/prometheus` scrapes it every second and loads the repository's
alert rules.  Every PromQL expression of the dashboards and rules must return data through
Prometheus's HTTP API; holding one worker must make its lag rise in Prometheus (and in `splitter
status`) and releasing it must bring it back to 0; a DSN password must never reach /metrics or logs.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from connectors.pg.state import cutover as cutover_state
from devtools import datagen, fixtures
from devtools.embedded.process import free_port
from devtools.workload.driver import Workload
from splitter.cli.commands import status as status_command
from splitter.observe import metrics
from splitter.ops import status
from splitter.ops.backfill import run_backfill
from splitter.ops.verify.run import verify
from splitter.pipeline.capture import Capture
from splitter.pipeline.config import Settings, build_settings
from splitter.pipeline.daemon import run_with_retries
from splitter.pipeline.worker import Worker
from splitter.topology.loading import load_topology
from tests.conftest import KafkaServer, PgServer

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "topology.py"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
ALERTS = ROOT / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
# Grafana's template variables, as a dashboard user with every service selected would get them.
GRAFANA_VARS = {"$__rate_interval": "10s", "$service": ".+"}
HELD = "post"


# -- helpers ----------------------------------------------------------------------------------------------


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for var, value in GRAFANA_VARS.items():
                    expr = expr.replace(var, value)
                out.append((f"{path.name}: {panel['title']} [{target['refId']}]", expr))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    """Each rule's expression with its threshold comparisons made `bool`, so the signal always has series."""
    text = ALERTS.read_text()
    out = []
    # The rule file is YAML; its exprs are either `expr: <one line>` or `expr: >-` folded blocks.
    for match in re.finditer(r"- alert: (\S+)\n(?:\s+#.*\n)*\s+expr: (>-\n((?:\s{10,}.*\n)+)|.*\n)", text):
        name, expr = match.group(1), match.group(3) or match.group(2)
        expr = " ".join(line.strip() for line in expr.strip().splitlines())
        out.append((name, re.sub(r"(==|!=|>=|<=|>|<)\s*(?=[0-9])", r"\1 bool ", expr)))
    return out


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, list[str]]) -> None:
        self.port = free_port()
        config = {  # JSON is YAML: no YAML library needed
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": t}]} for job, t in targets.items()],
        }
        cfg = workdir / "prometheus.yml"
        cfg.write_text(json.dumps(config))
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start:\n{(workdir / 'prometheus.log').read_text()}")
            time.sleep(0.2)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, check: Callable[[float | None], bool], timeout: float, what: str) -> float | None:
        deadline = time.monotonic() + timeout
        value = self.value(expr)
        while not check(value):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {expr} = {value} after {timeout:.0f}s")
            time.sleep(0.5)
            value = self.value(expr)
        return value

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def password_role(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    """A login role with a password (torn down after make_databases has dropped its databases)."""
    name = f"splitter_m_{uuid.uuid4().hex[:8]}"
    password = f"S3cret-{uuid.uuid4().hex}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER REPLICATION PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(password)))
    try:
        yield name, password
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _with_role(dsn: str, role: tuple[str, str]) -> str:
    return make_conninfo(dsn, user=role[0], password=role[1])


@pytest.fixture
def pipeline_settings(password_role: tuple[str, str], make_databases: Callable[..., dict[str, str]],
                      kafka_server: KafkaServer, unique_name: Callable[[str], str]) -> Settings:
    dsns = make_databases()
    with psycopg.connect(dsns["bento_social"], autocommit=True) as conn:
        fixtures.load_source_schema(conn)
        datagen.generate(conn, 150)
    for database in fixtures.TARGET_DATABASES:
        with psycopg.connect(dsns[database], autocommit=True) as conn:
            fixtures.load_target_schema(conn, database)
    topology = load_topology(TOPOLOGY)
    return build_settings(
        topology_path=str(TOPOLOGY), source_dsn=_with_role(dsns["bento_social"], password_role),
        kafka=kafka_server.bootstrap,
        target_dsns={s.name: _with_role(dsns[s.database], password_role) for s in topology.services},
        topic=unique_name("t"), slot=unique_name("slot")[:63], publication=unique_name("pub")[:63], env={})


# -- the test ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not Path(PROMETHEUS).exists(),
                    reason="Prometheus is not installed (apt-get install -y prometheus provides /usr/bin/prometheus)")
def test_pipeline_metrics_through_prometheus(
        pipeline_settings: Settings, password_role: tuple[str, str], tmp_path: Path,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO)
    settings = pipeline_settings
    password = password_role[1]
    services = [s.name for s in settings.topology.services]
    stop = threading.Event()
    endpoints: dict[str, metrics.ComponentMetrics] = {}
    threads: list[threading.Thread] = []
    prometheus: Prometheus | None = None
    workload_stop = threading.Event()
    workload_thread: threading.Thread | None = None
    broken_stop = threading.Event()

    def launch(name: str, m: metrics.ComponentMetrics, factory: Callable[[], Any], ev: threading.Event) -> None:
        endpoints[name] = m
        t = threading.Thread(target=run_with_retries, args=(name, m.instrument(factory), ev), name=name, daemon=True)
        threads.append(t)
        t.start()

    try:
        launch("capture", metrics.start_metrics(settings, "capture", port=0, host="127.0.0.1"),
               lambda: Capture(settings), stop)
        for name in services:
            launch(name, metrics.start_metrics(settings, "worker", service=name, port=0, host="127.0.0.1",
                                               log_end="scan"),
                   _worker_factory(settings, name), stop)
        # A worker whose database does not exist: connection errors, with the password in its DSN.
        broken = build_settings(
            topology_path=str(TOPOLOGY), source_dsn=settings.source_dsn, kafka=settings.kafka_bootstrap,
            target_dsns={**settings.target_dsns,
                         HELD: make_conninfo(settings.target_dsn(HELD), dbname=f"missing_{uuid.uuid4().hex[:8]}")},
            topic=settings.topic, slot=settings.slot, publication=settings.publication, env={})
        launch("broken", metrics.start_metrics(broken, "worker", service=HELD, port=0, host="127.0.0.1"),
               lambda: Worker(broken, HELD), broken_stop)

        prometheus = Prometheus(tmp_path, {
            "splitter-capture": [f"127.0.0.1:{endpoints['capture'].port}"],
            "splitter-worker": [f"127.0.0.1:{endpoints[n].port}" for n in services],
        })
        workload = Workload(settings.source_dsn, seed=11, threads=2, rate=60)
        workload_thread = threading.Thread(target=workload.run, args=(workload_stop,), daemon=True)
        workload_thread.start()

        # The operator commands whose progress the worker exports, and a cutover row, so every panel has data.
        run_backfill(settings, "topic", "topics", chunk_rows=50)
        assert verify(settings, services=["topic"]).ok
        with psycopg.connect(settings.source_dsn, autocommit=True) as conn:
            cutover_state.ensure_schema(conn)  # the cutover's own table, in the source
            conn.execute("INSERT INTO splitter.cutover (service, state) VALUES (%s, 'streaming')", (HELD,))

        # Every worker positioned and caught up, as Prometheus sees it.
        prometheus.wait_for("count(splitter_worker_lag_seconds == 0)", lambda v: v == len(services), 120,
                            "services caught up")
        prometheus.wait_for("sum(increase(splitter_worker_rows_applied_total[10s]))", lambda v: bool(v and v > 0), 60,
                            "rows applied under the workload")
        time.sleep(3)  # a few more scrapes, so every rate() window holds two samples

        # The broken worker's database does not exist (SQLSTATE 3D000): it stops at once on a configuration
        # error instead of retrying: the error counted by kind, no retry, and /healthz 503.
        b_port = endpoints["broken"].port
        assert b_port is not None
        code, body = http_get(b_port, "/healthz")
        assert code == 503 and "configuration" in body, (code, body)
        _, body = http_get(b_port, "/metrics")
        errors = re.search(r'splitter_errors_total\{component="worker",kind="configuration",service="post"\} (\d+)',
                           body)
        retries = re.search(r'splitter_retries_total\{component="worker",service="post"\} (\d+)', body)
        assert errors and retries and int(errors.group(1)) == 1 and int(retries.group(1)) == 0, body
        for name in ["capture", *services]:
            port = endpoints[name].port
            assert port is not None
            assert http_get(port, "/healthz")[0] == 200, name

        # Every dashboard expression and every alert signal returns data through Prometheus.
        missing = [f"{where}: {expr}" for where, expr in dashboard_exprs() if not prometheus.query(expr)]
        assert not missing, "dashboard queries without data:\n" + "\n".join(missing)
        rules = alert_exprs()
        assert len(rules) == ALERTS.read_text().count("- alert:")
        missing = [f"{name}: {expr}" for name, expr in rules if not prometheus.query(expr)]
        assert not missing, "alert signals without data:\n" + "\n".join(missing)
        groups = prometheus.api("rules")["groups"]
        bad = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r.get("health") != "ok"]
        assert sum(len(g["rules"]) for g in groups) == len(rules) and not bad, bad
        assert (prometheus.value('sum(splitter_capture_records_total{op="c"})') or 0) > 0
        assert (prometheus.value("sum(splitter_worker_batch_rows_count)") or 0) > 0

        # Hold one worker: its lag rises in Prometheus and in `splitter status`; the others stay current.
        with psycopg.connect(settings.target_dsn(HELD), autocommit=True) as conn:
            conn.execute("INSERT INTO splitter.control(service, pause_at_lsn, requested_by, requested_at) "
                         "VALUES (%s, '0/1', 'test', now())", (HELD,))
        held = f'splitter_worker_lag_seconds{{service="{HELD}"}}'
        prometheus.wait_for(held, lambda v: v is not None and v > 5, 40, "held worker's lag")
        assert (prometheus.value(f'splitter_worker_hold_requested{{service="{HELD}"}}') or 0) == 1
        assert (prometheus.value(f'splitter_worker_lag_bytes{{service="{HELD}"}}') or 0) > 0
        others = prometheus.value(f'max(splitter_worker_lag_seconds{{service!="{HELD}"}})')
        assert others is not None and others < (prometheus.value(held) or 0)
        snap = status.collect(settings)
        by_service = {s.service: s for s in snap.services}
        assert by_service[HELD].state in ("held", "holding"), by_service[HELD]
        assert (by_service[HELD].lag_seconds or 0) > 3 and (by_service[HELD].lag_bytes or 0) > 0
        assert snap.source.slot_state == "streaming"
        assert by_service["auth"].state == "streaming" and by_service[HELD].cutover_state == "streaming"

        with psycopg.connect(settings.target_dsn(HELD), autocommit=True) as conn:
            conn.execute("DELETE FROM splitter.control WHERE service = %s", (HELD,))
        prometheus.wait_for(held, lambda v: v == 0, 40, "released worker's lag")

        # `splitter status --json` through the command-line parser the CLI uses.
        workload_stop.set()
        workload_thread.join(30)
        out = io.StringIO()
        args = _status_parser().parse_args([
            "status", "--json", "--topology", str(TOPOLOGY), "--source-dsn", settings.source_dsn,
            "--kafka", settings.kafka_bootstrap, "--topic", settings.topic, "--slot", settings.slot,
            "--publication", settings.publication,
            *[a for s in services for a in ("--target-dsn", f"{s}={settings.target_dsn(s)}")]])
        assert status_command.run(args, out=out) == 0
        report = json.loads(out.getvalue())
        assert [s["service"] for s in report["services"]] == services
        assert all(s["state"] == "streaming" and s["lag_seconds"] == 0 for s in report["services"]), report
        assert report["services"][0]["applied_lsn"] and report["source"]["current_lsn"]
        assert {c["service"]: c["state"] for c in report["cutover"]}[HELD] == "streaming"
        table = status.render_table(status.collect(settings, [HELD]))
        assert HELD in table and "streaming" in table

        # No password anywhere: /metrics of every endpoint, log records, stderr, status output.
        for name, m in endpoints.items():
            assert m.port is not None
            assert password not in http_get(m.port, "/metrics")[1], name
        assert any("missing_" in r.getMessage() or "does not exist" in r.getMessage() for r in caplog.records), \
            "the broken worker's error should have been logged"
        assert password not in caplog.text
        assert password not in out.getvalue() and password not in table
        captured = capfd.readouterr()
        assert password not in captured.err and password not in captured.out
    finally:
        workload_stop.set()
        stop.set()
        broken_stop.set()
        for t in threads:
            t.join(30)
        for m in endpoints.values():
            m.close()
        if prometheus is not None:
            prometheus.stop()


def _worker_factory(settings: Settings, service: str) -> Callable[[], Worker]:
    return lambda: Worker(settings, service)


def _status_parser() -> Any:
    import argparse

    from splitter.cli.options import shared_options as _common

    parser = argparse.ArgumentParser(prog="splitter")
    sub = parser.add_subparsers(dest="command", required=True)
    status_command.register(sub, _common())
    return parser


def _run_instrumented(m: metrics.ComponentMetrics, name: str, component: Callable[[], Any]) -> Callable[[], None]:
    """Run `component` under `m` in a thread, as `splitter worker` does; returns what stops it."""
    stop = threading.Event()
    runner = threading.Thread(target=run_with_retries, args=(name, m.instrument(component), stop))
    runner.start()

    def stop_it() -> None:
        stop.set()
        runner.join(10)

    return stop_it


def _scrape_until(port: int, wanted: list[str], timeout: float = 10.0) -> str:
    """/metrics once it holds every line of `wanted` (the poller fills some in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        body = http_get(port, "/metrics")[1]
        missing = [w for w in wanted if w not in body]
        if not missing:
            return body
        assert time.monotonic() < deadline, f"missing {missing} in:\n{body}"
        time.sleep(0.2)


def test_operator_progress_and_dead_letters_on_the_worker_endpoint(
        pg_server: PgServer, make_databases: Callable[..., dict[str, str]]) -> None:
    """What backfill and verify record in the service database, and the worker's dead letters, are exported."""
    from connectors.pg.state import backfills as backfill_store
    from connectors.pg.state import verify_progress
    from connectors.pg.state.schema import ensure_state_schema
    from splitter.pipeline.worker import WorkerStats

    service_db = make_databases(names=("user_db",))["user_db"]
    settings = build_settings(topology_path=str(TOPOLOGY), source_dsn=pg_server.dsn("postgres"),
                              kafka="127.0.0.1:1", target_dsns={"user": service_db}, env={})
    with psycopg.connect(service_db, autocommit=True) as conn:
        ensure_state_schema(conn)
        job = backfill_store.start_job(conn, "user", "public.users", "{}", 10)
        backfill_store.set_estimate(conn, job.id, 70)
        backfill_store.chunk_applied(conn, job.id, 1, 6, 1, ["k"], final=False)
        verify_progress.started(conn, "user", 4)
        for n in range(3):
            verify_progress.table_done(conn, "user", mismatched=n == 1, last=False)

    class Idle:
        stats = WorkerStats()

        def run(self, stop: threading.Event) -> None:
            self.stats.dead_lettered = 2
            stop.wait()

    with metrics.start_metrics(settings, "worker", service="user", port=0, host="127.0.0.1",
                               poll_interval=0.2) as m:
        assert m.port is not None
        stop_idle = _run_instrumented(m, "idle", Idle)
        try:
            wanted = ['splitter_backfill_rows_copied{service="user",table="public.users"} 7.0',
                      'splitter_backfill_rows_estimated{service="user",table="public.users"} 70.0',
                      'splitter_backfill_running{service="user",table="public.users"} 1.0',
                      'splitter_verify_tables_checked{service="user"} 3.0',
                      'splitter_verify_tables{service="user"} 4.0',
                      'splitter_verify_tables_mismatched{service="user"} 1.0',
                      'splitter_verify_running{service="user"} 1.0',
                      'splitter_dead_letter_events_total{service="user"} 2.0']
            _scrape_until(m.port, wanted)
            with psycopg.connect(service_db, autocommit=True) as conn:
                verify_progress.table_done(conn, "user", mismatched=False, last=True)
            _scrape_until(m.port, ['splitter_verify_running{service="user"} 0.0',
                                   'splitter_verify_tables_checked{service="user"} 4.0'])
            # Unknown paths are 404.
            assert http_get(m.port, "/nope")[0] == 404
        finally:
            stop_idle()


def test_capture_endpoint_before_the_slot_exists(pg_server: PgServer) -> None:
    settings = build_settings(topology_path=str(TOPOLOGY), source_dsn=pg_server.dsn("postgres"),
                              kafka="127.0.0.1:1", env={})
    with metrics.start_metrics(settings, "capture", port=0, host="127.0.0.1") as m:
        assert m.port is not None
        # The poller reads the source on its own: no slot yet, but the WAL position is there.
        body = _scrape_until(m.port, ['splitter_source_wal_lsn_bytes{component="capture",service=""}'])
        assert "splitter_slot_lag_bytes" not in body  # the slot does not exist: absent, not 0
        # Starting (no loop tick yet) is healthy; unknown paths are 404.
        assert http_get(m.port, "/healthz")[0] == 200
        assert http_get(m.port, "/nope")[0] == 404


def test_healthz_turns_503_when_the_loop_stops_ticking(pg_server: PgServer) -> None:
    """A loop that stops polling its stop event (hung) is reported within health_max_age; ticking again heals it."""
    from splitter.pipeline.worker import WorkerStats

    settings = build_settings(topology_path=str(TOPOLOGY), source_dsn=pg_server.dsn("postgres"),
                              kafka="127.0.0.1:1", env={})
    hang = threading.Event()

    class Hanging:
        stats = WorkerStats()

        def run(self, stop: threading.Event) -> None:
            while not stop.is_set():
                if hang.is_set():
                    time.sleep(1.5)  # does not poll `stop`: a hung loop
                    hang.clear()
                stop.wait(0.05)

    with metrics.start_metrics(settings, "worker", service="auth", port=0, host="127.0.0.1",
                               health_max_age=0.5) as m:
        assert m.port is not None
        stop_hanging = _run_instrumented(m, "hanging", Hanging)
        try:
            time.sleep(0.3)
            assert http_get(m.port, "/healthz") == (200, "ok\n")
            hang.set()
            time.sleep(1.0)
            code, body = http_get(m.port, "/healthz")
            assert code == 503 and "has not ticked" in body, (code, body)
            time.sleep(1.0)
            assert http_get(m.port, "/healthz")[0] == 200
        finally:
            stop_hanging()
        code, body = http_get(m.port, "/healthz")
        assert code == 503 and "stopped" in body
