"""The operator's Kafka configuration reaches every client and the change-log topic, and a wrong setting stops a
command at once with its name; secrets stay out of output and process arguments (real processes, real broker).

No SASL-enabled broker can be given users here (tansu's `--authentication` keeps SCRAM users in storage that
only its memory engine provides, which starts empty), so SASL itself is not exercised: the tests prove the
properties reach each client kind, which is all SASL needs from splitter.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from devtools.embedded.process import free_port_block
from tests.conftest import KafkaServer
from tests.harness import ROOT, PipelineEnv, prepare

SECRET = "kafka-Pw-0c7e19"


@pytest.fixture
def env(make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> PipelineEnv:
    return prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=20)


def _run(env: PipelineEnv, *args: str, extra: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "splitter", *args], env={**env.env(), **extra}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize(("command", "variable", "name"), [
    (("capture",), "SPLITTER_KAFKA_PRODUCER_LINGER_MS", "linger.ms"),
    (("capture",), "SPLITTER_KAFKA_ADMIN_SOCKET_TIMEOUT_MS", "socket.timeout.ms"),
    (("worker", "--service", "post"), "SPLITTER_KAFKA_CONSUMER_FETCH_WAIT_MAX_MS", "fetch.wait.max.ms"),
    (("replay", "--service", "post", "--from-offset", "0", "--yes"), "SPLITTER_KAFKA_CONSUMER_FETCH_WAIT_MAX_MS",
     "fetch.wait.max.ms"),
])
def test_each_client_kind_gets_its_properties_and_a_bad_value_stops_the_command_naming_it(
        env: PipelineEnv, command: tuple[str, ...], variable: str, name: str) -> None:
    # A value librdkafka refuses for that one client kind: if the kind did not receive its properties, the
    # command would run on (or fail on something else).
    done = _run(env, *command, extra={variable: "not-a-number", "SPLITTER_KAFKA_SASL_PASSWORD": SECRET})
    assert done.returncode == 2, done.stdout + done.stderr
    assert name in done.stderr and "Kafka configuration is refused" in done.stderr, done.stderr
    assert SECRET not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_a_property_splitter_owns_is_refused_before_anything_runs(env: PipelineEnv) -> None:
    done = _run(env, "capture", extra={"SPLITTER_KAFKA_PRODUCER_ACKS": "1"})
    assert done.returncode == 2 and "acks is set by splitter" in done.stderr, done.stderr
    assert "SPLITTER_KAFKA_PRODUCER_ACKS" in done.stderr


def test_a_config_file_drives_the_pipeline_and_the_topic_is_created_with_its_settings(
        env: PipelineEnv, kafka_server: KafkaServer, tmp_path: Path) -> None:
    properties = tmp_path / "client.properties"
    properties.write_text(
        "# what a secured cluster's file looks like, on a plaintext broker\n"
        "security.protocol=PLAINTEXT\nclient.id=splitter-config-test\nproducer.linger.ms=1\n"
        "consumer.fetch.wait.max.ms=20\ntopic.retention.ms=86400000\ntopic.max.message.bytes=8388608\n")
    extra = {"SPLITTER_KAFKA_CONFIG": str(properties)}
    procs = [subprocess.Popen([sys.executable, "-m", "splitter", *args], env={**env.env(), **extra}, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for args in (("capture",), ("worker", "--service", "post"))]
    try:
        with psycopg.connect(env.source, autocommit=True) as conn:
            conn.execute("UPDATE posts SET content = 'through the configured clients' WHERE id = "
                         "(SELECT min(id) FROM posts)")
            want = conn.execute("SELECT id, content FROM posts WHERE id = (SELECT min(id) FROM posts)").fetchone()
        deadline = time.monotonic() + 90
        got = None
        while time.monotonic() < deadline and got != want:
            assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.stderr]
            with psycopg.connect(env.dsns["post_db"], autocommit=True) as conn:
                got = (conn.execute("SELECT id, content FROM post.posts WHERE id = %s", (want[0],)).fetchone()
                       if want else None)
            time.sleep(0.3)
        assert got == want
    finally:
        for p in procs:
            p.terminate()
            p.wait(20)
    admin = AdminClient({"bootstrap.servers": kafka_server.bootstrap})
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, env.topic)])
    entries = next(iter(described.values())).result(timeout=10)
    assert entries["retention.ms"].value == "86400000" and entries["max.message.bytes"].value == "8388608"
    assert entries["min.insync.replicas"].value == "1"  # one broker: as much as the cluster allows


def test_the_plan_warns_that_a_single_broker_log_is_not_durable(env: PipelineEnv) -> None:
    done = _run(env, "plan", extra={"SPLITTER_KAFKA_SASL_PASSWORD": SECRET})
    assert "log-not-durable" in done.stdout and "replication factor 1" in done.stdout, done.stdout + done.stderr
    assert "not created yet" in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_secrets_never_reach_process_arguments_logs_or_metrics(env: PipelineEnv, tmp_path: Path) -> None:
    properties = tmp_path / "client.properties"
    properties.write_text(f"sasl.password={SECRET}\nsasl.username=splitter\n")
    # `run` supervises capture and the workers as child processes: what it hands them must carry no secret.
    port = free_port_block(2)  # `run` gives capture base+0 and worker i base+i
    proc = subprocess.Popen([sys.executable, "-m", "splitter", "run", "--kafka-config", str(properties),
                             "--service", "post", "--metrics-port", str(port)],
                            env={**env.env(), "SPLITTER_KAFKA_SSL_KEY_PASSWORD": SECRET},
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        cmdlines: list[str] = []
        pages: list[str] = []
        while time.monotonic() < deadline and (len(cmdlines) < 3 or len(pages) < 2):
            cmdlines = _cmdlines_under(proc.pid)
            pages = _pages(port)
            time.sleep(0.5)
        assert len(cmdlines) >= 3 and len(pages) == 2, (cmdlines, pages)  # run, capture, the worker
        assert all(SECRET not in c for c in cmdlines), cmdlines
        assert all(SECRET not in page for page in pages)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert SECRET not in out


def _pages(port: int) -> list[str]:
    """Capture's /metrics and /healthz, as far as it serves them yet."""
    out = []
    for path in ("/metrics", "/healthz"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                out.append(response.read().decode())
        except OSError as exc:
            if isinstance(exc, urllib.error.HTTPError):  # /healthz answers 503 while not healthy: still a page
                out.append(exc.read().decode())
    return out


def _cmdlines_under(root: int) -> list[str]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
        todo += children.get(pid, [])
    return out
