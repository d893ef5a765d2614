"""`splitter replay` against real servers: restored backups, fixed topologies, dry runs and refusals.

Capture and the workers run in-process (threads, each under `daemon.run_with_retries` exactly as the
CLI runs them) on the session's PostgreSQL and broker, with only the services a test needs, so a
test pays for one initial copy of a small source.  The operator side goes through `splitter.cli.app`,
as an engineer would type it.  Expected rows come from tests/expected.py (hand-written SQL).

`Stack`, `Pipeline` and the helpers below are shared by test_dead_letters.py and test_bad_input.py.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from connectors.kafka.admin import ensure_topic
from connectors.kafka.consumer import ChangeLogConsumer, OffsetGoneError
from connectors.kafka.log_reader import LogReader
from connectors.pg.client import connect
from connectors.pg.state.schema import Checkpoint, ensure_state_schema, write_checkpoint
from devtools import datagen, fixtures
from devtools.workload.driver import Workload
from splitter import cli
from splitter.core import envelope
from splitter.core.errors import ConfigurationError
from splitter.core.lsn import lsn_to_str, str_to_lsn
from splitter.ops.replay import describe, plan_replay, submit
from splitter.pipeline.capture import Capture
from splitter.pipeline.config import Settings
from splitter.pipeline.daemon import run_with_retries
from splitter.pipeline.worker import Worker
from splitter.topology.loading import load_topology
from splitter.topology.model import Topology
from tests import expected, roles
from tests.conftest import KafkaServer

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "topology.py"
SOURCE = "bento_social"

# ----------------------------------------------------------------------------------------------
# Shared helpers: a source with a few services, and the pipeline in threads
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Stack:
    """A source and the service databases of `settings.topology` (a subset of topology.py)."""

    dsns: dict[str, str]
    settings: Settings

    @property
    def source(self) -> str:
        return self.dsns[SOURCE]

    def dsn(self, service: str) -> str:
        """The superuser's DSN of `service`'s database, for the test's own reads and writes (splitter gets
        the role's, in `settings`)."""
        return self.dsns[self.settings.topology.service(service).database]

    def with_topology(self, topology: Topology) -> Settings:
        return dataclasses.replace(self.settings, topology=topology)

    def cli_args(self) -> list[str]:
        """Connection options for `splitter.cli.app` (topology.py itself: every service is known)."""
        s = self.settings
        args = ["--topology", str(TOPOLOGY), "--source-dsn", s.source_dsn, "--kafka", s.kafka_bootstrap,
                "--topic", s.topic, "--slot", s.slot, "--publication", s.publication]
        for name, dsn in s.target_dsns.items():
            args += ["--target-dsn", f"{name}={dsn}"]
        return args

    def source_lsn(self) -> int:
        with psycopg.connect(self.source, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return str_to_lsn(row[0])

    def checkpoint(self, service: str) -> tuple[int, int] | None:
        """(kafka_offset, commit_lsn) of `service`, or None before its initial copy."""
        with psycopg.connect(self.dsn(service), autocommit=True) as conn:
            try:
                row = conn.execute("SELECT kafka_offset, commit_lsn::text FROM splitter.checkpoints "
                                   "WHERE service = %s", (service,)).fetchone()
            except psycopg.errors.UndefinedTable:
                return None
        return (int(row[0]), str_to_lsn(row[1])) if row else None

    def wait_caught_up(self, services: Sequence[str] | None = None, timeout: float = 60.0,
                       pipeline: Pipeline | None = None) -> None:
        """Until each service's checkpoint covers everything the source had committed when called."""
        names = list(services) if services is not None else [s.name for s in self.settings.topology.services]
        target = self.source_lsn()
        deadline = time.monotonic() + timeout
        while True:
            behind = {n: cp for n in names if (cp := self.checkpoint(n)) is None or cp[1] < target}
            if not behind:
                return
            stopped = [n for n in behind if pipeline is not None and not pipeline.running(n)]
            if stopped or time.monotonic() > deadline:
                errors = pipeline.errors if pipeline is not None else {}
                raise AssertionError(f"still behind {lsn_to_str(target)} (stopped: {stopped}): {behind}; "
                                     f"errors: {errors}")
            time.sleep(0.2)

    def matches(self, service: str) -> None:
        with psycopg.connect(self.source) as src, psycopg.connect(self.dsn(service)) as tgt:
            expected.assert_service_matches(src, tgt, service)

    def mismatches(self, service: str) -> int:
        """How many rows differ (either side) over the tables of `service`."""
        n = 0
        with psycopg.connect(self.source) as src, psycopg.connect(self.dsn(service)) as tgt:
            for table in expected.tables_of(service):
                want, have = expected.expected_rows(src, service, table), expected.actual_rows(tgt, service, table)
                n += len(want ^ have)
        return n

    def source_exec(self, *statements: str, params: Sequence[object] | None = None) -> None:
        """Each statement in its own source transaction."""
        with psycopg.connect(self.source, autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt, params)


def subset(services: Sequence[str], on_error: dict[str, str] | None = None) -> Topology:
    """topology.py with only `services`, optionally with other on_error policies."""
    full = load_topology(TOPOLOGY)
    chosen = tuple(dataclasses.replace(s, on_error=(on_error or {}).get(s.name, s.on_error))
                   for s in full.services if s.name in services)
    assert len(chosen) == len(services), f"unknown service in {services}"
    return dataclasses.replace(full.subset(services), services=chosen)


def with_table_on_error(topology: Topology, policies: dict[str, str]) -> Topology:
    """`topology` with the tables named "service.table" in `policies` given their own on_error."""
    services = tuple(dataclasses.replace(s, tables=tuple(
        dataclasses.replace(t, on_error=policies[f"{s.name}.{t.name}"]) if f"{s.name}.{t.name}" in policies else t
        for t in s.tables)) for s in topology.services)
    named = {f"{s.name}.{t.name}" for s in services for t in s.tables}
    assert set(policies) <= named, f"unknown table in {policies}"
    return dataclasses.replace(topology, services=services)


def make_stack(make_databases: Callable[..., dict[str, str]], kafka: str, unique_name: Callable[[str], str],
               services: Sequence[str], *, scale: int = 30, on_error: dict[str, str] | None = None) -> Stack:
    topology = subset(services, on_error)
    dsns = make_databases(names=(SOURCE, *(s.database for s in topology.services)))
    with psycopg.connect(dsns[SOURCE], autocommit=True) as conn:
        fixtures.load_source_schema(conn)
        datagen.generate(conn, scale)
    for s in topology.services:
        with psycopg.connect(dsns[s.database], autocommit=True) as conn:
            fixtures.load_target_schema(conn, s.database)
    settings = roles.as_role(Settings(
        topology=topology, source_dsn=dsns[SOURCE], kafka_bootstrap=kafka,
        target_dsns={s.name: dsns[s.database] for s in topology.services},
        topic=unique_name("t"), slot=unique_name("slot")[:63], publication=unique_name("pub")[:63]))
    return Stack(dsns, settings)


class Pipeline:
    """Capture and workers in threads, each run by `run_with_retries` as `splitter capture/worker` runs it.

    `errors[name]` keeps every exception a component raised (retried or not); `exit_codes[name]` is
    what `run_with_retries` returned (the process exit code the CLI would have used).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stops: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self.errors: dict[str, list[BaseException]] = {}
        self.exit_codes: dict[str, int] = {}
        self.workers: dict[str, Worker] = {}

    def _start(self, name: str, component: Callable[[threading.Event], None]) -> None:
        old = self._threads.get(name)
        assert old is None or not old.is_alive(), f"{name} is already running"
        stop = threading.Event()
        errors = self.errors.setdefault(name, [])
        self.exit_codes.pop(name, None)

        def guarded(ev: threading.Event) -> None:
            try:
                component(ev)
            except BaseException as exc:
                errors.append(exc)
                raise

        def main() -> None:
            self.exit_codes[name] = run_with_retries(name, guarded, stop)

        thread = threading.Thread(target=main, name=name, daemon=True)
        self._stops[name], self._threads[name] = stop, thread
        thread.start()

    def start_capture(self) -> None:
        self._start("capture", lambda ev: Capture(self.settings).run(ev))

    def start_worker(self, service: str, settings: Settings | None = None) -> None:
        chosen = settings or self.settings

        def run(ev: threading.Event) -> None:
            worker = self.workers[service] = Worker(chosen, service)
            worker.run(ev)

        self._start(service, run)

    def start_all(self) -> None:
        self.start_capture()
        for s in self.settings.topology.services:
            self.start_worker(s.name)

    def stop(self, name: str, timeout: float = 30.0) -> None:
        self._stops[name].set()
        self._threads[name].join(timeout)
        assert not self._threads[name].is_alive(), f"{name} did not stop"

    def wait_exit(self, name: str, timeout: float = 30.0) -> int:
        """Wait for a component to stop on its own (fatal error); returns its exit code."""
        self._threads[name].join(timeout)
        assert not self._threads[name].is_alive(), f"{name} is still running; errors: {self.errors.get(name)}"
        return self.exit_codes[name]

    def running(self, name: str) -> bool:
        thread = self._threads.get(name)
        return thread is not None and thread.is_alive()

    def close(self) -> None:
        for stop in self._stops.values():
            stop.set()
        for thread in self._threads.values():
            thread.join(30)


@pytest.fixture
def pipelines() -> Iterator[list[Pipeline]]:
    """Every Pipeline a test appends here is closed at the end, whatever happened."""
    made: list[Pipeline] = []
    try:
        yield made
    finally:
        for p in made:
            p.close()


Record = tuple[int, dict[str, bytes], bytes | None, int]


def read_topic(bootstrap: str, topic: str, start: int = 0, timeout: float = 10.0) -> list[Record]:
    """(offset, headers, value, timestamp ms) of every record from `start` to the end of partition 0."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-reader-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    out: list[Record] = []
    try:
        consumer.assign([TopicPartition(topic, 0, start)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = consumer.poll(1.0)
            if m is None:
                continue
            if m.error() is not None:
                break  # partition EOF
            out.append((m.offset() or 0, envelope.header_map(m.headers()), m.value(),  # type: ignore[arg-type]
                        m.timestamp()[1]))
    finally:
        consumer.close()
    return out


def transaction_start(events: Sequence[Record], index: int) -> int:
    """The offset of the first record of the run with the same LSN header as events[index]."""
    lsn = events[index][1].get(envelope.LSN_HEADER)
    while index > 0 and events[index - 1][1].get(envelope.LSN_HEADER) == lsn:
        index -= 1
    return events[index][0]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def requests_rows(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT id, action, from_offset, done_at IS NOT NULL, result FROM splitter.requests "
                            "ORDER BY id").fetchall()


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


def test_restored_backup_is_brought_back_to_the_present_by_replay(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], capsys: pytest.CaptureFixture[str]) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"])
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline)
    Workload(stack.source, seed=21, threads=2).run_for(2)
    stack.wait_caught_up(pipeline=pipeline)
    post_db = stack.dsn("post")

    # The "backup": post.posts and the checkpoint row, as a pg_dump of post_db would hold them.
    with psycopg.connect(post_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.backup_posts AS SELECT * FROM post.posts")
        conn.execute("CREATE TABLE public.backup_checkpoint AS SELECT * FROM splitter.checkpoints")
        row = conn.execute("SELECT kafka_offset FROM splitter.checkpoints WHERE service = 'post'").fetchone()
    assert row is not None and row[0] >= 0
    backup_offset = int(row[0])

    Workload(stack.source, seed=22, threads=2).run_for(3)
    stack.wait_caught_up(pipeline=pipeline)
    stack.matches("post")

    # Incident: post_db is restored from the backup while its worker is stopped.
    pipeline.stop("post")
    with psycopg.connect(post_db) as conn:
        conn.execute("DELETE FROM post.posts")
        conn.execute("INSERT INTO post.posts SELECT * FROM public.backup_posts")
        conn.execute("DELETE FROM splitter.checkpoints")
        conn.execute("INSERT INTO splitter.checkpoints SELECT * FROM public.backup_checkpoint")
    assert stack.mismatches("post") > 0, "the restored backup should be behind the source"
    cp = stack.checkpoint("post")
    assert cp is not None and cp[0] == backup_offset

    args = stack.cli_args()
    # While the restored service is behind, a replay that would skip part of the log is refused.
    code, out, err = run_cli(capsys, "replay", *args, "--service", "post", "--from-offset", str(backup_offset + 5),
                             "--yes")
    assert code == 2, (out, err)
    assert f"service post has applied only up to offset {backup_offset}" in err
    assert f"would skip offsets {backup_offset + 1}..{backup_offset + 4}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1

    # The replay is queued before the worker starts, so the worker performs it first, on the restored rows
    # (queued after the worker caught up, it re-applies onto the present: test_replay_over_the_present_state).
    plan = plan_replay(stack.settings, "post", from_offset=backup_offset + 1)
    assert plan.start_offset == backup_offset + 1 and plan.service_records > 0
    # The plan counts as the records stream by; the same figures from the whole range held in a list:
    with LogReader(stack.settings.kafka_bootstrap, stack.settings.topic) as reader:
        held = [p for p in reader.scan(plan.start_offset) if p.offset < plan.end_offset]
    post_tables = {b"public.posts"}
    assert (plan.records, plan.service_records, plan.transactions, plan.end_offset, plan.last_lsn) == (
        len(held), sum(p.table in post_tables for p in held), len({p.lsn for p in held if p.table in post_tables}),
        held[-1].offset + 1, held[-1].lsn)
    assert "queued" in submit(stack.settings, plan, wait=0.0)
    pipeline.start_worker("post")
    deadline = time.monotonic() + 30
    while not (done := requests_rows(post_db))[0][3] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(done) == 1 and done[0][1] == "replay" and done[0][3] is True, done
    assert done[0][4] == f"rewound to offset {backup_offset + 1}"
    stack.wait_caught_up(["post"], pipeline=pipeline)
    stack.matches("post")
    assert not pipeline.errors["post"], pipeline.errors["post"]


def test_replay_after_fixing_a_topology_expression_corrects_the_rows(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], capsys: pytest.CaptureFixture[str]) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"])
    right = stack.settings
    posts = right.topology.service("post").tables[0]
    wrong_posts = dataclasses.replace(posts, columns={**posts.columns,
                                                      "liked_count": "coalesce(liked_count, 0) + 1000"})
    wrong_service = dataclasses.replace(right.topology.service("post"), tables=(wrong_posts,))
    wrong = stack.with_topology(dataclasses.replace(right.topology, services=(wrong_service,)))

    pipeline = Pipeline(right)
    pipelines.append(pipeline)
    pipeline.start_capture()  # the initial copy uses the right topology
    pipeline.start_worker("post", wrong)
    stack.wait_caught_up(pipeline=pipeline)
    stack.matches("post")  # nothing streamed yet: the copy is right
    workload = Workload(stack.source, seed=31, threads=2)
    workload.run_for(3)
    stack.wait_caught_up(pipeline=pipeline)
    with psycopg.connect(stack.dsn("post")) as conn:
        row = conn.execute("SELECT count(*) FROM post.posts WHERE liked_count >= 1000").fetchone()
    assert row is not None and row[0] > 0, f"the wrong expression was never applied ({workload.counts()})"
    assert stack.mismatches("post") > 0

    pipeline.stop("post")  # still stopped during the dry run: nothing may move its checkpoint
    args = stack.cli_args()
    events = read_topic(right.kafka_bootstrap, right.topic)
    first = events[0][0]

    # --dry-run reports what would be re-applied and changes nothing.
    before_cp = stack.checkpoint("post")
    code, out, err = run_cli(capsys, "replay", *args, "--service", "post", "--from-offset", str(first), "--dry-run")
    assert code == 0, err
    post_rows = [e for e in events if e[1].get(envelope.TABLE_HEADER) == b"public.posts"]
    post_txns = {e[1][envelope.LSN_HEADER] for e in post_rows}
    first_lsn = int(events[0][1][envelope.LSN_HEADER])
    m = re.search(r"from offset (\d+) \((\S+)\) to the end of the log \(offset (\d+)\); re-applies every "
                  r"transaction with commit LSN above (\S+) up to (\S+): (\d+) change\(s\) of this service in "
                  r"(\d+) transaction\(s\), out of (\d+) record\(s\) read", out)
    assert m is not None, out
    assert int(m.group(1)) == first
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", m.group(2)), m.group(2)
    assert int(m.group(3)) >= events[-1][0]
    assert m.group(4) == lsn_to_str(first_lsn - 1)
    assert str_to_lsn(m.group(5)) >= max(int(e[1][envelope.LSN_HEADER]) for e in post_rows)
    assert int(m.group(6)) >= len(post_rows) and int(m.group(7)) >= len(post_txns)
    assert int(m.group(8)) >= len(events)
    assert stack.checkpoint("post") == before_cp
    assert requests_rows(stack.dsn("post")) == []
    assert stack.mismatches("post") > 0

    # --from-lsn and --from-time find the same kind of point: the start of the transaction there.
    mid = next(i for i, e in enumerate(events) if i >= len(events) // 2
               and e[1].get(envelope.KIND_HEADER) == envelope.KIND_COMMIT and transaction_start(events, i) != e[0])
    mid_lsn = int(events[mid][1][envelope.LSN_HEADER])
    code, out, err = run_cli(capsys, "replay", *args, "--service", "post", "--from-lsn", lsn_to_str(mid_lsn),
                             "--dry-run")
    assert code == 0, err
    assert f"from offset {transaction_start(events, mid)} (" in out, out
    assert f"commit LSN above {lsn_to_str(mid_lsn - 1)} " in out, out
    when = events[mid][3]
    at_time = next(i for i, e in enumerate(events) if e[3] >= when)
    code, out, err = run_cli(capsys, "replay", *args, "--service", "post", "--from-time",
                             datetime.fromtimestamp(when / 1000, UTC).isoformat(timespec="milliseconds"), "--dry-run")
    assert code == 0, err
    # Nothing at or after that time is skipped (a broker's time index may answer a little early: tansu
    # answers with the first offset of the record batch, which only re-applies a few more transactions).
    found = re.search(r"from offset (\d+) ", out)
    assert found is not None, out
    start = int(found.group(1))
    assert start <= transaction_start(events, at_time), out
    assert all(e[3] < when for e in events if e[0] < start), out
    assert start >= transaction_start(events, at_time) - 50, out
    assert stack.checkpoint("post") == before_cp and requests_rows(stack.dsn("post")) == []

    # Offsets the log does not hold are refused, naming what it does hold.  (tansu cannot delete records, so
    # the "deleted by retention" branch needs Apache Kafka: test_replay_refuses_an_offset_retention_deleted.)
    code, out, err = run_cli(capsys, "replay", *args, "--service", "post", "--from-offset", str(10**9), "--yes")
    assert code == 2 and f"offset {10**9} is past the end of the log" in err, err  # heartbeats keep it growing
    assert f"the log still holds offsets {first}.." in err, err
    assert "Traceback" not in err
    # A negative offset is no offset at all: a usage error, before anything connects.
    with pytest.raises(SystemExit) as exited:
        cli.main(["replay", *args, "--service", "post", "--from-offset", "-1", "--yes"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --from-offset: -1 is negative" in err and "Traceback" not in err, err
    assert requests_rows(stack.dsn("post")) == []

    # Small batches: the replay re-applies the log in many target transactions, not one.
    pipeline.start_worker("post", dataclasses.replace(right, batch_max_rows=50))
    code, out, err = run_cli(capsys, "replay", *args, "--service", "post", "--from-offset", str(first), "--yes")
    assert code == 0, (out, err)
    assert f"rewound to offset {first}" in out, out
    stack.wait_caught_up(["post"], pipeline=pipeline)
    stack.matches("post")
    assert not pipeline.errors["post"], pipeline.errors["post"]


def test_replay_refuses_an_offset_retention_deleted(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str]) -> None:
    """Needs a broker that implements DeleteRecords: Apache Kafka, through SPLITTER_TEST_KAFKA.

    tansu (the embedded broker) drops the connection on DeleteRecords (tried: "Local: Broker transport
    failure"), and keeps every record in memory, so no log of it ever starts above offset 0.  With it, the
    refusal branch is reached with --from-offset -1 in test_replay_after_fixing_a_topology_expression_...
    """
    if kafka_server.embedded is not None:
        pytest.skip("the embedded broker (tansu) does not implement DeleteRecords; run with SPLITTER_TEST_KAFKA "
                    "pointing at Apache Kafka to test retention")
    bootstrap = kafka_server.bootstrap
    topic = unique_name("t")
    ensure_topic(bootstrap, topic)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(10):
        producer.produce(topic, value=b"{}", headers=envelope.commit_headers(1000 + i))
    assert producer.flush(10) == 0
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})
    try:
        for future in admin.delete_records([TopicPartition(topic, 0, 6)], request_timeout=5).values():
            future.result(timeout=10)
    except KafkaException as exc:
        pytest.skip(f"the broker does not delete records ({exc})")
    dsns = make_databases(names=("post_db",))
    with connect(dsns["post_db"], "post_db", autocommit=True) as conn:
        ensure_state_schema(conn)
        write_checkpoint(conn, "post", Checkpoint(topic, 0, 9, 1009, None))
    settings = Settings(topology=subset(["post"]), source_dsn=dsns["post_db"], kafka_bootstrap=bootstrap,
                        target_dsns={"post": dsns["post_db"]}, topic=topic)
    with pytest.raises(ConfigurationError) as info:
        plan_replay(settings, "post", from_offset=2)
    message = str(info.value)
    assert "offset 2" in message and "deleted by retention" in message
    assert "the log still holds offsets 6..9" in message
    assert plan_replay(settings, "post", from_offset=7).start_offset == 7
    # A worker positioned at a deleted offset stops instead of jumping to what the log holds.
    consumer = ChangeLogConsumer(bootstrap, topic, unique_name("g"))
    try:
        consumer.seek(3)
        deadline = time.monotonic() + 30
        with pytest.raises(OffsetGoneError, match=f"offset 3 of topic {topic!r} is not in the log any more"):
            while time.monotonic() < deadline:
                assert not consumer.read(10, 0.5), "read records past a deleted offset"
    finally:
        consumer.close()


