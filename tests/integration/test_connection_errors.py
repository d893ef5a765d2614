"""A connection that fails names what it tried, and the option and environment variable its address comes from.

Nothing listens on port 1 of this machine, so every attempt is refused at once; the processes are the real
command line.  The password given must appear nowhere in what the operator sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.pg.client import connect
from splitter.core.dsn import SOURCE_DATABASE, service_database
from splitter.core.errors import SplitterError

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-pw"
NOWHERE = f"postgresql://splitter:{SECRET}@127.0.0.1:1/bento_social"


def _splitter(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITTER_")}
    return subprocess.run([sys.executable, "-m", "splitter", *args, "--topology", str(ROOT / "topology.py"),
                           "--source-dsn", NOWHERE, "--kafka", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


def test_a_refused_source_connection_names_the_option_and_the_variable() -> None:
    with pytest.raises(SplitterError) as failure:
        connect(NOWHERE, SOURCE_DATABASE)
    message = str(failure.value)
    assert "the source database" in message
    assert "--source-dsn" in message and "SPLITTER_SOURCE_DSN" in message
    assert SECRET not in message


def test_a_refused_service_database_names_its_own_option_and_variable() -> None:
    result = _splitter("dlq", "list", "--service", "post")
    assert result.returncode == 3, result.stderr
    assert "--target-dsn post=DSN" in result.stderr and "SPLITTER_TARGET_DSN_POST" in result.stderr
    assert SECRET not in result.stderr + result.stdout
    with pytest.raises(SplitterError) as failure:
        connect(NOWHERE, service_database("user"))
    assert "SPLITTER_TARGET_DSN_USER" in str(failure.value)


def test_the_plan_names_where_each_address_comes_from_and_kafka_does_not_flood_stderr() -> None:
    result = _splitter("plan")
    assert result.returncode != 0
    source = next(line for line in result.stdout.splitlines() if "connection-failed" in line and "[" not in line)
    assert "--source-dsn or SPLITTER_SOURCE_DSN" in source
    post = next(line for line in result.stdout.splitlines() if "connection-failed" in line and "[post]" in line)
    assert "SPLITTER_TARGET_DSN_POST" in post
    kafka = next(line for line in result.stdout.splitlines() if "kafka-unreachable" in line)
    assert "--kafka or SPLITTER_KAFKA" in kafka
    assert SECRET not in result.stderr + result.stdout
    # librdkafka retries a refused broker every 50 ms; each of its messages reaches the log once, not ~100 times.
    refused = [line for line in result.stderr.splitlines() if "Connect to" in line]
    assert len(refused) <= 2, result.stderr[-2000:]
