"""`splitter demo` as a new user meets it: where its servers are, password authentication, Ctrl-C, --json.

One small demo (scale 40) in a session of its own, as a terminal runs it.  While it runs: the `export ...`
line it printed, evaluated in an environment that has nothing else, lets `splitter status --json` reach
its PostgreSQL and broker; a wrong password (and none at all) is refused.  Then Ctrl-C (SIGINT to its
process group, as a terminal sends it): no child is restarted, every service catches up and is verified,
and the one JSON object on stdout gives the verify result per service and where the log and data are; the
log file is kept, the password file is not, and the password was never printed or logged.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import psycopg
import pytest

from splitter.core import exit_codes
from splitter.topology.loading import load_topology

ROOT = Path(__file__).resolve().parents[2]


def _read(stream: IO[str] | None, into: list[str]) -> None:
    assert stream is not None
    for line in stream:
        into.append(line.rstrip("\n"))


def _exports(lines: list[str]) -> dict[str, str] | None:
    for line in lines:
        words = shlex.split(line.strip()) if line.strip().startswith("export ") else []
        if words:
            return dict(word.split("=", 1) for word in words[1:])
    return None


def test_demo_says_where_its_servers_are_needs_its_password_and_sums_up_in_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPLITTER_", "PG"))}
    env["TMPDIR"] = str(tmp_path)  # the demo's temporary data directory lands here
    demo = subprocess.Popen([sys.executable, "-m", "splitter", "demo", "--scale", "40", "--duration", "120",
                             "--rate", "50", "--json"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=_read, args=(demo.stdout, out), daemon=True),
               threading.Thread(target=_read, args=(demo.stderr, err), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 120
        while (exports := _exports(err)) is None:
            assert demo.poll() is None and time.monotonic() < deadline, "\n".join(err)
            time.sleep(0.2)
        assert set(exports) >= {"SPLITTER_SOURCE_DSN", "SPLITTER_KAFKA", "SPLITTER_TOPOLOGY", "PGPASSFILE"}, exports
        passfile = Path(exports["PGPASSFILE"])
        assert passfile.stat().st_mode & 0o777 == 0o600, oct(passfile.stat().st_mode)
        password = passfile.read_text().splitlines()[0].split(":")[-1]
        assert ":" not in exports["SPLITTER_SOURCE_DSN"].split("@")[0].removeprefix("postgresql://"), exports

        # From that line alone (a fresh environment: PATH and the exports), status reaches both servers.
        fresh = {"PATH": os.environ["PATH"], **exports}
        status = subprocess.run([sys.executable, "-m", "splitter", "status", "--json"], env=fresh, cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=False)
        assert demo.poll() is None, "the demo must still run while status reads it"
        report = json.loads(status.stdout)
        assert report["source"]["reachable"] is True, report
        assert {s["service"] for s in report["services"]} == {
            s.name for s in load_topology(ROOT / "topology.py").services}, report
        assert not [s for s in report["services"] if s["state"] in ("unreachable", "misconfigured")], report

        # The demo's PostgreSQL asks for the password: a wrong one, or none, is refused.
        dsn = exports["SPLITTER_SOURCE_DSN"]
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(dsn, password="not-" + password, connect_timeout=5).close()
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(dsn, passfile=str(tmp_path / "none"), connect_timeout=5).close()
        with psycopg.connect(dsn, passfile=str(passfile), connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM users").fetchone()
            assert row is not None and row[0] > 0

        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C in its terminal
        code = demo.wait(240)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
    for reader in readers:
        reader.join(5)
    text = "\n".join(err)
    assert code == exit_codes.OK, text
    assert not [line for line in err if "restarting" in line], text
    assert len([line for line in err if "child process(es)" in line]) == 1, text
    assert len(out) == 1, out  # exactly one JSON object on stdout
    summary = json.loads(out[0])
    assert (summary["ok"], summary["exit_code"], summary["interrupted"], summary["caught_up"]) == (
        True, 0, True, True), summary
    services = summary["verify"]["services"]
    assert sorted(services) == sorted(s.name for s in load_topology(ROOT / "topology.py").services), summary
    assert all(s["ok"] and s["tables"] > 0 for s in services.values()), summary
    log = Path(summary["log"])
    assert log.is_file() and log.stat().st_size > 0, summary
    assert f"log kept: {log}" in text, text
    assert summary["servers"] == exports and summary["data_kept"] is False, summary
    assert not passfile.exists() and not (Path(summary["data_dir"]) / "pg").exists(), summary
    for where in (text, out[0], log.read_text(errors="replace")):
        assert password not in where
