"""A row the service database refuses does not block the initial copy silently: `on_error` decides, once.

The source holds one username twice; user_db has `UNIQUE (username)`, the source does not.
  * on_error = "dead_letter": the copy sets the refused row aside as a dead letter, copies the rest, and the
    stream goes on (the other services match the source exactly);
  * on_error = "stop": capture stops for good, once, naming the table, the constraint and the source key in
    `splitter status`; it neither re-creates the slot nor leaves one behind that serves nobody;
  * a table's own on_error decides for its rows (the last test: in-process, `test_replay`'s Stack).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from splitter.core import exit_codes
from tests import expected
from tests.conftest import KafkaServer
from tests.harness import ROOT, TOPOLOGY, PipelineEnv, prepare
from tests.integration.test_replay import Pipeline, make_stack, pipelines, with_table_on_error

__all__ = ["pipelines"]  # the fixture, imported so pytest finds it here

SERVICES = ("auth", "user", "post", "topic", "comment", "notification", "interaction")


def _topology(tmp_path: Path, *, on_error: str | None = None, only_user: bool = False) -> Path:
    """topology.py with the user service's on_error set, or with the user service alone."""
    path = tmp_path / "topology.py"
    if only_user:
        path.write_text(
            "import runpy\n\n"
            f"_FULL = runpy.run_path({str(TOPOLOGY)!r})['TOPOLOGY']\n"
            "TOPOLOGY = _FULL.subset(['user'])\n")
        return path
    text, n = re.subn(r'database="user_db",', f'database="user_db", on_error="{on_error}",', TOPOLOGY.read_text())
    assert n == 1
    path.write_text(text)
    return path


def _duplicate_username(source: str) -> tuple[str, list[str]]:
    """Give the second user (in key order) the first one's username; (that username, the ids holding it)."""
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("UPDATE users SET username = (SELECT username FROM users ORDER BY id LIMIT 1) "
                     "WHERE id = (SELECT id FROM users ORDER BY id OFFSET 1 LIMIT 1)")
        rows = conn.execute("SELECT username, array_agg(id ORDER BY id) FROM users GROUP BY username "
                            "HAVING count(*) > 1").fetchall()
    assert len(rows) == 1 and len(rows[0][1]) == 2
    return rows[0][0], list(rows[0][1])


def _one(dsn: str, query: str, *params: object) -> object:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    return row[0] if row else None


def _checkpointed(env: PipelineEnv, services: tuple[str, ...]) -> set[str]:
    done = set()
    for service in services:
        dsn = env.dsns[f"{service}_db"]
        if _one(dsn, "SELECT to_regclass('splitter.checkpoints') IS NOT NULL") and \
                _one(dsn, "SELECT 1 FROM splitter.checkpoints WHERE service = %s", service):
            done.add(service)
    return done


def _slot(env: PipelineEnv) -> tuple[str, bool] | None:
    with psycopg.connect(env.source, autocommit=True) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = %s",
                           (env.slot,)).fetchone()
    return (row[0], row[1]) if row else None


def _wait_exit(proc: subprocess.Popen[bytes], env: PipelineEnv, timeout: float = 90) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"capture did not stop\n{env.logs()}") from None


def _status(env: PipelineEnv, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "splitter", "status", *args], env=env.env(), cwd=ROOT,
                          capture_output=True, timeout=60)
    return done.stdout.decode()


@pytest.mark.timeout(300)
def test_dead_letter_sets_the_refused_row_aside_and_copies_the_rest(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=100)
    env.topology = _topology(tmp_path, on_error="dead_letter")
    username, ids = _duplicate_username(env.source)
    try:
        capture = env.start_capture()
        for service in SERVICES:
            env.start_worker(service)
        deadline = time.monotonic() + 90
        while _checkpointed(env, SERVICES) != set(SERVICES):
            assert capture.poll() is None, f"capture exited with {capture.returncode}\n{env.logs()}"
            assert time.monotonic() < deadline, f"the initial copy never finished\n{env.logs()}"
            time.sleep(0.2)
        user_db = env.dsns["user_db"]
        source_users = _one(env.source, "SELECT count(*) FROM users")
        assert _one(user_db, "SELECT count(*) FROM users.users") == source_users - 1  # type: ignore[operator]
        kept = _one(user_db, "SELECT array_agg(id) FROM users.users WHERE username = %s", username)
        letters = [tuple(r) for r in psycopg.connect(user_db, autocommit=True).execute(
            "SELECT source_table, op, source_key, sqlstate, status, event->'after'->>'username' "
            "FROM splitter.dead_letters WHERE service = 'user'").fetchall()]
        assert isinstance(kept, list) and len(kept) == 1
        refused = next(i for i in ids if i not in kept)
        assert letters == [("public.users", "r", [refused], "23505", "open", username)]
        # followers, in the same service, copied whole.
        followers = _one(env.source, "SELECT count(*) FROM followers")
        assert _one(user_db, "SELECT count(*) FROM users.followers") == followers
        # The stream goes on: a change after the copy reaches every service.
        with psycopg.connect(env.source, autocommit=True) as conn:
            conn.execute("UPDATE topics SET name = name || '!' WHERE id = (SELECT min(id) FROM topics)")
        env.wait_caught_up(timeout=120)
        for service in (s for s in SERVICES if s != "user"):
            with psycopg.connect(env.source) as src, psycopg.connect(env.service_dsn(service)) as tgt:
                expected.assert_service_matches(src, tgt, service)
        listed = json.loads(subprocess.run(
            [sys.executable, "-m", "splitter", "dlq", "list", "--service", "user", "--json"], env=env.env(), cwd=ROOT,
            capture_output=True, timeout=60, check=True).stdout)
        assert (listed["command"], listed["action"], listed["service"]) == ("dlq", "list", "user")
        assert [d["key"] for d in listed["dead_letters"]] == [[refused]]
        assert "set aside as dead letters" in env.logs()
        assert capture.poll() is None
    finally:
        env.stop_all()


