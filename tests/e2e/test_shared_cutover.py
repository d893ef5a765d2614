"""Shared tables cut over as an operator runs it: users (auth owns rows and login columns, user the profile)
and followers (interaction owns it, user_db keeps a read copy), with real processes and a real broker.

Every expected value comes from the SQL the test itself wrote; `splitter verify` is checked besides.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connectors.pg.fence import FENCE_SQLSTATE
from splitter.core.exit_codes import ABORTED as EXIT_ABORTED
from splitter.core.exit_codes import OK as EXIT_OK
from splitter.core.exit_codes import REFUSED as EXIT_REFUSED
from tests.conftest import KafkaServer
from tests.harness import PipelineEnv, prepare

SERVICES = ("auth", "user", "post", "topic", "comment", "notification", "interaction")


def one(dsn: str, query: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchone()


def run(dsn: str, query: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query, params)


def refused(dsn: str, query: str, params: tuple[Any, ...] = ()) -> str:
    """The fence's message for a write it refuses (fails the test if the write goes through)."""
    with pytest.raises(psycopg.Error) as err:
        run(dsn, query, params)
    assert err.value.sqlstate == FENCE_SQLSTATE, err.value
    return str(err.value)


def eventually(read: Callable[[], Any], expect: Any, env: PipelineEnv, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if got == expect:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {expect!r}, still {got!r} after {timeout}s\n{env.logs()}")
        time.sleep(0.2)


def cut(env: PipelineEnv, action: str, *services: str, crash_at: str | None = None) -> int:
    args = [action]
    for service in services:
        args += ["--service", service]
    return env.command(*args, "--yes", "--max-lag", "10s", "--timeout", "60s", crash_at=crash_at)


def state(env: PipelineEnv, service: str) -> tuple[str, str]:
    row = one(env.source, "SELECT c.state::text, coalesce(r.home, 'source') FROM splitter.cutover c LEFT JOIN "
                          "splitter.routing r USING (service) WHERE c.service = %s", (service,))
    return (str(row[0]), str(row[1])) if row else ("streaming", "source")


def fences(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT c.relname || ':' || t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = "
                            "t.tgrelid WHERE t.tgname LIKE 'splitter%' ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def start(env: PipelineEnv) -> None:
    env.start_capture()
    for service in SERVICES:
        env.start_worker(service)
    env.start("reverse", "reverse")
    env.wait_caught_up(timeout=120)


def verify_ok(env: PipelineEnv, *services: str) -> None:
    args = ["verify"]
    for service in services:
        args += ["--service", service]
    assert env.command(*args) == EXIT_OK, env.logs()


def test_shared_tables_move_service_by_service_with_rollback_and_retirement(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=40)
    auth_db, user_db, interaction_db = (env.dsns[d] for d in ("auth_db", "user_db", "interaction_db"))
    start(env)
    try:
        uid = str(one(env.source, "SELECT id FROM users ORDER BY id LIMIT 1")[0])  # type: ignore[index]
        other = str(one(env.source, "SELECT id FROM users ORDER BY id DESC LIMIT 1")[0])  # type: ignore[index]

        # --- interaction owns followers; user_db.followers is a read copy fed through bento_social ---
        assert cut(env, "cutover", "interaction") == EXIT_OK, env.logs()
        assert state(env, "interaction") == ("reverse_streaming", "service")
        assert "interaction_db" in refused(env.source, "INSERT INTO followers VALUES (%s, %s, localtimestamp(3))",
                                           (uid, other))
        run(interaction_db, "DELETE FROM interaction.follows WHERE follower_id = %s AND following_id = %s",
            (uid, other))
        run(interaction_db, "INSERT INTO interaction.follows VALUES (%s, %s, '2026-01-02 03:04:05')", (uid, other))
        follow = "SELECT created_at::text FROM {} WHERE follower_id = %s AND following_id = %s"
        eventually(lambda: one(env.source, follow.format("followers"), (uid, other)), ("2026-01-02 03:04:05",), env)
        eventually(lambda: one(user_db, follow.format("users.followers"), (uid, other)), ("2026-01-02 03:04:05",), env)
        run(interaction_db, "DELETE FROM interaction.follows WHERE follower_id = %s AND following_id = %s",
            (uid, other))
        eventually(lambda: one(env.source, follow.format("followers"), (uid, other)), None, env)
        eventually(lambda: one(user_db, follow.format("users.followers"), (uid, other)), None, env)

        # --- auth owns the rows of users and the login columns ---
        assert cut(env, "cutover", "auth") == EXIT_OK, env.logs()
        assert state(env, "auth") == ("reverse_streaming", "service")
        # bento_social: profile writes go on; login columns and new rows are auth_db's now.
        run(env.source, "UPDATE users SET bio = 'profile edited in bento', updated_at = '2026-02-02 00:00:00' "
                        "WHERE id = %s", (uid,))
        message = refused(env.source, "UPDATE users SET password = 'x' WHERE id = %s", (uid,))
        assert "auth_db" in message and "password" in message
        assert "auth_db" in refused(env.source, "DELETE FROM users WHERE id = %s", (uid,))
        eventually(lambda: one(user_db, "SELECT bio, updated_at::text FROM users.users WHERE id = %s", (uid,)),
                   ("profile edited in bento", "2026-02-02 00:00:00"), env)
        eventually(lambda: one(auth_db, "SELECT updated_at::text FROM auth.users WHERE id = %s", (uid,)),
                   ("2026-02-02 00:00:00",), env)  # a read copy in auth_db
        # auth_db: a password and a username change reach bento_social, and the username user_db too.
        run(auth_db, "UPDATE auth.users SET password_hash = 'changed-in-auth', username = 'renamed-in-auth' "
                     "WHERE id = %s", (uid,))
        eventually(lambda: one(env.source, "SELECT password, username, bio FROM users WHERE id = %s", (uid,)),
                   ("changed-in-auth", "renamed-in-auth", "profile edited in bento"), env)
        eventually(lambda: one(user_db, "SELECT username, bio FROM users.users WHERE id = %s", (uid,)),
                   ("renamed-in-auth", "profile edited in bento"), env)
        assert "read copy" in refused(auth_db, "UPDATE auth.users SET updated_at = now() WHERE id = %s", (uid,))
        assert "cannot change" in refused(auth_db, "UPDATE auth.users SET id = 'new-id' WHERE id = %s", (uid,))
        # A user signed up in auth_db: bento_social fills the profile from the reverse defaults.
        new = str(uuid.uuid4())
        run(auth_db, "INSERT INTO auth.users (id, username, password_hash, salt, role, status, created_at, "
                     "updated_at) VALUES (%s, 'signed-up-in-auth', 'pw', 'salt', 'user', 'active', "
                     "'2026-03-03 00:00:00', '2026-03-03 00:00:00')", (new,))
        eventually(lambda: one(env.source, "SELECT username, first_name, last_name, password, updated_at::text FROM "
                                           "users WHERE id = %s", (new,)),
                   ("signed-up-in-auth", "", "", "pw", "2026-03-03 00:00:00"), env)
        eventually(lambda: one(user_db, "SELECT username, first_name FROM users.users WHERE id = %s", (new,)),
                   ("signed-up-in-auth", ""), env)

        # --- user owns the profile; auth is rolled back after it and cut over again ---
        assert cut(env, "cutover", "user") == EXIT_OK, env.logs()
        # What user reads and others own is read-only in user_db now: followers whole, the login columns.
        assert "read copy" in refused(user_db, "DELETE FROM users.followers WHERE follower_id = %s", (uid,))
        assert "read copy" in refused(user_db, "UPDATE users.users SET username = 'x' WHERE id = %s", (new,))
        run(user_db, "UPDATE users.users SET bio = 'profile edited in user_db', updated_at = '2026-04-04 00:00:00' "
                     "WHERE id = %s", (new,))
        eventually(lambda: one(env.source, "SELECT bio, username FROM users WHERE id = %s", (new,)),
                   ("profile edited in user_db", "signed-up-in-auth"), env)
        eventually(lambda: one(auth_db, "SELECT updated_at::text FROM auth.users WHERE id = %s", (new,)),
                   ("2026-04-04 00:00:00",), env)
        assert "user_db" in refused(env.source, "UPDATE users SET bio = 'x' WHERE id = %s", (new,))
        run(auth_db, "UPDATE auth.users SET salt = 'salt-before-rollback' WHERE id = %s", (new,))
        assert cut(env, "rollback", "auth") == EXIT_OK, env.logs()
        assert state(env, "auth") == ("rolled_back", "source")
        eventually(lambda: one(env.source, "SELECT salt FROM users WHERE id = %s", (new,)), ("salt-before-rollback",),
                   env)
        run(env.source, "UPDATE users SET salt = 'salt-in-bento-again' WHERE id = %s", (new,))
        eventually(lambda: one(auth_db, "SELECT salt FROM auth.users WHERE id = %s", (new,)),
                   ("salt-in-bento-again",), env)
        assert "bento_social" in refused(auth_db, "UPDATE auth.users SET salt = 'x' WHERE id = %s", (new,))
        assert cut(env, "cutover", "auth") == EXIT_OK, env.logs()
        run(auth_db, "UPDATE auth.users SET salt = 'salt-after-recutover' WHERE id = %s", (new,))
        run(user_db, "UPDATE users.users SET last_name = 'after-recutover' WHERE id = %s", (new,))
        expect = ("salt-after-recutover", "after-recutover", "signed-up-in-auth")
        eventually(lambda: one(env.source, "SELECT salt, last_name, username FROM users WHERE id = %s", (new,)),
                   expect, env)
        eventually(lambda: one(user_db, "SELECT last_name, username FROM users.users WHERE id = %s", (new,)),
                   expect[1:], env)
        env.wait_caught_up(timeout=60)
        verify_ok(env, "auth", "user", "interaction")

        # --- complete: users retires with its last owner; followers with interaction ---
        assert cut(env, "complete", "interaction") == EXIT_OK, env.logs()
        run(env.source, "INSERT INTO followers VALUES (%s, %s, localtimestamp(3))", (other, uid))  # retired: no fence
        time.sleep(3)
        assert one(user_db, follow.format("users.followers"), (other, uid)) is None  # no stream feeds it any more
        assert cut(env, "complete", "auth") == EXIT_OK, env.logs()
        # users is not retired: user still owns part of it, so auth's writes still reach user_db through bento.
        run(auth_db, "UPDATE auth.users SET username = 'renamed-after-auth-complete' WHERE id = %s", (new,))
        eventually(lambda: one(user_db, "SELECT username FROM users.users WHERE id = %s", (new,)),
                   ("renamed-after-auth-complete",), env)
        assert cut(env, "complete", "user") == EXIT_OK, env.logs()
        assert env.log_dir is not None
        said = (env.log_dir / "commands.log").read_text()
        assert "table public.users: retired (owned by auth, user, all complete)" in said
        assert all(state(env, s)[0] == "complete" for s in ("auth", "user", "interaction"))
        assert not [f for f in fences(env.source) if f.startswith(("users:", "followers:"))]
        run(auth_db, "UPDATE auth.users SET username = 'after-retirement' WHERE id = %s", (new,))
        time.sleep(3)
        assert one(user_db, "SELECT username FROM users.users WHERE id = %s", (new,)) == (
            "renamed-after-auth-complete",)
        # The services that share nothing, moved as one group and completed: nothing is left in bento_social.
        alone = ("post", "topic", "comment", "notification")
        assert cut(env, "cutover", *alone) == EXIT_OK, env.logs()
        assert {state(env, s) for s in alone} == {("reverse_streaming", "service")}
        assert cut(env, "complete", *alone) == EXIT_OK, env.logs()
        assert "bento_social has no writer left" in (env.log_dir / "commands.log").read_text()
        assert not fences(env.source)
    finally:
        env.stop_all()


GROUP_PRE_SWITCH = ("fenced", "caught_up", "verified")
GROUP_POST_SWITCH = ("switching", "moved", "routed", "switched")
ROLLBACK_PRE_SWITCH = ("rollback_fenced", "rollback_caught_up", "rollback_verified")
ROLLBACK_POST_SWITCH = ("rollback_switching", "rollback_moved", "rollback_routed")


def test_group_cutover_killed_at_every_step_finishes_or_aborts_and_never_leaves_writes_fenced(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=20)
    start(env)
    uid = str(one(env.source, "SELECT id FROM users ORDER BY id LIMIT 1")[0])  # type: ignore[index]
    other = str(one(env.source, "SELECT id FROM users ORDER BY id DESC LIMIT 1")[0])  # type: ignore[index]
    group = ("user", "interaction")
    n = 0

    def writes_flow_to_the_source() -> None:
        nonlocal n
        n += 1
        run(env.source, "UPDATE users SET bio = %s WHERE id = %s", (f"bio {n}", uid))
        run(env.source, "DELETE FROM followers WHERE follower_id = %s AND following_id = %s", (uid, other))
        run(env.source, "INSERT INTO followers VALUES (%s, %s, localtimestamp(3))", (uid, other))
        eventually(lambda: one(env.dsns["user_db"], "SELECT bio FROM users.users WHERE id = %s", (uid,)),
                   (f"bio {n}",), env)

    try:
        # Killed after the reverse slots, before any fence: nothing is fenced in the source (the handover fence
        # in user_db holds only the stream's writes), and the next attempt starts over.
        assert cut(env, "cutover", *group, crash_at="reverse_prepared") == 137
        assert {state(env, s) for s in group} == {("streaming", "source")}
        assert not [f for f in fences(env.source) if "fence" in f]
        writes_flow_to_the_source()
        for step in GROUP_PRE_SWITCH:
            assert cut(env, "cutover", *group, crash_at=step) == 137
            writes_flow_to_the_source()  # the soft fence let go with the killed command
            assert cut(env, "cutover", *group) == EXIT_ABORTED, env.logs()
            assert {state(env, s) for s in group} == {("aborted", "source")}
            assert not [f for f in fences(env.source) if "fence" in f]
            writes_flow_to_the_source()
        for step in GROUP_POST_SWITCH:
            assert cut(env, "cutover", *group, crash_at=step) == 137
            if step == "switching":  # not handed over yet: a rollback would leave it switched without the move
                assert cut(env, "rollback", *group) == EXIT_REFUSED, env.logs()
            assert cut(env, "cutover", *group) == EXIT_OK, env.logs()  # the re-run finishes the switch
            assert {state(env, s) for s in group} == {("reverse_streaming", "service")}
            run(env.dsns["user_db"], "UPDATE users.users SET bio = %s WHERE id = %s", (f"{step} in user_db", uid))
            eventually(lambda: one(env.source, "SELECT bio FROM users WHERE id = %s", (uid,)),
                       (f"{step} in user_db",), env)
            for rollback_step in ROLLBACK_PRE_SWITCH if step == GROUP_POST_SWITCH[0] else ():
                assert cut(env, "rollback", *group, crash_at=rollback_step) == 137
                assert cut(env, "rollback", *group) == EXIT_ABORTED, env.logs()
                assert {state(env, s) for s in group} == {("switched", "service")}
                run(env.dsns["interaction_db"], "DELETE FROM interaction.follows WHERE follower_id = %s", (uid,))
                eventually(lambda: one(env.source, "SELECT count(*) FROM followers WHERE follower_id = %s",
                                       (uid,)), (0,), env)
                run(env.dsns["interaction_db"], "INSERT INTO interaction.follows VALUES (%s, %s, now())",
                    (uid, other))
            rollback_crash = ROLLBACK_POST_SWITCH[GROUP_POST_SWITCH.index(step) % len(ROLLBACK_POST_SWITCH)]
            assert cut(env, "rollback", *group, crash_at=rollback_crash) == 137
            assert cut(env, "rollback", *group) == EXIT_OK, env.logs()
            assert {state(env, s) for s in group} == {("rolled_back", "source")}
            writes_flow_to_the_source()
        env.wait_caught_up(timeout=60)
        verify_ok(env, *group)

        # One service's reverse stream stopping on a row bento_social refuses (an enum value only post_db has)
        # is recorded for `splitter status`, and the other services' reverse streams go on.
        assert cut(env, "cutover", "post", "topic") == EXIT_OK, env.logs()
        run(env.dsns["post_db"], "UPDATE post.posts SET type = 'poll' WHERE id = (SELECT min(id) FROM post.posts)")
        eventually(lambda: one(env.source, "SELECT exit_class FROM splitter.components WHERE component = 'reverse' "
                                           "AND service = 'post'"), ("fatal",), env)
        topic = one(env.source, "SELECT min(id) FROM topics")
        run(env.dsns["topic_db"], "UPDATE topic.topics SET name = 'renamed in topic_db' WHERE id = %s", topic)
        eventually(lambda: one(env.source, "SELECT name FROM topics WHERE id = %s", topic),
                   ("renamed in topic_db",), env)
    finally:
        env.stop_all()
