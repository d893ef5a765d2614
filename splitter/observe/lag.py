"""Lag, in source terms: how far (bytes of WAL) and how long (seconds) a service is behind the source.

Owns: the definitions below, which `/metrics` and `splitter status` share, and `SourceClock`, the recent
samples of the source's WAL position that turn "how far" into "how long ago".
Must not: read anything (callers sample the source and hand positions in) or keep per-service state.

* lag bytes = the source's current WAL LSN - the service's applied commit LSN (>= 0).
* lag seconds is 0 when the service is caught up, else now - the commit time of the last source
  transaction it applied.  Caught up means: the applied LSN is at or past where the source's WAL was
  `grace` seconds ago (the latest sample at least that old).  The bytes between that point and the
  current WAL are what heartbeats and the worker's idle position writes alone leave open on an idle
  source (capture emits a heartbeat every `heartbeat_interval`, an idle worker records its position
  every `worker.POSITION_WRITE_INTERVAL`); so `grace` = heartbeat interval + position write interval +
  poll interval (3 s with the defaults) and is the resolution of the metric: a service less than
  `grace` behind reads 0.  Times come from the source's commit timestamps (heartbeats: the capture
  host's clock), compared with this host's clock.
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


@dataclass(frozen=True, slots=True)
class SourceSample:
    """The source's current WAL LSN as read at `wall` (time.time())."""

    wall: float
    lsn: int


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


def lag_bytes(applied_lsn: int, source: SourceSample | None) -> int | None:
    if source is None:
        return None
    return max(0, source.lsn - applied_lsn)


def lag_seconds(applied_lsn: int, applied_ts_ms: int, clock: SourceClock, now: float, grace: float) -> float | None:
    """Seconds a service is behind the source (see the module docstring); None before the first sample."""
    reference = clock.reference(now, grace)
    if reference is None:
        return None
    if applied_lsn >= reference.lsn:
        return 0.0
    if applied_ts_ms > 0:
        return max(0.0, now - applied_ts_ms / 1000.0)
    # Nothing but a backfill applied so far (no commit time known): behind at least since the reference.
    return max(0.0, now - reference.wall)


def caught_up_grace(settings: Settings, poll_interval: float) -> float:
    return settings.heartbeat_interval + POSITION_WRITE_INTERVAL + poll_interval


__all__ = ["SourceClock", "SourceSample", "caught_up_grace", "lag_bytes", "lag_seconds"]