@pytest.mark.timeout(300)
def test_stop_stops_capture_once_with_the_cause_and_keeps_the_slot_for_the_copied_services(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=100)
    _, ids = _duplicate_username(env.source)
    try:
        assert _wait_exit(env.start_capture(), env) == exit_codes.FATAL
        others = tuple(s for s in SERVICES if s != "user")
        assert _checkpointed(env, SERVICES) == set(others)
        assert _one(env.dsns["user_db"], "SELECT count(*) FROM users.users") == 0
        slot = _slot(env)
        assert slot is not None and not slot[1], "the slot serves the six copied services: kept"
        text = _status(env)
        assert "capture stopped (fatal, exit 3)" in text, text
        assert "users_username_key" in text and f"(id)=({ids[1]})" in text and "on_error='stop'" in text, text
        # Started again without a fix: the same refusal, the same slot (not dropped and re-created).
        assert _wait_exit(env.start_capture(), env) == exit_codes.FATAL
        assert _slot(env) == slot
        assert env.logs().count("created slot") == 1, env.logs()
        stopped = json.loads(_status(env, "--json"))["stopped"]
        assert [(c["component"], c["exit_code"]) for c in stopped] == [("capture", exit_codes.FATAL)]
        assert "users_username_key" in stopped[0]["error"]
    finally:
        env.stop_all()


@pytest.mark.timeout(300)
def test_stop_drops_the_slot_when_no_service_was_copied_from_it(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=100)
    env.topology = _topology(tmp_path, only_user=True)
    _duplicate_username(env.source)
    try:
        assert _wait_exit(env.start_capture(), env) == exit_codes.FATAL
        assert _slot(env) is None, f"the slot serves nobody and would hold WAL\n{env.logs()}"
        assert "users_username_key" in _status(env)
    finally:
        env.stop_all()


@pytest.mark.timeout(300)
def test_a_table_s_own_on_error_sets_its_refused_rows_aside_while_the_service_stops_at_the_others(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    """Service user keeps on_error="stop"; its table followers says "dead_letter".  A refused users row stops the
    copy, naming the table and where to change its policy; once it is fixed, a refused follower row is set aside
    and the rest is copied and streamed."""
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["user"], scale=20)
    settings = stack.with_topology(with_table_on_error(stack.settings.topology, {"user.followers": "dead_letter"}))
    user_db = stack.dsn("user")
    with psycopg.connect(user_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE users.followers ADD CONSTRAINT not_refused CHECK (follower_id NOT LIKE 'refused-%')")
    first_id = str(_one(stack.source, "SELECT min(id) FROM users"))
    stack.source_exec("INSERT INTO followers (follower_id, following_id, created_at) VALUES ('refused-1', %s, now())",
                      params=(first_id,))
    _, ids = _duplicate_username(stack.source)

    # 1. users takes the service's "stop": nothing of the service is copied (its refused follower neither).
    pipeline = Pipeline(settings)
    pipelines.append(pipeline)
    pipeline.start_capture()
    assert pipeline.wait_exit("capture", timeout=120) == exit_codes.FATAL
    message = str(pipeline.errors["capture"][-1])
    for needle in ("public.users → user.users.users", f"source row (id)=({ids[1]})", "users_username_key",
                   "The service user has on_error='stop' and table users sets none of its own, so nothing of "
                   "service user was copied",
                   "or set on_error='dead_letter' on table users (Table(..., on_error='dead_letter')) or on service "
                   "user to copy the rest"):
        assert needle in message, message
    assert stack.checkpoint("user") is None
    assert _one(user_db, "SELECT count(*) FROM users.users") == 0
    assert _one(user_db, "SELECT count(*) FROM users.followers") == 0

    # 2. Fixed in the source: the refused follower row is set aside, the rest copied, and the stream goes on.
    stack.source_exec("UPDATE users SET username = username || '_renamed' WHERE id = %s", params=(ids[1],))
    pipeline.start_capture()
    pipeline.start_worker("user")
    stack.wait_caught_up(pipeline=pipeline, timeout=120)
    letters = [tuple(r) for r in psycopg.connect(user_db, autocommit=True).execute(
        "SELECT source_table, op, source_key, sqlstate, status FROM splitter.dead_letters WHERE service = 'user'")]
    # The key in column order (follower_id, following_id).
    assert letters == [("public.followers", "r", ["refused-1", first_id], "23514", "open")], letters
    assert _one(user_db, "SELECT count(*) FROM users.followers") == \
        _one(stack.source, "SELECT count(*) FROM followers WHERE follower_id <> 'refused-1'")
    assert _one(user_db, "SELECT count(*) FROM users.users") == _one(stack.source, "SELECT count(*) FROM users")
    stack.source_exec("UPDATE users SET first_name = 'Streamed' WHERE id = %s", params=(first_id,))
    stack.wait_caught_up(pipeline=pipeline)
    assert _one(user_db, "SELECT first_name FROM users.users WHERE id = %s", first_id) == "Streamed"
    assert pipeline.running("capture") and pipeline.running("user"), pipeline.errors
