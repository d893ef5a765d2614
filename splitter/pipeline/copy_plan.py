"""How capture gets to its stream: the slot, the initial copy before it, and the copies that wait for a database.

Owns: `prepare_stream` (the slot is found, re-created when it serves nobody, or created; the services the
initial copy must fill now are copied, from the new slot's snapshot or from a snapshot of their own; the
position to stream from) and `LaterCopies` (the services whose database did not answer, each copied from a
snapshot of its own once it answers, on a thread of its own while capture streams; a copy that fails for
good stops the stream, so capture exits with its cause).
A copy that fails for good (a refused row under on_error = "stop", a configuration error) right after this
start created the slot, with no service copied from it, drops the slot before capture exits: it streamed
nothing and serves nobody, and left behind it would hold WAL until someone starts capture again.  If some
service was copied from it, it is kept: dropping it would lose their copies; the error says so.
Must not: stream, confirm slot positions, or run SQL itself (connectors.pg.source and positions do).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from connectors.pg.client import Connection, DatabaseError
from connectors.pg.positions import slot_info
from connectors.pg.source import ReplicationConnection, check_slot_usable, drop_slot
from splitter.core.errors import ConfigurationError, FatalError, RetryableError, SplitterError
from splitter.core.lsn import lsn_to_str
from splitter.pipeline import initial_copy as backfill
from splitter.pipeline.config import Settings
from splitter.topology.model import Service

log = logging.getLogger(__name__)

#: Seconds between attempts to reach a service database that did not answer (doubling up to the second).
LATER_FIRST_RETRY = 1.0
LATER_MAX_RETRY = 30.0


@dataclass(frozen=True)
class StreamStart:
    confirmed: int  # the slot position to stream from
    later: list[Service]  # copied once their database answers (`LaterCopies`)
    created_at: int | None  # the consistent point of a slot this start created


def prepare_stream(settings: Settings, catalog: Connection, repl: ReplicationConnection) -> StreamStart:
    """Find or create the slot and run the initial copy the services need before the stream starts."""
    s = settings
    info = slot_info(catalog, s.slot)
    plan = backfill.plan_copies(s, info)
    if info is not None and plan.recreate_slot:
        log.warning("slot %s exists but no service was ever copied: re-creating it", s.slot)
        drop_slot(catalog, s.slot)
        info = None
    if info is None:
        consistent, snapshot = repl.create_slot(s.slot)
        log.info("created slot %s at %s; copying %d service(s) from snapshot %s", s.slot, lsn_to_str(consistent),
                 len(plan.now), snapshot)
        outcome = backfill.copy_services(s, snapshot, consistent, plan.now)
        if outcome.failed:
            _copy_failed(s, catalog, repl, outcome)
        return StreamStart(consistent, plan.later, consistent)
    check_slot_usable(info, s.slot)
    if plan.now:
        log.warning("service(s) %s have no checkpoint: copying them from a snapshot of their own; slot %s is kept",
                    ", ".join(svc.name for svc in plan.now), s.slot)
        backfill.copy_from_own_snapshot(s, plan.now)
    return StreamStart(info.confirmed_flush_lsn or 0, plan.later, None)


def _copy_failed(settings: Settings, catalog: Connection, repl: ReplicationConnection,
                 outcome: backfill.CopyOutcome) -> None:
    """The copy from a slot this start created failed: drop the slot if it serves nobody and the failure is
    final (a retryable one keeps it: the next attempt copies what is missing), then raise."""
    exc = outcome.failed[0][1]
    if not isinstance(exc, FatalError | ConfigurationError):
        outcome.raise_first()
    copied = [r.service for r in outcome.results]
    if not copied:
        repl.close()  # the slot is released with its session; its snapshot is no longer needed
        try:
            drop_slot(catalog, settings.slot)
            log.warning("dropped slot %s: no service was copied from it, and it would hold WAL until capture "
                        "starts again", settings.slot)
        except DatabaseError as drop_error:
            log.warning("could not drop slot %s (it holds WAL until capture starts again): %s", settings.slot,
                        drop_error)
        outcome.raise_first()
    kind = ConfigurationError if isinstance(exc, ConfigurationError) else FatalError
    for service, other in outcome.failed[1:]:
        log.error("initial copy of service %s failed too: %s", service.name, other)
    raise kind(f"{exc}. Slot {settings.slot!r} is kept: service(s) {', '.join(copied)} were copied from it and "
               f"stream from it once capture runs again (until then it holds WAL); the next start copies "
               f"{', '.join(svc.name for svc, _ in outcome.failed)} from a snapshot of their own") from exc


class _StopOrFailed(threading.Event):
    """The stream's stop event: set when capture is asked to stop, or when a later copy failed for good."""

    def __init__(self, outer: threading.Event) -> None:
        super().__init__()
        self._outer = outer

    def is_set(self) -> bool:
        return self._outer.is_set() or super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._outer.wait(0.1 if left is None else min(0.1, left))
        return True


class LaterCopies:
    """Copies the services whose database did not answer, once it does, from a snapshot of their own.

    A service that answers with a checkpoint was copied before (by an earlier start) and needs nothing;
    unless this start created the slot and the checkpoint is older than it: the changes in between are lost.
    """

    def __init__(self, settings: Settings, start: StreamStart, stop: threading.Event) -> None:
        self._settings = settings
        self._pending = list(start.later)
        self._created_at = start.created_at
        self.stop = _StopOrFailed(stop)
        self._closed = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="capture-later-copies", daemon=True)
        if self._pending:
            self._thread.start()

    def raise_failure(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop trying.  A copy in progress is not waited for long: it commits on its own or rolls back, and a
        copy of the same service started meanwhile waits for it (`ServiceCopy.claim`)."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        delay = LATER_FIRST_RETRY
        while self._pending and not self._closed.is_set():
            for service in list(self._pending):
                try:
                    self._copy(service)
                    self._pending.remove(service)
                except RetryableError as exc:
                    log.debug("database of service %s still does not answer: %s", service.name, exc)
                except (SplitterError, DatabaseError) as exc:  # retrying cannot help: stop the stream and say why
                    log.error("copy of service %s failed: %s", service.name, exc)
                    self.error = exc
                    self.stop.set()
                    return
                if self._closed.is_set():
                    return
            if self._pending and self._closed.wait(delay):
                return
            delay = min(delay * 2, LATER_MAX_RETRY)

    def _copy(self, service: Service) -> None:
        state = backfill.service_state(self._settings, service)
        if state is None:
            log.info("database of service %s answers: copying it from a snapshot of its own", service.name)
            backfill.copy_from_own_snapshot(self._settings, [service])
        elif self._created_at is not None and state.commit_lsn + 1 < self._created_at:
            raise FatalError(
                f"service {service.name} has a checkpoint at {lsn_to_str(state.commit_lsn)}, older than replication "
                f"slot {self._settings.slot!r} (created at {lsn_to_str(self._created_at)}): changes in between are "
                f"lost. Re-snapshot it: empty its database (drop its splitter schema and truncate its tables)")
        else:
            log.info("database of service %s answers; it was copied before", service.name)


__all__ = ["LaterCopies", "StreamStart", "prepare_stream"]
