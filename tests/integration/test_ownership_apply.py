"""Forward workers of shared tables against real servers: echoed writes, ownership moves, retired tables (issue 13).

bento_social's `users` feeds auth_db (auth owns the rows and the login columns) and user_db (user owns the
profile); `followers` feeds user_db as a read copy.  The forward capture streams every transaction, a
reverse stream's too, marked with its replication origin: a worker skips only its own reverse stream's
echo.  An ownership message in the source's log (`splitter.ownership`, written here as the cutover writes
it) narrows what a worker writes: after auth's writes moved, auth_db gets from the source only what auth
does not own (updated_at) and no rows; "source" gives it everything again; "retired" stops a table.

Capture and the workers run in-process (test_replay's `Stack`, `Pipeline`); expected values come from the
test's own SQL against the source and the service databases.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import psycopg
from psycopg import sql

from connectors.pg.messages import emit_message
from connectors.pg.origins import origin_name
from splitter.core import envelope, messages
from splitter.ops.replay import plan_replay, submit
from splitter.pipeline.worker.moves import Move, encode_moves
from tests.conftest import KafkaServer
from tests.integration.test_replay import Pipeline, Stack, make_stack, pipelines, read_topic

__all__ = ["pipelines"]  # the fixture, imported so pytest finds it here

Row = tuple[object, ...]
AUTH_COLUMNS = ("username", "password_hash", "updated_at")
USER_COLUMNS = ("username", "bio", "updated_at")


def _streaming(make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
               unique_name: Callable[[str], str], pipelines: list[Pipeline],
               services: list[str]) -> tuple[Stack, Pipeline]:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, services, scale=10)
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(services, pipeline=pipeline)
    return stack, pipeline


def _row(dsn: str, schema: str, table: str, columns: tuple[str, ...], user_id: str) -> Row | None:
    query = sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema, table))
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, (user_id,)).fetchone()


def _auth(stack: Stack, user_id: str) -> Row | None:
    return _row(stack.dsn("auth"), "auth", "users", AUTH_COLUMNS, user_id)


def _user(stack: Stack, user_id: str) -> Row | None:
    return _row(stack.dsn("user"), "users", "users", USER_COLUMNS, user_id)


def _source(stack: Stack, user_id: str, columns: tuple[str, ...]) -> Row | None:
    return _row(stack.source, "public", "users", columns, user_id)


def _user_ids(stack: Stack, n: int) -> list[str]:
    with psycopg.connect(stack.source, autocommit=True) as conn:
        return [str(r[0]) for r in conn.execute("SELECT id FROM users ORDER BY id LIMIT %s", (n,)).fetchall()]


def _new_user(stack: Stack, user_id: str, username: str) -> None:
    stack.source_exec("INSERT INTO users (id, username, first_name, last_name, password, salt, created_at, "
                      "updated_at) VALUES (%s, %s, 'Una', 'Que', 'pw', 'salt', now(), now())",
                      params=(user_id, username))


def _update(stack: Stack, user_id: str, username: str, stamp: str, password: str = "pw-new") -> None:
    stack.source_exec("UPDATE users SET username = %s, password = %s, bio = %s, updated_at = %s WHERE id = %s",
                      params=(username, password, f"bio of {username}", stamp, user_id))


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _emit(stack: Stack, *moves: Move) -> None:
    with psycopg.connect(stack.source, autocommit=True) as conn:
        emit_message(conn, messages.OWNERSHIP, encode_moves(list(moves)), transactional=False)


def _recorded(dsn: str) -> list[Row]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT worker, source_table, service, home FROM splitter.ownership_moves "
                            "ORDER BY lsn").fetchall()


def _under_origin(stack: Stack, origin: str, statement: str, params: tuple[object, ...]) -> None:
    """Run `statement` in the source in a session marked with replication origin `origin` (a reverse worker's)."""
    with psycopg.connect(stack.source, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_replication_origin WHERE roname = %s", (origin,)).fetchone() is None:
            conn.execute("SELECT pg_replication_origin_create(%s)", (origin,))
        conn.execute("SELECT pg_replication_origin_session_setup(%s)", (origin,))
        conn.execute(statement.encode(), params)
        conn.execute("SELECT pg_replication_origin_session_reset()")


def test_a_worker_skips_its_own_reverse_streams_echo_and_applies_the_others(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    stack, pipeline = _streaming(make_databases, kafka_server, unique_name, pipelines, ["auth", "user"])
    by_auth, by_user = _user_ids(stack, 2)
    auth_had, user_had = _auth(stack, by_auth), _user(stack, by_user)
    update = "UPDATE users SET username = %s, password = %s, bio = %s, updated_at = %s WHERE id = %s"
    # auth's reverse worker wrote this into the source: the change came from auth_db, user_db still needs it.
    _under_origin(stack, origin_name("auth.reverse"), update, ("from_auth_db", "pw a", "bio a", "2031-01-01", by_auth))
    # And user's reverse worker this one: auth_db needs it, user_db has it already.
    _under_origin(stack, origin_name("user.reverse"), update, ("from_user_db", "pw u", "bio u", "2031-02-02", by_user))
    stack.wait_caught_up(["auth", "user"], pipeline=pipeline)

    assert _user(stack, by_auth) == _source(stack, by_auth, USER_COLUMNS) == ("from_auth_db", "bio a",
                                                                               _ts("2031-01-01"))
    assert _auth(stack, by_user) == _source(stack, by_user, ("username", "password", "updated_at")) == (
        "from_user_db", "pw u", _ts("2031-02-02"))
    # Each worker skipped its own echo: what its database had stays.
    assert _auth(stack, by_auth) == auth_had
    assert _user(stack, by_user) == user_had


def test_a_service_move_narrows_the_forward_stream_a_restart_keeps_it_and_source_restores_it(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    stack, pipeline = _streaming(make_databases, kafka_server, unique_name, pipelines, ["auth", "user"])
    edited, deleted = _user_ids(stack, 2)
    kept = _auth(stack, edited)
    assert kept is not None and _auth(stack, deleted) is not None

    _emit(stack, Move("auth", "public.users", "service"))
    _update(stack, edited, "moved_name", "2031-01-01 00:00:00")
    _new_user(stack, "00000000-0000-0000-0000-0000000000a1", "signed_up_in_source")
    stack.source_exec("DELETE FROM users WHERE id = %s", params=(deleted,))
    stack.wait_caught_up(["auth", "user"], pipeline=pipeline)

    # auth_db: the login columns keep what auth_db had, the profile's updated_at follows; no row comes or goes.
    assert _auth(stack, edited) == (kept[0], kept[1], _source(stack, edited, ("updated_at",))[0])  # type: ignore[index]
    assert _auth(stack, "00000000-0000-0000-0000-0000000000a1") is None
    assert _auth(stack, deleted) is not None
    # user_db had no move: everything applies.
    assert _user(stack, edited) == _source(stack, edited, USER_COLUMNS)
    assert _user(stack, "00000000-0000-0000-0000-0000000000a1") is not None
    assert _user(stack, deleted) is None
    assert _recorded(stack.dsn("auth")) == [("auth", "public.users", "auth", "service")]
    assert _recorded(stack.dsn("user")) == []

    # The scope is read back from splitter.ownership_moves: the message lies before the checkpoint.
    pipeline.stop("auth")
    pipeline.start_worker("auth")
    _update(stack, edited, "after_restart", "2032-01-01 00:00:00")
    stack.wait_caught_up(["auth", "user"], pipeline=pipeline)
    assert _auth(stack, edited) == (kept[0], kept[1], _source(stack, edited, ("updated_at",))[0])  # type: ignore[index]
    assert _user(stack, edited) == _source(stack, edited, USER_COLUMNS)

    # Back to the source (a rollback): whole rows again.
    _emit(stack, Move("auth", "public.users", "source"))
    _update(stack, edited, "back_home", "2033-01-01 00:00:00")
    _new_user(stack, "00000000-0000-0000-0000-0000000000a2", "signed_up_after_rollback")
    stack.wait_caught_up(["auth", "user"], pipeline=pipeline)
    assert _auth(stack, edited) == _source(stack, edited, ("username", "password", "updated_at"))
    assert _auth(stack, "00000000-0000-0000-0000-0000000000a2") is not None
    assert [r[3] for r in _recorded(stack.dsn("auth"))] == ["service", "source"]


def test_a_retired_table_is_no_longer_applied(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    stack, pipeline = _streaming(make_databases, kafka_server, unique_name, pipelines, ["user"])
    (edited,) = _user_ids(stack, 1)
    with psycopg.connect(stack.source, autocommit=True) as conn:
        existing = conn.execute("SELECT follower_id, following_id FROM followers ORDER BY 1, 2 LIMIT 1").fetchone()
    assert existing is not None
    early = ("00000000-0000-0000-0000-0000000000e1", existing[1])  # followed before the table retires
    new = ("00000000-0000-0000-0000-0000000000f1", existing[1])  # and after
    pair = "SELECT 1 FROM users.followers WHERE follower_id = %s AND following_id = %s"
    follow = "INSERT INTO followers (follower_id, following_id, created_at) VALUES (%s, %s, now())"
    stack.source_exec(follow, params=early)
    stack.wait_caught_up(["user"], pipeline=pipeline)

    _emit(stack, Move("", "public.followers", "retired"), Move("auth", "public.users", "service"))
    stack.source_exec("DELETE FROM followers WHERE follower_id = %s AND following_id = %s", params=existing)
    stack.source_exec(follow, params=new)
    _update(stack, edited, "still_applied", "2031-01-01 00:00:00")
    stack.wait_caught_up(["user"], pipeline=pipeline)

    def followers_as_retired() -> None:
        with psycopg.connect(stack.dsn("user"), autocommit=True) as conn:
            assert conn.execute(pair, early).fetchone() is not None
            assert conn.execute(pair, existing).fetchone() is not None  # its delete did not apply
            assert conn.execute(pair, new).fetchone() is None  # nor the insert
        assert _user(stack, edited) == _source(stack, edited, USER_COLUMNS)  # users is not retired
        # Only what concerns user's worker is recorded (auth's move is not its own), once.
        assert _recorded(stack.dsn("user")) == [("user", "public.followers", "", "retired")]

    followers_as_retired()
    # A replay from before the move keeps the scopes the worker had when asked: followers stays retired (the
    # row removed here is not written again), and the move is not recorded twice.
    with psycopg.connect(stack.dsn("user"), autocommit=True) as conn:
        conn.execute("DELETE FROM users.followers WHERE follower_id = %s AND following_id = %s", early)
    first = min(offset for offset, headers, _, _ in read_topic(stack.settings.kafka_bootstrap, stack.settings.topic)
                if headers.get(envelope.TABLE_HEADER) == b"public.followers")
    submit(stack.settings, plan_replay(stack.settings, "user", from_offset=first))
    _update(stack, edited, "after_the_replay", "2031-01-02 00:00:00")
    stack.wait_caught_up(["user"], pipeline=pipeline)
    with psycopg.connect(stack.dsn("user"), autocommit=True) as conn:
        assert conn.execute(pair, early).fetchone() is None
        assert conn.execute(pair, existing).fetchone() is not None
        assert conn.execute(pair, new).fetchone() is None
    assert _user(stack, edited) == _source(stack, edited, USER_COLUMNS)
    assert _recorded(stack.dsn("user")) == [("user", "public.followers", "", "retired")]
