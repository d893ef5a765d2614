"""`splitter cutover`, `rollback` and `complete`: move one service's writes to its own database and back.

Owns: the steps of a cutover (preflight, fence, marker and catch-up, final verify, sequences, reverse
stream preparation, switch, reverse confirmation), of a rollback (the same, mirrored) and of complete,
their ordering, the crash rules (before the switch a re-run aborts and lifts the fence; from the switch on
a re-run finishes), the switch hook (a command or an HTTP endpoint), and the command-line entry points.
Must not: apply rows (workers do, forward and reverse), hold state anywhere but `splitter.cutover_state`,
or leave a fence in place on any failure before the switch.

The sequence of a cutover of service S (see docs/cutover.md for the reasoning):

1. preflight: S's tables can be written back (`splitter.reverse.reversibility_problems`), and S's worker
   reaches the source's current position within --max-lag.
2. the reverse slot is created in S's database and the reverse worker's checkpoint is written at its
   consistent point (so no copy happens).  Before the fence, because creating a slot waits for every
   running transaction of the cluster.
3. fence (state `fenced`): a *soft* fence trigger on S's source tables, created in the transaction that
   records the state; creating it waits for in-flight writers (the drain).  The session that created it
   holds an advisory lock for the whole command; a soft fence lets writes through once that session is
   gone, so a killed cutover never leaves writes fenced with nobody switching.
4. marker M = pg_logical_emit_message(...) after the fence; S's worker is asked to hold at M; wait until
   its checkpoint reaches M - 1 (state `caught_up`): S's database then holds every write the source will
   ever take for S.
5. final verify of S's tables (`splitter.verify.verify(..., consistent=False)`; both sides are still)
   (state `verified`); sequences owned by S's target columns are moved past the source's values.
6. switching (point of no return): the fence turns hard and routing says 'service', in one transaction
   on the session holding the lock; S's database fence left by an earlier rollback is lifted; the hook
   is called; state `switched`.
7. a marker in S's database is awaited in the reverse worker's checkpoint: state `reverse_streaming`.
Any error before 6 aborts: fence lifted, reverse slot dropped, state `aborted`, the error reported.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from connectors.pg import fence
from connectors.pg.client import connect, wrap_db_error
from connectors.pg.source import ReplicationConnection, current_wal_lsn, ensure_publication, slot_info
from connectors.pg.state.control import release_hold, request_hold
from connectors.pg.state.schema import (
    FROM_BEGINNING,
    Checkpoint,
    ensure_state_schema,
    read_checkpoint,
    write_checkpoint,
)
from splitter.core import exit_codes, messages
from splitter.core.dsn import mask_dsn
from splitter.core.errors import FatalError, RetryableError, SplitterError
from splitter.core.lsn import lsn_to_str, str_to_lsn
from splitter.ops import cutover_state as st
from splitter.ops.verify import verify  # imported up front: not while writes are fenced
from splitter.pipeline.config import Settings
from splitter.pipeline.reverse import inverse_source_column, reverse_names, reverse_topology, reversibility_problems

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


def _crash_point(name: str) -> None:
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
    dry_run: bool = False


class SwitchHook:
    """Tells the world where a service's writes go now: a command, an HTTP endpoint, or nothing.

    Both must be idempotent: after a crash in `switching` the call is repeated.
    """

    def __init__(self, command: str | None, url: str | None) -> None:
        self.command = command
        self.url = url

    def call(self, service: str, home: str, database: str, deadline: float) -> None:
        if not self.command and not self.url:
            return
        last = ""
        while True:
            remaining = max(1.0, deadline - time.monotonic())
            try:
                if self.command:
                    env = {**os.environ, "SPLITTER_SERVICE": service, "SPLITTER_HOME": home,
                           "SPLITTER_HOME_DATABASE": database}
                    done = subprocess.run(shlex.split(self.command), env=env, capture_output=True,
                                          timeout=remaining, check=False)
                    if done.returncode != 0:
                        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                        raise OSError(f"--switch-command exited with {done.returncode}: {tail[0]}")
                if self.url:
                    body = json.dumps({"service": service, "home": home, "database": database}).encode()
                    request = urllib.request.Request(self.url, data=body, method="POST",
                                                     headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(request, timeout=remaining) as response:
                        if not 200 <= response.status < 300:
                            raise OSError(f"--switch-url answered {response.status}")
                return
            except (OSError, subprocess.TimeoutExpired, urllib.error.URLError) as exc:
                last = mask_dsn(str(exc))
            if time.monotonic() >= deadline:
                raise FatalError(f"the switch hook for service {service} (home {home}) keeps failing: {last}")
            log.warning("switch hook failed (%s); retrying", last)
            time.sleep(0.5)


# --- sequences -----------------------------------------------------------------------------------------


def _owned_sequences(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """column → its sequence (serial or identity), for the columns of `schema.table` that own one."""
    rows = conn.execute(
        """SELECT a.attname, pg_get_serial_sequence(format('%%I.%%I', n.nspname, c.relname), a.attname)
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
        (schema, table)).fetchall()
    return {name: seq for name, seq in rows if seq}


