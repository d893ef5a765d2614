"""`splitter cutover`: move one service's writes from the source database to its own database.

Owns: the order of the cutover's steps (below), its crash rules (before the switch a re-run aborts and
lifts the fence; from the switch on a re-run finishes) and its abort.  Must not: apply rows (the forward
and reverse workers do), run SQL itself (connectors/ functions do), or leave a fence in place on any
failure before the switch.

The sequence of a cutover of service S (see docs/cutover.md for the reasoning):

1. preflight: S's tables can be written back (`splitter.pipeline.reverse.reversibility_problems`), the roles
   the forward and reverse workers apply with may use replication origins (else the two streams would send
   each other's writes back), and S's worker reaches the source's current position within --max-lag.
2. the reverse slot is created in S's database and the reverse worker's checkpoint is written one byte
   before its consistent point (so no copy happens, and a commit exactly at that point is applied).
   Before the fence, because creating a slot waits for every running transaction of the cluster.
3. fence (state `fenced`): a *soft* fence trigger on S's source tables, created in the transaction that
   records the state; creating it waits for in-flight writers (the drain).  The session that created it
   holds an advisory lock for the whole command; a soft fence lets writes through once that session is
   gone, so a killed cutover never leaves writes fenced with nobody switching.
4. marker M = a logical message after the fence; S's worker is asked to hold at M; wait until its
   checkpoint reaches M - 1 (state `caught_up`): S's database then holds every write the source will
   ever take for S.
5. final verify of S's tables (`splitter.ops.verify.verify(..., consistent=False)`; both sides are still)
   (state `verified`); sequences owned by S's target columns are moved past the source's values.
6. switching (point of no return): the fence turns hard and routing says 'service', in one transaction
   on the session holding the lock; S's database fence left by an earlier rollback is lifted; the hook
   is called; state `switched`.
7. a marker in S's database is awaited in the reverse worker's checkpoint: state `reverse_streaming`.
Any error before 6 aborts: fence lifted, reverse slot dropped, state `aborted`, the error reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from connectors.pg import fence
from connectors.pg.client import DatabaseError, connect
from connectors.pg.cutover_sql import drop_slot
from connectors.pg.positions import slot_info
from connectors.pg.source import ReplicationConnection, ensure_publication
from connectors.pg.state import cutover as st
from connectors.pg.state.schema import FROM_BEGINNING, Checkpoint, ensure_state_schema, write_checkpoint
from splitter.core import exit_codes
from splitter.core.dsn import mask_dsn
from splitter.core.errors import FatalError
from splitter.core.lsn import lsn_to_str
from splitter.ops.cutover.sequences import advance_sequences
from splitter.ops.cutover.session import POLL, CutoverAborted, CutoverRefused, Session, crash_point, usable
from splitter.pipeline.reverse import reverse_topology, reversibility_problems

log = logging.getLogger(__name__)


def cutover(s: Session, confirm: Callable[[str], bool]) -> int:
    s.lock()
    state = s.state()
    if state in st.FORWARD_PRE_SWITCH:
        reason = f"a previous cutover stopped at {state!r} before switching (crashed or killed)"
        _abort(s, reason)
        s.out(f"service {s.service}: {reason}; aborted it: the fence is lifted and writes go to "
              f"{s.settings.topology.source_database} again. Run the command again to retry.")
        return exit_codes.ABORTED
    if state in st.ROLLBACK_PRE_SWITCH or state == st.RB_SWITCHING:
        raise CutoverRefused(f"service {s.service}: a rollback is in progress ({state}); run "
                             f"`splitter rollback --service {s.service}` to finish or abort it")
    if state == st.COMPLETE:
        raise CutoverRefused(f"service {s.service}: its cutover is already complete")
    s.deadline = time.monotonic() + s.options.timeout
    if state in st.STARTABLE:
        plan = _preflight(s)
        if not s.approved(plan, confirm):
            return exit_codes.OK
        _before_switch(s)
        state = st.SWITCHING
    if state == st.SWITCHING:
        _finish_switch(s)
        state = st.SWITCHED
    if state == st.SWITCHED:
        return _confirm_reverse(s)
    s.out(f"service {s.service}: already {state}; its writes go to {s.svc.database}")
    return exit_codes.OK


def _preflight(s: Session) -> str:
    problems = reversibility_problems(s.settings, s.service, s.src) + s.origin_problems()
    if problems:
        raise CutoverRefused(f"service {s.service} cannot be cut over:\n  " + "\n  ".join(problems))
    lag = s.lag(s.src, s.forward_position, f"the worker of service {s.service}")
    tables = ", ".join(".".join(t) for t in s.source_tables)
    return "\n".join([
        f"cutover of service {s.service} ({mask_dsn(s.settings.target_dsn(s.service))}):",
        f"  lag now: {lag:.2f}s (max {s.options.max_lag:g}s)",
        f"  1. create reverse slot {s.names.slot} and publication {s.names.publication} in "
        f"{s.svc.database}, topic {s.names.topic}",
        f"  2. fence writes to {tables} in {s.settings.topology.source_database} (SQLSTATE "
        f"{fence.FENCE_SQLSTATE}); reads go on",
        "  3. wait for the worker to apply everything up to a marker written after the fence",
        "  4. verify the service's tables; move its sequences past the source's",
        "  5. switch: routing → service" + (", call the switch hook" if s.hook.command or s.hook.url else ""),
        "  6. confirm the reverse stream (`splitter reverse` must run, e.g. under `splitter run`)",
        f"  every step before 5 is undone on failure; timeout {s.options.timeout:g}s",
    ])


def _before_switch(s: Session) -> None:
    timings: dict[str, float] = {}
    try:
        # Before the fence: creating a slot waits for every running transaction of the cluster, which
        # must not lengthen the write pause.  Changes in the service database between this point and
        # the switch are the forward worker's (origin-filtered by the reverse capture) or none.
        reverse_lsn = _prepare_reverse(s)
        crash_point("reverse_prepared")
        fenced_at = time.monotonic()

        def record_fenced() -> None:
            st.transition(s.src, s.service, st.FENCED, "fenced", new_attempt=True, marker_lsn=None,
                          reverse_slot=s.names.slot, reverse_publication=s.names.publication,
                          reverse_topic=s.names.topic, reverse_lsn=lsn_to_str(reverse_lsn))
            st.set_routing(s.src, s.service, st.HOME_SOURCE, s.svc.database)

        fence.fence_with_retries(s.src, s.source_fence(), s.service, fence.SOFT, s.hint(), s.deadline,
                                 before_commit=record_fenced)
        timings["fence"] = time.monotonic() - fenced_at
        crash_point("fenced")

        step = time.monotonic()
        marker, _ = s.caught_up(s.src, s.dst, s.service, f"the worker of service {s.service}", s.forward_position,
                                "fenced")
        timings["catch_up"] = time.monotonic() - step
        s.transition(st.CAUGHT_UP, f"caught up to the marker in {timings['catch_up']:.3f}s",
                     marker_lsn=lsn_to_str(marker))
        crash_point("caught_up")

        step = time.monotonic()
        s.verify()
        timings["verify"] = time.monotonic() - step
        s.transition(st.VERIFIED, f"final verify: all match ({timings['verify']:.3f}s)")
        crash_point("verified")

        step = time.monotonic()
        moved = advance_sequences(s.src, s.dst, s.sequence_pairs(forward=True))
        if moved:
            log.info("service %s: sequences moved: %s", s.service, "; ".join(moved))
        timings["sequences"] = time.monotonic() - step
        step = time.monotonic()

        def record_switching() -> None:
            row = st.load(s.src, s.service, for_update=True)
            if row is None or row.state != st.VERIFIED:
                raise FatalError(f"service {s.service}: state changed under the cutover "
                                 f"({row.state if row else 'none'})")
            st.transition(s.src, s.service, st.SWITCHING, "switching: source fence is hard")
            # Routing flips in the same transaction: from here on applications write to the service
            # database even if this process dies before the hook runs.
            st.set_routing(s.src, s.service, st.HOME_SERVICE, s.svc.database)

        # The point of no return, on the session whose lock kept the fence up: if that session died,
        # this fails and the (soft) fence has already let go.
        fence.fence_with_retries(s.src, s.source_fence(), s.service, fence.HARD, s.hint(), s.deadline,
                                 before_commit=record_switching)
        timings["switch"] = time.monotonic() - step
        log.info("service %s: writes were fenced for %.3fs before the switch (%s)", s.service,
                 time.monotonic() - fenced_at, ", ".join(f"{k} {v:.3f}s" for k, v in timings.items()))
        crash_point("switching")
    except BaseException as failed:
        exc, reason = s.failure(failed, "cutover failed")
        try:
            _abort(s, reason)
        except Exception as undo:  # report both; the soft fence lets go once this process is gone anyway
            raise FatalError(f"service {s.service}: cutover failed ({reason}) and undoing it failed too "
                             f"({undo}); the soft fence lets writes through once this command exits; run the "
                             f"command again to clean up") from exc
        raise CutoverAborted(f"service {s.service}: cutover aborted, writes go to "
                             f"{s.settings.topology.source_database} again: {reason}") from exc


def _prepare_reverse(s: Session) -> int:
    """Reverse publication, slot and checkpoint; returns the slot's consistent point."""
    reverse = reverse_topology(s.settings, s.service)
    ensure_publication(s.dst, s.names.publication, reverse.source_tables())
    info = slot_info(s.dst, s.names.slot)
    if info is not None:
        if info.active:
            raise FatalError(f"reverse slot {s.names.slot} is in use by another process")
        drop_slot(s.dst, s.names.slot)
    repl = ReplicationConnection(s.settings.target_dsn(s.service))
    try:
        consistent, _ = repl.create_slot(s.names.slot)
    finally:
        repl.close()
    # The reverse worker starts from here: no copy, and nothing before the slot existed is sent.
    with s.src.transaction():
        ensure_state_schema(s.src)
        # One byte before the consistent point: a commit exactly at it is streamed, so it must be applied.
        write_checkpoint(s.src, s.names.service, Checkpoint(s.names.topic, 0, FROM_BEGINNING, consistent - 1, None))
    return consistent


