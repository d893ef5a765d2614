"""`splitter run` stopping on purpose and starting against a source that does not answer yet.

- Ctrl-C: a terminal sends SIGINT to the whole foreground process group, so the test starts `splitter run`
  in a session of its own and signals that group, as a terminal would.  The supervisor alone takes the
  Ctrl-C; it stops its children (SIGTERM, each logs it), restarts none of them, says once that it stopped
  them, and exits 130 (README "Exit codes": interrupted).  Before, every child took the SIGINT itself, and the
  run exited 0 without saying what it stopped (and the demo, whose supervisor keeps running to verify after
  Ctrl-C, warned "exited with code 0; restarting in 0.5s" once per child).
- A source that does not answer: issue 12 decided that a transient network fault is retried with capped
  backoff, a refusal no retry mends is named and exits 2.  `splitter capture` retried; `splitter run` exited 3
  at once (it reads the completed services from the source before it starts its children).  Now both log the
  same cause with the same growing delays, and `splitter status` shows the source unreachable (retryable).
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
from collections.abc import Callable
from pathlib import Path
from typing import IO

from devtools.embedded.process import free_port
from splitter.core import exit_codes
from tests.conftest import KafkaServer
from tests.integration.test_bad_input import Child
from tests.integration.test_replay import make_stack
from tests.integration.test_supervisor import _caught_up, _env, _topology_file, _wait

ROOT = Path(__file__).resolve().parents[2]
_PID = re.compile(r" \[(\d+)\] ")
_DELAY = re.compile(r"retrying in (\d+(?:\.\d+)?)s")


class Session:
    """`python -m splitter <args>` in a session (process group) of its own, stderr collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("SPLITTER_")}
        full.update(env, SPLITTER_LOG_LEVEL="INFO")
        self.proc = subprocess.Popen([sys.executable, "-m", "splitter", *args], env=full, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.err.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.err)

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def test_ctrl_c_on_run_stops_every_child_once_restarts_none_and_exits_130(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    services = ["topic", "post"]
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, services, scale=10)
    run = Session(["run"], _env(stack.settings, _topology_file(tmp_path, services)))
    try:
        _wait("the initial copy and both workers", _caught_up(stack, services), 120)
        children = {"capture", "worker[topic]", "worker[post]", "reverse"}
        os.killpg(run.proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        code = run.finish(60)
    finally:
        run.kill()
    text = run.text()
    assert code == exit_codes.INTERRUPTED, text
    assert not [line for line in text.splitlines() if "restarting" in line], text
    # Only the supervisor took the SIGINT; each of its four children was stopped by its SIGTERM.
    sigint = {m.group(1) for line in run.err if "received SIGINT" in line and (m := _PID.search(line))}
    sigterm = {m.group(1) for line in run.err if "received SIGTERM" in line and (m := _PID.search(line))}
    assert sigint == {str(run.proc.pid)}, text
    assert len(sigterm) == len(children) and str(run.proc.pid) not in sigterm, text
    stopped = [line for line in run.err if "stopped 4 child process(es)" in line]
    assert len(stopped) == 1 and all(name in stopped[0] for name in children), text
    assert "Traceback" not in text, text


def test_run_retries_a_source_that_does_not_answer_as_capture_does_and_status_shows_it(
        kafka_server: KafkaServer, tmp_path: Path) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/bento_social"
    topology = ROOT / "topology.py"
    env = {"SPLITTER_TOPOLOGY": str(topology), "SPLITTER_SOURCE_DSN": closed, "SPLITTER_KAFKA": kafka_server.bootstrap}
    run, capture = Child(["run"], env), Child(["capture"], env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(len(c.warnings()) < 3 for c in (run, capture)):
            if run.proc.poll() is not None:
                break
            time.sleep(0.2)
        assert run.proc.poll() is None, f"`splitter run` exited ({run.proc.returncode}):\n{run.text()}"
        status = Child(["status", "--json"], env)
        status.finish(60)
        report = json.loads(status.out.strip().splitlines()[-1])
    finally:
        codes = {"run": run.terminate(), "capture": capture.terminate()}
    for name, child in (("run", run), ("capture", capture)):
        warnings = child.warnings()
        assert len(warnings) >= 3, f"{name}: {child.text()}"
        assert all("cannot connect to the source database" in w for w in warnings), f"{name}: {child.text()}"
        delays = [float(m.group(1)) for w in warnings if (m := _DELAY.search(w))]
        assert delays[:3] == [0.5, 1.0, 2.0], f"{name}: {delays}"
        assert codes[name] == 0, f"{name}: SIGTERM should stop it cleanly: {child.text()}"
        assert "Traceback" not in child.text(), child.text()
    # Nothing started while the source did not answer: run's only lines are its own retries and its stop.
    assert not [line for line in run.err if "starting capture" in line], run.text()
    source = report["source"]
    assert (source["reachable"], source["error_class"]) == (False, "retryable"), report


def _children_of(pid: int) -> set[int]:
    """The pids whose parent is `pid` (from /proc: field 4 of stat, after the parenthesised name)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def test_children_stop_themselves_when_run_is_killed(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    # The children have process groups of their own (the terminal's Ctrl-C is the supervisor's), so
    # killing `splitter run` (or its group) does not reach them: each must notice and stop by itself.
    services = ["topic"]
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, services, scale=5)
    run = Session(["run"], _env(stack.settings, _topology_file(tmp_path, services)))
    try:
        _wait("the initial copy", _caught_up(stack, services), 120)
        children = _children_of(run.proc.pid)
        assert len(children) == 3, run.text()  # capture, worker[topic], reverse
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in children):
            time.sleep(0.2)
    finally:
        run.kill()
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert not alive, f"still running: {alive}\n{run.text()}"
    assert len([line for line in run.err if "the supervisor" in line and "is gone: stopping" in line]) == 3, \
        run.text()
