"""What every cutover command (cutover, rollback, complete) does to the two databases of one service.

A command for a group of services holds one `Session` per member (`splitter.ops.cutover.group`).

Owns: the command's two sessions (source and service database) and their advisory locks, its options and
errors, the crash points tests use, and the steps the flows share: recording a state, fence messages,
waiting for a stream to reach a position (a marker after the fence, a hold at it, a lag probe), the final
verify, the sequence pairs, whether both workers can mark their writes with a replication origin, sweeping
lifted fences, dropping the reverse stream and asking for approval (the final verify is the group's).
Must not: order the steps (`forward`, `rollback` and `complete` do), run SQL itself (every statement is a function in
`connectors/`), or hold state anywhere but `connectors.pg.state.cutover`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.pg import fence
from connectors.pg.client import Connection, DatabaseError, connect, wrap_db_error
from connectors.pg.cutover_sql import drop_publication, drop_slot
from connectors.pg.messages import emit_message
from connectors.pg.origins import origin_access
from connectors.pg.positions import current_wal_lsn, slot_info
from connectors.pg.state import cutover as st
from connectors.pg.state.control import release_hold, request_hold
from connectors.pg.state.schema import ensure_state_schema, read_checkpoint
from splitter.core import messages
from splitter.core.dsn import SOURCE_DATABASE, service_database
from splitter.core.errors import FatalError, RetryableError, SplitterError
from splitter.core.lsn import lsn_to_str
from splitter.ops.cutover import fence_specs
from splitter.ops.cutover.hook import SwitchHook
from splitter.ops.cutover.report import Report
from splitter.ops.cutover.sequences import TablePair
from splitter.pipeline.config import Settings
from splitter.pipeline.reverse import reverse_names
from splitter.topology.inversion import exact_copies

log = logging.getLogger(__name__)

HOLD_BY = "splitter cutover"  # requested_by of the short holds in splitter.control (complete's stays)
CRASH_ENV = "SPLITTER_CUTOVER_CRASH_AT"  # tests: exit(137) right after the named step
DEFAULT_MAX_LAG = 5.0
DEFAULT_TIMEOUT = 30.0
POLL = 0.1


class CutoverRefused(SplitterError):
    """A precondition does not hold; nothing was changed."""


class CutoverAborted(SplitterError):
    """The cutover (or rollback) failed before its switch and was undone."""


def crash_point(name: str) -> None:
    """Test hook: die like SIGKILL right after step `name` was persisted."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("%s=%s: exiting with 137 as asked", CRASH_ENV, name)
        os._exit(137)


@dataclass(frozen=True)
class Options:
    max_lag: float = DEFAULT_MAX_LAG
    timeout: float = DEFAULT_TIMEOUT
    switch_command: str | None = None
    switch_url: str | None = None
    switch_env: tuple[str, ...] = ()  # variables the switch command gets by name (it inherits no others)
    switch_token_env: str | None = None  # the variable holding the switch URL's bearer token
    dry_run: bool = False


def usable(conn: Connection) -> bool:
    """Whether `conn` can still run statements (a killed or failed session cannot)."""
    return not conn.closed and not conn.broken


