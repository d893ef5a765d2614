"""`splitter rollback`: move the writes of what a cut-over service (or group) owns back to the source.

Owns: the order of the rollback's steps (the cutover's, mirrored: fence the service databases, wait for
the reverse streams, verify, move the source's sequences, record `rollback_switching`, write the
ownership moves back into the change log, switch routing back and lift the source fences in one
transaction, drop the reverse streams) and its crash rule around `rollback_switching` (before it a re-run
aborts and returns to `switched`; from it on a re-run finishes).  Must not: apply rows, run SQL itself
(connectors/ functions do), or leave a service database fenced on any failure before the rollback's switch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from connectors.pg import fence
from connectors.pg.client import connect
from connectors.pg.state import cutover as st
from splitter.core import exit_codes
from splitter.core.errors import FatalError
from splitter.ops.cutover.group import Group
from splitter.ops.cutover.sequences import advance_sequences
from splitter.ops.cutover.session import CutoverAborted, CutoverRefused, crash_point, usable

log = logging.getLogger(__name__)


def rollback(g: Group, confirm: Callable[[str], bool]) -> int:
    g.lock()
    state = g.one_state()
    g.start_clock()
    if state in st.ROLLBACK_PRE_SWITCH:
        reason = f"a previous rollback stopped at {state!r} before switching (crashed or killed)"
        _abort(g, reason)
        g.out(f"{g.label}: {reason}; aborted it: writes go to the service database(s) again. Run the command "
              f"again to retry.")
        return exit_codes.ABORTED
    if state == st.ROLLED_BACK:
        if not _drop_reverse_streams(g):
            return exit_codes.INCOMPLETE
        g.out(f"{g.label}: already rolled back")
        return exit_codes.OK
    if state == st.SWITCHING:
        # Its hand-over (the ownership move, the read-copy fence) is not done yet; aborting a rollback from
        # here would leave it switched without it.
        raise CutoverRefused(f"{g.label}: the cutover has not finished its switch; run `splitter cutover` for "
                             f"it to finish, then roll back")
    if state not in st.FORWARD_POST_SWITCH and state != st.RB_SWITCHING:
        raise CutoverRefused(f"{g.label}: nothing to roll back (state {state})")
    if state in st.FORWARD_POST_SWITCH:
        g.report.step("preflight")
        lag = {s.service: s.lag(s.dst, s.reverse_position, f"the reverse stream of {s.service}") for s in g.members}
        lags = ", ".join(f"{service} {seconds:.2f}s" for service, seconds in lag.items())
        g.report.plan = {
            "services": [{"service": s.service, "database": s.svc.database,
                          "reverse_lag_seconds": round(lag[s.service], 3)} for s in g.members],
            "source_database": g.settings.topology.source_database, "max_lag_seconds": g.options.max_lag,
            "timeout_seconds": g.options.timeout}
        plan = (f"rollback of {g.label}: fence their tables in {', '.join(s.svc.database for s in g.members)}, "
                f"wait for the reverse streams (lag now {lags}), verify, switch routing back to "
                f"{g.settings.topology.source_database}, lift the source fences, stop the reverse streams")
        if not g.lead.approved(plan, confirm):
            return exit_codes.OK
        _before_switch(g)
    _finish(g)
    return exit_codes.OK


def _before_switch(g: Group) -> None:
    try:
        # State first: a crash between the two leaves a rollback state without a fence, which a re-run
        # aborts (a no-op); the other order could leave a fence nobody knows about.
        g.report.step("fence")
        g.transition(st.RB_FENCED, "rollback: fencing the service database")
        fenced_at = time.monotonic()
        for s in g.members:
            fence.fence_with_retries(s.dst, s.service_fence(), s.service, fence.SOFT, s.hint(), s.deadline)
        crash_point("rollback_fenced")
        g.report.step("catch up")
        took = 0.0
        for s in g.members:
            _, seconds = s.caught_up(s.dst, s.src, s.names.service, "the reverse stream", s.reverse_position,
                                     "rollback_fenced")
            took = max(took, seconds)
        g.transition(st.RB_CAUGHT_UP, f"reverse stream caught up in {took:.3f}s")
        crash_point("rollback_caught_up")
        g.report.step("verify")
        step = time.monotonic()
        g.verify()
        g.transition(st.RB_VERIFIED, f"final verify: all match ({time.monotonic() - step:.3f}s)")
        crash_point("rollback_verified")
        g.report.step("sequences")
        for s in g.members:
            moved = advance_sequences(s.dst, s.src, s.sequence_pairs(forward=False))
            if moved:
                log.info("service %s: source sequences moved: %s", s.service, "; ".join(moved))
        # Hard in each service database, on the session holding the lock there; then the point of no
        # return.  A crash between the two leaves hard fences and state rollback_verified: the re-run
        # aborts and lifts them.
        g.report.step("switch")
        for s in g.members:
            fence.fence_with_retries(s.dst, s.service_fence(), s.service, fence.HARD, s.hint(), s.deadline)
        with g.lead.src.transaction():
            g.require(st.RB_VERIFIED, "rollback")
            g.record(st.RB_SWITCHING, "rollback switching: service fence is hard")
        for s in g.members:
            s.fenced_at = fenced_at
        crash_point("rollback_switching")
    except BaseException as failed:
        exc, reason = g.lead.failure(failed, "rollback failed")
        try:
            _abort(g, reason)
        except Exception as undo:
            raise FatalError(f"{g.label}: rollback failed ({reason}) and undoing it failed too ({undo}); run "
                             f"the command again") from exc
        raise CutoverAborted(f"{g.label}: rollback aborted, writes go to the service database(s) again: "
                             f"{reason}") from exc


def _abort(g: Group, reason: str) -> None:
    for s in g.members:
        if not usable(s.dst):
            s.dst = connect(s.settings.target_dsn(s.service), "the cutover databases", autocommit=True)
        if not usable(s.src):
            s.src = connect(s.settings.source_dsn, "the cutover databases", autocommit=True)
    with g.lead.src.transaction():
        for s in g.members:
            row = st.load(g.lead.src, s.service, for_update=True)
            if row is not None and row.state in (st.RB_SWITCHING, st.ROLLED_BACK):
                raise FatalError(f"service {s.service}: rollback already switched ({row.state}); not aborting")
    for s in g.members:
        with s.dst.transaction():
            fence.unfence_tables(s.dst, s.target_tables, s.service)
        s.sweep(s.dst, s.target_tables)
        s.release(s.src, s.names.service)  # a hold a killed attempt left
    g.transition(st.SWITCHED, "rollback aborted; service fence lifted", error=reason[:2000])
    log.warning("%s: rollback aborted: %s", g.label, reason)


def _finish(g: Group) -> None:
    # Before the source fences go: from the move on each forward worker writes its service's tables whole
    # again.  Between the two nothing of what they own changes in the source (still fenced), and the
    # service databases hold exactly the source's values of it (caught up, hard-fenced).
    g.report.step("switch back")
    g.announce_moves(st.HOME_SOURCE)
    crash_point("rollback_moved")
    with g.lead.src.transaction():
        for s in g.members:
            st.set_routing(g.lead.src, s.service, st.HOME_SOURCE, s.svc.database)
            fence.unfence_tables(g.lead.src, s.source_tables, s.service)
    for s in g.members:
        if s.fenced_at is not None:
            log.info("service %s: writes were fenced for %.3fs during the rollback", s.service,
                     time.monotonic() - s.fenced_at)
    crash_point("rollback_routed")
    for s in g.members:
        s.hook.call(s.service, st.HOME_SOURCE, g.settings.topology.source_database,
                    max(s.deadline, time.monotonic() + 5.0))
    g.transition(st.ROLLED_BACK, f"writes go to {g.settings.topology.source_database} again")
    for s in g.members:
        s.sweep(g.lead.src, s.source_tables)
        g.out(f"service {s.service}: rolled back; writes go to {g.settings.topology.source_database}")
    _drop_reverse_streams(g)


def _drop_reverse_streams(g: Group) -> bool:
    g.report.step("reverse streams dropped")
    dropped = True
    for s in g.members:
        if not s.drop_reverse_stream(wait=max(5.0, s.remaining())):
            g.out(f"service {s.service}: the reverse slot {s.names.slot} is still in use; run the command again "
                  f"once `splitter reverse` has stopped it")
            dropped = False
    return dropped


__all__ = ["rollback"]
