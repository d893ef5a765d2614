"""`splitter verify` against real servers: the running pipeline, planted differences, flat memory.

The pipeline runs in-process (capture and one worker per service in threads) on the session's
PostgreSQL and broker; differences are planted with plain SQL in a service database, and the test
states which keys and columns verify must name.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from devtools.workload.driver import Workload
from splitter.cli.commands.verify import register as add_commands
from splitter.cli.options import shared_options as _common
from splitter.core.errors import FatalError
from splitter.ops.verify.run import verify, verify_quiesced
from splitter.pipeline.capture import Capture
from splitter.pipeline.config import Settings, build_settings
from splitter.pipeline.worker import Worker
from tests import roles
from tests.conftest import KafkaServer
from tests.harness import TOPOLOGY, PipelineEnv, prepare


class Pipeline:
    """Capture and every worker in threads; each worker has its own stop event (a test stops one)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.worker_stops = {s.name: threading.Event() for s in settings.topology.services}
        self.threads: dict[str, threading.Thread] = {}
        self.errors: list[BaseException] = []

    def _guard(self, fn: Callable[[threading.Event], None], stop: threading.Event) -> None:
        try:
            fn(stop)
        except BaseException as exc:  # surfaced by the test, never swallowed
            self.errors.append(exc)

    def start(self) -> None:
        self.threads["capture"] = threading.Thread(
            target=self._guard, args=(Capture(self.settings).run, self.stop), name="capture", daemon=True)
        for service, stop in self.worker_stops.items():
            worker = Worker(self.settings, service)
            self.threads[service] = threading.Thread(
                target=self._guard, args=(worker.run, stop), name=f"worker-{service}", daemon=True)
        for thread in self.threads.values():
            thread.start()

    def stop_worker(self, service: str) -> None:
        self.worker_stops[service].set()
        self.threads[service].join(30)
        assert not self.threads[service].is_alive()

    def close(self) -> None:
        self.stop.set()
        for stop in self.worker_stops.values():
            stop.set()
        for thread in self.threads.values():
            thread.join(30)


@pytest.fixture
def running(make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
            unique_name: Callable[[str], str], tmp_path: Path) -> Iterator[tuple[PipelineEnv, Pipeline]]:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=60)
    pipeline = Pipeline(env.settings())
    pipeline.start()
    try:
        env.wait_caught_up(timeout=180)
        yield env, pipeline
    finally:
        pipeline.close()
    assert not pipeline.errors, pipeline.errors


