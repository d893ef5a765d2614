"""The component rows of `splitter status`: stopped for good, running degraded, and how a failed read is classed.

Owns: `ComponentStatus` (a stop record of splitter.components), `DegradedStatus` (a `degraded` row:
capture's heartbeats failing or broker unreachable), as status shows and prints them, and
`error_class` (configuration | retryable | fatal, the class of the error a read failed with), and how
status prints sizes and durations (`human_bytes`, `human_seconds`).
Must not: read a database (splitter.ops.status does), or print a DSN.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.pg.state.components import DegradedComponent, StoppedComponent
from splitter.core.errors import ConfigurationError, FatalError, SplitterError


@dataclass
class ComponentStatus:
    """A component that stopped for good and has not run since (a row of splitter.components)."""

    component: str
    service: str
    state: str
    exit_class: str
    exit_code: int
    error: str
    since: str

    @classmethod
    def of(cls, c: StoppedComponent) -> ComponentStatus:
        return cls(c.component, c.service, "stopped", c.exit_class, c.exit_code, c.message,
                   c.since.isoformat(timespec="seconds"))

    def summary(self) -> str:
        return f"stopped ({self.exit_class}, exit {self.exit_code}) at {self.since}: {' '.join(self.error.split())}"


@dataclass
class DegradedStatus:
    """A component that runs with a problem it recorded (a `degraded` row of splitter.components)."""

    component: str
    service: str
    state: str
    problems: list[str]
    error: str
    since: str

    @classmethod
    def of(cls, c: DegradedComponent) -> DegradedStatus:
        return cls(c.component, c.service, "degraded", list(c.problems), c.message,
                   c.since.isoformat(timespec="seconds"))

    def summary(self) -> str:
        return f"degraded ({', '.join(self.problems)}) since {self.since}: {' '.join(self.error.split())}"


def error_class(exc: SplitterError) -> str:
    """How status names a failed read: the splitter error's class."""
    if isinstance(exc, ConfigurationError):
        return "configuration"
    return "fatal" if isinstance(exc, FatalError) else "retryable"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.0f}s" if s >= 1 or s == 0 else f"{s:.1f}s"
    if s < 3600:
        return f"{s // 60:.0f}m{s % 60:02.0f}s"
    return f"{s // 3600:.0f}h{(s % 3600) // 60:02.0f}m"


__all__ = ["ComponentStatus", "DegradedStatus", "error_class", "human_bytes", "human_seconds"]
