"""Where each service of the demo stands: copying, or streaming at an applied position with its lag.

Owns: ``Progress`` and ``positions`` (the source's current WAL position and every service's checkpoint),
read by the demo's screen and by the migration script to know the initial copy is done.
Must not: write anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from splitter.core.lsn import str_to_lsn
from splitter.pipeline.config import Settings


@dataclass
class Progress:
    service: str
    state: str
    applied_lsn: int
    lag_bytes: int
    lag_seconds: float
    rows: int
    transactions: int


def positions(settings: Settings) -> tuple[int, list[Progress]]:
    with psycopg.connect(settings.source_dsn, autocommit=True) as src:
        row = src.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        source_lsn = str_to_lsn(row[0])
    out = []
    now = datetime.now(UTC)
    for service in settings.topology.services:
        with psycopg.connect(settings.target_dsn(service.name), autocommit=True) as conn:
            try:
                cp = conn.execute(
                    "SELECT commit_lsn::text, source_ts, rows_applied, transactions_applied FROM splitter.checkpoints "
                    "WHERE service = %s", (service.name,)).fetchone()
            except psycopg.errors.UndefinedTable:
                cp = None
        if cp is None:
            out.append(Progress(service.name, "copying", 0, 0, 0.0, 0, 0))
            continue
        applied = str_to_lsn(cp[0])
        lag_bytes = max(0, source_lsn - applied)
        # Heartbeats advance the position every second; within one heartbeat of WAL is caught up.
        caught_up = lag_bytes < 64 * 1024
        lag_s = 0.0 if caught_up or cp[1] is None else max(0.0, (now - cp[1]).total_seconds())
        out.append(Progress(service.name, "streaming", applied, lag_bytes, lag_s, cp[2], cp[3]))
    return source_lsn, out
