"""Valid source histories apply against a service database's secondary unique index (issue 12, item 3).

user_db has `UNIQUE (username)` (a unique *index*: it cannot be deferred); bento_social has none, so the
source can do what no single-row order of writes can (a swap in one statement).  A worker collapses the
transactions of a batch into one upsert per table; these tests check that histories that were valid at
every source commit still land (under `on_error = "stop"` and `"dead_letter"`), that a row that is really
invalid (two equal usernames in the source) is still stopped or dead-lettered as before, and that a
worker stopped by it is shown stopped, with its error, by `splitter status`.

The pipeline runs in-process (test_replay's `Stack`, `Pipeline`).  Expected rows come from the test's
own SQL against the source.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Sequence

import psycopg
import pytest
from psycopg import sql

from splitter.core import envelope
from splitter.core.exit_codes import FATAL as EXIT_FATAL
from splitter.core.exit_codes import UNREACHABLE as EXIT_UNREACHABLE
from splitter.core.lsn import lsn_to_str
from splitter.pipeline.daemon import ComponentRecord, run_with_retries
from splitter.pipeline.worker import Worker
from tests.conftest import KafkaServer
from tests.integration.test_dead_letters import letters, wait_for
from tests.integration.test_replay import Pipeline, Stack, make_stack, pipelines, read_topic, run_cli, subset

__all__ = ["pipelines"]  # the fixture, imported so pytest finds it here

Rows = list[tuple[object, ...]]
_COLUMNS = ("id", "username", "first_name", "last_name")


def _rows(dsn: str, schema: str, table: str, ids: Sequence[str]) -> Rows:
    query = sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s) ORDER BY id").format(
        sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), sql.Identifier(schema, table))
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, (list(ids),)).fetchall()


def _same_users(stack: Stack, ids: Sequence[str]) -> tuple[Rows, Rows]:
    """(source rows, target rows) of these users: id, username and names."""
    return _rows(stack.source, "public", "users", ids), _rows(stack.dsn("user"), "users", "users", ids)


def _streaming_user_service(make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
                            unique_name: Callable[[str], str], pipelines: list[Pipeline],
                            on_error: dict[str, str] | None = None) -> tuple[Stack, Pipeline]:
    """The user service alone, copied and streaming in-process."""
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["user"], scale=10, on_error=on_error)
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    return stack, pipeline


def _new_users(stack: Stack, *users: tuple[str, str]) -> None:
    for user_id, username in users:
        stack.source_exec("INSERT INTO users (id, username, first_name, last_name, password, salt, created_at, "
                          "updated_at) VALUES (%s, %s, 'Una', 'Que', 'pw', 'salt', now(), now())",
                          params=(user_id, username))


def _wait_logged(stack: Stack, since: int, transactions: int) -> None:
    """Until capture has written `transactions` source transactions committed after LSN `since` into the log."""
    def logged() -> bool:
        commits = [h for _, h, _, _ in read_topic(stack.settings.kafka_bootstrap, stack.settings.topic, timeout=3)
                   if h.get(envelope.KIND_HEADER) == envelope.KIND_COMMIT and int(h[envelope.LSN_HEADER]) > since]
        return len(commits) >= transactions

    wait_for("capture to log the writes", logged, 60)


def test_a_value_moved_between_rows_over_several_transactions_lands_in_one_batch_under_stop(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    stack, pipeline = _streaming_user_service(make_databases, kafka_server, unique_name, pipelines)  # on_error=stop
    _new_users(stack, ("u-5", "uq-user5"), ("u-6", "uq-user6"))
    stack.wait_caught_up(pipeline=pipeline)
    ids = ["u-5", "u-6"]

    # Valid at every commit; written while the worker is stopped, so that it reads all three in one batch.
    pipeline.stop("user")
    since = stack.source_lsn()
    stack.source_exec("UPDATE users SET username = 'uq-user5-old' WHERE id = 'u-5'",
                      "UPDATE users SET username = 'uq-user5' WHERE id = 'u-6'",
                      "UPDATE users SET first_name = 'Edited again' WHERE id = 'u-5'")
    _wait_logged(stack, since, 3)
    pipeline.start_worker("user")
    stack.wait_caught_up(pipeline=pipeline)

    source, target = _same_users(stack, ids)
    assert [r[1] for r in source] == ["uq-user5-old", "uq-user5"], source
    assert target == source
    stack.matches("user")
    assert pipeline.running("user") and not pipeline.errors["user"], pipeline.errors["user"]


def test_a_swap_in_one_statement_applies_under_dead_letter_and_later_changes_follow(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    stack, pipeline = _streaming_user_service(make_databases, kafka_server, unique_name, pipelines,
                                              on_error={"user": "dead_letter"})
    _new_users(stack, ("u-20", "uq-user20"), ("u-21", "uq-user21"))
    stack.wait_caught_up(pipeline=pipeline)
    ids = ["u-20", "u-21"]

    stack.source_exec("UPDATE users SET username = CASE id WHEN 'u-20' THEN 'uq-user21' ELSE 'uq-user20' END "
                      "WHERE id IN ('u-20', 'u-21')")
    stack.wait_caught_up(pipeline=pipeline)
    stack.source_exec("UPDATE users SET first_name = 'After the swap' WHERE id = 'u-20'",
                      "UPDATE users SET last_name = 'Also after' WHERE id = 'u-21'")
    stack.wait_caught_up(pipeline=pipeline)

    assert letters(stack.dsn("user"), "user") == []
    source, target = _same_users(stack, ids)
    assert [r[1] for r in source] == ["uq-user21", "uq-user20"], source
    assert target == source
    stack.matches("user")
    assert not pipeline.errors["user"], pipeline.errors["user"]


def _start_recorded_worker(stack: Stack, settings_on_error: str) -> tuple[threading.Thread, threading.Event,
                                                                         dict[str, int]]:
    """The user worker as `splitter worker` runs it: `run_with_retries` with its stop record."""
    settings = dataclasses.replace(stack.settings, topology=subset(["user"], {"user": settings_on_error}))
    record = ComponentRecord(stack.dsn("user"), "database of service user", "worker", "user")
    stop, result = threading.Event(), {}

    def main() -> None:
        result["code"] = run_with_retries("worker[user]", lambda ev: Worker(settings, "user").run(ev), stop, record)

    thread = threading.Thread(target=main, name="recorded-user-worker", daemon=True)
    thread.start()
    return thread, stop, result


def test_two_equal_usernames_in_the_source_are_still_set_aside_or_stop_and_status_says_so(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], capsys: pytest.CaptureFixture[str]) -> None:
    stack, pipeline = _streaming_user_service(make_databases, kafka_server, unique_name, pipelines,
                                              on_error={"user": "dead_letter"})
    stack.wait_caught_up(pipeline=pipeline)
    user_db = stack.dsn("user")

    # dead_letter: the second 'uq-dup' is really invalid here; the changes around it apply.
    pipeline.stop("user")
    since = stack.source_lsn()
    _new_users(stack, ("u-30", "uq-dup"), ("u-31", "uq-dup"), ("u-32", "uq-fine"))
    stack.source_exec("UPDATE users SET first_name = 'Moved on' WHERE id = 'u-30'")
    _wait_logged(stack, since, 4)
    pipeline.start_worker("user")
    stack.wait_caught_up(pipeline=pipeline)
    got = letters(user_db, "user")
    assert [(g[1], g[2], g[3], g[4], g[7]) for g in got] == [("public.users", "c", ["u-31"], "23505", "open")], got
    assert "users_username_key" in got[0][5], got
    source, target = _same_users(stack, ["u-30", "u-32"])
    assert target == source and len(target) == 2, (source, target)
    assert _rows(user_db, "users", "users", ["u-31"]) == []
    pipeline.stop("user")

    # stop: another really invalid row stops the worker for good; status shows it stopped, with the error.
    _new_users(stack, ("u-33", "uq-fine"))
    before = stack.checkpoint("user")
    thread, stop, result = _start_recorded_worker(stack, "stop")
    try:
        thread.join(60)
        assert not thread.is_alive(), "the worker did not stop"
        assert result["code"] == EXIT_FATAL
    finally:
        stop.set()
        thread.join(30)
    assert stack.checkpoint("user") == before
    assert _rows(user_db, "users", "users", ["u-33"]) == []
    code, out, err = run_cli(capsys, "status", *stack.cli_args(), "--service", "user", "--json")
    assert code == EXIT_UNREACHABLE, err  # a worker stopped for good
    report = json.loads(out.strip().splitlines()[-1])
    service = next(s for s in report["services"] if s["service"] == "user")
    assert service["state"] == "stopped", report
    assert "SQLSTATE 23505" in service["last_error"] and "users_username_key" in service["last_error"], report
    stopped = [(c["component"], c["service"], c["exit_class"], c["exit_code"]) for c in report["stopped"]]
    assert stopped == [("worker", "user", "fatal", EXIT_FATAL)], report


def test_a_swap_that_cannot_be_replaced_safely_stops_naming_the_fix_and_applies_once_deferrable(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    stack, pipeline = _streaming_user_service(make_databases, kafka_server, unique_name, pipelines,
                                              on_error={"user": "dead_letter"})
    _new_users(stack, ("u-40", "uq-user40"), ("u-41", "uq-user41"))
    stack.wait_caught_up(pipeline=pipeline)
    user_db = stack.dsn("user")
    # A column of the service's own, which the topology does not write: delete-then-insert would reset it.
    with psycopg.connect(user_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE users.users ADD COLUMN nickname text NOT NULL DEFAULT 'none'")
        conn.execute("UPDATE users.users SET nickname = 'kept' WHERE id IN ('u-40', 'u-41')")

    before = stack.checkpoint("user")
    stack.source_exec("UPDATE users SET username = CASE id WHEN 'u-40' THEN 'uq-user41' ELSE 'uq-user40' END "
                      "WHERE id IN ('u-40', 'u-41')")
    assert pipeline.wait_exit("user", timeout=60) == EXIT_FATAL
    swap_lsn = max(int(h[envelope.LSN_HEADER]) for _, h, _, _ in read_topic(stack.settings.kafka_bootstrap,
                                                                            stack.settings.topic)
                   if h.get(envelope.TABLE_HEADER) == b"public.users")
    message = str(pipeline.errors["user"][-1])
    for part in ("users_username_key", "users.users", lsn_to_str(swap_lsn), "DEFERRABLE", "nickname"):
        assert part in message, (part, message)
    assert stack.checkpoint("user") == before
    assert letters(user_db, "user") == []

    # The fix the error names: the same uniqueness as a DEFERRABLE constraint.
    with psycopg.connect(user_db, autocommit=True) as conn:
        conn.execute("DROP INDEX users.users_username_key")
        conn.execute("ALTER TABLE users.users ADD CONSTRAINT users_username_key UNIQUE (username) DEFERRABLE")
    pipeline.start_worker("user")
    stack.wait_caught_up(pipeline=pipeline)
    source, target = _same_users(stack, ["u-40", "u-41"])
    assert [r[1] for r in source] == ["uq-user41", "uq-user40"], source
    assert target == source
    with psycopg.connect(user_db, autocommit=True) as conn:
        kept = conn.execute("SELECT nickname FROM users.users WHERE id IN ('u-40', 'u-41')").fetchall()
    assert kept == [("kept",), ("kept",)]
    assert letters(user_db, "user") == []
