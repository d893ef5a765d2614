"""Health of one capture or worker, as `/healthz` reports it, and the heartbeat that feeds it.

Owns: `Health` (where the component is: starting, running, backing off, stopped; when its loop last
ticked).  The ticks come from `splitter.pipeline.daemon.TickingStop`, the stop event a component's `run`
gets (metrics.instrument wraps it once more with `Health.tick`): each capture and worker loop polls
`stop` once per iteration (it must, to stop promptly on SIGTERM), so every poll is a tick, and "polled
`stop` recently" is "the loop ticked recently"; the daemon uses the same ticks to reset its backoff.
`check()` is healthy while the component is starting (connecting, initial copy) or its loop ticked
within `max_age` seconds; unhealthy (with the reason) in retry backoff, after a fatal error, or when the
loop has not ticked for longer.  A capture whose heartbeats keep failing (its stats'
`heartbeat_failing`, set by splitter.pipeline.capture) stays healthy, with a second line saying so: the
stream may still be fine, and restarting capture would not mend the catalog session (capture reopens it
itself); the error is for an operator (retained WAL grows) and `splitter_capture_heartbeat_failures`.
A broker capture cannot reach (`broker_unreachable`, set by its produce path) is one more line, for
the same reason (capture keeps trying; a restart would not bring the broker back).
Must not: do more than one attribute store on the component's loop (`tick`), or decide anything about
the pipeline: it only looks.
"""

from __future__ import annotations

import threading
import time


class Health:
    """Where the component is: starting, running (ticking), backing off, or stopped."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._lock = threading.Lock()
        self._phase = "starting"  # starting | running | backoff | stopped
        self._last_tick = 0.0
        self._reason = "not started yet"
        self._stats: object = None

    def watch(self, stats: object) -> None:
        """Read the component's stats too (capture's: heartbeat failures); a new one after each retry."""
        self._stats = stats

    def tick(self) -> None:
        # Called from the component's loop on every poll of its stop event: one attribute store.
        self._last_tick = time.monotonic()

    def entered(self) -> None:
        with self._lock:
            self._phase, self._last_tick, self._reason = "starting", 0.0, "starting"

    def left(self, reason: str, stopped: bool) -> None:
        with self._lock:
            self._phase, self._reason = ("stopped" if stopped else "backoff"), reason

    def check(self) -> tuple[bool, str, float | None]:
        """(healthy, reason, seconds since the last tick or None)."""
        with self._lock:
            phase, reason, last = self._phase, self._reason, self._last_tick
        age = time.monotonic() - last if last else None
        if phase in ("backoff", "stopped"):
            return False, reason, age
        if age is None:
            return True, "starting (connecting or copying)", None
        if age > self.max_age:
            return False, f"loop has not ticked for {age:.0f}s", age
        return True, "ok" + self._heartbeat_note() + self._broker_note(), age

    def _heartbeat_note(self) -> str:
        st = self._stats
        if not getattr(st, "heartbeat_failing", False):
            return ""
        return (f"\nheartbeats failing: {getattr(st, 'heartbeat_failures', 0)} in a row "
                f"({getattr(st, 'last_heartbeat_error', None)}); retained WAL grows while they fail")

    def _broker_note(self) -> str:
        st = self._stats
        if not getattr(st, "broker_unreachable", False):
            return ""
        return (f"\nbroker unreachable ({getattr(st, 'last_broker_error', None)}); nothing new reaches the "
                "change log and retained WAL grows")


__all__ = ["Health"]
