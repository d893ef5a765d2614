"""The embedded servers and root fixtures do what the rest of the suite relies on, against real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from devtools.embedded.kafka import EmbeddedKafka
from devtools.embedded.postgres import EmbeddedPostgres
from devtools.embedded.process import EmbeddedServerError
from tests.conftest import ALL_DBS, PG15_BIN, KafkaServer, PgServer


def test_pg_has_logical_wal(pg_server: PgServer) -> None:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        row = conn.execute("SHOW wal_level").fetchone()
        assert row == ("logical",)


def test_make_databases_creates_and_drops_with_slot(
    pg_server: PgServer, make_databases: Callable[..., dict[str, str]], unique_name: Callable[[str], str]
) -> None:
    dbs = make_databases("emb")
    assert set(dbs) == set(ALL_DBS)
    slot = unique_name("slot")
    with psycopg.connect(dbs["bento_social"], autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])
        conn.execute("INSERT INTO t VALUES (1, 'a')")
        changes = conn.execute(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL,"
            " 'proto_version', '1', 'publication_names', 'p')",
            [slot],
        ).fetchone()
        assert changes is not None and changes[0] >= 3  # BEGIN, RELATION, INSERT, COMMIT
        dbname = conn.info.dbname

    # What the fixture's teardown does, run here so the test can check it.
    from tests.conftest import drop_databases

    drop_databases(pg_server.dsn(), [dbname])
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone() is None
        assert admin.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone() is None


def test_kill_then_start_recovers_committed_data(pg_factory: Callable[..., EmbeddedPostgres]) -> None:
    pg = pg_factory()
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    # A connection left open across the crash, as a real client would be.
    open_conn = psycopg.connect(pg.dsn(), autocommit=True)
    pid = pg.pid
    pg.kill()
    assert not pg.running
    assert pid is not None
    pg.start()
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1000,)
    assert "database system was interrupted" in pg.log_path.read_text()
    with pytest.raises(psycopg.OperationalError):
        open_conn.execute("SELECT 1")
    open_conn.close()


def test_restart_reuses_data_dir_and_port(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EmbeddedPostgres(data) as pg:
        port = pg.port
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
        pg.restart()
        assert pg.port == port
    assert not pg.running
    with EmbeddedPostgres(data) as again, psycopg.connect(again.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('kept') IS NOT NULL").fetchone() == (True,)


def test_start_failure_reports_log(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "data", extra_settings={"no_such_setting_xyz": "1"}, start_timeout=20)
    with pytest.raises(EmbeddedServerError, match="no_such_setting_xyz"):
        pg.start()
    assert not pg.running


def _create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        fut.result(15)


def test_broker_assign_at_offset_and_group_commit(kafka_server: KafkaServer, unique_topic: str) -> None:
    _create_topic(kafka_server.bootstrap, unique_topic)
    delivered: list[int] = []

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        assert err is None, err
        delivered.append(msg.offset())  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": kafka_server.bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(10):
        producer.produce(unique_topic, key=b"k", value=f"v{i}".encode(), on_delivery=on_delivery)
    assert producer.flush(15) == 0
    assert sorted(delivered) == list(range(10))

    group = f"g-{unique_topic}"
    consumer = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(unique_topic, 0, 4)])
        got: list[tuple[int, bytes | None]] = []
        deadline = time.monotonic() + 15
        while len(got) < 3 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            offset = msg.offset()
            assert offset is not None
            got.append((offset, msg.value()))
        assert got[:3] == [(4, b"v4"), (5, b"v5"), (6, b"v6")]

        # Group offsets without a group join (assign(), never subscribe()).
        consumer.commit(offsets=[TopicPartition(unique_topic, 0, 7)], asynchronous=False)
        [committed] = consumer.committed([TopicPartition(unique_topic, 0)], timeout=10)
        assert committed.offset == 7
    finally:
        consumer.close()

    other = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": group})
    try:
        [committed] = other.committed([TopicPartition(unique_topic, 0)], timeout=10)
        assert committed.offset == 7
    finally:
        other.close()


def test_broker_kill_and_restart_on_same_port(tmp_path: Path) -> None:
    with EmbeddedKafka(log_path=tmp_path / "tansu.log") as broker:
        port = broker.port
        _create_topic(broker.bootstrap, "before-kill")
        broker.kill()
        assert not broker.running
        broker.start()
        assert broker.port == port
        topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
        assert "before-kill" not in topics  # memory storage: a restarted broker is empty
    assert not broker.running


@pytest.mark.skipif(not (PG15_BIN / "postgres").exists(), reason="Debian postgresql-15 not installed")
def test_other_postgres_version_via_bin_dir(pg_factory: Callable[..., EmbeddedPostgres]) -> None:
    pg = pg_factory(bin_dir=PG15_BIN)
    assert pg.major_version == 15
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        assert conn.info.server_version // 10000 == 15


_CHILD = """
import sys
from pathlib import Path
from devtools.embedded.kafka import EmbeddedKafka
from devtools.embedded.postgres import EmbeddedPostgres
pg = EmbeddedPostgres(Path(sys.argv[1]))
pg.start()
broker = EmbeddedKafka(log_path=Path(sys.argv[1]).parent / "tansu.log")
broker.start()
print(pg.pid, broker.pid, flush=True)
if sys.argv[2] == "hang":
    import time
    time.sleep(600)
"""


def _pids_gone(pids: list[int], timeout: float) -> bool:
    from devtools.embedded.process import _wait_gone

    return _wait_gone(pids, timeout)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_servers_do_not_outlive_the_process(tmp_path: Path, how: str) -> None:
    """atexit stops servers on a normal exit; the parent-death signal stops them if Python is killed."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path / "data"), "exit" if how == "exit" else "hang"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    pids = [int(p) for p in line.split()]
    assert len(pids) == 2, line
    if how == "sigkill":
        child.send_signal(signal.SIGKILL)
    child.wait(60)
    assert _pids_gone(pids, 30), f"servers {pids} still running after the test process ended ({how})"