def test_replay_over_the_present_survives_a_partial_update_of_a_row_deleted_later(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], capsys: pytest.CaptureFixture[str]) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"], scale=10)
    # Copied with TOASTed content, so the log never holds this post's whole row ...
    with psycopg.connect(stack.source, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM posts ORDER BY id LIMIT 1").fetchone()
        assert row is not None
        toasted = str(row[0])
        conn.execute("UPDATE posts SET content = (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i) "
                     "WHERE id = %s", (toasted,))
    pipeline = Pipeline(dataclasses.replace(stack.settings, batch_max_rows=1))
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline)
    # ... only a partial row (content unchanged), then more than one read of other changes (the worker
    # reads 2000 records at a time: the replay cannot fold the two into one batch), then its delete.
    stack.source_exec("UPDATE posts SET liked_count = 7 WHERE id = %s", params=(toasted,))
    stack.source_exec("INSERT INTO posts (id, content, author_id, topic_id, created_at, updated_at) "
                      "SELECT 'filler-' || i, 'x', 'a', 't', now(), now() FROM generate_series(1, 2500) i")
    stack.source_exec("DELETE FROM posts WHERE id = %s", params=(toasted,))
    stack.wait_caught_up(pipeline=pipeline)
    stack.matches("post")

    code, out, err = run_cli(capsys, "replay", *stack.cli_args(), "--service", "post", "--from-offset", "0", "--yes")
    assert code == 0, (out, err)
    stack.wait_caught_up(["post"], timeout=20, pipeline=pipeline)
    stack.matches("post")
    assert not pipeline.errors["post"], pipeline.errors["post"]


def test_a_replay_past_what_the_service_applied_needs_accept_gap_and_names_the_gap(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    """The recovery path after records a service never applied are gone from the log (retention): start at
    what the log holds, knowingly, then re-copy the tables with `splitter backfill`."""
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"], scale=10)
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline)  # streaming: the updates below go through the log
    stack.source_exec(*["UPDATE posts SET liked_count = coalesce(liked_count, 0) + 1 "
                        "WHERE id = (SELECT min(id) FROM posts)"] * 5)
    stack.wait_caught_up(pipeline=pipeline)
    pipeline.stop("post")
    cp = stack.checkpoint("post")
    assert cp is not None
    with connect(stack.dsn("post"), "post_db", autocommit=True) as conn:
        write_checkpoint(conn, "post", Checkpoint(stack.settings.topic, 0, 2, cp[1], None))
    with pytest.raises(ConfigurationError, match=r"would skip offsets 3\.\.5 .*pass --accept-gap"):
        plan_replay(stack.settings, "post", from_offset=6)
    plan = plan_replay(stack.settings, "post", from_offset=6, accept_gap=True)
    assert plan.skipped == (3, 5)
    assert "SKIPS offsets 3..5" in describe(plan) and "splitter backfill --service post --table T" in describe(plan)
