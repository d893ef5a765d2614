"""Where each service of the demo stands: copying, or streaming at an applied position with its lag.

Owns: ``Positions`` (the source's current WAL position and every service's checkpoint, with the lag of
each in `splitter.observe.lag`'s one definition, over the source samples it keeps between reads) and
``positions``, a one-off read for callers that need the positions alone; ``verify_summary``, a verify
report summed per service (the demo's JSON summary).  Read by the demo's screen and
by the migration script to know the initial copy is done.
Must not: write anything, or define lag another way than `splitter.observe.lag.lag`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

from splitter.core.lsn import str_to_lsn
from splitter.observe.lag import SourceClock, caught_up_grace, lag
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


class Positions:
    """Reads positions every `refresh` seconds or so; lag needs the source samples of earlier reads."""

    def __init__(self, settings: Settings, refresh: float = 1.0) -> None:
        self.settings = settings
        self.clock = SourceClock()
        self.grace = caught_up_grace(settings, refresh)

    def read(self) -> tuple[int, list[Progress]]:
        with psycopg.connect(self.settings.source_dsn, autocommit=True) as src:
            row = src.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            source_lsn = str_to_lsn(row[0])
        self.clock.add(source_lsn)
        out = []
        for service in self.settings.topology.services:
            with psycopg.connect(self.settings.target_dsn(service.name), autocommit=True) as conn:
                try:
                    cp = conn.execute(
                        "SELECT commit_lsn::text, source_ts, rows_applied, transactions_applied "
                        "FROM splitter.checkpoints WHERE service = %s", (service.name,)).fetchone()
                except psycopg.errors.UndefinedTable:
                    cp = None
            if cp is None:
                out.append(Progress(service.name, "copying", 0, 0, 0.0, 0, 0))
                continue
            applied = str_to_lsn(cp[0])
            ts_ms = int(cp[1].timestamp() * 1000) if cp[1] is not None else 0
            behind = lag(applied, ts_ms, self.clock, time.time(), self.grace)
            out.append(Progress(service.name, "streaming", applied, behind.bytes if behind else 0,
                                behind.seconds if behind else 0.0, cp[2], cp[3]))
        return source_lsn, out


def positions(settings: Settings) -> tuple[int, list[Progress]]:
    """The source's WAL position and every service's (its lag from this one sample: > 0 unless at the end)."""
    return Positions(settings).read()


def verify_summary(report: dict[str, Any]) -> dict[str, Any]:
    """A verify report's JSON (`VerifyReport.to_dict`, `splitter verify --json`) summed per service."""
    services: dict[str, dict[str, Any]] = {}
    for table in report.get("tables", []):
        entry = services.setdefault(table["service"], {"ok": True, "tables": 0, "source_rows": 0, "target_rows": 0,
                                                       "missing": 0, "extra": 0, "different": 0})
        entry["ok"] = entry["ok"] and bool(table["ok"])
        entry["tables"] += 1
        for name in ("source_rows", "target_rows", "missing", "extra", "different"):
            entry[name] += int(table[name])
    return {"ok": bool(report.get("ok")), "services": services}
