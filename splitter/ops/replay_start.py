"""`splitter replay`'s arguments, checked before anything connects: where the operator asked it to start.

Owns: `StartPoint` (exactly one of an offset, a time, an LSN), parsing the texts an operator types for
them, and `check_arguments`, which names every problem of a replay command line at once (none or several
starting points, a time or LSN that does not parse, a time in the future, a service the topology does
not have) in one `ConfigurationError`.  Must not: connect to anything (the topology is a file), or decide
what the log holds (`splitter.ops.replay` does, with the broker's indexes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from splitter.core.errors import ConfigurationError
from splitter.core.lsn import lsn_to_str, str_to_lsn
from splitter.topology.model import Topology

OPTIONS = ("--from-offset", "--from-time", "--from-lsn")


def fmt_ms(ms: int) -> str:
    """A record time as operators read it (UTC, to the second); '?' for none."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else "?"


def parse_time(text: str) -> int:
    """An ISO 8601 time (UTC if it names no zone) → milliseconds since the epoch."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigurationError(f"--from-time {text!r} is not an ISO 8601 time (e.g. 2026-11-28T09:30:00Z)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class StartPoint:
    """Where a replay was asked to start: exactly one of the three is set."""

    offset: int | None = None
    time_ms: int | None = None
    lsn: int | None = None

    def __post_init__(self) -> None:
        given = [x for x in (self.offset, self.time_ms, self.lsn) if x is not None]
        if len(given) != 1:
            raise ConfigurationError(f"give exactly one of {', '.join(OPTIONS)}")
        if self.offset is not None and self.offset < 0:
            raise ConfigurationError(f"--from-offset must be 0 or more (an offset of the change log), got "
                                     f"{self.offset}")

    def describe(self) -> str:
        """The option as the operator typed it (in its canonical form)."""
        if self.offset is not None:
            return f"--from-offset {self.offset}"
        if self.time_ms is not None:
            return f"--from-time {datetime.fromtimestamp(self.time_ms / 1000, UTC).isoformat(timespec='milliseconds')}"
        assert self.lsn is not None
        return f"--from-lsn {lsn_to_str(self.lsn)}"

    def to_dict(self) -> dict[str, Any]:
        """One of {"offset": n}, {"time": iso}, {"lsn": "X/Y"} (README "JSON output", replay)."""
        if self.offset is not None:
            return {"offset": self.offset}
        if self.time_ms is not None:
            return {"time": datetime.fromtimestamp(self.time_ms / 1000, UTC).isoformat(timespec="milliseconds")}
        assert self.lsn is not None
        return {"lsn": lsn_to_str(self.lsn)}


def check_arguments(topology: Topology, service: str, *, from_offset: int | None, from_time: str | None,
                    from_lsn: str | None, now_ms: int | None = None) -> StartPoint:
    """The start point of a replay command line, or one `ConfigurationError` naming all of its problems.

    `from_offset` is already an int >= 0 (argparse checks it: a usage error of its own)."""
    problems: list[str] = []
    try:
        topology.service(service)
    except ConfigurationError as exc:
        problems.append(f"--service: {exc}")
    given = [name for name, value in zip(OPTIONS, (from_offset, from_time, from_lsn), strict=True)
             if value is not None]
    if not given:
        problems.append(f"give one of {', '.join(OPTIONS)} (where the replay starts)")
    elif len(given) > 1:
        problems.append(f"give only one of {', '.join(OPTIONS)}, not {' and '.join(given)}")
    if from_offset is not None and from_offset < 0:
        problems.append(f"--from-offset must be 0 or more, got {from_offset}")
    time_ms = lsn = None
    if from_time is not None:
        try:
            time_ms = parse_time(from_time)
        except ConfigurationError as exc:
            problems.append(str(exc))
        else:
            now = int(time.time() * 1000) if now_ms is None else now_ms
            if time_ms > now:
                # Known without the log: nothing was written at a time that has not come yet.
                problems.append(f"--from-time {from_time!r} ({fmt_ms(time_ms)}) is in the future (now is "
                                f"{fmt_ms(now)}): the change log holds nothing from then")
    if from_lsn is not None:
        try:
            lsn = str_to_lsn(from_lsn)
        except ConfigurationError as exc:
            problems.append(f"--from-lsn: {exc}")
    if problems:
        raise ConfigurationError("; ".join(problems))
    return StartPoint(from_offset, time_ms, lsn)


__all__ = ["OPTIONS", "StartPoint", "check_arguments", "fmt_ms", "parse_time"]
