"""Dead letters against real servers: rows a service database rejects, records that are not events.

The pipeline runs in-process (see tests/integration/test_replay.py: `Stack`, `Pipeline`) with only the
services a test needs.  Rejections come from what the source really allows and the target does not: the
unique username index of user_db, an enum value added to the source only, a NOT NULL the source dropped.
Operator commands go through `splitter.cli.app` (`dlq list|retry|drop`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import orjson
import psycopg
import pytest
from confluent_kafka import Producer

from splitter.core import envelope
from splitter.core.exit_codes import FATAL as EXIT_FATAL
from tests.conftest import KafkaServer
from tests.integration.test_replay import (
    Pipeline,
    Stack,
    make_stack,
    pipelines,
    read_topic,
    run_cli,
    with_table_on_error,
)

__all__ = ["pipelines"]  # the fixture, imported so pytest finds it here

Letter = tuple[int, str | None, str | None, list[str] | None, str | None, str, int | None, str, bytes | None]


def letters(dsn: str, service: str) -> list[Letter]:
    """(id, table, op, key, sqlstate, error, offset, status, raw_value) in id order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, source_table, op, source_key, sqlstate, error, kafka_offset, status, raw_value "
            "FROM splitter.dead_letters WHERE service = %s ORDER BY id", (service,)).fetchall()
    return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bytes(r[8]) if r[8] is not None else None)
            for r in rows]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0, pipeline: Pipeline | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; errors: {pipeline.errors if pipeline else None}")
        time.sleep(0.2)


def one(dsn: str, query: str, *params: object) -> object:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


def _new_user(stack: Stack, user_id: str, username: str) -> None:
    stack.source_exec("INSERT INTO users (id, username, first_name, last_name, password, salt, created_at, updated_at) "
                      "VALUES (%s, %s, 'Dee', 'Lettered', 'pw', 'salt', now(), now())", params=(user_id, username))


