"""Test harness for whole-pipeline tests: fresh databases, settings, and splitter as real processes.

Owns: preparing a bento_social source and seven service databases with the shipped DDL and
generated data, the Settings and environment that point splitter at them (each test gets its own
topic, slot and publication), starting `python -m splitter ...` child processes that tests can
SIGKILL, and waiting until every service has applied everything the source committed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from devtools import datagen, fixtures
from splitter.core.dsn import dsn_database
from splitter.core.lsn import str_to_lsn
from splitter.pipeline.config import Settings, build_settings
from splitter.topology.loading import load_topology
from tests import expected, roles

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "topology.py"


@dataclass
class PipelineEnv:
    dsns: dict[str, str]
    kafka: str
    topic: str
    slot: str
    publication: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    log_dir: Path | None = None
    topology: Path = TOPOLOGY
    #: The key of the source among `dsns` (a test's own schema names its source database otherwise).
    source_name: str = "bento_social"
    #: Databases on a test's own server (no splitter role there): splitter gets the superuser's DSN.
    own_server_databases: set[str] = field(default_factory=set)
    _granted: set[tuple[str, str]] = field(default_factory=set)

    @property
    def source(self) -> str:
        return self.dsns[self.source_name]

    def settings(self, **tuning: Any) -> Settings:
        """What splitter runs with: the role's DSNs, after granting it the current topology."""
        topology = load_topology(self.topology)
        admin = build_settings(
            topology_path=str(self.topology), source_dsn=self.source, kafka=self.kafka,
            target_dsns={s.name: self.dsns[s.database] for s in topology.services},
            topic=self.topic, slot=self.slot, publication=self.publication, env={}, **tuning)
        # Granted once per topology (its text: a test may edit the file, as the operator who then runs the
        # grants script again) and databases: a test may stop a server its settings point at.
        key = (self.topology.read_text(), repr(sorted(self.dsns.items())))
        keep = {dsn_database(self.dsns[d]) or d for d in self.own_server_databases}
        settings = roles.as_role(admin, keep=keep, granted=key in self._granted)
        self._granted.add(key)
        return settings

    def env(self) -> dict[str, str]:
        """The environment of splitter's child processes: the same settings as `settings()`."""
        env = dict(os.environ)
        settings = self.settings()
        env.update({
            "SPLITTER_TOPOLOGY": str(self.topology), "SPLITTER_SOURCE_DSN": settings.source_dsn,
            "SPLITTER_KAFKA": self.kafka, "SPLITTER_TOPIC": self.topic, "SPLITTER_SLOT": self.slot,
            "SPLITTER_PUBLICATION": self.publication,
        })
        for name, dsn in settings.target_dsns.items():
            env[f"SPLITTER_TARGET_DSN_{name.upper()}"] = dsn
        return env

    def service_dsn(self, service: str) -> str:
        return self.dsns[load_topology(self.topology).service(service).database]

    # -- processes ------------------------------------------------------------------------------

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start `python -m splitter <args>` as a child; its output goes to a log file per name."""
        old = self.processes.get(name)
        if old is not None and old.poll() is None:
            raise AssertionError(f"{name} is already running")
        assert self.log_dir is not None
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen([sys.executable, "-m", "splitter", *args], env=self.env(), stdout=log,
                                stderr=subprocess.STDOUT, cwd=ROOT)
        self.processes[name] = proc
        return proc

    def command(self, *args: str, crash_at: str | None = None, timeout: float = 180) -> int:
        """`splitter <args>` to completion (its output in commands.log); its exit code.  `crash_at`: the
        cutover step to die at (SPLITTER_CUTOVER_CRASH_AT)."""
        extra = {"SPLITTER_CUTOVER_CRASH_AT": crash_at} if crash_at else {}
        assert self.log_dir is not None
        with open(self.log_dir / "commands.log", "ab") as log:
            log.write(f"\n$ splitter {' '.join(args)} (crash at {crash_at})\n".encode())
            log.flush()
            done = subprocess.run([sys.executable, "-m", "splitter", *args], env={**self.env(), **extra},
                                  stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout, check=False)
        return done.returncode

    def start_capture(self) -> subprocess.Popen[bytes]:
        return self.start("capture", "capture")

    def start_worker(self, service: str) -> subprocess.Popen[bytes]:
        return self.start(f"worker-{service}", "worker", "--service", service)

    def kill(self, name: str) -> None:
        proc = self.processes[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop_all(self, timeout: float = 20.0) -> dict[str, float]:
        """SIGTERM every child; returns how long each took to exit."""
        took: dict[str, float] = {}
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.processes.items():
            started = time.monotonic()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            took[name] = time.monotonic() - started
        return took

    def logs(self) -> str:
        assert self.log_dir is not None
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.log_dir.glob("*.log"))

    # -- state ----------------------------------------------------------------------------------

    def source_lsn(self) -> int:
        with psycopg.connect(self.source, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            return str_to_lsn(row[0])

    def applied_lsns(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in load_topology(self.topology).services:
            with psycopg.connect(self.dsns[s.database], autocommit=True) as conn:
                try:
                    row = conn.execute("SELECT commit_lsn::text FROM splitter.checkpoints WHERE service = %s",
                                       (s.name,)).fetchone()
                except psycopg.errors.UndefinedTable:
                    row = None
                out[s.name] = str_to_lsn(row[0]) if row else 0
        return out

    def wait_caught_up(self, timeout: float = 120.0, services: Sequence[str] | None = None) -> float:
        """Wait until every service has applied all the source committed so far; returns seconds waited."""
        target = self.source_lsn()
        started = time.monotonic()
        while True:
            applied = self.applied_lsns()
            behind = {s: lsn for s, lsn in applied.items() if (services is None or s in services) and lsn < target}
            if not behind:
                return time.monotonic() - started
            gone = bool(self.processes) and all(p.poll() is not None for p in self.processes.values())
            if gone or time.monotonic() - started > timeout:
                why = "every splitter process has exited" if gone else f"after {timeout}s"
                raise AssertionError(f"services still behind {target:X} ({why}): "
                                     f"{ {s: f'{v:X}' for s, v in behind.items()} }\n{self.logs()}")
            time.sleep(0.3)

    def assert_all_match(self) -> None:
        for s in load_topology(TOPOLOGY).services:
            with psycopg.connect(self.source) as src, psycopg.connect(self.dsns[s.database]) as tgt:
                expected.assert_service_matches(src, tgt, s.name)


def prepare(make_databases: Callable[..., dict[str, str]], kafka: str, unique_name: Callable[[str], str],
            tmp_path: Path, scale: int = 200) -> PipelineEnv:
    dsns = make_databases()
    with psycopg.connect(dsns["bento_social"], autocommit=True) as conn:
        fixtures.load_source_schema(conn)
        datagen.generate(conn, scale)
    for database in fixtures.TARGET_DATABASES:
        with psycopg.connect(dsns[database], autocommit=True) as conn:
            fixtures.load_target_schema(conn, database)
    log_dir = tmp_path / "logs"
    log_dir.mkdir(exist_ok=True)
    return PipelineEnv(dsns, kafka, unique_name("t"), unique_name("slot")[:63], unique_name("pub")[:63],
                       log_dir=log_dir)
