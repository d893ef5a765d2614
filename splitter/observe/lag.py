"""Lag, in source terms: how far (bytes of WAL) and how long (seconds) a service is behind the source.

Owns: the one definition below, which `/metrics`, `splitter status` and the demo's view share (`lag`), the
caught-up grace (`caught_up_grace`: the resolution of both numbers), and `SourceClock`, the recent samples
of the source's WAL position that turn "how far" into "how long ago".
Must not: read anything (callers sample the source and hand positions in) or keep per-service state.

The definition.  A service's *applied position* is the source LSN of the last change-log record its
worker has consumed: its own transactions, other services' transactions and capture's heartbeats all
move it (a heartbeat carries it past WAL that holds nothing for any service: tables no service routes,
vacuum, checkpoints).  The *source position* is the source's current WAL LSN.

* The service is *caught up* when its applied position is at or past where the source's WAL was
  `grace` seconds ago (the newest `SourceClock` sample at least that old).  Then lag bytes = 0 and lag
  seconds = 0: the WAL written since is either still on its way (capture, broker, worker: less than
  `grace` old) or holds nothing for the service to apply (the next heartbeat carries the position past
  it).  So the WAL that heartbeats and other services' writes add never reads as lag.
* Otherwise it is *behind*, and both are > 0: lag bytes = source position - applied position, lag
  seconds = now - the commit time of the last source transaction (or heartbeat) it applied, and at
  least the age of the reference sample (the source was past the applied position then already).
  Without a known commit time (nothing but a backfill applied yet) the age of the reference sample.

`grace` = heartbeat interval + the worker's idle position-write interval + the poll interval + a
delivery allowance for capture -> broker -> worker (2.5 s with the defaults and status' 0.25 s polls):
a service less than that behind reads 0 (lag bytes > 0 always comes with lag seconds > 0, and lag
seconds 0 with lag bytes 0).  Commit times come from the source (heartbeats: the capture host's
clock) and are compared with this host's clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from splitter.pipeline.config import Settings
from splitter.pipeline.worker import POSITION_WRITE_INTERVAL

# Source position samples kept for the lag-seconds reference (enough for any sane grace).
_SOURCE_HISTORY = 600
# capture -> broker -> worker for a heartbeat on a busy host: without it a caught-up service under a
# write load on tables it does not route flickers between 0 and one grace of lag.
DELIVERY_ALLOWANCE = 1.0
# A behind service reads at least this many seconds (a sample taken an instant before `now`).
_MIN_BEHIND_SECONDS = 0.001


@dataclass(frozen=True, slots=True)
class SourceSample:
    """The source's current WAL LSN as read at `wall` (time.time())."""

    wall: float
    lsn: int


@dataclass(frozen=True, slots=True)
class Lag:
    """A service's lag (see the module docstring): both 0 when caught up, both > 0 when behind."""

    bytes: int
    seconds: float

    @property
    def caught_up(self) -> bool:
        return self.bytes == 0


class SourceClock:
    """Recent samples of the source's WAL position: maps "how far" to "how long ago"."""

    def __init__(self, maxlen: int = _SOURCE_HISTORY) -> None:
        self._samples: deque[SourceSample] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, lsn: int, wall: float | None = None) -> None:
        with self._lock:
            self._samples.append(SourceSample(time.time() if wall is None else wall, lsn))

    def latest(self) -> SourceSample | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def oldest(self) -> SourceSample | None:
        with self._lock:
            return self._samples[0] if self._samples else None

    def reference(self, now: float, grace: float) -> SourceSample | None:
        """The newest sample at least `grace` old (or the oldest one, while none is that old yet)."""
        with self._lock:
            if not self._samples:
                return None
            chosen = self._samples[0]
            for sample in self._samples:
                if now - sample.wall < grace:
                    break
                chosen = sample
            return chosen


def lag(applied_lsn: int, applied_ts_ms: int, clock: SourceClock, now: float, grace: float) -> Lag | None:
    """The lag of a service at `applied_lsn` (commit time `applied_ts_ms`, 0 if unknown); None before the
    first source sample."""
    latest, reference = clock.latest(), clock.reference(now, grace)
    if latest is None or reference is None:
        return None
    if applied_lsn >= reference.lsn:
        return Lag(0, 0.0)
    behind_since = reference.wall  # the source's WAL was past the applied position then already
    if applied_ts_ms > 0:
        behind_since = min(behind_since, applied_ts_ms / 1000.0)
    return Lag(max(1, latest.lsn - applied_lsn), max(_MIN_BEHIND_SECONDS, now - behind_since))


def caught_up_grace(settings: Settings, poll_interval: float) -> float:
    return settings.heartbeat_interval + POSITION_WRITE_INTERVAL + poll_interval + DELIVERY_ALLOWANCE


__all__ = ["DELIVERY_ALLOWANCE", "Lag", "SourceClock", "SourceSample", "caught_up_grace", "lag"]
