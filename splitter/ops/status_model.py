"""The values of `splitter status`: the source, each service and the whole picture, and its JSON.

Owns: `SourceStatus`, `ServiceStatus`, `Status` (what one refresh shows) and `Status.as_json` (the one
JSON object `status --json` writes per refresh; README "status --json" describes its fields).
Must not: read anything (splitter.ops.status does), decide an exit code (splitter.ops.status_verdict
does), or hold a DSN.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from splitter.ops.status_components import ComponentStatus, DegradedStatus


@dataclass
class SourceStatus:
    database: str
    reachable: bool = False
    current_lsn: str | None = None
    slot: str = ""
    slot_state: str = "unknown"  # streaming | inactive | missing | lost | unknown
    slot_lag_bytes: int | None = None
    retained_wal_bytes: int | None = None
    error: str | None = None
    #: Why status could not read the source: configuration | retryable | fatal, and the server's SQLSTATE.
    error_class: str | None = None
    sqlstate: str | None = None


@dataclass
class ServiceStatus:
    service: str
    database: str
    state: str = "unknown"
    #: splitter.observe.lag's definition: both 0 when caught up, both > 0 when behind; None when unknown.
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    rows_per_second: float | None = None
    applied_lsn: str | None = None
    applied_offset: int | None = None
    applied_at: str | None = None
    rows_applied: int | None = None
    transactions_applied: int | None = None
    held_at_lsn: str | None = None
    cutover_state: str | None = None
    #: Open dead letters of the service (neither retried nor dropped).
    dead_letters: int | None = None
    last_error: str | None = None
    #: Why status could not read the service database (as SourceStatus.error_class / sqlstate).
    error_class: str | None = None
    sqlstate: str | None = None


@dataclass
class Verdict:
    """What the picture means for a probe: the exit code of the command (splitter.ops.status_verdict)."""

    exit_code: int
    #: "ok" | "lagging" | "unreachable" (the exit code's name in README "Exit codes of splitter status").
    meaning: str
    max_lag_seconds: float
    #: One line per service or component that made the code what it is (empty when 0).
    reasons: list[str] = field(default_factory=list)


@dataclass
class Status:
    taken_at: str
    source: SourceStatus
    services: list[ServiceStatus] = field(default_factory=list)
    #: Components that stopped for good: capture and reverse (from the source), workers (their databases).
    stopped: list[ComponentStatus] = field(default_factory=list)
    #: Components that run degraded (capture: heartbeats failing, broker unreachable), from the source.
    degraded: list[DegradedStatus] = field(default_factory=list)
    #: splitter.ops.cutover.view's section (state, home, fence) when the source answers.
    cutover: list[dict[str, Any]] | None = None
    cutover_text: str | None = field(default=None, repr=False)
    #: splitter.ops.status_ownership's section (per source table: owners, where their writes go now).
    ownership: list[dict[str, Any]] | None = None
    #: The exit code and why (set by the command once it knows --max-lag).
    verdict: Verdict | None = None

    def as_json(self) -> str:
        data = {"command": "status", **asdict(self)}
        data.pop("cutover_text")
        return json.dumps(data, sort_keys=False)


__all__ = ["ServiceStatus", "SourceStatus", "Status", "Verdict"]
