"""The daemon against real servers: `splitter run` does not spin on a fatal child, and retry backoff lasts
only as long as the fault.

Everything runs as real `python -m splitter ...` processes (settings in the environment, as `splitter
run` hands them on; `Child` from test_bad_input collects their lines), on a source with one or two
services (`make_stack` from test_replay).  Faults are what the servers really do: a NULL the source
allows and the service database refuses (the worker's `on_error = "stop"` makes that fatal), a
terminated session, a service database server that is shut down for a few seconds.  What is asserted
comes from the processes' own lines (which process started, the retry delays each logged), the exit
code, `splitter status --json` and capture's /metrics and /healthz.  A service database that disappears
(renamed: SQLSTATE 3D000) stops its worker at once, and capture's endpoint and status name the cause.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devtools import fixtures
from devtools.embedded.postgres import EmbeddedPostgres
from devtools.embedded.process import free_port_block
from splitter.core.exit_codes import FATAL as EXIT_FATAL
from splitter.core.exit_codes import LAGGING as STATUS_LAGGING
from splitter.core.exit_codes import OK as STATUS_OK
from splitter.core.exit_codes import UNREACHABLE as STATUS_UNREACHABLE
from splitter.pipeline.config import Settings
from tests.conftest import KafkaServer
from tests.integration.test_bad_input import Child
from tests.integration.test_replay import SOURCE, TOPOLOGY, Stack, make_stack, subset

_PID = re.compile(r" \[(\d+)\] ")
_DELAY = re.compile(r"retrying in (\d+(?:\.\d+)?)s")


def _topology_file(tmp_path: Path, services: list[str]) -> Path:
    """topology.py with only `services`, as a file a child process can load."""
    path = tmp_path / "topology_subset.py"
    path.write_text(
        "import runpy\n\n"
        f"_FULL = runpy.run_path({str(TOPOLOGY)!r})['TOPOLOGY']\n"
        f"TOPOLOGY = _FULL.subset({services!r})\n")
    return path


def _env(settings: Settings, topology: Path) -> dict[str, str]:
    env = {"SPLITTER_TOPOLOGY": str(topology), "SPLITTER_SOURCE_DSN": settings.source_dsn,
           "SPLITTER_KAFKA": settings.kafka_bootstrap, "SPLITTER_TOPIC": settings.topic,
           "SPLITTER_SLOT": settings.slot, "SPLITTER_PUBLICATION": settings.publication}
    for name, dsn in settings.target_dsns.items():
        env[f"SPLITTER_TARGET_DSN_{name.upper()}"] = dsn
    return env


def _wait(what: str, check: Callable[[], bool], timeout: float, *children: Child) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(c.text()[-6000:] for c in children))
        time.sleep(0.2)


def _processes_naming(child: Child, needle: str) -> set[str]:
    """The pids of the processes (children of `splitter run`) that logged a line containing `needle`.

    A worker started with a metrics port logs `worker[S]: metrics on ...` once per process start."""
    return {m.group(1) for line in child.err if needle in line and (m := _PID.search(line))}


def _status(env: dict[str, str]) -> dict[str, object]:
    """`splitter status --json`; its exit code follows the status table (0 streaming, 1 lagging, 3 a database
    that cannot be read or a component stopped), the same verdict the report carries."""
    child = Child(["status", "--json"], env)
    code = child.finish(60)
    report: dict[str, object] = json.loads(child.out.strip().splitlines()[-1])
    assert code in (STATUS_OK, STATUS_LAGGING, STATUS_UNREACHABLE), child.text()
    assert code == report["verdict"]["exit_code"], child.text()  # type: ignore[index]
    return report


def _http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def _delays(child: Child) -> list[float]:
    return [float(m.group(1)) for line in child.warnings() if (m := _DELAY.search(line))]


def _more_delays_than(child: Child, n: int) -> Callable[[], bool]:
    return lambda: len(_delays(child)) > n


def _caught_up(stack: Stack, services: list[str]) -> Callable[[], bool]:
    target = stack.source_lsn()
    return lambda: all((cp := stack.checkpoint(s)) is not None and cp[1] >= target for s in services)


def test_run_keeps_a_fatal_worker_down_names_it_and_exits_when_nothing_can_progress(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    services = ["topic", "post"]  # both keep on_error = "stop"
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, services, scale=10)
    env = _env(stack.settings, _topology_file(tmp_path, services))
    port = free_port_block(3)  # `run` gives capture base+0 and worker i base+i
    run = Child(["run", "--metrics-port", str(port)], env)
    try:
        _wait("the initial copy and both workers", _caught_up(stack, services), 120, run)

        # A NULL colour the source now allows and topic_db refuses: the topic worker stops (fatal).
        stack.source_exec("ALTER TABLE topics ALTER COLUMN color DROP NOT NULL",
                          "INSERT INTO topics (id, name, color, created_at, updated_at) "
                          "VALUES ('bad-topic', 'No colour', NULL, now(), now())")
        _wait("the topic worker's fatal error", lambda: "Service topic stops here" in "\n".join(run.err), 60, run)
        time.sleep(15)  # the old supervisor restarted it 4-5 times in this much time
        assert len(_processes_naming(run, "worker[topic]: metrics on")) == 1, run.text()  # one start
        assert run.proc.poll() is None, run.text()  # the post worker still runs: degraded, not stopped

        report = _status(env)
        by_service = {s["service"]: s for s in report["services"]}  # type: ignore[attr-defined]
        assert by_service["topic"]["state"] == "stopped", report
        assert "Service topic stops here" in by_service["topic"]["last_error"], report
        assert "SQLSTATE 23502" in by_service["topic"]["last_error"], report
        assert by_service["post"]["state"] == "streaming", report
        stopped = [(c["component"], c["service"], c["exit_class"], c["exit_code"])
                   for c in report["stopped"]]  # type: ignore[attr-defined]
        assert stopped == [("worker", "topic", "fatal", EXIT_FATAL)], report

        # Capture's endpoint (the one `splitter run` keeps up) says which component stopped and of what kind.
        wanted = 'splitter_component_stopped{component="worker",kind="fatal",service="topic"} 1.0'
        _wait("the stopped metric", lambda: wanted in _http(port, "/metrics")[1], 20, run)
        body = _http(port, "/metrics")[1]
        assert 'splitter_component_stopped{component="worker",kind="fatal",service="post"} 0.0' in body, body
        code, health = _http(port, "/healthz")
        assert code == 200 and "worker[topic] stopped (fatal" in health, (code, health)

        # The post worker stops too: no worker is left, nothing can make progress: `splitter run` exits 3.
        stack.source_exec("ALTER TABLE posts ALTER COLUMN content DROP NOT NULL",
                          "INSERT INTO posts (id, content, author_id, topic_id, created_at, updated_at) "
                          "VALUES ('null-post', NULL, 'a', 't', now(), now())")
        assert run.finish(90) == EXIT_FATAL, run.text()
        assert any("nothing can make progress" in line for line in run.err), run.text()
        report = _status(env)
        assert {s["service"]: s["state"] for s in report["services"]} == {  # type: ignore[attr-defined]
            "topic": "stopped", "post": "stopped"}, report
    finally:
        run.terminate()

    # Fixed in the targets: a new `splitter run` applies both rows, and the stop records are cleared.
    for service, ddl in (("topic", "ALTER TABLE topic.topics ALTER COLUMN color DROP NOT NULL"),
                         ("post", "ALTER TABLE post.posts ALTER COLUMN content DROP NOT NULL")):
        with psycopg.connect(stack.dsn(service), autocommit=True) as conn:
            conn.execute(ddl)
    run = Child(["run"], env)
    try:
        _wait("both workers after the fix", _caught_up(stack, services), 60, run)
        _wait("the stop records cleared", lambda: not _status(env)["stopped"], 30, run)
        report = _status(env)
        assert {s["service"]: s["state"] for s in report["services"]} == {  # type: ignore[attr-defined]
            "topic": "streaming", "post": "streaming"}, report
    finally:
        assert run.terminate() == 0, run.text()


def test_backoff_resets_once_the_worker_runs_again_after_a_terminated_session(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"], scale=10)
    env = _env(stack.settings, _topology_file(tmp_path, ["post"]))
    capture = Child(["capture"], env)
    worker = Child(["worker", "--service", "post"], env)
    kills = 5
    try:
        _wait("the initial copy", _caught_up(stack, ["post"]), 120, capture, worker)
        with psycopg.connect(stack.dsn("post"), autocommit=True) as admin:
            for n in range(kills):
                # Once the worker's session has run for 2 s (it made progress after the last fault), end it.
                def running_for_a_while() -> bool:
                    rows = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                         "'splitter-worker-post' AND backend_start < now() - interval '2 s'"
                                         ).fetchone()
                    return bool(rows and rows[0])
                _wait(f"the worker's session before kill {n + 1}", running_for_a_while, 30, worker)
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = 'splitter-worker-post'")
                _wait(f"the retry after kill {n + 1}", _more_delays_than(worker, n), 30, worker)
        stack.source_exec("UPDATE posts SET liked_count = coalesce(liked_count, 0) + 1")
        _wait("the worker to apply after the last kill", _caught_up(stack, ["post"]), 30, worker)
    finally:
        codes = (worker.terminate(), capture.terminate())
    delays = _delays(worker)
    # One retry per kill, each after the first delay: the fault lasted a moment, the backoff did not grow.
    assert delays == [0.5] * kills, worker.text()
    assert codes == (0, 0), worker.text() + capture.text()


def test_backoff_grows_during_an_outage_and_starts_again_after_it(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pg_factory: Callable[..., EmbeddedPostgres], tmp_path: Path) -> None:
    # post_db on a private server this test shuts down three times for ~2 s; the source on the shared one.
    private = pg_factory()
    with psycopg.connect(private.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("outage_post")))
    post_db = private.dsn("outage_post")
    with psycopg.connect(post_db, autocommit=True) as conn:
        fixtures.load_target_schema(conn, "post_db")
    source_stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"], scale=10)
    # splitter's role in the source; the private server has no such role, so post_db keeps its superuser.
    settings = Settings(topology=subset(["post"]), source_dsn=source_stack.settings.source_dsn,
                        kafka_bootstrap=kafka_server.bootstrap, target_dsns={"post": post_db},
                        topic=source_stack.settings.topic, slot=source_stack.settings.slot,
                        publication=source_stack.settings.publication)
    stack = Stack({SOURCE: source_stack.dsns[SOURCE], "post_db": post_db}, settings)
    env = _env(settings, _topology_file(tmp_path, ["post"]))
    capture = Child(["capture"], env)
    worker = Child(["worker", "--service", "post"], env)
    outages = 3
    try:
        _wait("the initial copy", _caught_up(stack, ["post"]), 120, capture, worker)
        for n in range(outages):
            before = len(_delays(worker))
            _wait(f"the worker's session before outage {n + 1}", lambda: _session_age(post_db) >= 2.0, 30, worker)
            private.stop("fast")
            time.sleep(2.0)
            private.start()
            _wait(f"the retries of outage {n + 1}", _more_delays_than(worker, before), 30, worker)
        stack.source_exec("UPDATE posts SET liked_count = coalesce(liked_count, 0) + 1")
        _wait("the worker to apply after the last outage", _caught_up(stack, ["post"]), 60, worker)
    finally:
        codes = (worker.terminate(), capture.terminate())
    delays = _delays(worker)
    # Each outage starts at the first delay and doubles while it lasts (a few seconds: a few retries);
    # the next outage starts at the first delay again instead of where the last one ended.
    assert delays.count(0.5) == outages, worker.text()
    runs = [[0.5]]
    for d in delays[1:]:
        if d == 0.5:
            runs.append([d])
        else:
            runs[-1].append(d)
    assert delays[0] == 0.5 and all(r == [0.5 * 2 ** i for i in range(len(r))] for r in runs), delays
    assert max(delays) <= 8.0, delays
    assert codes == (0, 0), worker.text() + capture.text()


def _session_age(dsn: str) -> float:
    """Seconds the worker's oldest session has been connected; 0 when it has none (or the server is down)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT coalesce(extract(epoch FROM now() - min(backend_start)), 0) FROM "
                               "pg_stat_activity WHERE application_name = 'splitter-worker-post'").fetchone()
    except psycopg.OperationalError:
        return 0.0
    return float(row[0]) if row else 0.0