def test_unique_username_is_dead_lettered_in_order_then_retried_and_dropped(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], capsys: pytest.CaptureFixture[str]) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["user"], scale=20,
                       on_error={"user": "dead_letter"})
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline)
    user_db = stack.dsn("user")
    first_id, taken = (str(v) for v in one_row(stack.source, "SELECT id, username FROM users ORDER BY id LIMIT 1"))

    # The source never enforced unique usernames; user_db does.
    _new_user(stack, "dup-b", taken)
    _new_user(stack, "later-c", "someone_unique_c")           # unrelated: must still apply
    stack.source_exec("UPDATE users SET first_name = 'Changed' WHERE id = 'dup-b'")  # waits behind the insert
    stack.wait_caught_up(pipeline=pipeline)

    assert one(user_db, "SELECT username FROM users.users WHERE id = 'later-c'") == "someone_unique_c"
    assert one(user_db, "SELECT count(*) FROM users.users WHERE id = 'dup-b'") == 0
    got = letters(user_db, "user")
    assert [(g[1], g[2], g[3], g[4], g[7]) for g in got] == [
        ("public.users", "c", ["dup-b"], "23505", "open"),
        ("public.users", "u", ["dup-b"], None, "open"),
    ], got
    assert "users_username_key" in got[0][5]
    assert "waits behind an earlier dead letter" in got[1][5]
    assert got[0][6] is not None and got[1][6] is not None and got[0][6] < got[1][6]

    # A copy goes to the service's dead-letter topic, for alerting.
    dlq = read_topic(stack.settings.kafka_bootstrap, f"{stack.settings.topic}.dlq.user")
    assert [d[1].get("splitter.sqlstate") for d in dlq] == [b"23505", b""]
    first = orjson.loads(dlq[0][2] or b"{}")
    assert (first["service"], first["table"], first["op"], first["key"], first["offset"]) == \
        ("user", "public.users", "c", ["dup-b"], got[0][6])
    assert first["event"]["after"]["username"] == taken

    args = stack.cli_args()
    code, out, err = run_cli(capsys, "dlq", "list", *args, "--service", "user", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert (listed["command"], listed["action"], listed["service"]) == ("dlq", "list", "user")
    assert [(d["id"], d["op"], d["key"], d["sqlstate"], d["status"]) for d in listed["dead_letters"]] == \
        [(g[0], g[2], g[3], g[4], "open") for g in got]
    code, out, err = run_cli(capsys, "dlq", "list", *args, "--service", "user")
    assert code == 0 and "23505" in out and "dup-b" in out, out

    # Fix the cause in the source; retry applies the parked changes in order.
    stack.source_exec("UPDATE users SET username = username || '_renamed' WHERE id = %s", params=(first_id,))
    stack.wait_caught_up(pipeline=pipeline)
    code, out, err = run_cli(capsys, "dlq", "retry", *args, "--service", "user", "--wait", "30")
    assert code == 0, (out, err)
    assert "retried 2: 2 applied, 0 still rejected" in out, out
    assert [g[7] for g in letters(user_db, "user")] == ["retried", "retried"]
    assert one(user_db, "SELECT first_name FROM users.users WHERE id = 'dup-b'") == "Changed"
    stack.wait_caught_up(pipeline=pipeline)
    stack.matches("user")

    # Once retried, the row is no longer parked: its later changes apply directly.
    stack.source_exec("UPDATE users SET last_name = 'Applied' WHERE id = 'dup-b'")
    stack.wait_caught_up(pipeline=pipeline)
    assert one(user_db, "SELECT last_name FROM users.users WHERE id = 'dup-b'") == "Applied"

    # dlq drop: the change is given up (kept for audit); the row's later changes are no longer parked.
    _new_user(stack, "dup-d", "someone_unique_c")
    stack.wait_caught_up(pipeline=pipeline)
    dropped = [g for g in letters(user_db, "user") if g[3] == ["dup-d"]]
    assert [(g[4], g[7]) for g in dropped] == [("23505", "open")]
    code, out, err = run_cli(capsys, "dlq", "drop", *args, "--service", "user", "--id", str(dropped[0][0]),
                             "--yes", "--wait", "30", "--json")
    assert code == 0, (out, err)
    answer = json.loads(out)
    assert (answer["command"], answer["action"], answer["service"], answer["done"], answer["ids"]) == \
        ("dlq", "drop", "user", True, [dropped[0][0]])
    assert "dropped 1 dead letter(s)" in answer["message"], answer
    assert [g[7] for g in letters(user_db, "user")] == ["retried", "retried", "dropped"]
    code, out, err = run_cli(capsys, "dlq", "list", *args, "--service", "user")
    assert "no open dead letters" in out, out
    stack.source_exec("DELETE FROM users WHERE id = 'dup-d'")
    stack.wait_caught_up(pipeline=pipeline)
    stack.matches("user")
    assert len(letters(user_db, "user")) == 3
    assert not pipeline.errors["user"], pipeline.errors["user"]


def one_row(dsn: str, query: str) -> tuple[object, ...]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return tuple(row)


def test_rejected_values_and_unreadable_records_are_set_aside_or_stop_by_policy(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["auth", "post", "topic"], scale=10,
                       on_error={"auth": "dead_letter", "post": "dead_letter"})  # topic keeps "stop"
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline)
    settings = stack.settings

    # 1. on_error="stop": a NOT NULL the source dropped; topic_db rejects the row and the worker stops there.
    stack.source_exec("ALTER TABLE topics ALTER COLUMN color DROP NOT NULL")
    stack.wait_caught_up(pipeline=pipeline)
    before = stack.checkpoint("topic")
    stack.source_exec("INSERT INTO topics (id, name, color, created_at, updated_at) "
                      "VALUES ('bad-topic', 'No colour', NULL, now(), now())")
    stack.source_exec("INSERT INTO topics (id, name, color, created_at, updated_at) "
                      "VALUES ('good-topic', 'Fine', '#fff', now(), now())")
    assert pipeline.wait_exit("topic") == EXIT_FATAL
    message = str(pipeline.errors["topic"][-1])
    assert "Service topic stops here" in message and "SQLSTATE 23502" in message, message
    # Every table of topic stops: the batch stops at once, naming its one table and where to change that.
    assert "(service topic has on_error='stop' and table topics sets none of its own)" in message, message
    assert "set on_error='dead_letter' on table topics (Table(..., on_error='dead_letter')) or on service topic" \
        in message, message
    bad = [e for e in read_topic(settings.kafka_bootstrap, settings.topic)
           if e[1].get(envelope.TABLE_HEADER) == b"public.topics" and b"bad-topic" in (e[2] or b"")]
    assert len(bad) == 1
    after = stack.checkpoint("topic")
    assert before is not None and after is not None
    assert after[0] < bad[0][0] and after[1] < int(bad[0][1][envelope.LSN_HEADER]), (after, bad[0][:2])
    topic_db = stack.dsn("topic")
    assert one(topic_db, "SELECT count(*) FROM topic.topics WHERE id IN ('bad-topic', 'good-topic')") == 0
    time.sleep(1.5)
    assert stack.checkpoint("topic") == after  # nothing moves once stopped

    # 2. on_error="dead_letter": an enum value the target lacks (auth) and a NULL the target refuses (post).
    stack.source_exec("""ALTER TYPE "UserRole" ADD VALUE 'superadmin'""",
                      "ALTER TABLE posts ALTER COLUMN content DROP NOT NULL")
    victim = str(one_row(stack.source, "SELECT id FROM users ORDER BY id LIMIT 1")[0])
    stack.source_exec("UPDATE users SET role = 'superadmin' WHERE id = %s", params=(victim,))
    stack.source_exec("INSERT INTO posts (id, content, author_id, topic_id, created_at, updated_at) "
                      "VALUES ('null-post', NULL, 'a', 't', now(), now())")

    # 3. Records that are not splitter events at all: no headers; and a row record whose value is garbage.
    schema_header = next(e[1][envelope.SCHEMA_HEADER] for e in read_topic(settings.kafka_bootstrap, settings.topic)
                         if e[1].get(envelope.TABLE_HEADER) == b"public.posts")
    garbage = b"\x00\xff not an event"
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(settings.topic, value=garbage)
    producer.produce(settings.topic, value=b"{half a row", headers=[
        (envelope.KIND_HEADER, envelope.KIND_ROW), (envelope.TABLE_HEADER, b"public.posts"),
        (envelope.LSN_HEADER, str(2**62).encode()), (envelope.SCHEMA_HEADER, schema_header)])
    assert producer.flush(10) == 0

    # ... and later changes keep flowing.
    stack.source_exec("UPDATE users SET username = 'after_the_garbage' WHERE id <> %s AND id = "
                      "(SELECT min(id) FROM users WHERE id <> %s)", params=(victim, victim))
    stack.source_exec("INSERT INTO posts (id, content, author_id, topic_id, created_at, updated_at) "
                      "VALUES ('good-post', 'fine', 'a', 't', now(), now())")
    stack.wait_caught_up(["auth", "post"], pipeline=pipeline)
    auth_db, post_db = stack.dsn("auth"), stack.dsn("post")
    assert one(auth_db, "SELECT count(*) FROM auth.users WHERE username = 'after_the_garbage'") == 1
    assert one(post_db, "SELECT content FROM post.posts WHERE id = 'good-post'") == "fine"
    assert one(post_db, "SELECT count(*) FROM post.posts WHERE id = 'null-post'") == 0
    assert one(auth_db, "SELECT role::text FROM auth.users WHERE id = %s", victim) != "superadmin"

    wait_for("the unreadable records to be stored", lambda: len(letters(post_db, "post")) == 3, pipeline=pipeline)
    auth_letters, post_letters = letters(auth_db, "auth"), letters(post_db, "post")
    assert [(g[1], g[2], g[3], g[4]) for g in auth_letters] == [
        ("public.users", "u", [victim], "22P02"), (None, None, None, None)], auth_letters
    assert "superadmin" in auth_letters[0][5]
    assert auth_letters[1][8] == garbage and "splitter.lsn" in auth_letters[1][5]
    assert [(g[1], g[2], g[3], g[4]) for g in post_letters] == [
        ("public.posts", "c", ["null-post"], "23502"), (None, None, None, None), (None, None, None, None)]
    assert [g[8] for g in post_letters[1:]] == [garbage, b"{half a row"]
    assert post_letters[1][6] is not None and post_letters[2][6] == post_letters[1][6] + 1
    assert all(g[7] == "open" for g in auth_letters + post_letters)
    for service in ("auth", "post"):
        assert pipeline.running(service) and not pipeline.errors[service], pipeline.errors[service]


