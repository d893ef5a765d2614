"""The services one cutover command moves together: one, or a group switched in one transaction.

Owns: `Group`, the member `Session`s of one `splitter cutover|rollback|complete --service A [--service B]`
(the first is the lead: the source session on which the group's fence, switch and state transactions
run, and whose advisory lock every member's soft source fence checks, so the whole group's fence lets go
at once if that session dies), and the steps done for all members at once: locking, reading their states,
recording a state for all in one transaction, waiting for several streams to reach one marker, the final
verify of what they own, and the ownership moves written into the change log.
Must not: order the steps (`forward` and `rollback` do) or run SQL itself (connectors/ functions do).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from connectors.pg import fence
from connectors.pg.client import DatabaseError
from connectors.pg.messages import emit_message
from connectors.pg.state import cutover as st
from connectors.pg.state.control import request_hold
from splitter.core import messages
from splitter.core.errors import FatalError
from splitter.ops.cutover.report import Report
from splitter.ops.cutover.session import HOLD_BY, CutoverRefused, Options, Session, usable
from splitter.ops.verify.run import verify  # imported up front: not while writes are fenced
from splitter.pipeline.config import Settings
from splitter.pipeline.worker.moves import Move, encode_moves
from splitter.topology.ownership import owned_view, owns_rows, retired_tables, shares_data


class Group:
    """The sessions of every service one command moves (a group of one for a single service)."""

    def __init__(self, settings: Settings, services: Sequence[str], options: Options,
                 out: Callable[[str], None] = print, report: Report | None = None) -> None:
        names = list(dict.fromkeys(services))
        if not names:
            raise CutoverRefused("name at least one service (--service)")
        for name in names:
            settings.topology.service(name)  # raises naming the known services
        self.settings = settings
        self.options = options
        # Every message goes through the report: printed as it comes, or kept for --json's object.
        self.report = report if report is not None else Report(out)
        self.out = self.report.say
        self.members: list[Session] = []
        try:
            for name in names:
                self.members.append(Session(settings, name, options, self.out, self.report))
        except BaseException:
            self.close()
            raise
        self.lead = self.members[0]
        self.services = names

    def close(self) -> None:
        for member in self.members:
            member.close()

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def label(self) -> str:
        return f"service {self.services[0]}" if len(self.services) == 1 else f"services {', '.join(self.services)}"

    @property
    def shared(self) -> list[Session]:
        """The members some table of which another service owns part of (their cutover hands over)."""
        return [s for s in self.members if shares_data(self.settings.topology, s.service)]

    # -- locks, states, deadlines ---------------------------------------------------------------------

    def lock(self) -> None:
        for member in self.members:
            member.lock()

    def states(self) -> dict[str, str]:
        return {s.service: s.state() for s in self.members}

    def outcome(self) -> dict[str, dict[str, str]] | None:
        """Each member's cutover state and home now, read again after the command (None if unreadable:
        the command's error says why)."""
        conn = self.lead.src
        if not usable(conn):
            return None
        try:
            have = st.has_tables(conn)
            out = {}
            for name in self.services:
                row = st.load(conn, name) if have else None
                out[name] = {"state": row.state if row else st.STREAMING,
                             "home": st.routing_home(conn, name) if have else st.HOME_SOURCE}
            return out
        except DatabaseError:
            return None

    def one_state(self) -> str:
        """The members' common state; refused when they differ (each must then be run on its own).

        Switched members of which only some have had their reverse stream confirmed count as `switched`.
        """
        states = self.states()
        distinct = set(states.values())
        if distinct == {st.SWITCHED, st.REVERSE_STREAMING}:
            return st.SWITCHED
        if len(distinct) > 1:
            described = ", ".join(f"{k}: {v}" for k, v in states.items())
            raise CutoverRefused(f"{self.label} are in different cutover states ({described}): run the command "
                                 f"for each service on its own")
        return distinct.pop()

    def start_clock(self) -> None:
        deadline = time.monotonic() + self.options.timeout
        for member in self.members:
            member.deadline = deadline

    @property
    def deadline(self) -> float:
        return self.lead.deadline

    def remaining(self) -> float:
        return self.lead.remaining()

    # -- state, all members in one transaction ---------------------------------------------------------

    def record(self, state: str, event: str, **fields: Any) -> None:
        """Record `state` for every member on the lead's source session, inside the caller's transaction."""
        for member in self.members:
            st.transition(self.lead.src, member.service, state, event, **fields)

    def transition(self, state: str, event: str, **fields: Any) -> None:
        with self.lead.src.transaction():
            self.record(state, event, **fields)

    def require(self, state: str, what: str) -> None:
        """Inside the caller's transaction: every member is still in `state` (locked for update)."""
        for member in self.members:
            row = st.load(self.lead.src, member.service, for_update=True)
            if row is None or row.state != state:
                raise FatalError(f"service {member.service}: state changed under the {what} "
                                 f"({row.state if row else 'none'})")

    # -- fences -----------------------------------------------------------------------------------------

    def source_fences(self) -> list[fence.FenceSpec]:
        return [spec for member in self.members for spec in member.source_fence()]

    def hint(self) -> str:
        return (f"read splitter.routing in {self.settings.topology.source_database} for where "
                f"{self.label} write(s)")

    # -- streams ----------------------------------------------------------------------------------------

    def forward_caught_up(self, step: str, members: Sequence[Session] | None = None,
                          at_least: float = 0.0) -> tuple[int, float]:
        """Marker M in the source; returns (M, seconds) once every member's forward worker applied all before M.

        Like `Session.caught_up`, for several workers at once: each is asked to hold at M, then a second
        (transactional) message flushes WAL so each reads a record past M at once; the holds are released.
        Each waits until the command's deadline, or `at_least` seconds (past the switch, where a re-run
        finishes, a spent deadline must not fail a step that only waits).
        """
        chosen = list(self.members if members is None else members)
        lead = self.lead
        marker = lead.emit(lead.src, {"services": [m.service for m in chosen], "step": step})
        for member in chosen:
            request_hold(member.dst, member.service, marker, HOLD_BY)
        started = time.monotonic()
        try:
            lead.emit(lead.src, {"services": [m.service for m in chosen], "step": step, "nudge": True},
                      transactional=True)
            for member in chosen:
                member.wait_for(f"the worker of service {member.service}", member.forward_position, marker - 1,
                                max(at_least, member.remaining()))
        finally:
            for member in chosen:
                member.release(member.dst, member.service)
        return marker, time.monotonic() - started

    def announce_moves(self, home: str, members: Sequence[Session] | None = None) -> int | None:
        """Write into the change log that the members' writes now live at `home` (see `worker.moves`)."""
        chosen = self.members if members is None else members
        complete = {s for s, (state, _) in st.read_states(self.lead.src).items() if state == st.COMPLETE}
        retired = {t.table for t in retired_tables(self.settings.topology, complete)}  # final: never moved again
        moves = [Move(m.service, f"{r.source_schema}.{r.source_table}", home) for m in chosen for r in m.routes
                 if (r.source_schema, r.source_table) not in retired]
        if not moves:
            return None
        return emit_message(self.lead.src, messages.OWNERSHIP, encode_moves(moves), False)

    def announce_retired(self, tables: Sequence[str]) -> int:
        """Write into the change log that `tables` are retired: every forward worker stops applying them."""
        return emit_message(self.lead.src, messages.OWNERSHIP, encode_moves([Move("", t, "retired") for t in tables]),
                            False)

    def verify(self) -> None:
        """The final verify of what the members own (their read copies go on streaming meanwhile).

        A member that owns no rows of a table it takes sees rows come and go by other services' writes, so
        then both sides are compared at one consistent point (verify's snapshot and hold)."""
        topology = self.settings.topology
        consistent = any(not owns_rows(topology, r) for m in self.members for r in m.routes)
        narrowed = dataclasses.replace(self.settings, topology=owned_view(topology, self.services))
        report = verify(narrowed, services=self.services, consistent=consistent,
                        timeout=max(1.0, self.remaining()), progress=self.report.progress)
        if not report.ok:
            raise FatalError(f"{self.label}: the final verify found differences:\n{report.render()}")


__all__ = ["Group"]