def _abort(s: Session, reason: str) -> None:
    if not usable(s.src):
        s.src = connect(s.settings.source_dsn, "the source database", autocommit=True,
                        application_name=f"splitter-cutover-{s.service}")
    conn = s.src

    def undo() -> None:
        row = st.load(conn, s.service, for_update=True)
        if row is not None and row.state in st.FORWARD_POST_SWITCH:
            raise FatalError(f"service {s.service} already switched ({row.state}); not aborting")
        fence.unfence_tables(conn, s.source_tables)
        st.drop_checkpoint(conn, s.names.service)
        st.transition(conn, s.service, st.ABORTED, "aborted; fence lifted", error=reason[:2000])

    fence.retry_lock_timeouts(conn, undo, time.monotonic() + max(10.0, s.options.timeout), pause=POLL)
    log.warning("service %s: cutover aborted: %s", s.service, reason)
    s.sweep(conn, s.source_tables)
    try:
        s.release(s.dst, s.service)  # a hold a killed attempt left
        s.drop_reverse_stream(wait=2.0)
    except DatabaseError as exc:  # a stale slot is dropped by the next attempt
        log.warning("service %s: could not drop the reverse slot yet (%s)", s.service, exc.sqlstate)


def _finish_switch(s: Session) -> None:
    """From `switching` on: every step is idempotent and a re-run repeats them."""
    with s.dst.transaction():
        fence.unfence_tables(s.dst, s.target_tables)  # left by an earlier rollback, if any
    s.sweep(s.dst, s.target_tables)
    with s.src.transaction():
        st.set_routing(s.src, s.service, st.HOME_SERVICE, s.svc.database)  # idempotent repeat
    crash_point("routed")
    s.hook.call(s.service, st.HOME_SERVICE, s.svc.database, max(s.deadline, time.monotonic() + 5.0))
    s.transition(st.SWITCHED, f"writes now go to {s.svc.database}")
    s.out(f"service {s.service}: switched; writes go to {s.svc.database}")
    crash_point("switched")


def _confirm_reverse(s: Session) -> int:
    marker = s.emit(s.dst, {"service": s.service, "step": "switched"})
    limit = max(5.0, s.remaining())
    try:
        took = s.wait_for("the reverse stream", s.reverse_position, marker - 1, limit)
    except FatalError:
        s.out(f"service {s.service}: switched, but the reverse stream has not applied a marker within "
              f"{limit:.0f}s: start `splitter reverse --service {s.service}` (or `splitter run`), then "
              f"run this command again to confirm it")
        return exit_codes.INCOMPLETE
    s.transition(st.REVERSE_STREAMING, f"reverse stream confirmed in {took:.2f}s")
    s.out(f"service {s.service}: reverse stream running: {s.svc.database} → "
          f"{s.settings.topology.source_database}")
    return exit_codes.OK


__all__ = ["cutover"]