def test_a_table_s_own_on_error_sets_its_rows_aside_while_the_service_stops_at_the_others(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    """Service user keeps on_error="stop"; its table followers says "dead_letter".  A follower row user_db refuses
    is set aside and the stream goes on (the rest of its transaction, of either table, applies); a users row it
    refuses stops the worker, naming the table and where to change its policy, and nothing of that batch applies."""
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["user"], scale=20)
    settings = stack.with_topology(with_table_on_error(stack.settings.topology, {"user.followers": "dead_letter"}))
    user_db = stack.dsn("user")
    with psycopg.connect(user_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE users.followers ADD CONSTRAINT not_refused CHECK (follower_id NOT LIKE 'refused-%')")
    pipeline = Pipeline(settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline)
    first_id, taken = (str(v) for v in one_row(stack.source, "SELECT id, username FROM users ORDER BY id LIMIT 1"))
    follow = "INSERT INTO followers (follower_id, following_id, created_at) VALUES (%s, %s, now())"

    # 1. One source transaction: a follower row user_db refuses, a new user and a follower row it takes.
    with psycopg.connect(stack.source) as src, src.transaction():
        src.execute(follow, ("refused-1", first_id))
        src.execute("INSERT INTO users (id, username, first_name, last_name, password, salt, created_at, updated_at) "
                    "VALUES ('fine-a', 'someone_unique_a', 'Dee', 'Lettered', 'pw', 'salt', now(), now())")
        src.execute(follow, ("fine-a", first_id))
    stack.wait_caught_up(pipeline=pipeline)
    got = letters(user_db, "user")
    assert [(g[1], g[2], g[3], g[4], g[7]) for g in got] == [
        ("public.followers", "c", ["refused-1", first_id], "23514", "open")], got  # the key in column order
    assert "not_refused" in got[0][5]
    assert one(user_db, "SELECT username FROM users.users WHERE id = 'fine-a'") == "someone_unique_a"
    assert one(user_db, "SELECT array_agg(follower_id) FROM users.followers WHERE follower_id IN ('fine-a', "
                        "'refused-1')") == ["fine-a"]
    assert pipeline.running("user") and not pipeline.errors["user"], pipeline.errors["user"]

    # 2. A users row user_db refuses (its unique username), with a follower row it would take: users takes the
    # service's "stop".
    with psycopg.connect(stack.source) as src, src.transaction():
        src.execute(follow, ("fine-b", first_id))
        src.execute(
            "INSERT INTO users (id, username, first_name, last_name, password, salt, created_at, updated_at) "
            "VALUES ('dup-b', %s, 'Dee', 'Lettered', 'pw', 'salt', now(), now())", (taken,))
    assert pipeline.wait_exit("user") == EXIT_FATAL
    message = str(pipeline.errors["user"][-1])
    for needle in ("public.users → user.users.users", "source row (id)=(dup-b)", "users_username_key",
                   "SQLSTATE 23505",
                   "Service user stops here (service user has on_error='stop' and table users sets none of its own)",
                   "set on_error='dead_letter' on table users (Table(..., on_error='dead_letter')) or on service user"):
        assert needle in message, message
    refused = [e for e in read_topic(settings.kafka_bootstrap, settings.topic)
               if e[1].get(envelope.TABLE_HEADER) == b"public.users" and b"dup-b" in (e[2] or b"")]
    after = stack.checkpoint("user")
    assert len(refused) == 1 and after is not None
    assert after[1] < int(refused[0][1][envelope.LSN_HEADER]), (after, refused[0][:2])
    assert one(user_db, "SELECT count(*) FROM users.followers WHERE follower_id = 'fine-b'") == 0
    assert one(user_db, "SELECT count(*) FROM users.users WHERE id = 'dup-b'") == 0
    assert len(letters(user_db, "user")) == 1


def test_a_row_rejected_late_in_a_large_transaction_is_dead_lettered_and_the_rest_applied(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    """The transaction's first parts went into the target transaction before the rejection rolled them back:
    the worker reads it again from the checkpoint and applies it row by row, setting aside only that row."""
    import dataclasses

    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["notification"], scale=20,
                       on_error={"notification": "dead_letter"})
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_capture()
    pipeline.start_worker("notification", dataclasses.replace(stack.settings, max_txn_changes=100))
    stack.wait_caught_up(pipeline=pipeline)
    target = stack.dsn("notification")
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("ALTER TABLE notification.notifications ADD CONSTRAINT not_rejected "
                     "CHECK (content <> 'reject me')")
    copies = 1000
    with psycopg.connect(stack.source) as src, src.transaction():
        src.execute("INSERT INTO notifications (id, receiver_id, content, action, created_at, updated_at) "
                    "SELECT 'big-' || lpad(g::text, 5, '0'), receiver_id, CASE WHEN g = %s THEN 'reject me' "
                    "ELSE 'fine' END, 'liked', now(), now() FROM (SELECT receiver_id FROM notifications LIMIT 1) r "
                    "CROSS JOIN generate_series(1, %s) g", (copies - 10, copies))
    stack.wait_caught_up(pipeline=pipeline)
    assert pipeline.running("notification")
    stored = letters(target, "notification")
    assert [(r[1], r[2], r[3], r[4]) for r in stored] == [
        ("public.notifications", "c", [f"big-{copies - 10:05d}"], "23514")]
    assert one(target, "SELECT count(*) FROM notification.notifications WHERE starts_with(id, 'big-')") == copies - 1
    worker = pipeline.workers["notification"]
    assert worker.stats.transactions_applied_in_parts == 1
    assert worker.stats.retries_by_kind.get("data_rejected") == 1
