"""The consistent point of a verify: workers held, one source snapshot, each service's snapshot at its hold.

Owns: steps 1-3 of `splitter.ops.verify` (the pre-hold at the source's WAL position, the temporary
slot's point P and snapshot, each worker moved to hold at P and its database's snapshot taken and
checked inside that snapshot) and releasing every hold, always.  Must not: compare anything, keep a
worker held once its snapshot is taken, or import a database driver (the sessions are
`connectors.pg.verify_source` / `verify_target`'s, the hold contract `connectors.pg.state.control`'s).
"""

from __future__ import annotations

import time

from connectors.pg.state.control import HoldControl, HoldState
from connectors.pg.verify_source import SourceSession, snapshot_session, wal_position
from connectors.pg.verify_target import TargetSession
from splitter.core.errors import FatalError
from splitter.core.lsn import lsn_to_str
from splitter.ops.verify.report import VerifyReport
from splitter.pipeline.config import Settings
from splitter.topology.model import Route

_POLL = 0.1


def _wait_held(controls: dict[str, HoldControl], lsn: int, timeout: float) -> dict[str, HoldState]:
    """Wait until every worker reports it holds at `lsn`; a clear error naming the ones that do not."""
    deadline = time.monotonic() + timeout
    pending = dict(controls)
    held: dict[str, HoldState] = {}
    last: dict[str, HoldState] = {}
    while pending:
        for service, control in list(pending.items()):
            state = control.state()
            last[service] = state
            if state.pause_at_lsn != lsn:
                raise FatalError(
                    f"service {service}: the hold verify requested at {lsn_to_str(lsn)} was replaced (now "
                    f"{state.requested_by or 'nobody'} at {lsn_to_str(state.pause_at_lsn or 0)}); is another "
                    f"verify or a cutover running?")
            if state.paused_lsn is not None:
                held[service] = state
                del pending[service]
        if not pending:
            break
        if time.monotonic() >= deadline:
            parts = []
            for service in sorted(pending):
                st = last[service]
                where = (f"its checkpoint is at {lsn_to_str(st.checkpoint_lsn)}, written {st.checkpoint_at:%H:%M:%S}"
                         if st.checkpoint_lsn is not None and st.checkpoint_at is not None
                         else "it has no checkpoint yet")
                parts.append(f"service {service} ({where})")
            raise FatalError(
                f"the worker of {', '.join(parts)} did not hold at source LSN {lsn_to_str(lsn)} within "
                f"{timeout:g}s: is `splitter worker --service {sorted(pending)[0]}` running and caught up? "
                f"(or verify with consistent=False / --as-is when the source is idle)")
        time.sleep(_POLL)
    return held


def consistent_snapshots(settings: Settings, routes_by_service: dict[str, list[Route]], timeout: float,
                         report: VerifyReport) -> tuple[SourceSession, dict[str, TargetSession]]:
    """The source session at P and each service's session at its worker's hold before P (steps 1-3 of
    `splitter.ops.verify`); sets `report.source_lsn` and `report.held_lsns`.  Every hold is released
    before this returns or raises."""
    controls: dict[str, HoldControl] = {}
    source: SourceSession | None = None
    targets: dict[str, TargetSession] = {}
    try:
        for service in routes_by_service:
            controls[service] = HoldControl(settings.target_dsn(service), service)
        q = wal_position(settings.source_dsn)
        for control in controls.values():
            control.request(q)
        _wait_held(controls, q, timeout)

        p, source = snapshot_session(settings.source_dsn)
        report.source_lsn = p

        for control in controls.values():
            control.request(p)
        held = _wait_held(controls, p, timeout)
        for service, state in held.items():
            if state.paused_lsn is not None and state.paused_lsn >= p:
                raise FatalError(
                    f"service {service}: its worker reports holding at {lsn_to_str(state.paused_lsn)}, at or past the "
                    f"requested {lsn_to_str(p)}: it did not keep the hold it reported at {lsn_to_str(q)}")
            target = TargetSession(settings.target_dsn(service), service)
            targets[service] = target
            seen = target.begin()
            # Read inside the snapshot to be compared: it must be the held state, before P.
            if seen.pause_at_lsn != p or seen.paused_lsn is None or seen.checkpoint_lsn is None \
                    or seen.checkpoint_lsn >= p:
                raise FatalError(
                    f"service {service}: its database's snapshot is not at the hold (control row at "
                    f"{lsn_to_str(seen.pause_at_lsn or 0)}, held {lsn_to_str(seen.paused_lsn or 0)}, checkpoint "
                    f"{lsn_to_str(seen.checkpoint_lsn or 0)}, source point {lsn_to_str(p)})")
            report.held_lsns[service] = seen.checkpoint_lsn
            # The snapshot is taken: this worker need not wait for the others' or for the comparison.
            controls.pop(service).release()
        return source, targets
    except BaseException:
        for target in targets.values():
            target.close()
        if source is not None:
            source.close()
        raise
    finally:
        _release_all(controls)


def _release_all(controls: dict[str, HoldControl]) -> None:
    errors: list[Exception] = []
    for control in controls.values():
        try:
            control.release()
        except Exception as exc:  # release every other worker before reporting
            errors.append(exc)
    if errors:
        raise errors[0]
