"""A change log lost under a running pipeline: capture and every worker stop with the lost-log error.

Two ways a log is lost while the slot and the checkpoints stay: the broker restarts empty (tansu keeps
everything in memory, as a memory-only broker or a rebuilt cluster would lose it), and the topic is
deleted and created again.  Before, capture created the topic again and streamed into it from offset 0;
workers whose checkpoint offset lay past the new log's end waited silently, and the others went on from
checkpoint + 1 in the new log, missing changes (tansu reports no out-of-range error, so
`auto.offset.reset=error` never fired).  Now capture stops (exit 3) saying the log restarted behind the
slot, starts the new log with a log-start marker, and streams into it once started again; every worker
stops (exit 3) with the lost-offset error and its recovery, also when started again on the new log (its
checkpoint is untouched: nothing of the new log is applied), and so does a worker whose checkpoint has
applied nothing yet (the first record the new log holds is past its copy's position).  The recovery
capture's error names (replay from the new log's marker with --accept-gap) gets a worker streaming again.

Capture and the workers run as `python -m splitter` processes: a worker reading a topic that tansu deletes
can die of SIGSEGV inside librdkafka (see docs: a Fetch reply without a topic id reaches a metadata update
that looks the topic up by a NULL name).  The test restarts a component that crashed, as `splitter run`'s
supervisor does, and expects the restarted one to stop with the lost-log error.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from devtools.embedded.kafka import EmbeddedKafka
from devtools.workload.driver import Workload
from splitter.core.exit_codes import CONFIG, FATAL
from splitter.topology.loading import load_topology
from tests import harness
from tests.conftest import KafkaServer

SERVICES = [s.name for s in load_topology(harness.TOPOLOGY).services]
LOST = "is not in the log any more"  # the worker's lost-offset error (connectors.kafka.consumer.OffsetGoneError)
RESTARTED = "the change log restarted behind slot"  # capture's


@pytest.fixture
def broker(own_kafka: EmbeddedKafka) -> EmbeddedKafka:
    return own_kafka


def _log(env: harness.PipelineEnv, name: str) -> str:
    assert env.log_dir is not None
    return (env.log_dir / f"{name}.log").read_text(errors="replace")


def _until_final(env: harness.PipelineEnv, name: str, start: Callable[[], object], timeout: float,
                 crashes: dict[str, list[int]]) -> int:
    """Wait for `name` to stop for good (exit 2 or 3), starting it again after a crash as the supervisor does."""
    deadline = time.monotonic() + timeout
    while True:
        proc = env.processes[name]
        try:
            code = proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still runs after {timeout:.0f}s\n{_log(env, name)[-3000:]}") from None
        if code in (CONFIG, FATAL):
            return code
        crashes.setdefault(name, []).append(code)
        assert len(crashes[name]) <= 3, f"{name} exited {crashes[name]}\n{_log(env, name)[-3000:]}"
        start()


def _checkpoints(env: harness.PipelineEnv) -> dict[str, tuple[int, str]]:
    out = {}
    for name in SERVICES:
        with psycopg.connect(env.service_dsn(name), autocommit=True) as conn:
            row = conn.execute("SELECT kafka_offset, commit_lsn::text FROM splitter.checkpoints WHERE service = %s",
                               (name,)).fetchone()
        assert row is not None
        out[name] = (int(row[0]), str(row[1]))
    return out


def _all_stop_lost(env: harness.PipelineEnv, names: list[str], crashes: dict[str, list[int]]) -> None:
    for name in names:
        key = f"worker-{name}"
        code = _until_final(env, key, lambda n=name: env.start_worker(n), 90, crashes)  # type: ignore[misc]
        assert code == FATAL, (name, code, _log(env, key)[-3000:])
        assert LOST in _log(env, key), _log(env, key)[-3000:]


def _start(env: harness.PipelineEnv, services: list[str]) -> None:
    env.start_capture()
    for name in services:
        env.start_worker(name)


def test_a_broker_restarted_empty_stops_capture_and_every_worker_and_replay_recovers(
        make_databases: Callable[..., dict[str, str]], broker: EmbeddedKafka, unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    env = harness.prepare(make_databases, broker.bootstrap, unique_name, tmp_path, scale=20)
    crashes: dict[str, list[int]] = {}
    try:
        _start(env, SERVICES)
        env.wait_caught_up(timeout=180)
        Workload(env.source, seed=7, threads=2).run_for(2)
        env.wait_caught_up()
        before = _checkpoints(env)

        broker.kill()
        broker.start()  # the same port, and nothing in it
        assert _until_final(env, "capture", env.start_capture, 90, crashes) == FATAL
        assert RESTARTED in _log(env, "capture"), _log(env, "capture")[-3000:]
        _all_stop_lost(env, SERVICES, crashes)

        # Started again, capture streams into the new log; workers started on it stop again, applying nothing.
        env.start_capture()
        Workload(env.source, seed=8, threads=2).run_for(2)
        for name in SERVICES:
            env.start_worker(name)
        _all_stop_lost(env, SERVICES, crashes)
        assert _checkpoints(env) == before
        assert env.processes["capture"].poll() is None, _log(env, "capture")[-3000:]

        # The recovery the error names: replay past the gap (the worker performs it when it starts).
        named = re.search(r"--from-offset (\d+) --accept-gap", _log(env, "capture"))
        assert named is not None, _log(env, "capture")[-3000:]
        replay = subprocess.Popen([sys.executable, "-m", "splitter", "replay", "--service", "post", "--from-offset",
                                   named.group(1), "--accept-gap", "--yes"], env=env.env(), cwd=harness.ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        with psycopg.connect(env.service_dsn("post"), autocommit=True) as conn:
            while not (conn.execute("SELECT count(*) FROM splitter.requests WHERE action = 'replay'").fetchone()
                       or (0,))[0]:
                assert replay.poll() is None and time.monotonic() < deadline, replay.communicate()[0]
                time.sleep(0.2)
        env.start_worker("post")
        out = replay.communicate(timeout=90)[0].decode(errors="replace")
        assert replay.returncode == 0, out
        env.wait_caught_up(services=["post"], timeout=90)
        assert env.processes["worker-post"].poll() is None, _log(env, "worker-post")[-3000:]
    finally:
        env.stop_all()
    print("crashed and restarted (exit codes):", crashes)


def test_a_topic_deleted_and_created_again_stops_capture_and_workers_also_one_that_applied_nothing(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer, unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    env = harness.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=20)
    idle = "notification"  # copied, never started: its checkpoint has applied nothing from the log
    running = [s for s in SERVICES if s != idle]
    crashes: dict[str, list[int]] = {}
    try:
        _start(env, running)
        env.wait_caught_up(timeout=180, services=running)
        Workload(env.source, seed=9, threads=2).run_for(2)
        env.wait_caught_up(services=running)

        admin = AdminClient({"bootstrap.servers": kafka_server.bootstrap})
        admin.delete_topics([env.topic])[env.topic].result(30)
        deadline = time.monotonic() + 30
        while env.topic in admin.list_topics(timeout=10).topics:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        admin.create_topics([NewTopic(env.topic, num_partitions=1, replication_factor=1)])[env.topic].result(30)

        assert _until_final(env, "capture", env.start_capture, 90, crashes) == FATAL
        assert RESTARTED in _log(env, "capture"), _log(env, "capture")[-3000:]
        _all_stop_lost(env, running, crashes)

        env.start_capture()  # streams into the new log, from where the slot is
        Workload(env.source, seed=10, threads=2).run_for(1)
        env.start_worker(idle)
        _all_stop_lost(env, [idle], crashes)
        assert "after this service's copy" in _log(env, f"worker-{idle}"), _log(env, f"worker-{idle}")[-3000:]
    finally:
        env.stop_all()
    print("crashed and restarted (exit codes):", crashes)