def _control_rows(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT service, requested_by FROM splitter.control").fetchall()


def test_verify_under_workload_then_names_planted_differences(running: tuple[PipelineEnv, Pipeline]) -> None:
    env, pipeline = running
    settings = env.settings()

    # 1. While the source takes writes and the workers apply them: nothing differs, at one point.
    workload = Workload(env.source, seed=5, threads=2)
    stop = threading.Event()
    runner = threading.Thread(target=workload.run, args=(stop,))
    runner.start()
    try:
        time.sleep(2)
        before = sum(workload.counts().values())
        report = verify(settings, chunk_rows=50, timeout=60)
        during = sum(workload.counts().values()) - before
    finally:
        stop.set()
        runner.join(60)
    assert during > 0, "the workload did not write while verify ran"
    assert report.consistent and report.source_lsn is not None
    assert set(report.held_lsns) == {s.name for s in settings.topology.services}
    assert all(lsn < report.source_lsn for lsn in report.held_lsns.values())
    assert len(report.tables) == 10
    assert report.ok, report.render()
    # Small chunks: most tables span several, so the chunk boundaries really are exercised.
    assert max(t.chunks for t in report.tables) > 3
    assert all(t.source_rows == t.target_rows > 0 for t in report.tables), report.render()
    # Every hold was released: the workers keep applying.
    for database in ("post_db", "user_db", "interaction_db"):
        assert _control_rows(env.dsns[database]) == []
    env.wait_caught_up(timeout=120)

    # 2. Plant three differences in post.posts (deleted, extra, one column changed).
    with psycopg.connect(env.dsns["post_db"], autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM post.posts ORDER BY id LIMIT 3")]
        deleted, changed, template = ids[0], ids[1], ids[2]
        conn.execute("DELETE FROM post.posts WHERE id = %s", (deleted,))
        conn.execute("UPDATE post.posts SET liked_count = liked_count + 1000 WHERE id = %s", (changed,))
        conn.execute("INSERT INTO post.posts SELECT 'zz-extra-row', author_id, topic_id, type, content, image, "
                     "is_featured, comment_count, liked_count, created_at, updated_at FROM post.posts WHERE id = %s",
                     (template,))
    report = verify(settings, chunk_rows=50, timeout=60)
    assert not report.ok
    bad = [t for t in report.tables if not t.ok]
    assert [(t.service, t.table) for t in bad] == [("post", "post.posts")], report.render()
    posts = bad[0]
    assert (posts.missing, posts.extra, posts.different) == (1, 1, 1)
    assert posts.missing_keys == [{"id": deleted}]
    assert posts.extra_keys == [{"id": "zz-extra-row"}]
    assert [(d.key, d.columns) for d in posts.different_rows] == [({"id": changed}, ("liked_count",))]
    diff = posts.different_rows[0]
    assert int(diff.target["liked_count"] or 0) == int(diff.source["liked_count"] or 0) + 1000
    assert posts.column_differences == {"liked_count": 1}
    assert posts.source_rows == posts.target_rows  # one missing, one extra
    text = report.render()
    assert deleted in text and "zz-extra-row" in text and "liked_count" in text

    # 3. The command: --json and exit code 1; --sample 0 keeps counts and drops keys.
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"), _common())
    args = parser.parse_args([
        "verify", "--service", "post", "--json", "--sample", "0", "--chunk-rows", "7",
        "--topology", str(TOPOLOGY), "--source-dsn", settings.source_dsn, "--kafka", env.kafka, "--topic", env.topic,
        *(f"--target-dsn={s.name}={settings.target_dsn(s.name)}" for s in settings.topology.services)])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.func(args)
    assert code == 1
    data = json.loads(out.getvalue())
    assert data["ok"] is False and data["consistent"] is True
    [posts_json] = data["tables"]
    assert (posts_json["missing"], posts_json["extra"], posts_json["different"]) == (1, 1, 1)
    assert posts_json["missing_keys"] == [] and posts_json["chunks"] > 3

    # 4. A worker that is not running: a clear timeout naming the service, and no hold left behind.
    pipeline.stop_worker("topic")
    started = time.monotonic()
    with pytest.raises(FatalError, match=r"service topic .*did not hold"):
        verify(settings, services=["topic"], timeout=2)
    assert time.monotonic() - started < 15
    assert _control_rows(env.dsns["topic_db"]) == []


def _memory_topology(path: Path) -> Path:
    path.write_text(
        "from splitter.topology import Service, Table, Topology\n"
        "TOPOLOGY = Topology(source_database='src', services=(Service('big', database='dst', tables=(\n"
        "    Table('small', source='small', key=('id',),\n"
        "          columns={'id': 'id', 'label': 'upper(label)', 'n': 'n * 2'}),\n"
        "    Table('large', source='large', key=('id',),\n"
        "          columns={'id': 'id', 'label': 'upper(label)', 'n': 'n * 2'}),\n"
        ")),))\n")
    return path


def _planted(rows: int, remainder: int) -> int:
    return sum(1 for g in range(1, rows + 1) if g % 1000 == remainder and str(g).startswith("1"))


def _fill(source: str, target: str, table: str, rows: int) -> None:
    """`rows` rows in the source; in the target their projection, except for planted differences.

    Among the ids whose text starts with '1' (about a ninth of the key range, in the key order verify
    uses), every 1000th row is missing and every 1000th+1 has `n` changed; one extra row sorts before
    every source key.  So a ninth of the chunks differ and their rows all go through the merge.
    """
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, label text, n integer)")
        conn.execute(f"INSERT INTO {table} SELECT g, 'row ' || g, g FROM generate_series(1, %s) AS g", (rows,))
        conn.execute(f"ANALYZE {table}")
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, label text, n bigint)")
        conn.execute(f"INSERT INTO {table} SELECT g, upper('row ' || g), "
                     f"CASE WHEN g %% 1000 = 1 AND left(g::text, 1) = '1' THEN -1 ELSE g * 2 END "
                     f"FROM generate_series(1, %s) AS g WHERE g %% 1000 <> 0 OR left(g::text, 1) <> '1'", (rows,))
        conn.execute(f"INSERT INTO {table} VALUES (-5, 'EXTRA', 0)")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_memory_stays_flat_from_100k_to_1m_rows(make_databases: Callable[..., dict[str, str]],
                                                tmp_path: Path) -> None:
    dbs = make_databases(names=("src", "dst"))
    _fill(dbs["src"], dbs["dst"], "small", 100_000)
    _fill(dbs["src"], dbs["dst"], "large", 1_000_000)
    settings = roles.as_role(build_settings(topology_path=str(_memory_topology(tmp_path / "topology.py")),
                                            source_dsn=dbs["src"], kafka="unused:9092", target_dsns={"big": dbs["dst"]},
                                            env={}))

    figures = {}
    for table, rows in (("small", 100_000), ("large", 1_000_000)):
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        started = time.monotonic()
        report = verify_quiesced(settings, tables=[table], chunk_rows=10_000, sample=5)
        seconds = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        [t] = report.tables
        missing, different = _planted(rows, 0), _planted(rows, 1)
        assert (t.source_rows, t.missing, t.different, t.extra) == (rows, missing, different, 1)
        assert t.target_rows == rows - missing + 1
        # About a ninth of the chunks, plus the one before the first source key (-5).
        assert 1 <= t.chunks_differing - 1 <= t.chunks // 4 + 1, (t.chunks, t.chunks_differing)
        assert t.column_differences == {"n": different}
        assert all(str(k["id"]).startswith("1") for k in t.missing_keys)
        assert len(t.missing_keys) == 5 and len(t.different_rows) == 5
        figures[table] = (peak, rss_growth, seconds)
    print("verify memory: tracemalloc peak (bytes), ru_maxrss growth (KiB), seconds:", figures)
    small_peak, large_peak = figures["small"][0], figures["large"][0]
    # 10x the rows: the Python heap must not follow (allow 2x plus 1 MiB of noise).
    assert large_peak < 2 * small_peak + (1 << 20), figures
