"""`splitter demo --migrate`: the whole migration as an operator runs it, with the routed workload writing.

Owns: the script of the migration on the demo's embedded servers: `splitter run` as a child (capture, the
workers and the reverse streams), the routed workload (``devtools.workload.routed``) once every service
streams; then, one phase each (``phase`` seconds of writes after it), `splitter cutover --service S --yes`
for every service in ``ownership.recommended_order``, `splitter rollback` of auth (a shared-table service)
and its cutover again, each followed by the ledger check of every database (workload paused); then,
with the workload paused, `splitter verify` and the ledger check of every
database; then `splitter complete` of every service with the workload writing again, and the ledger check
of what each database still owns; the summary (each command's exit, each cutover's write pause as the
cutover logged it and as the workload saw it, the total), and the demo's JSON summary of it (each command's
exit, `splitter verify --json`'s result per service).  Exit 0 only if every command succeeded and nothing
was lost.
Must not: work around a failing command (it stops there and says what the command printed), or contain
pipeline logic (it runs the real commands as child processes).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.progress import positions, verify_summary
from devtools.workload.ledger_check import check
from devtools.workload.routed import RoutedWorkload
from splitter.pipeline.config import Settings
from splitter.topology.ownership import recommended_order

ROOT = Path(__file__).resolve().parent.parent
FENCED = re.compile(r"writes were fenced for ([0-9.]+)s")
DEFAULT_PHASE = 10.0
DEFAULT_RATE = 30.0
SHARED_ROLLBACK = "auth"  # owns the rows of users, which user_db also takes


@dataclass
class Step:
    action: str
    service: str
    code: int
    started: float
    took: float
    fenced: float | None  # what the command logged
    output: str
    longest_wait: float = 0.0  # what the workload saw (first try to acknowledgement of one write)
    rejected: int = 0  # writes of the service that met the fence first


def _splitter(env: dict[str, str], log: Path, *args: str, timeout: float = 600) -> tuple[int, str, str]:
    """`splitter <args>` to completion: its exit code, what it printed (also appended to `log`), its stdout."""
    done = subprocess.run([sys.executable, "-m", "splitter", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)
    output = done.stdout + done.stderr
    with open(log, "a") as out:
        out.write(f"\n$ splitter {' '.join(args)}  -> exit {done.returncode}\n{output}")
    return done.returncode, output, done.stdout


class Migration:
    def __init__(self, settings: Settings, env: dict[str, str], root: Path, phase: float, rate: float,
                 log_level: str, stop: threading.Event, metrics: Sequence[str] = ()) -> None:
        self.settings, self.env, self.root = settings, env, root
        self.metrics = list(metrics)
        self.phase, self.rate, self.log_level, self.stop = phase, rate, log_level, stop
        self.commands_log = root / "commands.log"
        self.steps: list[Step] = []
        self.workload: RoutedWorkload | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.verify: dict[str, Any] | None = None  # `splitter verify --json`, summed per service

    # -- pieces ----------------------------------------------------------------------------------------

    def start_daemon(self) -> None:
        log = open(self.root / "splitter.log", "ab")  # noqa: SIM115 - owned by the child
        self.daemon = subprocess.Popen([sys.executable, "-m", "splitter", "run", "--log-level", self.log_level,
                                        *self.metrics],
                                       env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        print(f"splitter run started (pid {self.daemon.pid}; log {self.root / 'splitter.log'})", flush=True)

    def stop_daemon(self) -> None:
        if self.daemon is None or self.daemon.poll() is not None:
            return
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait()

    def wait_streaming(self, timeout: float = 600) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            if all(p.state == "streaming" for p in positions(self.settings)[1]):
                return True
            time.sleep(1)
        return False

    def run_phase(self, what: str) -> bool:
        """`phase` seconds of writes; False if the workload failed, the daemon died or Ctrl-C came."""
        assert self.workload is not None and self.daemon is not None
        end = time.monotonic() + self.phase
        while time.monotonic() < end:
            if self.workload.failed or self.daemon.poll() is not None or self.stop.wait(min(1.0, self.phase)):
                break
        homes = Counter(a.home for a in self.workload.attempts)
        print(f"  [{what}] workload: {self.workload.total()} writes acknowledged, by home: "
              f"{dict(sorted(homes.items()))}", flush=True)
        return not (self.workload.failed or self.daemon.poll() is not None or self.stop.is_set())

    def command(self, action: str, service: str) -> Step:
        started = time.monotonic()
        code, output, _ = _splitter(self.env, self.commands_log, action, "--service", service, "--yes",
                                 "--max-lag", "30s", "--timeout", "300s")
        fenced = [float(m) for m in FENCED.findall(output)]
        step = Step(action, service, code, started, time.monotonic() - started, max(fenced) if fenced else None,
                    output)
        self.steps.append(step)
        shown = f"{step.fenced:.3f}s" if step.fenced is not None else "-"
        print(f"splitter {action} --service {service}: exit {code} in {step.took:.1f}s (fenced {shown})",
              flush=True)
        if code != 0:
            print("  it printed:\n    " + "\n    ".join(output.strip().splitlines()[-25:]), flush=True)
        return step

    def measure(self) -> None:
        assert self.workload is not None
        for step in self.steps:
            step.longest_wait, step.rejected = self.workload.longest_wait(step.service, step.started,
                                                                          step.started + step.took + 5.0)

    def ledger_check(self, complete: list[str], when: str = "") -> list[str]:
        assert self.workload is not None
        found = check(self.workload.ledger, self.settings.topology, self.settings.source_dsn,
                      self.settings.target_dsns, complete=complete, timeout=180)
        scope = "what each service database owns" if complete else "bento_social and every service database"
        print(f"ledger check{' ' + when if when else ''} ({len(self.workload.ledger)} rows written, {scope}): "
              + ("nothing lost" if not found else f"{len(found)} DIFFERENCES"), flush=True)
        for line in found:
            print("  " + line)
        return found

    # -- the script ------------------------------------------------------------------------------------

    def run(self) -> int:
        started = time.monotonic()
        topology = self.settings.topology
        order = recommended_order(topology)
        self.start_daemon()
        ok = self.wait_streaming()
        print("every service streams (initial copy done)" if ok else "the initial copy did not finish", flush=True)
        if not ok:
            return 1
        self.workload = RoutedWorkload(topology, self.settings.source_dsn, self.settings.target_dsns,
                                       seed=int(time.time()), threads=3, rate=self.rate)
        self.workload.start()
        ok = self.run_phase("stream")
        script = [("cutover", s) for s in order] + [("rollback", SHARED_ROLLBACK), ("cutover", SHARED_ROLLBACK)]
        print(f"cutover order (recommended): {', '.join(order)}; then rollback and cutover of {SHARED_ROLLBACK}",
              flush=True)
        for action, service in script:
            if not ok:
                break
            ok = self.command(action, service).code == 0 and self.run_phase(f"{action} {service}")
            if ok:
                # After each switch every database must hold what the workload committed wherever it was
                # routed: checked with the workload paused (a check needs a quiet moment to converge).
                self.workload.pause()
                ok = not self.ledger_check([], f"after {action} {service}")
                self.workload.resume()
        self.workload.pause()
        verified = False
        if ok:
            code, output, stdout = _splitter(self.env, self.commands_log, "verify", "--json")
            verified = code == 0
            self.verify = _per_service(stdout)
            print(f"splitter verify: exit {code}\n  " + "\n  ".join(output.strip().splitlines()[-12:]), flush=True)
        lost = self.ledger_check([])
        completed: list[str] = []
        if ok and verified and not lost:
            self.workload.resume()
            for service in order:
                if not (ok := self.command("complete", service).code == 0 and self.run_phase(f"complete {service}")):
                    break
                completed.append(service)
            self.workload.stop()
            lost += self.ledger_check(completed)
        self.workload.stop()
        self.measure()
        self._summary(time.monotonic() - started)
        problems = self.workload.errors or self.workload.anomalies
        for problem in [*self.workload.errors, *self.workload.anomalies]:
            print(f"workload: {problem}")
        passed = ok and verified and not lost and not problems and len(completed) == len(order)
        print("migration: " + ("complete, nothing lost" if passed else "FAILED"), flush=True)
        return 0 if passed else 1

    def _summary(self, total: float) -> None:
        print(f"\n{'command':<34}{'exit':>5}{'took s':>9}{'fenced s (log)':>16}{'longest write wait s':>22}"
              f"{'writes fenced':>15}")
        for s in self.steps:
            fenced = f"{s.fenced:.3f}" if s.fenced is not None else "-"
            print(f"{s.action + ' ' + s.service:<34}{s.code:>5}{s.took:>9.1f}{fenced:>16}{s.longest_wait:>22.3f}"
                  f"{s.rejected:>15}")
        print("fenced s: the cutover's own log line ('writes were fenced for X s'); longest write wait: the "
              "longest one write of that service took from its first try to its acknowledgement, as the "
              "workload saw it, while the command ran")
        print(f"total: {total:.0f}s", flush=True)


def _per_service(verify_json: str) -> dict[str, Any] | None:
    """`splitter verify --json`'s tables summed per service (the demo's JSON summary); None if unreadable."""
    try:
        report = json.loads(verify_json)
    except ValueError:
        return None
    return verify_summary(report)


def run_migration(settings: Settings, env: dict[str, str], root: Path, *, phase: float | None, rate: float | None,
                  log_level: str, stop: threading.Event, metrics: Sequence[str] = (),
                  summary: dict[str, Any] | None = None) -> int:
    """`metrics`: the `--metrics-port/--metrics-host` options `splitter run` gets (it spreads the ports).
    `summary`: the demo's JSON summary, given `verify` (per service), `steps` and `workload_operations`."""
    migration = Migration(settings, env, root, phase if phase is not None else DEFAULT_PHASE,
                          rate if rate is not None else DEFAULT_RATE, log_level, stop, metrics)
    try:
        return migration.run()
    finally:
        if migration.workload is not None:
            migration.workload.stop()
        migration.stop_daemon()
        if summary is not None:
            summary["verify"] = migration.verify
            summary["steps"] = [{"command": s.action, "service": s.service, "exit_code": s.code,
                                 "seconds": round(s.took, 3), "fenced_seconds": s.fenced} for s in migration.steps]
            summary["workload_operations"] = migration.workload.total() if migration.workload is not None else 0
