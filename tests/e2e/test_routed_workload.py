"""The routed workload and its ledger check against real servers: the streams running, routing set by hand.

The check must find nothing missing when every write went to bento_social and the streams carried it;
it must see a value changed behind the workload's back; and when the routing sends post's writes to
post_db, the ledger follows them there (post_db holds them; bento_social, with no reverse stream running
here, does not).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from connectors.pg.state.cutover import ensure_schema
from devtools.workload.ledger_check import check, differences
from devtools.workload.routed import RoutedWorkload
from tests.conftest import KafkaServer
from tests.harness import PipelineEnv, prepare

SERVICES = ("auth", "user", "post", "topic", "comment", "notification", "interaction")


def _streaming(make_databases: Callable[..., dict[str, str]], kafka: KafkaServer,
               unique_name: Callable[[str], str], tmp_path: Path) -> PipelineEnv:
    env = prepare(make_databases, kafka.bootstrap, unique_name, tmp_path, scale=100)
    env.start_capture()
    for service in SERVICES:
        env.start_worker(service)
    env.wait_caught_up(timeout=120)
    return env


def _run(workload: RoutedWorkload, seconds: float) -> None:
    workload.start()
    try:
        time.sleep(seconds)
    finally:
        workload.stop()
    assert not workload.errors and not workload.anomalies, (workload.errors, workload.anomalies)


def test_every_database_holds_the_ledger_after_streaming(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = _streaming(make_databases, kafka_server, unique_name, tmp_path)
    settings = env.settings()
    try:
        workload = RoutedWorkload(settings.topology, env.source, settings.target_dsns, seed=3, threads=3, rate=80)
        _run(workload, 8)
        written = {a.service for a in workload.attempts}
        assert written == set(SERVICES), written
        assert {a.home for a in workload.attempts} == {"source"}
        assert check(workload.ledger, settings.topology, env.source, settings.target_dsns, timeout=90) == []

        # The check is not vacuous: a profile value changed behind the workload's back in user_db is seen.
        snap = workload.ledger.snapshot()["users"]
        key = next(k for k, r in snap.items() if r is not None and "bio" in r)
        with psycopg.connect(env.dsns["user_db"], autocommit=True) as conn:
            conn.execute("UPDATE users.users SET bio = 'changed behind its back' WHERE id = %s", (dict(key)["id"],))
        found = differences(workload.ledger, settings.topology, env.source, settings.target_dsns)
        assert [d for d in found if "user_db users.users" in d and "bio" in d and "changed behind" in d], found
        assert all("user_db" in d for d in found), found
    finally:
        env.stop_all()


def test_writes_routed_to_post_db_are_checked_there(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = _streaming(make_databases, kafka_server, unique_name, tmp_path)
    settings = env.settings()
    try:
        with psycopg.connect(env.source, autocommit=True) as conn:
            ensure_schema(conn)
            conn.execute("INSERT INTO splitter.routing (service, home, database) VALUES ('post', 'service', "
                         "'post_db')")
        workload = RoutedWorkload(settings.topology, env.source, settings.target_dsns, seed=4, threads=3, rate=80)
        _run(workload, 6)
        homes = {(a.service, a.home) for a in workload.attempts}
        assert ("post", "post") in homes and ("post", "source") not in homes, homes
        assert ("topic", "source") in homes

        found = check(workload.ledger, settings.topology, env.source, settings.target_dsns, timeout=20)
        # post_db holds every post write; only bento_social lacks them (no reverse stream runs here).
        assert found and all(d.startswith("bento_social public.posts") for d in found if "..." not in d), found
        created = [dict(k)["id"] for k, r in workload.ledger.snapshot()["posts"].items()
                   if r is not None and "author_id" in r]
        assert created
        with psycopg.connect(env.dsns["post_db"], autocommit=True) as conn:
            contents = dict(conn.execute("SELECT id, content FROM post.posts WHERE id = ANY(%s)",
                                         (created,)).fetchall())
        ledger_posts = workload.ledger.snapshot()["posts"]
        for pid in created:
            row = ledger_posts[(("id", pid),)]
            assert row is not None and contents.get(pid) == row["content"]
    finally:
        env.stop_all()
