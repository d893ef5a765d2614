"""`splitter rollback` and `splitter complete`: move a cut-over service's writes back, or make the move final.

Owns: the order of the rollback's steps (the cutover's, mirrored: fence the service database, wait for
the reverse stream, verify, move the source's sequences, switch routing back, lift the source fence,
drop the reverse stream), its crash rule around `rollback_switching` (before it a re-run aborts and
returns to `switched`; from it on a re-run finishes), and complete (retire the forward worker for good,
drop the reverse stream, lift the fences).  Must not: apply rows, run SQL itself (connectors/ functions
do), or leave the service database fenced on any failure before the rollback's switch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from connectors.pg import fence
from connectors.pg.client import connect
from connectors.pg.positions import current_wal_lsn
from connectors.pg.state import cutover as st
from connectors.pg.state.control import request_hold
from splitter.core import exit_codes
from splitter.core.errors import FatalError
from splitter.core.lsn import lsn_to_str
from splitter.ops.cutover.sequences import advance_sequences
from splitter.ops.cutover.session import CutoverAborted, CutoverRefused, Session, crash_point, usable

log = logging.getLogger(__name__)

COMPLETE_BY = "splitter complete"  # requested_by of the hold that retires the forward worker for good


def rollback(s: Session, confirm: Callable[[str], bool]) -> int:
    s.lock()
    state = s.state()
    s.deadline = time.monotonic() + s.options.timeout
    if state in st.ROLLBACK_PRE_SWITCH:
        reason = f"a previous rollback stopped at {state!r} before switching (crashed or killed)"
        _abort(s, reason)
        s.out(f"service {s.service}: {reason}; aborted it: writes go to {s.svc.database} again. "
              f"Run the command again to retry.")
        return exit_codes.ABORTED
    if state == st.ROLLED_BACK:
        if not s.drop_reverse_stream(wait=s.remaining()):
            s.out(f"service {s.service}: rolled back; the reverse slot is still in use")
            return exit_codes.INCOMPLETE
        s.out(f"service {s.service}: already rolled back")
        return exit_codes.OK
    if state not in st.FORWARD_POST_SWITCH and state != st.RB_SWITCHING:
        raise CutoverRefused(f"service {s.service}: nothing to roll back (state {state})")
    if state in st.FORWARD_POST_SWITCH:
        lag = s.lag(s.dst, s.reverse_position, f"the reverse stream of service {s.service}")
        plan = (f"rollback of service {s.service}: fence its tables in {s.svc.database}, wait for the "
                f"reverse stream (lag now {lag:.2f}s), verify, switch routing back to "
                f"{s.settings.topology.source_database}, lift the source fence, stop the reverse stream")
        if not s.approved(plan, confirm):
            return exit_codes.OK
        _before_switch(s)
    _finish(s)
    return exit_codes.OK


def _before_switch(s: Session) -> None:
    try:
        # State first: a crash between the two leaves a rollback state without a fence, which a re-run
        # aborts (a no-op); the other order could leave a fence nobody knows about.
        s.transition(st.RB_FENCED, f"rollback: fencing {s.svc.database}")
        fenced_at = time.monotonic()
        fence.fence_with_retries(s.dst, s.service_fence(), s.service, fence.SOFT, s.hint(), s.deadline)
        crash_point("rollback_fenced")
        _, took = s.caught_up(s.dst, s.src, s.names.service, "the reverse stream", s.reverse_position,
                              "rollback_fenced")
        s.transition(st.RB_CAUGHT_UP, f"reverse stream caught up in {took:.3f}s")
        crash_point("rollback_caught_up")
        step = time.monotonic()
        s.verify()
        s.transition(st.RB_VERIFIED, f"final verify: all match ({time.monotonic() - step:.3f}s)")
        crash_point("rollback_verified")
        moved = advance_sequences(s.dst, s.src, s.sequence_pairs(forward=False))
        if moved:
            log.info("service %s: source sequences moved: %s", s.service, "; ".join(moved))
        # Hard in the service database, on the session holding the lock there; then the point of no
        # return.  A crash between the two leaves a hard fence and state rollback_verified: the re-run
        # aborts and lifts it.
        fence.fence_with_retries(s.dst, s.service_fence(), s.service, fence.HARD, s.hint(), s.deadline)
        with s.src.transaction():
            row = st.load(s.src, s.service, for_update=True)
            if row is None or row.state != st.RB_VERIFIED:
                raise FatalError(f"service {s.service}: state changed under the rollback")
            st.transition(s.src, s.service, st.RB_SWITCHING, "rollback switching: service fence is hard")
        s.fenced_at = fenced_at
        crash_point("rollback_switching")
    except BaseException as failed:
        exc, reason = s.failure(failed, "rollback failed")
        try:
            _abort(s, reason)
        except Exception as undo:
            raise FatalError(f"service {s.service}: rollback failed ({reason}) and undoing it failed too "
                             f"({undo}); run the command again") from exc
        raise CutoverAborted(f"service {s.service}: rollback aborted, writes go to {s.svc.database} "
                             f"again: {reason}") from exc


def _abort(s: Session, reason: str) -> None:
    if not usable(s.dst):
        s.dst = connect(s.settings.target_dsn(s.service), "the cutover databases", autocommit=True)
    if not usable(s.src):
        s.src = connect(s.settings.source_dsn, "the cutover databases", autocommit=True)
    with s.src.transaction():
        row = st.load(s.src, s.service, for_update=True)
        if row is not None and row.state in (st.RB_SWITCHING, st.ROLLED_BACK):
            raise FatalError(f"service {s.service}: rollback already switched ({row.state}); not aborting")
    with s.dst.transaction():
        fence.unfence_tables(s.dst, s.target_tables)
    s.sweep(s.dst, s.target_tables)
    s.release(s.src, s.names.service)  # a hold a killed attempt left
    s.transition(st.SWITCHED, "rollback aborted; service fence lifted", error=reason[:2000])
    log.warning("service %s: rollback aborted: %s", s.service, reason)


def _finish(s: Session) -> None:
    with s.src.transaction():
        st.set_routing(s.src, s.service, st.HOME_SOURCE, s.svc.database)
        fence.unfence_tables(s.src, s.source_tables)
    if s.fenced_at is not None:
        log.info("service %s: writes were fenced for %.3fs during the rollback", s.service,
                 time.monotonic() - s.fenced_at)
    crash_point("rollback_routed")
    s.hook.call(s.service, st.HOME_SOURCE, s.settings.topology.source_database,
                max(s.deadline, time.monotonic() + 5.0))
    s.transition(st.ROLLED_BACK, f"writes go to {s.settings.topology.source_database} again")
    s.sweep(s.src, s.source_tables)
    s.out(f"service {s.service}: rolled back; writes go to {s.settings.topology.source_database}")
    if not s.drop_reverse_stream(wait=max(5.0, s.remaining())):
        s.out(f"service {s.service}: the reverse slot {s.names.slot} is still in use; run the command "
              f"again once `splitter reverse` has stopped it")


def complete(s: Session, confirm: Callable[[str], bool]) -> int:
    s.lock()
    state = s.state()
    s.deadline = time.monotonic() + s.options.timeout
    if state not in (st.SWITCHED, st.REVERSE_STREAMING, st.COMPLETE):
        raise CutoverRefused(f"service {s.service}: complete needs a switched cutover (state {state})")
    if state != st.COMPLETE:
        plan = (f"complete the cutover of service {s.service}: stop and drop the reverse stream, retire the "
                f"forward worker, lift the fences; {s.settings.topology.source_database}'s copy of its "
                f"tables stops being kept in sync (no rollback after this)")
        if not s.approved(plan, confirm):
            return exit_codes.OK
        # Retire the forward worker before the source fence goes: it applies everything committed before
        # P (nothing of this service's tables, they are fenced) and then holds for good, so a later write
        # to the abandoned source tables can never reach the service database.  This hold takes over any
        # other requester's.
        hold_at = current_wal_lsn(s.src)
        request_hold(s.dst, s.service, hold_at, COMPLETE_BY, take_over=True)
        s.transition(st.COMPLETE, f"complete; forward worker retired at {lsn_to_str(hold_at)}")
    if not s.drop_reverse_stream(wait=max(5.0, s.remaining())):
        s.out(f"service {s.service}: complete, but the reverse slot {s.names.slot} is still in use; "
              f"run the command again once `splitter reverse` has stopped it")
        return exit_codes.INCOMPLETE
    with s.src.transaction():
        fence.unfence_tables(s.src, s.source_tables)
    with s.dst.transaction():
        fence.unfence_tables(s.dst, s.target_tables)
    swept = s.sweep(s.src, s.source_tables) & s.sweep(s.dst, s.target_tables)
    if not swept:
        s.out(f"service {s.service}: complete; some lifted (open) fence triggers could not be dropped "
              f"without waiting for long readers: run the command again to drop them")
        return exit_codes.INCOMPLETE
    s.out(f"service {s.service}: complete; its home is {s.svc.database}")
    return exit_codes.OK


__all__ = ["COMPLETE_BY", "complete", "rollback"]
