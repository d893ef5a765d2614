"""`splitter cutover`: move the writes of what one service (or a group) owns from the source to its database.

Owns: the order of the cutover's steps (below), its crash rules (before the switch a re-run aborts and
lifts the fence; from the switch on a re-run finishes) and its abort.  Must not: apply rows (the forward
and reverse workers do), run SQL itself (connectors/ functions do), or leave a fence in place on any
failure before the switch.

The sequence of a cutover of the services of group G (one service, or several `--service`s; see
docs/cutover.md for the reasoning):

1. preflight, per member: what it owns can be written back (`reversibility_problems`), the roles the
   forward and reverse workers apply with may use replication origins, its worker is within --max-lag.
2. per member, the reverse slot is created in its database and the reverse worker's checkpoint written
   one byte before its consistent point.  Before the fence: creating a slot waits for every running
   transaction of the cluster.  A member that shares a table (another service owns part of it) gets its
   own tables fenced in its database now (the handover fence, lifted in step 7).
3. fence (state `fenced` for all): one *soft* fence per member on what it owns in the source (its columns;
   inserts and deletes if it owns the rows), all in one transaction, all tied to the lead's advisory lock.
4. marker M after the fence; every member's worker is held at M until its checkpoint reaches M - 1
   (`caught_up`): their databases hold every write the source will ever take for what they own.
5. final verify of what they own (`verified`); sequences moved past the source's.
6. switching (point of no return): the fences turn hard and routing says 'service' for every member, in
   one transaction on the lead's session.
7. the ownership moves are written into the change log (from there on each forward worker writes only
   what its service does not own); a member that shares a table waits for its worker to pass them, then
   its handover fence is replaced by the read-copy fence (what it reads and others own stays read-only in
   its database); hooks; `switched`.
8. a marker in each member's database is awaited in its reverse checkpoint: `reverse_streaming`.
Any error before 6 aborts all members: fences lifted, reverse slots dropped, `aborted`, the error reported.
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
from splitter.core.dsn import SOURCE_DATABASE, mask_dsn
from splitter.core.errors import FatalError
from splitter.core.lsn import lsn_to_str
from splitter.ops.cutover.group import Group
from splitter.ops.cutover.sequences import advance_sequences
from splitter.ops.cutover.session import POLL, CutoverAborted, CutoverRefused, Session, crash_point, usable
from splitter.pipeline.reverse import reverse_topology, reversibility_problems

log = logging.getLogger(__name__)


def cutover(g: Group, confirm: Callable[[str], bool]) -> int:
    g.lock()
    state = g.one_state()
    if state in st.FORWARD_PRE_SWITCH:
        reason = f"a previous cutover stopped at {state!r} before switching (crashed or killed)"
        _abort(g, reason)
        g.out(f"{g.label}: {reason}; aborted it: the fence is lifted and writes go to "
              f"{g.settings.topology.source_database} again. Run the command again to retry.")
        return exit_codes.ABORTED
    if state in st.ROLLBACK_PRE_SWITCH or state == st.RB_SWITCHING:
        raise CutoverRefused(f"{g.label}: a rollback is in progress ({state}); run `splitter rollback` for "
                             f"it to finish or abort it")
    if state == st.COMPLETE:
        raise CutoverRefused(f"{g.label}: its cutover is already complete")
    g.start_clock()
    if state in st.STARTABLE:
        plan = _preflight(g)
        if not g.lead.approved(plan, confirm):
            return exit_codes.OK
        _before_switch(g)
        state = st.SWITCHING
    if state == st.SWITCHING:
        _finish_switch(g)
        state = st.SWITCHED
    if state == st.SWITCHED:
        return _confirm_reverse(g)
    g.out(f"{g.label}: already {state}; writes go to {', '.join(s.svc.database for s in g.members)}")
    return exit_codes.OK


def _preflight(g: Group) -> str:
    """The checks before anything changes; the plan (its text returned, its fields in the report)."""
    g.report.step("preflight")
    problems: list[str] = []
    for s in g.members:
        problems += reversibility_problems(s.settings, s.service, s.src) + s.origin_problems()
    if problems:
        raise CutoverRefused(f"{g.label} cannot be cut over:\n  " + "\n  ".join(problems))
    lines = [f"cutover of {g.label}:"]
    members = []
    for s in g.members:
        lag = s.lag(s.src, s.forward_position, f"the worker of service {s.service}")
        lines.append(f"  {s.service} ({mask_dsn(s.settings.target_dsn(s.service))}): lag now {lag:.2f}s "
                     f"(max {s.options.max_lag:g}s); reverse slot {s.names.slot}, topic {s.names.topic}")
        members.append({"service": s.service, "database": s.svc.database, "lag_seconds": round(lag, 3),
                        "reverse_slot": s.names.slot, "reverse_publication": s.names.publication,
                        "reverse_topic": s.names.topic})
    specs = g.source_fences()
    fenced = "; ".join(f"{spec.table} ({', '.join(spec.columns) if spec.columns is not None else 'every column'}"
                       f"{', inserts and deletes' if spec.rows else ''})" for spec in specs)
    hooked = g.lead.hook.command or g.lead.hook.url
    g.report.plan = {
        "services": members, "source_database": g.settings.topology.source_database,
        "fences": [{"table": f"{spec.schema}.{spec.table}",
                    "columns": list(spec.columns) if spec.columns is not None else None, "rows": spec.rows}
                   for spec in specs],
        "switch_hook": bool(hooked), "max_lag_seconds": g.options.max_lag, "timeout_seconds": g.options.timeout}
    lines += [
        f"  1. create the reverse slots and publications in {', '.join(s.svc.database for s in g.members)}",
        f"  2. fence in {g.settings.topology.source_database} (SQLSTATE {fence.FENCE_SQLSTATE}): {fenced}; "
        f"reads and writes of what others own go on",
        "  3. wait for the workers to apply everything up to a marker written after the fence",
        "  4. verify what they own; move their sequences past the source's",
        "  5. switch: routing → service" + (", call the switch hook" if hooked else ""),
        "  6. confirm the reverse streams (`splitter reverse` must run, e.g. under `splitter run`)",
        f"  every step before 5 is undone on failure; timeout {g.options.timeout:g}s",
    ]
    return "\n".join(lines)


def _before_switch(g: Group) -> None:
    timings: dict[str, float] = {}
    lead = g.lead
    try:
        g.report.step("reverse slots")
        reverse_lsns = {s.service: _prepare_reverse(s) for s in g.members}
        for s in g.shared:
            # The handover fence: nothing but the forward worker writes the member's tables until it has
            # passed the ownership move (step 7), so no change read before the move overwrites a new write.
            with s.dst.transaction():
                fence.fence_tables(s.dst, s.service_fence(), s.service, fence.HARD, s.hint())
        crash_point("reverse_prepared")
        g.report.step("fence")
        fenced_at = time.monotonic()

        def record_fenced() -> None:
            for s in g.members:
                st.transition(lead.src, s.service, st.FENCED, "fenced", new_attempt=True, marker_lsn=None,
                              reverse_slot=s.names.slot, reverse_publication=s.names.publication,
                              reverse_topic=s.names.topic, reverse_lsn=lsn_to_str(reverse_lsns[s.service]))
                st.set_routing(lead.src, s.service, st.HOME_SOURCE, s.svc.database)

        fence.fence_with_retries(lead.src, g.source_fences(), lead.service, fence.SOFT, g.hint(), g.deadline,
                                 before_commit=record_fenced)
        timings["fence"] = time.monotonic() - fenced_at
        crash_point("fenced")

        g.report.step("catch up")
        step = time.monotonic()
        marker, _ = g.forward_caught_up("fenced")
        timings["catch_up"] = time.monotonic() - step
        g.transition(st.CAUGHT_UP, f"caught up to the marker in {timings['catch_up']:.3f}s",
                     marker_lsn=lsn_to_str(marker))
        crash_point("caught_up")

        g.report.step("verify")
        step = time.monotonic()
        g.verify()
        timings["verify"] = time.monotonic() - step
        g.transition(st.VERIFIED, f"final verify: all match ({timings['verify']:.3f}s)")
        crash_point("verified")

        g.report.step("sequences")
        step = time.monotonic()
        for s in g.members:
            moved = advance_sequences(s.src, s.dst, s.sequence_pairs(forward=True))
            if moved:
                log.info("service %s: sequences moved: %s", s.service, "; ".join(moved))
        timings["sequences"] = time.monotonic() - step
        g.report.step("switch")
        step = time.monotonic()

        def record_switching() -> None:
            g.require(st.VERIFIED, "cutover")
            g.record(st.SWITCHING, "switching: source fence is hard")
            # Routing flips in the same transaction: from here on applications write to the service
            # databases even if this process dies before the hook runs.
            for s in g.members:
                st.set_routing(lead.src, s.service, st.HOME_SERVICE, s.svc.database)

        # The point of no return, on the session whose lock kept the fences up: if that session died,
        # this fails and the (soft) fences have already let go.
        fence.fence_with_retries(lead.src, g.source_fences(), lead.service, fence.HARD, g.hint(), g.deadline,
                                 before_commit=record_switching)
        timings["switch"] = time.monotonic() - step
        for s in g.members:
            s.fenced_at = fenced_at
        log.info("%s: writes were fenced for %.3fs before the switch (%s)", g.label,
                 time.monotonic() - fenced_at, ", ".join(f"{k} {v:.3f}s" for k, v in timings.items()))
        crash_point("switching")
    except BaseException as failed:
        exc, reason = lead.failure(failed, "cutover failed")
        try:
            _abort(g, reason)
        except Exception as undo:  # report both; the soft fence lets go once this process is gone anyway
            raise FatalError(f"{g.label}: cutover failed ({reason}) and undoing it failed too ({undo}); the "
                             f"soft fence lets writes through once this command exits; run the command again "
                             f"to clean up") from exc
        raise CutoverAborted(f"{g.label}: cutover aborted, writes go to {g.settings.topology.source_database} "
                             f"again: {reason}") from exc


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


def _abort(g: Group, reason: str) -> None:
    if not usable(g.lead.src):
        g.lead.src = connect(g.settings.source_dsn, SOURCE_DATABASE, autocommit=True,
                             application_name=f"splitter-cutover-{g.lead.service}")
    conn = g.lead.src

    def undo() -> None:
        for s in g.members:
            row = st.load(conn, s.service, for_update=True)
            if row is not None and row.state in st.FORWARD_POST_SWITCH:
                raise FatalError(f"service {s.service} already switched ({row.state}); not aborting")
        for s in g.members:
            fence.unfence_tables(conn, s.source_tables, s.service)
            st.drop_checkpoint(conn, s.names.service)
            st.transition(conn, s.service, st.ABORTED, "aborted; fence lifted", error=reason[:2000])

    fence.retry_lock_timeouts(conn, undo, time.monotonic() + max(10.0, g.options.timeout), pause=POLL)
    log.warning("%s: cutover aborted: %s", g.label, reason)
    for s in g.members:
        s.sweep(conn, s.source_tables)
        # A handover fence stays: home is the source, and the service database takes no writes but the
        # stream's then (as after a rollback); the next cutover replaces it.
        try:
            if usable(s.dst):
                s.release(s.dst, s.service)  # a hold a killed attempt left
                s.drop_reverse_stream(wait=2.0)
        except DatabaseError as exc:  # a stale slot is dropped by the next attempt
            log.warning("service %s: could not drop the reverse slot yet (%s)", s.service, exc.sqlstate)


def _finish_switch(g: Group) -> None:
    """From `switching` on: every step is idempotent and a re-run repeats them."""
    g.report.step("hand over")
    g.announce_moves(st.HOME_SERVICE)
    crash_point("moved")
    if g.shared:
        # Every change read before the move was applied whole; from the move on only what the member does
        # not own is.  Its database takes writes once its worker has passed the move.
        g.forward_caught_up("moved", g.shared, at_least=30.0)
    for s in g.members:
        with s.dst.transaction():
            fence.unfence_tables(s.dst, s.target_tables, s.service)  # the handover fence, or a rollback's
            fence.read_copy_tables(s.dst, s.read_copy_fence())
        s.sweep(s.dst, s.target_tables)
    ended = time.monotonic()
    for s in g.members:
        if s.fenced_at is not None:
            log.info("service %s: writes were paused for %.3fs in all (until its database took them)",
                     s.service, ended - s.fenced_at)
    with g.lead.src.transaction():
        for s in g.members:
            st.set_routing(g.lead.src, s.service, st.HOME_SERVICE, s.svc.database)  # idempotent repeat
    crash_point("routed")
    for s in g.members:
        s.hook.call(s.service, st.HOME_SERVICE, s.svc.database, max(s.deadline, time.monotonic() + 5.0))
    g.transition(st.SWITCHED, "writes now go to the service database")
    for s in g.members:
        g.out(f"service {s.service}: switched; writes of what it owns go to {s.svc.database}")
    crash_point("switched")


def _confirm_reverse(g: Group) -> int:
    g.report.step("reverse stream")
    code = exit_codes.OK
    states = g.states()
    for s in g.members:
        if states[s.service] == st.REVERSE_STREAMING:
            continue
        marker = s.emit(s.dst, {"service": s.service, "step": "switched"})
        limit = max(5.0, s.remaining())
        try:
            took = s.wait_for("the reverse stream", s.reverse_position, marker - 1, limit)
        except FatalError:
            s.out(f"service {s.service}: switched, but the reverse stream has not applied a marker within "
                  f"{limit:.0f}s: start `splitter reverse --service {s.service}` (or `splitter run`), then run "
                  f"this command again to confirm it")
            code = exit_codes.INCOMPLETE
            continue
        s.transition(st.REVERSE_STREAMING, f"reverse stream confirmed in {took:.2f}s")
        s.out(f"service {s.service}: reverse stream running: {s.svc.database} → "
              f"{s.settings.topology.source_database}")
    return code


__all__ = ["cutover"]
