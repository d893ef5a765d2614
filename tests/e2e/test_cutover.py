"""Cutover, rollback and complete as an operator runs them: real processes, a real broker, live writes.

The application is played by `RoutedPosts`: before every write to posts it reads splitter.routing in
bento_social (as an application following the cutover would), writes to bento_social.posts or to
post_db's post.posts accordingly, and on the fence error (SQLSTATE SP001) reads the routing again and
retries.  It keeps a ledger of every write it got a success for; at the end both databases must hold
exactly the ledger's last value of every post it touched.  Other services get writes from the project
workload's operations that do not touch posts (a service whose table is moving must not share
transactions with it; see docs/cutover.md).
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connectors.pg.fence import FENCE_SQLSTATE
from devtools.workload.driver import Workload
from splitter.core.exit_codes import ABORTED as EXIT_ABORTED
from splitter.core.exit_codes import OK as EXIT_OK
from splitter.core.exit_codes import REFUSED as EXIT_REFUSED
from splitter.ops.cutover import advance_sequences
from splitter.pipeline.config import build_settings
from splitter.pipeline.reverse import reverse_names
from tests import expected
from tests.conftest import KafkaServer
from tests.harness import ROOT, PipelineEnv, prepare

SAFE_KINDS = ("sign_up", "update_profile", "change_username", "deactivate_user", "save_post", "unsave_post",
              "follow", "unfollow", "moderate_comment", "like_comment", "notify", "read_notifications",
              "delete_notification")
PAUSE_BOUND = 10.0


# --- processes -------------------------------------------------------------------------------------------


def run_command(env: PipelineEnv, *args: str, crash_at: str | None = None, timeout: float = 180) -> int:
    """`splitter <args>` to completion; its exit code."""
    return env.command(*args, crash_at=crash_at, timeout=timeout)


def cutover(env: PipelineEnv, command: str = "cutover", crash_at: str | None = None, *extra: str) -> int:
    return run_command(env, command, "--service", "post", "--yes", "--max-lag", "10s", "--timeout", "60s", *extra,
                       crash_at=crash_at)


def start_reverse(env: PipelineEnv) -> None:
    assert env.log_dir is not None
    log = open(env.log_dir / "reverse.log", "ab")  # noqa: SIM115 - owned by the process
    env.processes["reverse"] = subprocess.Popen(
        [sys.executable, "-m", "splitter", "reverse", "--service", "post"], env=env.env(), stdout=log,
        stderr=subprocess.STDOUT, cwd=ROOT)


# --- the application ---------------------------------------------------------------------------------------


@dataclass
class Rejection:
    at: float
    home: str  # where the write was attempted
    sqlstate: str | None
    message: str


@dataclass
class Op:
    rejections: list[Rejection] = field(default_factory=list)
    home: str = ""  # where it finally succeeded
    at: float = 0.0


class RoutedPosts:
    """Writes posts where splitter.routing says, retrying on the fence error; keeps a ledger."""

    def __init__(self, source: str, post_db: str, threads: int = 2, rate: float | None = None) -> None:
        self.dsns = {"source": source, "service": post_db}
        self.threads = threads
        self.interval = threads / rate if rate else 0.0
        self.ledger: dict[str, str | None] = {}  # post id -> content of its last successful write (None: deleted)
        self.ops: list[Op] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        with psycopg.connect(source, autocommit=True) as conn:
            self.authors = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id LIMIT 50")]
            self.topics = [r[0] for r in conn.execute("SELECT id FROM topics ORDER BY id LIMIT 20")]

    def run(self, stop: threading.Event) -> None:
        threads = [threading.Thread(target=self._main, args=(i, stop), daemon=True) for i in range(self.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def start(self) -> tuple[threading.Event, threading.Thread]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), daemon=True)
        thread.start()
        return stop, thread

    @staticmethod
    def _home(conn: psycopg.Connection[Any]) -> str:
        try:
            row = conn.execute("SELECT home FROM splitter.routing WHERE service = 'post'").fetchone()
        except psycopg.errors.UndefinedTable:
            return "source"
        return str(row[0]) if row else "source"

    def _main(self, index: int, stop: threading.Event) -> None:
        rng = random.Random(index)
        mine: list[str] = []
        try:
            with psycopg.connect(self.dsns["source"], autocommit=True) as src, \
                    psycopg.connect(self.dsns["service"], autocommit=True) as svc:
                conns = {"source": src, "service": svc}
                while not stop.is_set():
                    roll = rng.random()
                    if not mine or roll < 0.4:
                        pid, kind = str(uuid.uuid4()), "insert"
                    elif roll < 0.92:
                        pid, kind = rng.choice(mine), "update"
                    else:
                        pid, kind = mine.pop(rng.randrange(len(mine))), "delete"
                    content = None if kind == "delete" else f"{kind} {uuid.uuid4().hex} by {index}"
                    self._write(conns, rng, kind, pid, content)
                    if kind == "insert":
                        mine.append(pid)
                    if self.interval:
                        stop.wait(self.interval)
        except BaseException as exc:
            self.errors.append(exc)

    def _write(self, conns: dict[str, psycopg.Connection[Any]], rng: random.Random, kind: str, pid: str,
               content: str | None) -> None:
        op = Op()
        deadline = time.monotonic() + 90
        while True:
            home = self._home(conns["source"])
            conn = conns[home]
            table = "posts" if home == "source" else "post.posts"
            try:
                if kind == "insert":
                    conn.execute(
                        f"INSERT INTO {table} (id, content, author_id, topic_id, type, is_featured, created_at, "
                        f"updated_at) VALUES (%s, %s, %s, %s, %s, %s, localtimestamp(0), localtimestamp(0))",
                        (pid, content, rng.choice(self.authors), rng.choice(self.topics),
                         rng.choice(("text", "media")), rng.choice((True, False))))
                elif kind == "update":
                    conn.execute(f"UPDATE {table} SET content = %s, liked_count = liked_count + 1, "
                                 f"updated_at = localtimestamp(0) WHERE id = %s", (content, pid))
                else:
                    conn.execute(f"DELETE FROM {table} WHERE id = %s", (pid,))
            except psycopg.Error as exc:
                if exc.sqlstate != FENCE_SQLSTATE:
                    raise
                op.rejections.append(Rejection(time.monotonic(), home, exc.sqlstate,
                                               exc.diag.message_primary or ""))
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
                continue
            op.home, op.at = home, time.monotonic()
            with self.lock:
                self.ledger[pid] = content
                self.ops.append(op)
            return

    # -- what happened --------------------------------------------------------------------------------

    def pauses(self, since: float, new_home: str) -> float | None:
        """First rejected write after `since` to the first write accepted in `new_home` after it."""
        with self.lock:
            rejected = [r.at for op in self.ops for r in op.rejections if r.at >= since]
            if not rejected:
                return None
            first = min(rejected)
            accepted = [op.at for op in self.ops if op.home == new_home and op.at >= first]
        return (min(accepted) - first) if accepted else None

    def check_ledger(self, source: str, post_db: str) -> int:
        with psycopg.connect(source) as src, psycopg.connect(post_db) as svc:
            ids = list(self.ledger)
            in_source = dict(src.execute("SELECT id, content FROM posts WHERE id = ANY(%s)", (ids,)).fetchall())
            in_service = dict(svc.execute("SELECT id, content FROM post.posts WHERE id = ANY(%s)",
                                          (ids,)).fetchall())
        for pid, content in self.ledger.items():
            assert in_service.get(pid) == content, f"post {pid}: post_db has {in_service.get(pid)!r}, not {content!r}"
            assert in_source.get(pid) == content, f"post {pid}: bento_social has {in_source.get(pid)!r} not {content!r}"
        return len(ids)


class OtherServices(threading.Thread):
    """Writes to every other service's tables (the workload's operations that leave posts alone)."""

    def __init__(self, source: str) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.workload = Workload(source, seed=17, threads=1)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        rng = random.Random(5)
        try:
            with psycopg.connect(self.source, autocommit=True) as conn:
                topics = [r[0] for r in conn.execute("SELECT id FROM topics")]
                while not self.stop.is_set():
                    self.workload.perform(rng.choice(SAFE_KINDS), conn, rng)
                    conn.execute("UPDATE topics SET updated_at = localtimestamp(0) WHERE id = %s",
                                 (rng.choice(topics),))
                    time.sleep(0.005)
        except BaseException as exc:
            self.errors.append(exc)


# --- helpers -----------------------------------------------------------------------------------------------


def state_of(env: PipelineEnv) -> tuple[str, str]:
    with psycopg.connect(env.source, autocommit=True) as conn:
        row = conn.execute("SELECT c.state, coalesce(r.home, 'source') FROM splitter.cutover c "
                           "LEFT JOIN splitter.routing r USING (service) WHERE c.service = 'post'").fetchone()
    return (str(row[0]), str(row[1])) if row else ("streaming", "source")


def fence_triggers(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'splitter\\_fence\\_%'").fetchone()
    assert row is not None
    return int(row[0])


def slot_exists(dsn: str, slot: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() is not None


def write_post(dsn: str, table: str, pid: str, content: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} (id, content, author_id, topic_id, type, is_featured, created_at, "
                     f"updated_at) VALUES (%s, %s, 'a', 't', 'text', false, localtimestamp(0), localtimestamp(0))",
                     (pid, content))


def wait_for_post(dsn: str, table: str, pid: str, timeout: float = 30) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(f"SELECT content FROM {table} WHERE id = %s", (pid,)).fetchone()
        if row is not None or time.monotonic() > deadline:
            return str(row[0]) if row else None
        time.sleep(0.2)


def assert_post_matches(env: PipelineEnv) -> None:
    with psycopg.connect(env.source) as src, psycopg.connect(env.dsns["post_db"]) as tgt:
        expected.assert_service_matches(src, tgt, "post")


# --- tests -------------------------------------------------------------------------------------------------


def test_cutover_rollback_complete_under_writes_to_every_service(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=150)
    post_db = env.dsns["post_db"]
    env.start_capture()
    for service in ("auth", "user", "post", "topic", "comment", "notification", "interaction"):
        env.start_worker(service)
    start_reverse(env)
    app = RoutedPosts(env.source, post_db, threads=2)
    others = OtherServices(env.source)
    stop, runner = app.start()
    try:
        env.wait_caught_up(timeout=120)
        others.start()
        time.sleep(2)

        # Cut over under writes: every write lands, rejected ones got the fence error and were retried.
        calls = tmp_path / "hook-calls"
        hook = ("--switch-command", f"sh -c 'echo $SPLITTER_SERVICE $SPLITTER_HOME $SPLITTER_HOME_DATABASE >> {calls}'")
        started = time.monotonic()
        assert cutover(env, "cutover", None, *hook) == EXIT_OK, env.logs()
        assert state_of(env) == ("reverse_streaming", "service")
        cut_pause = app.pauses(started, "service")
        time.sleep(2)
        assert not app.errors and not others.errors, (app.errors, others.errors, env.logs())

        # The source is fenced with the error naming the new home; post_db takes direct writes, which
        # flow back into bento_social.
        with psycopg.connect(env.source, autocommit=True) as conn, pytest.raises(psycopg.Error) as err:
            conn.execute("UPDATE posts SET liked_count = 0 WHERE id = 'nope'")
        assert err.value.sqlstate == FENCE_SQLSTATE
        assert "posts moved to service post (post_db); write there" in str(err.value)
        pid = str(uuid.uuid4())
        write_post(post_db, "post.posts", pid, "written in post_db")
        assert wait_for_post(env.source, "posts", pid) == "written in post_db", env.logs()

        # Roll back under writes: writes return to bento_social and flow forward into post_db again.
        started = time.monotonic()
        assert cutover(env, "rollback", None, *hook) == EXIT_OK, env.logs()
        assert state_of(env) == ("rolled_back", "source")
        assert calls.read_text().splitlines() == ["post service post_db", "post source bento_social"]
        back_pause = app.pauses(started, "source")
        time.sleep(2)
        pid2 = str(uuid.uuid4())
        write_post(env.source, "posts", pid2, "written in bento_social")
        assert wait_for_post(post_db, "post.posts", pid2) == "written in bento_social", env.logs()
        with psycopg.connect(post_db, autocommit=True) as conn, pytest.raises(psycopg.Error) as err:
            conn.execute("DELETE FROM post.posts WHERE id = 'nope'")
        assert err.value.sqlstate == FENCE_SQLSTATE  # post_db now refuses direct writes: home is the source
        assert not slot_exists(post_db, reverse_names(env.settings(), "post").slot)

        stop.set()
        others.stop.set()
        runner.join(60)
        others.join(60)
        assert not app.errors and not others.errors, (app.errors, others.errors)
        env.wait_caught_up(timeout=120)
        env.assert_all_match()
        checked = app.check_ledger(env.source, post_db)
        rejections = [r for op in app.ops for r in op.rejections]
        print(f"\n{checked} posts in the ledger, {len(app.ops)} writes, {len(rejections)} rejected and retried; "
              f"write pause: cutover {cut_pause}, rollback {back_pause}")
        assert checked > 50 and rejections
        for op in app.ops:
            for r in op.rejections:
                assert r.sqlstate == FENCE_SQLSTATE and "moved to" in r.message and "write there" in r.message
                assert r.home != op.home, "a rejected write succeeded where it had been rejected"
        for pause in (cut_pause, back_pause):
            assert pause is not None and pause < PAUSE_BOUND

        # Cut over again (post_db's fence from the rollback goes) and complete.
        assert cutover(env) == EXIT_OK, env.logs()
        assert cutover(env, "complete") == EXIT_OK, env.logs()
        assert state_of(env) == ("complete", "service")
        assert fence_triggers(env.source) == 0 and fence_triggers(post_db) == 0
        assert not slot_exists(post_db, reverse_names(env.settings(), "post").slot)
        pid3 = str(uuid.uuid4())
        write_post(post_db, "post.posts", pid3, "after complete")  # no fence
        write_post(env.source, "posts", pid3, "stale source write")  # no fence either ...
        time.sleep(3)
        with psycopg.connect(post_db, autocommit=True) as conn:
            row = conn.execute("SELECT content FROM post.posts WHERE id = %s", (pid3,)).fetchone()
        assert row == ("after complete",)  # ... and it never reaches the service: its worker is retired
        assert wait_for_post(env.source, "posts", pid3, timeout=0) == "stale source write"
        with psycopg.connect(env.source, autocommit=True) as conn:
            history = conn.execute("SELECT history FROM splitter.cutover WHERE service = 'post'").fetchone()
        assert history is not None
        states = [h["state"] for h in history[0]]
        assert states.count("reverse_streaming") == 2 and states[-1] == "complete" and "rolled_back" in states
    finally:
        stop.set()
        others.stop.set()
        env.stop_all()


PRE_SWITCH = ("fenced", "caught_up", "verified")
CYCLES = (("switching", "rollback_fenced", "rollback_switching"),
          ("routed", "rollback_caught_up", "rollback_routed"),
          ("switched", "rollback_verified", None))


def test_killed_at_every_step_finishes_or_aborts_cleanly(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=50)
    post_db = env.dsns["post_db"]
    env.start_capture()
    env.start_worker("post")
    start_reverse(env)
    app = RoutedPosts(env.source, post_db, threads=1, rate=40)
    stop, runner = app.start()
    try:
        env.wait_caught_up(timeout=120, services=["post"])
        # Refused without changing anything: nothing to roll back yet; a dry run only shows the plan.
        assert run_command(env, "rollback", "--service", "post", "--yes") == EXIT_REFUSED
        assert run_command(env, "cutover", "--service", "post", "--dry-run") == EXIT_OK
        assert state_of(env) == ("streaming", "source") and fence_triggers(env.source) == 0
        # A failure before the switch aborts: here the final verify finds a row post_db has and the source
        # lacks (a row no application write touches, so the stream cannot mend it before the verify).
        with psycopg.connect(post_db, autocommit=True) as conn:
            conn.execute("CREATE TEMPORARY TABLE extra AS SELECT * FROM post.posts LIMIT 1")
            conn.execute("UPDATE extra SET id = 'tampered-extra-row'")
            conn.execute("INSERT INTO post.posts SELECT * FROM extra")
        assert cutover(env) == EXIT_ABORTED
        assert state_of(env) == ("aborted", "source") and fence_triggers(env.source) == 0
        with psycopg.connect(env.source, autocommit=True) as conn:
            error = conn.execute("SELECT error FROM splitter.cutover WHERE service = 'post'").fetchone()
        assert error is not None and "final verify found differences" in error[0]
        assert not slot_exists(post_db, reverse_names(env.settings(), "post").slot)
        write_post(env.source, "posts", str(uuid.uuid4()), "after the abort")
        with psycopg.connect(post_db, autocommit=True) as conn:
            conn.execute("DELETE FROM post.posts WHERE id = 'tampered-extra-row'")
        # Killed after creating the reverse slot, before fencing: nothing to undo but a slot, which the
        # next attempt replaces.
        assert cutover(env, crash_at="reverse_prepared") == 137
        assert state_of(env) == ("aborted", "source") and fence_triggers(env.source) == 0
        for step in PRE_SWITCH:
            assert cutover(env, crash_at=step) == 137
            assert state_of(env)[0] in ("fenced", "caught_up", "verified")
            # Nobody is switching: the soft fence already lets writes through, before any re-run.
            write_post(env.source, "posts", str(uuid.uuid4()), f"after a crash at {step}")
            assert cutover(env) == EXIT_ABORTED, env.logs()
            assert state_of(env) == ("aborted", "source")
            assert fence_triggers(env.source) == 0
        for forward, rollback_pre, rollback_post in CYCLES:
            assert cutover(env, crash_at=forward) == 137
            assert state_of(env)[0] in ("switching", "switched")
            assert cutover(env) == EXIT_OK, env.logs()
            assert state_of(env) == ("reverse_streaming", "service")
            assert cutover(env, "rollback", crash_at=rollback_pre) == 137
            # A rollback killed before its switch leaves post_db writable (soft fence, owner gone).
            write_post(post_db, "post.posts", str(uuid.uuid4()), f"after a crash at {rollback_pre}")
            assert cutover(env, "rollback") == EXIT_ABORTED, env.logs()
            assert state_of(env) == ("switched", "service") and fence_triggers(post_db) == 0
            if rollback_post is not None:
                assert cutover(env, "rollback", crash_at=rollback_post) == 137
            assert cutover(env, "rollback") == EXIT_OK, env.logs()
            assert state_of(env) == ("rolled_back", "source") and fence_triggers(env.source) == 0
        stop.set()
        runner.join(60)
        assert not app.errors, app.errors
        env.wait_caught_up(timeout=120, services=["post"])
        assert_post_matches(env)
        checked = app.check_ledger(env.source, post_db)
        print(f"\n{len(app.ops)} writes to {checked} posts across {1 + len(PRE_SWITCH) + 3 * len(CYCLES) - 1} "
              f"killed commands")
    finally:
        stop.set()
        env.stop_all()


def test_sequences_and_identity_columns_move_past_the_other_side(
        make_databases: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    dsns = make_databases(names=("src", "tgt"))
    with psycopg.connect(dsns["src"], autocommit=True) as src, psycopg.connect(dsns["tgt"], autocommit=True) as tgt:
        src.execute("CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n serial, note text)")
        src.execute("INSERT INTO events (note) SELECT 'x' FROM generate_series(1, 50)")
        tgt.execute("CREATE SCHEMA ev")
        tgt.execute("CREATE TABLE ev.events (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                    "seq bigserial, note text)")
        # Replicated rows carry their ids; the target's own sequences never moved.
        tgt.execute("INSERT INTO ev.events (id, seq, note) SELECT id, n, note FROM (VALUES (1, 3, 'x'), (49, 40, 'x')) "
                    "AS v(id, n, note)")
        pairs = [(("public", "events"), ("ev", "events"), {"id": "id", "seq": "n"})]
        moved = advance_sequences(src, tgt, pairs)
        assert len(moved) == 2
        row = tgt.execute("INSERT INTO ev.events (note) VALUES ('new') RETURNING id, seq").fetchone()
        assert row == (51, 51)
        assert advance_sequences(src, tgt, pairs) == []  # never backwards, idempotent
        # And back: the target handed out ids the source must not reuse after a rollback.
        tgt.execute("INSERT INTO ev.events (note) SELECT 'y' FROM generate_series(1, 100)")
        advance_sequences(tgt, src, [(("ev", "events"), ("public", "events"), {"id": "id", "n": "seq"})])
        row = src.execute("INSERT INTO events (note) VALUES ('back') RETURNING id, n").fetchone()
        assert row == (152, 152)
    topology = tmp_path / "topology.py"
    topology.write_text(
        "from splitter.topology import Service, Table, Topology\n"
        "TOPOLOGY = Topology(source_database='src', services=(Service('ev', database='tgt', schema='ev', tables=("
        "Table('events', source='events', key=('id',),"
        " columns={'id': 'id', 'seq': 'n', 'note': \"coalesce(note, '')\"}),)),))\n")
    settings = build_settings(topology_path=str(topology), source_dsn=dsns["src"], kafka="localhost:9",
                              target_dsns={"ev": dsns["tgt"]}, env={})
    from splitter.pipeline.reverse import reverse_topology
    table = reverse_topology(settings, "ev").services[0].tables[0]
    assert dict(table.columns) == {"id": '"id"', "n": '"seq"', "note": '"note"'}


def test_two_services_cut_over_one_after_the_other_while_others_stream(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=100)
    env.start_capture()
    for service in ("auth", "user", "post", "topic", "comment", "notification", "interaction"):
        env.start_worker(service)
    assert env.log_dir is not None
    log = open(env.log_dir / "reverse.log", "ab")  # noqa: SIM115 - owned by the process
    env.processes["reverse"] = subprocess.Popen(
        [sys.executable, "-m", "splitter", "reverse", "--service", "post", "--service", "topic"], env=env.env(),
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    stop = threading.Event()
    errors: list[BaseException] = []

    def others() -> None:  # the services that are not moving keep taking writes in the source
        rng = random.Random(9)
        workload = Workload(env.source, seed=19, threads=1)
        try:
            with psycopg.connect(env.source, autocommit=True) as conn:
                while not stop.is_set():
                    workload.perform(rng.choice(SAFE_KINDS), conn, rng)
                    time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=others, daemon=True)
    try:
        env.wait_caught_up(timeout=120)
        writer.start()
        for service in ("post", "topic"):
            code = run_command(env, "cutover", "--service", service, "--yes", "--max-lag", "10s", "--timeout", "60s")
            assert code == EXIT_OK, env.logs()
            with psycopg.connect(env.source, autocommit=True) as conn:
                row = conn.execute("SELECT state FROM splitter.cutover WHERE service = %s", (service,)).fetchone()
            assert row == ("reverse_streaming",)
        # Both new homes take writes, which flow back into bento_social.
        pid = str(uuid.uuid4())
        write_post(env.dsns["post_db"], "post.posts", pid, "after both cutovers")
        with psycopg.connect(env.dsns["topic_db"], autocommit=True) as conn:
            conn.execute("UPDATE topic.topics SET name = 'Renamed in topic_db' WHERE id = "
                         "(SELECT id FROM topic.topics ORDER BY id LIMIT 1)")
        assert wait_for_post(env.source, "posts", pid) == "after both cutovers", env.logs()
        deadline = time.monotonic() + 60
        while True:
            with psycopg.connect(env.source, autocommit=True) as conn:
                found = conn.execute("SELECT count(*) FROM topics WHERE name = 'Renamed in topic_db'").fetchone()
            if found == (1,):
                break
            assert time.monotonic() < deadline, env.logs()
            time.sleep(0.3)
        stop.set()
        writer.join(60)
        assert not errors, errors
        others_services = ["auth", "user", "comment", "notification", "interaction"]
        env.wait_caught_up(timeout=120, services=others_services)
        for service in others_services:
            with psycopg.connect(env.source) as src, psycopg.connect(env.service_dsn(service)) as tgt:
                expected.assert_service_matches(src, tgt, service)
    finally:
        stop.set()
        env.stop_all()