class Session:
    """One command for one service: its sessions on both databases, holding the service's advisory locks."""

    def __init__(self, settings: Settings, service: str, options: Options,
                 out: Callable[[str], None] = print, report: Report | None = None) -> None:
        self.settings = settings
        self.report = report if report is not None else Report(out)
        self.svc = settings.topology.service(service)
        self.service = service
        self.options = options
        self.out = out
        self.routes = settings.topology.routes_for(self.svc)
        self.names = reverse_names(settings, service)
        self.hook = SwitchHook(options.switch_command, options.switch_url, pass_env=options.switch_env,
                               token_env=options.switch_token_env)
        self.source_tables = [(r.source_schema, r.source_table) for r in self.routes]
        self.target_tables = [(r.target_schema, r.target_table) for r in self.routes]
        self.deadline = 0.0
        self.fenced_at: float | None = None
        self.src = connect(settings.source_dsn, SOURCE_DATABASE, autocommit=True,
                           application_name=f"splitter-cutover-{service}")
        try:
            self.dst = connect(settings.target_dsn(service), service_database(service), autocommit=True,
                               application_name=f"splitter-cutover-{service}")
        except BaseException:
            self.src.close()
            raise

    def close(self) -> None:
        self.src.close()
        self.dst.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sessions, locks and state --------------------------------------------------------------------

    def lock(self) -> None:
        """Both databases: the advisory lock a soft fence checks, and that keeps two commands apart."""
        try:
            st.ensure_schema(self.src)
            ensure_state_schema(self.dst)
            if not fence.try_lock(self.src, self.service) or not fence.try_lock(self.dst, self.service):
                raise RetryableError(f"another splitter cutover/rollback/complete of service {self.service} is "
                                     f"running; wait for it to finish")
        except DatabaseError as exc:
            raise self.db_error(exc, "cannot prepare the cutover") from exc

    def db_error(self, exc: DatabaseError, what: str) -> Exception:
        return wrap_db_error(exc, f"service {self.service}: {what}", self.settings.source_dsn,
                             self.settings.target_dsn(self.service))

    def state(self) -> str:
        """The service's cutover state now (`streaming` before its first cutover)."""
        row = st.load(self.src, self.service)
        return row.state if row else st.STREAMING

    def transition(self, state: str, event: str, **fields: Any) -> None:
        with self.src.transaction():
            st.transition(self.src, self.service, state, event, **fields)
        log.info("service %s: %s (%s)", self.service, state, event)

    # -- fences ---------------------------------------------------------------------------------------

    def source_fence(self) -> list[fence.FenceSpec]:
        """What the service owns of its source tables (see `fence_specs.source_fence`)."""
        return fence_specs.source_fence(self.settings.topology, self.service)

    def service_fence(self) -> list[fence.FenceSpec]:
        """The service's whole target tables (rollback, handover)."""
        return fence_specs.service_fence(self.settings.topology, self.service)

    def read_copy_fence(self) -> list[fence.FenceSpec]:
        """What the service reads in its database but does not own, read-only after its switch."""
        return fence_specs.read_copy_fence(self.settings.topology, self.service)

    def hint(self) -> str:
        return f"read splitter.routing in {self.settings.topology.source_database} for where service " \
               f"{self.service} writes"

    def sweep(self, conn: Connection, tables: Sequence[tuple[str, str]]) -> bool:
        """Drop lifted fence triggers where that does not stall readers; they are harmless if left."""
        try:
            return fence.sweep(conn, tables, self.service)
        except DatabaseError as exc:
            log.warning("service %s: lifted fence triggers not dropped yet (%s)", self.service, exc.sqlstate)
            return False

    # -- waiting for the streams ----------------------------------------------------------------------

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def wait_for(self, what: str, reached: Callable[[], int | None], target: int, limit: float) -> float:
        """Poll `reached()` until it is >= target; returns the seconds it took; raises after `limit`."""
        started = time.monotonic()
        while True:
            got = reached()
            if got is not None and got >= target:
                return time.monotonic() - started
            if time.monotonic() - started >= limit:
                have = lsn_to_str(got) if got is not None else "none"
                raise FatalError(f"service {self.service}: {what} did not reach {lsn_to_str(target)} within "
                                 f"{limit:g}s (it is at {have})")
            time.sleep(POLL)

    def forward_position(self) -> int | None:
        cp = read_checkpoint(self.dst, self.service)
        return cp.commit_lsn if cp else None

    def reverse_position(self) -> int | None:
        cp = read_checkpoint(self.src, self.names.service)
        return cp.commit_lsn if cp else None

    def caught_up(self, conn: Connection, holder: Connection, service: str, what: str,
                  position: Callable[[], int | None], step: str) -> tuple[int, float]:
        """Marker M after the fence; returns (M, seconds) once `service`'s worker has applied all before M.

        The worker is asked to hold at M (splitter.control in `holder`, its database): it then commits
        everything before M at once when it reads the next record, instead of at its next idle position
        write (up to a second later).  A second message right after the marker is that next record.  The
        hold is released at once: nothing of the fenced tables comes after M anyway.
        """
        marker = self.emit(conn, {"service": self.service, "step": step})
        # Only a free row or our own: a hold someone else (verify) holds is left alone; the wait below then
        # relies on the worker's own position writes instead (slower, not wrong).
        request_hold(holder, service, marker, HOLD_BY)
        try:
            # Transactional, so its commit flushes WAL at once: the walsender only sends flushed WAL, and a
            # non-transactional message alone waits for the WAL writer (up to wal_writer_delay).
            self.emit(conn, {"service": self.service, "step": step, "nudge": True}, transactional=True)
            took = self.wait_for(what, position, marker - 1, max(0.0, self.remaining()))
        finally:
            self.release(holder, service)
        return marker, took

    @staticmethod
    def release(conn: Connection, service: str) -> None:
        """Remove the cutover's short hold of `service` (a hold a killed attempt left, too)."""
        if usable(conn):
            release_hold(conn, service, HOLD_BY)

    @staticmethod
    def emit(conn: Connection, payload: dict[str, Any], transactional: bool = False) -> int:
        return emit_message(conn, messages.CUTOVER, json.dumps(payload), transactional)

    def lag(self, conn: Connection, position: Callable[[], int | None], what: str) -> float:
        """Seconds until `position` reaches the database's current WAL position; refuses above --max-lag."""
        now = current_wal_lsn(conn)
        self.emit(conn, {"service": self.service, "probe": True})  # moves an idle log along at once
        try:
            return self.wait_for(what, position, now, self.options.max_lag)
        except FatalError as exc:
            got = position() or 0
            raise CutoverRefused(f"service {self.service}: {what} is more than {self.options.max_lag:g}s behind "
                                 f"({max(0, now - got):,} bytes); is it running? ({exc})") from exc

    # -- preconditions --------------------------------------------------------------------------------

    def origin_problems(self) -> list[str]:
        """Why the workers' writes could not be marked with a replication origin (empty: they can).

        The forward worker applies into the service database and the reverse worker into the source, each
        with the DSN this command connects with; a write applied without an origin is captured by the other
        direction's stream and sent back, where an older value can overwrite a newer write.
        """
        problems = []
        for conn, worker, echo in ((self.dst, "forward", "sent back by the reverse stream"),
                                   (self.src, "reverse", "sent forward again by the forward stream")):
            access = origin_access(conn)
            if not access.usable:
                problems.append(f"{access.refusal()} (the {worker} worker applies into it as this role; its "
                                f"unmarked writes would be {echo})")
        return problems

    # -- verify, sequences, the reverse stream, approval ----------------------------------------------

    def sequence_pairs(self, forward: bool) -> list[TablePair]:
        pairs = []
        for r in self.routes:
            copies = exact_copies(r)
            src, dst = (r.source_schema, r.source_table), (r.target_schema, r.target_table)
            if forward:
                pairs.append((src, dst, copies))
            else:
                pairs.append((dst, src, {s: t for t, s in copies.items()}))
        return pairs

    def drop_reverse_stream(self, wait: float) -> bool:
        """Drop the reverse slot and publication and the reverse checkpoint; False if the slot is busy."""
        deadline = time.monotonic() + wait
        while True:
            info = slot_info(self.dst, self.names.slot)
            if info is None or not info.active:
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL * 2)
        if info is not None:
            drop_slot(self.dst, self.names.slot)
        drop_publication(self.dst, self.names.publication)
        st.drop_checkpoint(self.src, self.names.service)
        return True

    def approved(self, plan: str, confirm: Callable[[str], bool]) -> bool:
        """Go ahead with `plan`?  False on --dry-run (the plan is printed); refused when not confirmed."""
        if self.options.dry_run:
            self.report.show_plan(plan)
            return False
        self.report.plan_text = plan
        if not confirm(plan):
            raise CutoverRefused("not confirmed (pass --yes to run without asking)")
        return True

    def failure(self, exc: BaseException, what: str) -> tuple[BaseException, str]:
        """The error a step failed with (a driver error wrapped and masked) and its reason, for the abort."""
        if isinstance(exc, DatabaseError):
            exc = self.db_error(exc, what)
        return exc, str(exc) if isinstance(exc, SplitterError) else f"{type(exc).__name__}: {exc}"


__all__ = [
    "CRASH_ENV",
    "DEFAULT_MAX_LAG",
    "DEFAULT_TIMEOUT",
    "HOLD_BY",
    "POLL",
    "CutoverAborted",
    "CutoverRefused",
    "Options",
    "Session",
    "crash_point",
    "usable",
]