def _sequence_value(conn: psycopg.Connection, seq: str) -> int | None:
    row = conn.execute("SELECT pg_sequence_last_value(%s::regclass)", (seq,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _max(conn: psycopg.Connection, schema: str, table: str, column: str) -> int | None:
    row = conn.execute(sql.SQL("SELECT max({})::bigint FROM {}").format(
        sql.Identifier(column), sql.Identifier(schema, table))).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def advance_sequences(ahead: psycopg.Connection, behind: psycopg.Connection,
                      tables: Sequence[tuple[tuple[str, str], tuple[str, str], dict[str, str]]]) -> list[str]:
    """Move every sequence owned by a `behind` table's column past what `ahead` has handed out.

    `tables`: (ahead table, behind table, {behind column: ahead column it copies}).  A behind sequence
    ends at least at: its own column's max, the matching ahead column's max and that column's own
    sequence.  Sequences are only ever moved forward (ascending sequences).  Returns what was done.
    """
    done = []
    for (a_schema, a_table), (b_schema, b_table), columns in tables:
        ahead_seqs = _owned_sequences(ahead, a_schema, a_table)
        for column, seq in _owned_sequences(behind, b_schema, b_table).items():
            candidates = [_max(behind, b_schema, b_table, column)]
            twin = columns.get(column)
            if twin is not None:
                candidates.append(_max(ahead, a_schema, a_table, twin))
                if twin in ahead_seqs:
                    candidates.append(_sequence_value(ahead, ahead_seqs[twin]))
            wanted = max((c for c in candidates if c is not None), default=None)
            current = _sequence_value(behind, seq)
            if wanted is not None and (current is None or wanted > current):
                behind.execute("SELECT setval(%s::regclass, %s, true)", (seq, wanted))
                done.append(f"{seq} → {wanted}")
    return done


# --- the command -----------------------------------------------------------------------------------------


class Cutover:
    """One command (cutover, rollback or complete) for one service, holding its advisory locks."""

    def __init__(self, settings: Settings, service: str, options: Options,
                 out: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.svc = settings.topology.service(service)
        self.service = service
        self.options = options
        self.out = out
        self.routes = settings.topology.routes_for(self.svc)
        self.names = reverse_names(settings, service)
        self.hook = SwitchHook(options.switch_command, options.switch_url)
        self.source_tables = [(r.source_schema, r.source_table) for r in self.routes]
        self.target_tables = [(r.target_schema, r.target_table) for r in self.routes]
        self.deadline = 0.0
        self._fenced_at: float | None = None
        self.src = connect(settings.source_dsn, "the source database", autocommit=True,
                           application_name=f"splitter-cutover-{service}")
        try:
            self.dst = connect(settings.target_dsn(service), f"database of service {service}", autocommit=True,
                               application_name=f"splitter-cutover-{service}")
        except BaseException:
            self.src.close()
            raise

    def close(self) -> None:
        self.src.close()
        self.dst.close()

    def __enter__(self) -> Cutover:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared steps -------------------------------------------------------------------------------

    def _lock(self) -> None:
        """Both databases: the advisory lock a soft fence checks, and that keeps two commands apart."""
        try:
            st.ensure_schema(self.src)
            ensure_state_schema(self.dst)
            if not fence.try_lock(self.src, self.service) or not fence.try_lock(self.dst, self.service):
                raise RetryableError(f"another splitter cutover/rollback/complete of service {self.service} is "
                                     f"running; wait for it to finish")
        except psycopg.Error as exc:
            raise self._db_error(exc, "cannot prepare the cutover") from exc

    def _db_error(self, exc: psycopg.Error, what: str) -> Exception:
        return wrap_db_error(exc, f"service {self.service}: {what}", self.settings.source_dsn,
                             self.settings.target_dsn(self.service))

    def _state(self) -> st.CutoverRow | None:
        return st.load(self.src, self.service)

    def _transition(self, state: str, event: str, **fields: Any) -> None:
        with self.src.transaction():
            st.transition(self.src, self.service, state, event, **fields)
        log.info("service %s: %s (%s)", self.service, state, event)

    def _fence_messages(self, tables: Sequence[tuple[str, str]], where: str) -> list[tuple[str, str, str]]:
        return [(schema, table, f"{table} moved to {where}; write there") for schema, table in tables]

    def _source_fence(self) -> list[tuple[str, str, str]]:
        return self._fence_messages(self.source_tables, f"service {self.service} ({self.svc.database})")

    def _service_fence(self) -> list[tuple[str, str, str]]:
        return self._fence_messages(self.target_tables,
                                    f"{self.settings.topology.source_database} (service {self.service} was rolled "
                                    f"back)")

    def _hint(self) -> str:
        return f"read splitter.routing in {self.settings.topology.source_database} for where service " \
               f"{self.service} writes"

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _wait_for(self, what: str, reached: Callable[[], int | None], target: int, limit: float) -> float:
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

    def _forward_position(self) -> int | None:
        cp = read_checkpoint(self.dst, self.service)
        return cp.commit_lsn if cp else None

    def _reverse_position(self) -> int | None:
        cp = read_checkpoint(self.src, self.names.service)
        return cp.commit_lsn if cp else None

    def _caught_up(self, conn: psycopg.Connection, holder: psycopg.Connection, service: str, what: str,
                   position: Callable[[], int | None], step: str) -> tuple[int, float]:
        """Marker M after the fence; returns (M, seconds) once `service`'s worker has applied all before M.

        The worker is asked to hold at M (splitter.control in `holder`, its database): it then commits
        everything before M at once when it reads the next record, instead of at its next idle position
        write (up to a second later).  A second message right after the marker is that next record.  The
        hold is released at once: nothing of the fenced tables comes after M anyway.
        """
        marker = self._emit(conn, {"service": self.service, "step": step})
        self._hold(holder, service, marker)
        try:
            # Transactional, so its commit flushes WAL at once: the walsender only sends flushed WAL, and a
            # non-transactional message alone waits for the WAL writer (up to wal_writer_delay).
            self._emit(conn, {"service": self.service, "step": step, "nudge": True}, transactional=True)
            took = self._wait_for(what, position, marker - 1, max(0.0, self._remaining()))
        finally:
            self._release(holder, service)
        return marker, took

    @staticmethod
    def _hold(conn: psycopg.Connection, service: str, lsn: int) -> None:
        # Only a free row or our own: a hold someone else (verify) holds is left alone; the wait below then
        # relies on the worker's own position writes instead (slower, not wrong).
        request_hold(conn, service, lsn, HOLD_BY)

    @staticmethod
    def _release(conn: psycopg.Connection, service: str) -> None:
        if not conn.closed and not conn.broken:
            release_hold(conn, service, HOLD_BY)

    @staticmethod
    def _emit(conn: psycopg.Connection, payload: dict[str, Any], transactional: bool = False) -> int:
        row = conn.execute("SELECT pg_logical_emit_message(%s, %s, %s)::text",
                           (transactional, messages.CUTOVER, json.dumps(payload))).fetchone()
        assert row is not None
        return str_to_lsn(row[0])

    def _lag(self, conn: psycopg.Connection, position: Callable[[], int | None], what: str) -> float:
        """Seconds until `position` reaches the database's current WAL position; refuses above --max-lag."""
        now = current_wal_lsn(conn)
        self._emit(conn, {"service": self.service, "probe": True})  # moves an idle log along at once
        try:
            return self._wait_for(what, position, now, self.options.max_lag)
        except FatalError as exc:
            got = position() or 0
            raise CutoverRefused(f"service {self.service}: {what} is more than {self.options.max_lag:g}s behind "
                                 f"({max(0, now - got):,} bytes); is it running? ({exc})") from exc

    def _verify(self) -> None:
        report = verify(self.settings, services=[self.service], consistent=False,
                        timeout=max(1.0, self._remaining()))
        if not report.ok:
            raise FatalError(f"service {self.service}: the final verify found differences:\n{report.render()}")

    def _sequence_pairs(self, forward: bool) -> list[tuple[tuple[str, str], tuple[str, str], dict[str, str]]]:
        pairs = []
        for r in self.routes:
            copies = {}
            for target_column, expr in r.table.columns.items():
                found = inverse_source_column(expr)
                if found is not None and found[1]:
                    copies[target_column] = found[0]
            src, dst = (r.source_schema, r.source_table), (r.target_schema, r.target_table)
            if forward:
                pairs.append((src, dst, copies))
            else:
                pairs.append((dst, src, {s: t for t, s in copies.items()}))
        return pairs

    def _sweep(self, conn: psycopg.Connection, tables: Sequence[tuple[str, str]]) -> bool:
        """Drop lifted fence triggers where that does not stall readers; they are harmless if left."""
        try:
            return fence.sweep(conn, tables)
        except psycopg.Error as exc:
            log.warning("service %s: lifted fence triggers not dropped yet (%s)", self.service, exc.sqlstate)
            return False

    def _drop_reverse_stream(self, wait: float) -> bool:
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
            self.dst.execute("SELECT pg_drop_replication_slot(%s)", (self.names.slot,))
        self.dst.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(self.names.publication)))
        exists = self.src.execute("SELECT to_regclass('splitter.checkpoints') IS NOT NULL").fetchone()
        if exists and exists[0]:
            self.src.execute("DELETE FROM splitter.checkpoints WHERE service = %s", (self.names.service,))
        return True

    # -- cutover ------------------------------------------------------------------------------------

    def cutover(self, confirm: Callable[[str], bool]) -> int:
        self._lock()
        row = self._state()
        state = row.state if row else st.STREAMING
        if state in st.FORWARD_PRE_SWITCH:
            reason = f"a previous cutover stopped at {state!r} before switching (crashed or killed)"
            self._abort_forward(reason)
            self.out(f"service {self.service}: {reason}; aborted it: the fence is lifted and writes go to "
                     f"{self.settings.topology.source_database} again. Run the command again to retry.")
            return exit_codes.ABORTED
        if state in st.ROLLBACK_PRE_SWITCH or state == st.RB_SWITCHING:
            raise CutoverRefused(f"service {self.service}: a rollback is in progress ({state}); run "
                                 f"`splitter rollback --service {self.service}` to finish or abort it")
        if state == st.COMPLETE:
            raise CutoverRefused(f"service {self.service}: its cutover is already complete")
        self.deadline = time.monotonic() + self.options.timeout
        if state in st.STARTABLE:
            plan = self._preflight()
            if not self._approved(plan, confirm):
                return exit_codes.OK
            self._before_switch()
            state = st.SWITCHING
        if state == st.SWITCHING:
            self._finish_switch()
            state = st.SWITCHED
        if state == st.SWITCHED:
            return self._confirm_reverse()
        self.out(f"service {self.service}: already {state}; its writes go to {self.svc.database}")
        return exit_codes.OK

    def _preflight(self) -> str:
        problems = reversibility_problems(self.settings, self.service, self.src)
        if problems:
            raise CutoverRefused(f"service {self.service} cannot be cut over:\n  " + "\n  ".join(problems))
        lag = self._lag(self.src, self._forward_position, f"the worker of service {self.service}")
        tables = ", ".join(".".join(t) for t in self.source_tables)
        return "\n".join([
            f"cutover of service {self.service} ({mask_dsn(self.settings.target_dsn(self.service))}):",
            f"  lag now: {lag:.2f}s (max {self.options.max_lag:g}s)",
            f"  1. create reverse slot {self.names.slot} and publication {self.names.publication} in "
            f"{self.svc.database}, topic {self.names.topic}",
            f"  2. fence writes to {tables} in {self.settings.topology.source_database} (SQLSTATE "
            f"{fence.FENCE_SQLSTATE}); reads go on",
            "  3. wait for the worker to apply everything up to a marker written after the fence",
            "  4. verify the service's tables; move its sequences past the source's",
            "  5. switch: routing → service" + (", call the switch hook" if self.hook.command or self.hook.url else ""),
            "  6. confirm the reverse stream (`splitter reverse` must run, e.g. under `splitter run`)",
            f"  every step before 5 is undone on failure; timeout {self.options.timeout:g}s",
        ])

    def _before_switch(self) -> None:
        timings: dict[str, float] = {}
        try:
            # Before the fence: creating a slot waits for every running transaction of the cluster, which
            # must not lengthen the write pause.  Changes in the service database between this point and
            # the switch are the forward worker's (origin-filtered by the reverse capture) or none.
            reverse_lsn = self._prepare_reverse()
            _crash_point("reverse_prepared")
            fenced_at = time.monotonic()

            def record_fenced() -> None:
                st.transition(self.src, self.service, st.FENCED, "fenced", new_attempt=True, marker_lsn=None,
                              reverse_slot=self.names.slot, reverse_publication=self.names.publication,
                              reverse_topic=self.names.topic, reverse_lsn=lsn_to_str(reverse_lsn))
                st.set_routing(self.src, self.service, st.HOME_SOURCE, self.svc.database)

            fence.fence_with_retries(self.src, self._source_fence(), self.service, fence.SOFT, self._hint(),
                                     self.deadline, before_commit=record_fenced)
            timings["fence"] = time.monotonic() - fenced_at
            _crash_point("fenced")

            step = time.monotonic()
            marker, _ = self._caught_up(self.src, self.dst, self.service, f"the worker of service {self.service}",
                                        self._forward_position, "fenced")
            timings["catch_up"] = time.monotonic() - step
            self._transition(st.CAUGHT_UP, f"caught up to the marker in {timings['catch_up']:.3f}s",
                             marker_lsn=lsn_to_str(marker))
            _crash_point("caught_up")

            step = time.monotonic()
            self._verify()
            timings["verify"] = time.monotonic() - step
            self._transition(st.VERIFIED, f"final verify: all match ({timings['verify']:.3f}s)")
            _crash_point("verified")

            step = time.monotonic()
            moved = advance_sequences(self.src, self.dst, self._sequence_pairs(forward=True))
            if moved:
                log.info("service %s: sequences moved: %s", self.service, "; ".join(moved))
            timings["sequences"] = time.monotonic() - step
            step = time.monotonic()

            def record_switching() -> None:
                row = st.load(self.src, self.service, for_update=True)
                if row is None or row.state != st.VERIFIED:
                    raise FatalError(f"service {self.service}: state changed under the cutover "
                                     f"({row.state if row else 'none'})")
                st.transition(self.src, self.service, st.SWITCHING, "switching: source fence is hard")
                # Routing flips in the same transaction: from here on applications write to the service
                # database even if this process dies before the hook runs.
                st.set_routing(self.src, self.service, st.HOME_SERVICE, self.svc.database)

            # The point of no return, on the session whose lock kept the fence up: if that session died,
            # this fails and the (soft) fence has already let go.
            fence.fence_with_retries(self.src, self._source_fence(), self.service, fence.HARD,
                                     self._hint(), self.deadline, before_commit=record_switching)
            timings["switch"] = time.monotonic() - step
            log.info("service %s: writes were fenced for %.3fs before the switch (%s)", self.service,
                     time.monotonic() - fenced_at, ", ".join(f"{k} {v:.3f}s" for k, v in timings.items()))
            _crash_point("switching")
        except BaseException as exc:
            if isinstance(exc, psycopg.Error):
                exc = self._db_error(exc, "cutover failed")
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SplitterError) else str(exc)
            try:
                self._abort_forward(reason)
            except Exception as undo:  # report both; the soft fence lets go once this process is gone anyway
                raise FatalError(f"service {self.service}: cutover failed ({reason}) and undoing it failed too "
                                 f"({undo}); the soft fence lets writes through once this command exits; run the "
                                 f"command again to clean up") from exc
            raise CutoverAborted(f"service {self.service}: cutover aborted, writes go to "
                                 f"{self.settings.topology.source_database} again: {reason}") from exc

    def _prepare_reverse(self) -> int:
        """Reverse publication, slot and checkpoint; returns the slot's consistent point."""
        reverse = reverse_topology(self.settings, self.service)
        ensure_publication(self.dst, self.names.publication, reverse.source_tables())
        info = slot_info(self.dst, self.names.slot)
        if info is not None:
            if info.active:
                raise FatalError(f"reverse slot {self.names.slot} is in use by another process")
            self.dst.execute("SELECT pg_drop_replication_slot(%s)", (self.names.slot,))
        repl = ReplicationConnection(self.settings.target_dsn(self.service))
        try:
            consistent, _ = repl.create_slot(self.names.slot)
        finally:
            repl.close()
        # The reverse worker starts from here: no copy, and nothing before the slot existed is sent.
        with self.src.transaction():
            ensure_state_schema(self.src)
            write_checkpoint(self.src, self.names.service,
                             Checkpoint(self.names.topic, 0, FROM_BEGINNING, consistent, None))
        return consistent

    def _abort_forward(self, reason: str) -> None:
        conn = self.src
        if conn.closed or conn.broken:
            conn = self.src = connect(self.settings.source_dsn, "the source database", autocommit=True,
                                      application_name=f"splitter-cutover-{self.service}")
        deadline = time.monotonic() + max(10.0, self.options.timeout)
        while True:
            try:
                with conn.transaction():
                    conn.execute("SET LOCAL lock_timeout = '2s'")
                    row = st.load(conn, self.service, for_update=True)
                    if row is not None and row.state in st.FORWARD_POST_SWITCH:
                        raise FatalError(f"service {self.service} already switched ({row.state}); not aborting")
                    fence.unfence_tables(conn, self.source_tables)
                    exists = conn.execute("SELECT to_regclass('splitter.checkpoints') IS NOT NULL").fetchone()
                    if exists and exists[0]:
                        conn.execute("DELETE FROM splitter.checkpoints WHERE service = %s", (self.names.service,))
                    st.transition(conn, self.service, st.ABORTED, "aborted; fence lifted", error=reason[:2000])
                break
            except psycopg.errors.LockNotAvailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(POLL)
        log.warning("service %s: cutover aborted: %s", self.service, reason)
        self._sweep(conn, self.source_tables)
        try:
            self._release(self.dst, self.service)  # a hold a killed attempt left
            self._drop_reverse_stream(wait=2.0)
        except psycopg.Error as exc:  # a stale slot is dropped by the next attempt
            log.warning("service %s: could not drop the reverse slot yet (%s)", self.service, exc.sqlstate)

    def _finish_switch(self) -> None:
        """From `switching` on: every step is idempotent and a re-run repeats them."""
        with self.dst.transaction():
            fence.unfence_tables(self.dst, self.target_tables)  # left by an earlier rollback, if any
        self._sweep(self.dst, self.target_tables)
        with self.src.transaction():
            st.set_routing(self.src, self.service, st.HOME_SERVICE, self.svc.database)  # idempotent repeat
        _crash_point("routed")
        self.hook.call(self.service, st.HOME_SERVICE, self.svc.database,
                       max(self.deadline, time.monotonic() + 5.0))
        self._transition(st.SWITCHED, f"writes now go to {self.svc.database}")
        self.out(f"service {self.service}: switched; writes go to {self.svc.database}")
        _crash_point("switched")

    def _confirm_reverse(self) -> int:
        marker = self._emit(self.dst, {"service": self.service, "step": "switched"})
        limit = max(5.0, self._remaining())
        try:
            took = self._wait_for("the reverse stream", self._reverse_position, marker - 1, limit)
        except FatalError:
            self.out(f"service {self.service}: switched, but the reverse stream has not applied a marker within "
                     f"{limit:.0f}s: start `splitter reverse --service {self.service}` (or `splitter run`), then "
                     f"run this command again to confirm it")
            return exit_codes.INCOMPLETE
        self._transition(st.REVERSE_STREAMING, f"reverse stream confirmed in {took:.2f}s")
        self.out(f"service {self.service}: reverse stream running: {self.svc.database} → "
                 f"{self.settings.topology.source_database}")
        return exit_codes.OK

    # -- rollback -----------------------------------------------------------------------------------

    def rollback(self, confirm: Callable[[str], bool]) -> int:
        self._lock()
        row = self._state()
        state = row.state if row else st.STREAMING
        self.deadline = time.monotonic() + self.options.timeout
        if state in st.ROLLBACK_PRE_SWITCH:
            reason = f"a previous rollback stopped at {state!r} before switching (crashed or killed)"
            self._abort_rollback(reason)
            self.out(f"service {self.service}: {reason}; aborted it: writes go to {self.svc.database} again. "
                     f"Run the command again to retry.")
            return exit_codes.ABORTED
        if state == st.ROLLED_BACK:
            if not self._drop_reverse_stream(wait=self._remaining()):
                self.out(f"service {self.service}: rolled back; the reverse slot is still in use")
                return exit_codes.INCOMPLETE
            self.out(f"service {self.service}: already rolled back")
            return exit_codes.OK
        if state not in st.FORWARD_POST_SWITCH and state != st.RB_SWITCHING:
            raise CutoverRefused(f"service {self.service}: nothing to roll back (state {state})")
        if state in st.FORWARD_POST_SWITCH:
            lag = self._lag(self.dst, self._reverse_position, f"the reverse stream of service {self.service}")
            plan = (f"rollback of service {self.service}: fence its tables in {self.svc.database}, wait for the "
                    f"reverse stream (lag now {lag:.2f}s), verify, switch routing back to "
                    f"{self.settings.topology.source_database}, lift the source fence, stop the reverse stream")
            if not self._approved(plan, confirm):
                return exit_codes.OK
            self._rollback_before_switch()
        self._rollback_finish()
        return exit_codes.OK

    def _rollback_before_switch(self) -> None:
        try:
            # State first: a crash between the two leaves a rollback state without a fence, which a re-run
            # aborts (a no-op); the other order could leave a fence nobody knows about.
            self._transition(st.RB_FENCED, f"rollback: fencing {self.svc.database}")
            fenced_at = time.monotonic()
            fence.fence_with_retries(self.dst, self._service_fence(), self.service, fence.SOFT, self._hint(),
                                     self.deadline)
            _crash_point("rollback_fenced")
            _, took = self._caught_up(self.dst, self.src, self.names.service, "the reverse stream",
                                      self._reverse_position, "rollback_fenced")
            self._transition(st.RB_CAUGHT_UP, f"reverse stream caught up in {took:.3f}s")
            _crash_point("rollback_caught_up")
            step = time.monotonic()
            self._verify()
            self._transition(st.RB_VERIFIED, f"final verify: all match ({time.monotonic() - step:.3f}s)")
            _crash_point("rollback_verified")
            moved = advance_sequences(self.dst, self.src, self._sequence_pairs(forward=False))
            if moved:
                log.info("service %s: source sequences moved: %s", self.service, "; ".join(moved))
            # Hard in the service database, on the session holding the lock there; then the point of no
            # return.  A crash between the two leaves a hard fence and state rollback_verified: the re-run
            # aborts and lifts it.
            fence.fence_with_retries(self.dst, self._service_fence(), self.service, fence.HARD, self._hint(),
                                     self.deadline)
            with self.src.transaction():
                row = st.load(self.src, self.service, for_update=True)
                if row is None or row.state != st.RB_VERIFIED:
                    raise FatalError(f"service {self.service}: state changed under the rollback")
                st.transition(self.src, self.service, st.RB_SWITCHING, "rollback switching: service fence is hard")
            self._fenced_at = fenced_at
            _crash_point("rollback_switching")
        except BaseException as exc:
            if isinstance(exc, psycopg.Error):
                exc = self._db_error(exc, "rollback failed")
            reason = str(exc) if isinstance(exc, SplitterError) else f"{type(exc).__name__}: {exc}"
            try:
                self._abort_rollback(reason)
            except Exception as undo:
                raise FatalError(f"service {self.service}: rollback failed ({reason}) and undoing it failed too "
                                 f"({undo}); run the command again") from exc
            raise CutoverAborted(f"service {self.service}: rollback aborted, writes go to {self.svc.database} "
                                 f"again: {reason}") from exc

    def _abort_rollback(self, reason: str) -> None:
        for conn_name in ("dst", "src"):
            conn = getattr(self, conn_name)
            if conn.closed or conn.broken:
                dsn = self.settings.target_dsn(self.service) if conn_name == "dst" else self.settings.source_dsn
                setattr(self, conn_name, connect(dsn, "the cutover databases", autocommit=True))
        with self.src.transaction():
            row = st.load(self.src, self.service, for_update=True)
            if row is not None and row.state in (st.RB_SWITCHING, st.ROLLED_BACK):
                raise FatalError(f"service {self.service}: rollback already switched ({row.state}); not aborting")
        with self.dst.transaction():
            fence.unfence_tables(self.dst, self.target_tables)
        self._sweep(self.dst, self.target_tables)
        self._release(self.src, self.names.service)  # a hold a killed attempt left
        self._transition(st.SWITCHED, "rollback aborted; service fence lifted", error=reason[:2000])
        log.warning("service %s: rollback aborted: %s", self.service, reason)

    def _rollback_finish(self) -> None:
        with self.src.transaction():
            st.set_routing(self.src, self.service, st.HOME_SOURCE, self.svc.database)
            fence.unfence_tables(self.src, self.source_tables)
        if self._fenced_at is not None:
            log.info("service %s: writes were fenced for %.3fs during the rollback", self.service,
                     time.monotonic() - self._fenced_at)
        _crash_point("rollback_routed")
        self.hook.call(self.service, st.HOME_SOURCE, self.settings.topology.source_database,
                       max(self.deadline, time.monotonic() + 5.0))
        self._transition(st.ROLLED_BACK, f"writes go to {self.settings.topology.source_database} again")
        self._sweep(self.src, self.source_tables)
        self.out(f"service {self.service}: rolled back; writes go to {self.settings.topology.source_database}")
        if not self._drop_reverse_stream(wait=max(5.0, self._remaining())):
            self.out(f"service {self.service}: the reverse slot {self.names.slot} is still in use; run the command "
                     f"again once `splitter reverse` has stopped it")

    # -- complete -----------------------------------------------------------------------------------

    def _approved(self, plan: str, confirm: Callable[[str], bool]) -> bool:
        """Go ahead with `plan`?  False on --dry-run (the plan is printed); refused when not confirmed."""
        if self.options.dry_run:
            self.out(plan)
            return False
        if not confirm(plan):
            raise CutoverRefused("not confirmed (pass --yes to run without asking)")
        return True

    def complete(self, confirm: Callable[[str], bool]) -> int:
        self._lock()
        row = self._state()
        state = row.state if row else st.STREAMING
        self.deadline = time.monotonic() + self.options.timeout
        if state not in (st.SWITCHED, st.REVERSE_STREAMING, st.COMPLETE):
            raise CutoverRefused(f"service {self.service}: complete needs a switched cutover (state {state})")
        if state != st.COMPLETE:
            plan = (f"complete the cutover of service {self.service}: stop and drop the reverse stream, retire the "
                    f"forward worker, lift the fences; {self.settings.topology.source_database}'s copy of its "
                    f"tables stops being kept in sync (no rollback after this)")
            if not self._approved(plan, confirm):
                return exit_codes.OK
            # Retire the forward worker before the source fence goes: it applies everything committed before
            # P (nothing of this service's tables, they are fenced) and then holds for good, so a later write
            # to the abandoned source tables can never reach the service database.
            hold_at = current_wal_lsn(self.src)
            self.dst.execute(
                "INSERT INTO splitter.control (service, pause_at_lsn, requested_by, requested_at) "
                "VALUES (%s, %s::pg_lsn, 'splitter complete', now()) ON CONFLICT (service) DO UPDATE SET "
                "pause_at_lsn = EXCLUDED.pause_at_lsn, requested_by = EXCLUDED.requested_by, "
                "requested_at = EXCLUDED.requested_at, paused_lsn = NULL, paused_at = NULL",
                (self.service, lsn_to_str(hold_at)))
            self._transition(st.COMPLETE, f"complete; forward worker retired at {lsn_to_str(hold_at)}")
        if not self._drop_reverse_stream(wait=max(5.0, self._remaining())):
            self.out(f"service {self.service}: complete, but the reverse slot {self.names.slot} is still in use; "
                     f"run the command again once `splitter reverse` has stopped it")
            return exit_codes.INCOMPLETE
        with self.src.transaction():
            fence.unfence_tables(self.src, self.source_tables)
        with self.dst.transaction():
            fence.unfence_tables(self.dst, self.target_tables)
        swept = self._sweep(self.src, self.source_tables) & self._sweep(self.dst, self.target_tables)
        if not swept:
            self.out(f"service {self.service}: complete; some lifted (open) fence triggers could not be dropped "
                     f"without waiting for long readers: run the command again to drop them")
            return exit_codes.INCOMPLETE
        self.out(f"service {self.service}: complete; its home is {self.svc.database}")
        return exit_codes.OK


def status(settings: Settings) -> list[st.ServiceCutoverStatus]:
    """Each service's cutover state (for `splitter status`)."""
    return st.status(settings)