def test_run_names_a_worker_whose_database_is_missing_in_status_metrics_and_healthz(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    services = ["topic", "post"]
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, services, scale=10)
    env = _env(stack.settings, _topology_file(tmp_path, services))
    topic_db = str(conninfo_to_dict(stack.dsn("topic"))["dbname"])
    gone = f"{topic_db}_gone"
    admin_dsn = make_conninfo(stack.dsn("topic"), dbname="postgres")
    port = free_port_block(3)  # `run` gives capture base+0 and worker i base+i
    run = Child(["run", "--metrics-port", str(port)], env)
    try:
        _wait("the initial copy and both workers", _caught_up(stack, services), 120, run)
        # The topic database goes away under the running worker (renamed: SQLSTATE 3D000 on its next connect).
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(topic_db)))
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (topic_db,))
            _wait("no session left in the topic database", lambda: admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (topic_db,)).fetchone() == (0,), 10, run)
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(topic_db),
                                                                          sql.Identifier(gone)))
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(gone)))
        _wait("the topic worker to stop for good", lambda: any(
            "worker[topic] exited with code 2" in line for line in run.err), 60, run)
        assert any(" ERROR " in line and "SQLSTATE 3D000" in line for line in run.err), run.text()
        assert run.proc.poll() is None, run.text()  # capture and the post worker go on

        wanted = ('splitter_component_database_unreachable{component="worker",kind="configuration",'
                  'service="topic",sqlstate="3D000"} 1.0')
        _wait("the unreachable metric", lambda: wanted in _http(port, "/metrics")[1], 20, run)
        code, health = _http(port, "/healthz")
        assert code == 200 and "worker[topic]: its database refuses connections (configuration, SQLSTATE 3D000)" \
            in health, (code, health)
        report = _status(env)
        by_service = {s["service"]: s for s in report["services"]}  # type: ignore[attr-defined]
        assert (by_service["topic"]["state"], by_service["topic"]["error_class"], by_service["topic"]["sqlstate"]) \
            == ("misconfigured", "configuration", "3D000"), report
        assert by_service["post"]["state"] == "streaming", report
    finally:
        run.terminate()
        with psycopg.connect(admin_dsn, autocommit=True) as admin:  # so the fixture drops it
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (gone,)).fetchone():
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(gone),
                                                                              sql.Identifier(topic_db)))
