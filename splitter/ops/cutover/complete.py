"""`splitter complete`: make a cutover final, and retire what no service writes through the source any more.

Owns: completing the members of a group (state `complete`: no rollback after it), deciding which source
tables that retires (every service owning part of a table is complete: `ownership.retired_tables`) and what
follows from it: every reverse stream it stops caught up first, a "retired" ownership move in the change log
(every forward worker stops applying those tables), a permanent hold on the forward worker of every service
all of whose tables are retired, dropping the reverse stream of every complete service that owns nothing
still fed through the source, and lifting the fences on retired tables in every database; and saying when
`bento_social` has no writer left. Must not: apply rows or run SQL itself (connectors/ functions do).

Why a complete service may keep streaming: bento_social is the hub until the end.  After auth completes,
user_db's copy of the login columns of users is still fed from bento_social, which auth's reverse stream
keeps current; only when user completes too is users retired and both streams stop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from connectors.pg import fence
from connectors.pg.positions import current_wal_lsn
from connectors.pg.state import cutover as st
from connectors.pg.state.control import request_hold
from splitter.core import exit_codes
from splitter.core.errors import FatalError
from splitter.core.lsn import lsn_to_str
from splitter.ops.cutover.group import Group
from splitter.ops.cutover.session import CutoverRefused, Options, Session
from splitter.topology.model import Topology
from splitter.topology.ownership import (
    TableOwners,
    all_owners,
    retired_services,
    retired_tables,
    reverse_still_needed,
)

log = logging.getLogger(__name__)

COMPLETE_BY = "splitter complete"  # requested_by of the hold that retires a forward worker for good


def complete(g: Group, confirm: Callable[[str], bool]) -> int:
    g.report.step("plan")
    g.lock()
    g.start_clock()
    topology = g.settings.topology
    states = g.states()
    for service, state in states.items():
        if state not in (st.SWITCHED, st.REVERSE_STREAMING, st.COMPLETE):
            raise CutoverRefused(f"service {service}: complete needs a switched cutover (state {state})")
    before = {s for s, (state, _) in st.read_states(g.lead.src).items() if state == st.COMPLETE}
    after = before | set(g.services)
    newly = _names(retired_tables(topology, after)) - _names(retired_tables(topology, before))
    if after != before:
        kept = sorted(_names(_tables_of(topology, g.services)) - _names(retired_tables(topology, after)))
        g.report.plan = {"services": list(g.services), "retires": sorted(newly), "still_fed": kept,
                         "source_database": topology.source_database}
        plan = (f"complete the cutover of {g.label} (no rollback after this): "
                + (f"retires {', '.join(sorted(newly))}: their streams stop and their fences are lifted"
                   if newly else "no table is retired yet")
                + (f"; still fed through {topology.source_database}: {', '.join(kept)}" if kept else ""))
        if not g.lead.approved(plan, confirm):
            return exit_codes.OK
        # Every reverse stream this stops must first have brought back what was written before: those writes
        # reach the source, and the read copies fed from it, or never.
        g.report.step("reverse streams caught up")
        for service in sorted(_stopping(topology, before, after)):
            with _session(g, service) as s:
                try:
                    s.caught_up(s.dst, s.src, s.names.service, "the reverse stream", s.reverse_position, "complete")
                except FatalError as exc:
                    raise CutoverRefused(f"service {service}: its reverse stream must catch up before it stops "
                                         f"(is `splitter reverse` running?): {exc}") from exc
        g.report.step("complete")
        with g.lead.src.transaction():
            for s in g.members:
                if states[s.service] != st.COMPLETE:
                    st.transition(g.lead.src, s.service, st.COMPLETE, "complete")
    # Everything below is idempotent and repeated by a re-run.
    g.report.step("tidy")
    retired = retired_tables(topology, after)
    if retired:
        g.announce_retired(sorted(_names(retired)))
    code = exit_codes.OK
    for service in sorted(after):
        with _session(g, service) as s:
            if not _tidy(s, after, retired):
                code = exit_codes.INCOMPLETE
    for t in retired:
        if t.name in newly:
            g.out(f"table {t.name}: retired (owned by {', '.join(t.owners)}, all complete): no stream reads or "
                  f"writes it any more")
    left = [t for t in all_owners(topology) if t.name not in _names(retired)]
    g.report.details = {"retired": sorted(_names(retired)), "newly_retired": sorted(newly),
                        "still_fed": [t.name for t in left], "source_retirable": not left}
    if not left:
        g.out(f"every table a service takes is retired: {topology.source_database} has no writer left and no "
              f"stream reads it; it may be retired")
    else:
        g.out(f"still fed through {topology.source_database}: {', '.join(t.name for t in left)}")
    return code


def _tidy(s: Session, complete: set[str], retired: list[TableOwners]) -> bool:
    """One complete service: retire its forward worker if nothing of it streams, drop its reverse stream if
    nothing it owns is still fed through the source, lift the fences of its retired tables.  True if done."""
    topology = s.settings.topology
    gone = {t.table for t in retired}
    if s.service in retired_services(topology, complete):
        # It applies everything committed before P (nothing of its tables: retired) and holds for good,
        # so a later write to the abandoned source tables can never reach the service database.
        hold_at = current_wal_lsn(s.src)
        request_hold(s.dst, s.service, hold_at, COMPLETE_BY, take_over=True)
        log.info("service %s: forward worker retired at %s", s.service, lsn_to_str(hold_at))
    done = True
    if not reverse_still_needed(topology, s.service, complete) and not s.drop_reverse_stream(
            wait=max(5.0, s.remaining())):
        s.out(f"service {s.service}: complete, but the reverse slot {s.names.slot} is still in use; run the "
              f"command again once `splitter reverse` has stopped it")
        done = False
    sources = [t for t in s.source_tables if t in gone]
    targets = [(r.target_schema, r.target_table) for r in s.routes if (r.source_schema, r.source_table) in gone]
    with s.src.transaction():
        fence.unfence_tables(s.src, sources, s.service)
    with s.dst.transaction():
        fence.unfence_tables(s.dst, targets, s.service)
        fence.lift_read_copy(s.dst, targets, s.service)
    if not (s.sweep(s.src, sources) & s.sweep(s.dst, targets)):
        s.out(f"service {s.service}: some lifted (open) fence triggers could not be dropped without waiting "
              f"for long readers: run the command again to drop them")
        done = False
    return done


class _Borrowed:
    """A member's session, left open for the group to close."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __enter__(self) -> Session:
        return self.session

    def __exit__(self, *exc: object) -> None:
        return None


def _session(g: Group, service: str) -> _Borrowed | Session:
    """The group's own session of `service`, or a new one (locked) for a service completed earlier."""
    for member in g.members:
        if member.service == service:
            return _Borrowed(member)
    other = Session(g.settings, service, Options(timeout=g.options.timeout), g.out)
    try:
        other.lock()
        other.deadline = g.deadline
    except BaseException:
        other.close()
        raise
    return other


def _names(tables: Iterable[TableOwners]) -> set[str]:
    return {t.name for t in tables}


def _stopping(topology: Topology, before: set[str], after: set[str]) -> set[str]:
    """The services whose reverse stream runs now and stops once `after` are complete."""
    running = {s for s in after if s not in before or reverse_still_needed(topology, s, before)}
    return {s for s in running if not reverse_still_needed(topology, s, after)}


def _tables_of(topology: Topology, services: Iterable[str]) -> list[TableOwners]:
    chosen = set(services)
    return [t for t in all_owners(topology) if chosen & set(t.services)]


__all__ = ["COMPLETE_BY", "complete"]
