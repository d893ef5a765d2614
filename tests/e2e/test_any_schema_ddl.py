"""Source schema changes while streaming (`splitter.pipeline.worker.schema_policy`): a change the topology does
not read goes on exactly; a column it reads that changes type or is dropped stops that service's worker with
the table and column named (its stop record, for `splitter status`) and applies nothing from the change on; a
worker stopped by a dropped column goes on once topology.py no longer reads it.

Capture and each worker run as their own processes, so that one worker can stop and be started again while
the others stream.  Expected values come from the test's own SQL on the source (`setup.text_rows`).

Found and fixed: a worker stopped by a type change committed nothing of what it had read before the change,
and, its last shape kept in memory only, stopped again at the same offset after every restart.  It now applies
the complete transactions before the changing one and records the new shape (`splitter.schema_stops`): the
restart its message asks for takes it.  Each table's shape is stored with the checkpoint, so a type change
made while the worker was not running stops it too.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from splitter.core.exit_codes import FATAL, OK
from tests.anyschema import setup
from tests.conftest import KafkaServer
from tests.harness import PipelineEnv

SERVICES = ("widened_int", "widened_text", "grown", "shrunk")
#: service → (table, columns compared)
COMPARED = {"widened_int": ("widened_int", ["n", "note"]), "widened_text": ("widened_text", ["label", "note"]),
            "grown": ("grown", ["v"]), "shrunk": ("shrunk", ["kept", "gone"])}


def _differences(env: PipelineEnv, service: str, columns: list[str] | None = None) -> list[str]:
    table, compared = COMPARED[service]
    compared = columns or compared
    return setup.differences(setup.text_rows(env.source, table, compared),
                             setup.text_rows(env.dsns[f"{service}_db"], table, compared), compared)


def _assert_same(env: PipelineEnv, *services: str) -> None:
    problems = [f"{s}: {p}" for s in services for p in _differences(env, s)]
    assert not problems, "\n".join(problems[:40])


def _stopped(env: PipelineEnv, service: str, timeout: float = 60) -> str:
    """The worker's exit (it must be FATAL) and its stop record's message in the service database."""
    proc = env.processes[f"worker-{service}"]
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"worker {service} did not stop\n{env.logs()}") from exc
    assert code == FATAL, env.logs()
    with psycopg.connect(env.dsns[f"{service}_db"], autocommit=True) as conn:
        row = conn.execute("SELECT state, exit_class, message FROM splitter.components "
                           "WHERE component = 'worker' AND service = %s", (service,)).fetchone()
    assert row is not None and row[:2] == ("stopped", "fatal"), row
    return str(row[2])


def _wait_applied(env: PipelineEnv, service: str, columns: list[str] | None = None, timeout: float = 60) -> None:
    """Until the service database holds what the source does (while other workers are down)."""
    env.wait_caught_up(timeout=timeout, services=[service])
    deadline = time.monotonic() + 10
    while problems := _differences(env, service, columns):
        assert time.monotonic() < deadline, "\n".join(problems[:40])
        time.sleep(0.2)


def _prepare(make_databases: Callable[..., dict[str, str]], kafka: str, unique_name: Callable[[str], str],
             tmp_path: Path, services: tuple[str, ...]) -> PipelineEnv:
    """The ddl.sql databases with three rows in each table, capture and the workers of `services` started."""
    topology = tmp_path / "ddl_topology.py"  # the operator edits it when a column it reads is dropped
    topology.write_text((setup.HERE / "ddl_topology.py").read_text())
    env = setup.prepare(make_databases, kafka, unique_name, tmp_path, schema="ddl.sql", topology=topology,
                        databases=tuple(f"{s}_db" for s in SERVICES))
    setup.execute(env.source, [
        "INSERT INTO widened_int SELECT g, g, 'copied' FROM generate_series(1, 3) g",
        "INSERT INTO widened_text SELECT g, 'l' || g, 'copied' FROM generate_series(1, 3) g",
        "INSERT INTO grown SELECT g, 'v' || g, g FROM generate_series(1, 3) g",
        "INSERT INTO shrunk SELECT g, 'k' || g, 'g' || g FROM generate_series(1, 3) g",
    ])
    env.start_capture()
    for service in services:
        env.start_worker(service)
    return env


def _widen(source: str) -> None:
    """integer -> bigint after a transaction of its own, and varchar(10) -> text in the middle of one; both
    with changes before and after."""
    setup.execute(source, ["INSERT INTO widened_int VALUES (10, 10, 'before the change')"])
    setup.execute(source, ["UPDATE widened_int SET note = 'same transaction, before' WHERE id = 1",
                           "ALTER TABLE widened_int ALTER COLUMN n TYPE bigint",
                           "INSERT INTO widened_int VALUES (11, 1099511627776, 'after the change')",
                           "UPDATE widened_int SET n = -9223372036854775808 WHERE id = 2"])
    setup.execute(source, ["UPDATE widened_int SET note = 'next transaction' WHERE id = 3"])
    setup.execute(source, ["UPDATE widened_text SET note = 'same transaction, before' WHERE id = 1",
                           "ALTER TABLE widened_text ALTER COLUMN label TYPE text",
                           "INSERT INTO widened_text VALUES (11, 'longer than ten characters', 'after')"])


def _rows(dsn: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, options=setup.READ_OPTIONS) as conn:
        return conn.execute(query.encode()).fetchall()


def test_source_schema_changes_go_on_or_stop_naming_table_and_column(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = _prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, SERVICES)
    source = env.source
    try:
        env.wait_caught_up(timeout=180)
        _assert_same(env, *SERVICES)

        _widen(source)
        # Added columns (no default; a constant default; a volatile default, which rewrites the table), a
        # column the topology does not read changing type (a rewrite) and dropped: none of it is read.
        setup.execute(source, ["ALTER TABLE grown ADD COLUMN plain integer",
                               "UPDATE grown SET v = 'after plain', plain = 1 WHERE id = 1"])
        setup.execute(source, ["ALTER TABLE grown ADD COLUMN constant text NOT NULL DEFAULT 'd'",
                               "INSERT INTO grown (id, v) VALUES (10, 'after constant')"])
        setup.execute(source, ["UPDATE grown SET v = 'before volatile' WHERE id = 2",
                               "ALTER TABLE grown ADD COLUMN volatile timestamptz DEFAULT clock_timestamp()",
                               "UPDATE grown SET v = 'after volatile' WHERE id = 3"])
        setup.execute(source, ["ALTER TABLE grown ALTER COLUMN unread TYPE bigint",
                               "INSERT INTO grown (id, v, unread) VALUES (11, 'after unread widened', 5000000000)"])
        setup.execute(source, ["ALTER TABLE grown DROP COLUMN unread", "DELETE FROM grown WHERE id = 10",
                               "INSERT INTO grown (id, v) VALUES (12, 'after unread dropped')"])
        # A column the topology reads, dropped.
        setup.execute(source, ["UPDATE shrunk SET kept = 'before the drop' WHERE id = 1"])
        setup.execute(source, ["ALTER TABLE shrunk DROP COLUMN gone",
                               "INSERT INTO shrunk VALUES (10, 'after the drop')"])

        _wait_applied(env, "grown")  # nothing it reads changed: it went on
        assert env.processes["worker-grown"].poll() is None

        said = _stopped(env, "widened_int")
        assert "source table public.widened_int changed the type of n integer -> bigint" in said, said
        said = _stopped(env, "widened_text")
        assert "source table public.widened_text changed the type of label character varying(10) -> text" \
            in said, said
        said = _stopped(env, "shrunk")
        assert "source table public.shrunk no longer has column(s) gone" in said, said
        assert "Update topology.py for the new shape and restart this worker" in said, said
        # Nothing from the change on: not the transaction of the change (also not its rows before the ALTER),
        # nor any later one.
        widened = _rows(env.dsns["widened_int_db"], "SELECT id, n, note FROM widened_int WHERE id <> 10 ORDER BY id")
        assert widened == [(1, 1, "copied"), (2, 2, "copied"), (3, 3, "copied")]
        assert _rows(env.dsns["widened_text_db"], "SELECT id, label, note FROM widened_text ORDER BY id") == [
            (1, "l1", "copied"), (2, "l2", "copied"), (3, "l3", "copied")]
        assert _rows(env.dsns["shrunk_db"], "SELECT id FROM shrunk WHERE id = 10") == []

        # What the message says: topology.py no longer reads the dropped column, the worker started again; the
        # service keeps what the column held.
        topology = env.topology
        topology.write_text(topology.read_text().replace(', "gone": "gone"', ""))
        env.start_worker("shrunk")
        _wait_applied(env, "shrunk", ["kept"])
        setup.execute(source, ["UPDATE shrunk SET kept = 'streaming again' WHERE id = 2",
                               "INSERT INTO grown (id, v) VALUES (13, 'streaming on')"])
        env.wait_caught_up(timeout=60, services=["grown", "shrunk"])
        _assert_same(env, "grown")
        assert _differences(env, "shrunk", ["kept"]) == []
        assert _rows(env.dsns["shrunk_db"], "SELECT id, gone FROM shrunk ORDER BY id") == [
            (1, "g1"), (2, "g2"), (3, "g3"), (10, None)]
        assert all(env.processes[f"worker-{s}"].poll() is None for s in ("grown", "shrunk")), env.logs()
        assert env.command("verify", "--service", "grown", "--service", "shrunk") == OK, env.logs()
    finally:
        env.stop_all()


def test_a_worker_stopped_by_a_type_change_goes_on_after_the_documented_remedy(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    widened = ("widened_int", "widened_text")
    env = _prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, widened)
    try:
        env.wait_caught_up(timeout=180, services=widened)
        _widen(env.source)
        for service in widened:
            _stopped(env, service)
        # "Nothing was applied from that change on": what came before it was.
        assert _rows(env.dsns["widened_int_db"], "SELECT note FROM widened_int WHERE id = 10") == [
            ("before the change",)]
        # "Check the expressions and the target column types, then restart this worker".
        setup.execute(env.dsns["widened_int_db"], ["ALTER TABLE widened_int ALTER COLUMN n TYPE bigint"])
        setup.execute(env.dsns["widened_text_db"], ["ALTER TABLE widened_text ALTER COLUMN label TYPE text"])
        for service in widened:
            env.start_worker(service)
        for service in widened:
            _wait_applied(env, service, timeout=30)
        setup.execute(env.source, ["INSERT INTO widened_int VALUES (12, 9223372036854775807, 'streaming again')",
                                   "UPDATE widened_text SET label = repeat('long', 10) WHERE id = 2"])
        env.wait_caught_up(timeout=60, services=widened)
        _assert_same(env, *widened)
        assert env.command("verify", "--service", "widened_int", "--service", "widened_text") == OK, env.logs()

        # A type change while the worker is not running: the shape stored with its checkpoint is its baseline,
        # so the first row of the new shape stops it all the same; the restart after the remedy goes on.
        proc = env.processes["worker-widened_int"]
        proc.terminate()
        assert proc.wait(30) == OK, env.logs()
        setup.execute(env.source, ["ALTER TABLE widened_int ALTER COLUMN n TYPE numeric(30, 2)",
                                   "INSERT INTO widened_int VALUES (13, 12345678901234567890.25, 'not running')"])
        env.start_worker("widened_int")
        said = _stopped(env, "widened_int")
        assert "source table public.widened_int changed the type of n bigint -> numeric(30,2)" in said, said
        setup.execute(env.dsns["widened_int_db"], ["ALTER TABLE widened_int ALTER COLUMN n TYPE numeric(30, 2)"])
        env.start_worker("widened_int")
        env.wait_caught_up(timeout=60, services=["widened_int"])
        _assert_same(env, "widened_int")
    finally:
        env.stop_all()


def test_a_type_change_between_the_initial_copy_and_the_first_streamed_row_stops_the_worker(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    """The copy stores the tables' shapes at its snapshot with its checkpoint: the worker's first row of a table
    is judged against them, so a change made before the worker streamed anything of it still stops it."""
    env = _prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, ())
    try:
        deadline = time.monotonic() + 120
        while not _rows(env.dsns["widened_int_db"], "SELECT 1 FROM pg_tables WHERE schemaname = 'splitter' "
                        "AND tablename = 'checkpoints'") or not _rows(
                env.dsns["widened_int_db"], "SELECT 1 FROM splitter.checkpoints WHERE service = 'widened_int'"):
            assert time.monotonic() < deadline, env.logs()
            time.sleep(0.5)
        setup.execute(env.source, ["ALTER TABLE widened_int ALTER COLUMN n TYPE bigint",
                                   "INSERT INTO widened_int VALUES (20, 5000000000, 'after the copy')"])
        env.start_worker("widened_int")
        said = _stopped(env, "widened_int")
        assert "source table public.widened_int changed the type of n integer -> bigint" in said, said
        assert _rows(env.dsns["widened_int_db"], "SELECT id FROM widened_int WHERE id = 20") == []
    finally:
        env.stop_all()
