"""`splitter verify`: does each service table hold exactly the topology's projection of its source table?

Owns: choosing the tables, the consistent point, merging the rows of differing chunks, the report
(per table: rows on each side, missing / extra / different with a sample of keys and the columns
that differ), its JSON and human forms, the progress line, and the `verify` subcommand.

The consistent point (VDiff style), while the pipeline runs and the source takes writes:
  1. Every selected service's worker is asked to hold at the source's current WAL position Q and
     reports that it holds.  This pre-hold exists because a worker only stops at the *first*
     transaction at or past the requested LSN: were it still running when the slot below fixes P,
     it could apply past P before it reads the request (it polls every ~200 ms), and P would be
     lost.  Held at Q, it can only be behind P.
  2. A TEMPORARY logical slot is created with an exported snapshot: (LSN P, snapshot S).  The
     source is read in one REPEATABLE READ transaction importing S, i.e. exactly the transactions
     committed before P.  Once imported, the transaction keeps that snapshot by itself, so the
     replication connection (and its slot, which would otherwise retain WAL for as long as a
     large verify runs) is closed right after the import.
  3. Each worker is moved to hold at P; when it reports it holds (having applied every
     transaction committed before P and nothing at or after), a REPEATABLE READ transaction is
     opened in its database, whose first read re-checks the hold and the checkpoint inside the
     very snapshot that will be compared.  The hold is then released at once (always, in
     `finally`): the workers stop only for as long as taking these snapshots takes, not for the
     comparison.
With `consistent=False` both sides are read as they are (for a source known to be idle and
workers known to be caught up).

Comparison: see `connectors.pg_verify` (chunked hashes computed in the databases; only the rows of
differing chunks travel, both sides ordered by (chunk, key), merged here in one pass).  Memory is
flat in table size: bytes are piped, rows are streamed, and only the samples are kept.

Must not: import a database driver (connectors do the I/O), write to the source, or leave a
worker held.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from connectors.pg.client import connect
from connectors.pg.source import ReplicationConnection, current_wal_lsn
from connectors.pg.state.control import HoldControl, HoldState
from connectors.pg.verify import (
    ProgressRecorder,
    SourceSession,
    TablePlan,
    TargetSession,
    source_rows_of,
)
from splitter.core.errors import ConfigurationError, FatalError
from splitter.core.lsn import lsn_to_str
from splitter.pipeline.config import Settings
from splitter.topology.model import Route

DEFAULT_CHUNK_ROWS = 10_000
DEFAULT_SAMPLE = 10
DEFAULT_TIMEOUT = 60.0
_POLL = 0.1

Key = dict[str, str | None]


# --- report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowDifference:
    """A key present on both sides whose other columns differ."""

    key: Key
    columns: tuple[str, ...]
    source: dict[str, str | None]
    target: dict[str, str | None]


@dataclass
class TableReport:
    service: str
    table: str  # schema.table in the service database
    source: str  # schema.table in the source
    key: tuple[str, ...]
    source_rows: int = 0
    target_rows: int = 0
    chunks: int = 0
    chunks_differing: int = 0
    missing: int = 0  # in the source, not in the target
    extra: int = 0  # in the target, not in the source
    different: int = 0  # same key, other columns differ
    missing_keys: list[Key] = field(default_factory=list)
    extra_keys: list[Key] = field(default_factory=list)
    different_rows: list[RowDifference] = field(default_factory=list)
    column_differences: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.extra == 0 and self.different == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service, "table": self.table, "source": self.source, "key": list(self.key),
            "ok": self.ok, "source_rows": self.source_rows, "target_rows": self.target_rows,
            "missing": self.missing, "extra": self.extra, "different": self.different,
            "missing_keys": self.missing_keys, "extra_keys": self.extra_keys,
            "different_rows": [
                {"key": d.key, "columns": list(d.columns), "source": d.source, "target": d.target}
                for d in self.different_rows
            ],
            "column_differences": self.column_differences,
            "chunks": self.chunks, "chunks_differing": self.chunks_differing, "seconds": round(self.seconds, 3),
        }


@dataclass
class VerifyReport:
    tables: list[TableReport]
    consistent: bool
    source_lsn: int | None = None  # P: the source snapshot holds every transaction committed before it
    held_lsns: dict[str, int] = field(default_factory=dict)  # per service: the checkpoint it was compared at
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "consistent": self.consistent,
            "source_lsn": lsn_to_str(self.source_lsn) if self.source_lsn is not None else None,
            "held_lsns": {s: lsn_to_str(v) for s, v in self.held_lsns.items()},
            "seconds": round(self.seconds, 3),
            "tables": [t.to_dict() for t in self.tables],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def render(self) -> str:
        """The summary for people: one line a table, then what differs, with sample keys."""
        if self.consistent and self.source_lsn is not None:
            head = (f"verified at source LSN {lsn_to_str(self.source_lsn)} (one snapshot of the source; each worker "
                    f"held at it while its database's snapshot was taken)")
        else:
            head = "verified as is (no common snapshot: meaningful only with an idle source and caught-up workers)"
        header = ("SERVICE", "TABLE", "SOURCE ROWS", "TARGET ROWS", "MISSING", "EXTRA", "DIFFERENT", "RESULT")
        rows = [header] + [
            (t.service, t.table, f"{t.source_rows:,}", f"{t.target_rows:,}", f"{t.missing:,}", f"{t.extra:,}",
             f"{t.different:,}", "ok" if t.ok else "DIFFERS")
            for t in self.tables
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [head, ""]
        lines += ["  ".join(c.ljust(w) if i < 2 or i == 7 else c.rjust(w) for i, (c, w) in
                            enumerate(zip(r, widths, strict=True))).rstrip() for r in rows]
        for t in self.tables:
            if t.ok:
                continue
            lines.append("")
            lines.append(f"{t.service} {t.table} (from {t.source}):")
            if t.missing:
                lines.append(f"  missing in the target ({t.missing:,}): {_keys_text(t.missing_keys, t.missing)}")
            if t.extra:
                lines.append(f"  extra in the target ({t.extra:,}): {_keys_text(t.extra_keys, t.extra)}")
            if t.different:
                by_column = ", ".join(f"{c} ({n:,})" for c, n in sorted(t.column_differences.items()))
                lines.append(f"  different ({t.different:,}), by column: {by_column}")
                for d in t.different_rows:
                    cols = "; ".join(f"{c}: source {_short(d.source[c])} target {_short(d.target[c])}"
                                     for c in d.columns)
                    lines.append(f"    {_key_text(d.key)}: {cols}")
        bad = sum(1 for t in self.tables if not t.ok)
        lines.append("")
        lines.append(f"{len(self.tables)} table(s) compared in {self.seconds:.1f}s: "
                     + ("all match." if bad == 0 else f"{bad} differ."))
        return "\n".join(lines)


def _key_text(key: Key) -> str:
    return ", ".join(f"{k}={'NULL' if v is None else v}" for k, v in key.items())


def _keys_text(keys: Sequence[Key], total: int) -> str:
    text = "; ".join(_key_text(k) for k in keys)
    return text + (f"; ... ({total - len(keys):,} more)" if total > len(keys) else "")


def _short(value: str | None, width: int = 40) -> str:
    if value is None:
        return "NULL"
    return repr(value if len(value) <= width else value[:width] + "…")


# --- merging the rows of differing chunks ----------------------------------------------------------


def _order_function(key_index: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """Sort key of a fetched row (chunk, *column texts): its chunk, then its key texts.

    PostgreSQL sorts NULL after every value in ascending order; "C" order of UTF-8 text is code point
    order, which is Python's `str` order.  Unrolled for one- and two-column keys: this runs per row.
    """
    cols = [i + 1 for i in key_index]  # +1: the chunk number comes first
    if len(cols) == 1:
        (a,) = cols
        return lambda r: (r[0], r[a] is None, r[a] or "")
    if len(cols) == 2:
        a, b = cols
        return lambda r: (r[0], r[a] is None, r[a] or "", r[b] is None, r[b] or "")
    return lambda r: (r[0], *(x for j in cols for x in (r[j] is None, r[j] or "")))


def merge_rows(report: TableReport, columns: Sequence[str], key_index: Sequence[int],
               source: Iterable[Sequence[Any]], target: Iterable[Sequence[Any]], sample: int) -> None:
    """Merge two row streams, each (chunk, *column texts) ordered by (chunk, key), into `report`.

    Keeps nothing but the samples: memory does not grow with the number of rows.  Each stream's
    order is checked as it goes, because the merge is only right if Python orders keys as the
    databases did.
    """
    order = _order_function(key_index)
    src, tgt = iter(source), iter(target)
    s, t = next(src, None), next(tgt, None)
    ks = order(s) if s is not None else None
    kt = order(t) if t is not None else None

    def key_of(row: Sequence[Any]) -> Key:
        return {columns[i]: row[i + 1] for i in key_index}

    def advance(it: Iterator[Sequence[Any]], previous: tuple[Any, ...], side: str) -> tuple[Any, Any]:
        row = next(it, None)
        if row is None:
            return None, None
        k = order(row)
        if k < previous:
            raise FatalError(
                f"the {side} returned rows out of key order (a key compares differently in PostgreSQL's \"C\" "
                f"collation than as UTF-8 text; are both databases UTF8-encoded?)")
        return row, k

    while s is not None or t is not None:
        if t is None or (ks is not None and kt is not None and ks < kt):
            assert s is not None and ks is not None
            report.missing += 1
            if len(report.missing_keys) < sample:
                report.missing_keys.append(key_of(s))
            s, ks = advance(src, ks, "source")
        elif s is None or (ks is not None and kt is not None and kt < ks):
            assert kt is not None
            report.extra += 1
            if len(report.extra_keys) < sample:
                report.extra_keys.append(key_of(t))
            t, kt = advance(tgt, kt, "target")
        else:
            assert ks is not None and kt is not None
            if tuple(s) != tuple(t):
                differ = tuple(c for c, a, b in zip(columns, s[1:], t[1:], strict=True) if a != b)
                report.different += 1
                for c in differ:
                    report.column_differences[c] = report.column_differences.get(c, 0) + 1
                if len(report.different_rows) < sample:
                    report.different_rows.append(RowDifference(
                        key_of(s), differ,
                        {c: v for c, v in zip(columns, s[1:], strict=True) if c in differ},
                        {c: v for c, v in zip(columns, t[1:], strict=True) if c in differ}))
            s, ks = advance(src, ks, "source")
            t, kt = advance(tgt, kt, "target")


# --- progress --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Where a verify is: `rows_done` of about `rows_total` source rows hashed so far."""

    table: str
    tables_done: int
    tables_total: int
    rows_done: int
    rows_total: int
    elapsed: float

    @property
    def eta(self) -> float | None:
        if self.rows_done <= 0 or self.rows_total <= 0 or self.elapsed < 1.0:
            return None
        return max(0.0, self.elapsed * (self.rows_total / self.rows_done - 1))


class ProgressLine:
    """Renders `Progress` as one rewritten line on a terminal (and nothing when not a TTY)."""

    def __init__(self, stream: TextIO | None = None, min_interval: float = 0.2) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self._last = 0.0
        self._min_interval = min_interval

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < self._min_interval:
            return
        self._last = now
        pct = f"{min(100.0, 100.0 * p.rows_done / p.rows_total):5.1f}%" if p.rows_total else "  ?  "
        eta = p.eta
        eta_text = f"ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else "ETA --:--"
        line = (f"verify: {p.tables_done}/{p.tables_total} tables done, at {p.table}  "
                f"{p.rows_done:,}/~{p.rows_total:,} rows {pct}  {eta_text}")
        self.stream.write("\r" + line[:150].ljust(150))
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\r" + " " * 150 + "\r")
            self.stream.flush()


# --- choosing routes -------------------------------------------------------------------------------


def select_routes(settings: Settings, services: Sequence[str] | None,
                  tables: Sequence[str] | None) -> list[Route]:
    """The routes to compare: all, or those of `services`, narrowed to `tables`.

    A table is named as its service database knows it: `posts`, `post.posts`, or `service.table`
    (`interaction.follows`).
    """
    topology = settings.topology
    chosen = [topology.service(s) for s in services] if services else list(topology.services)
    names = {s.name for s in chosen}
    routes = [r for r in topology.routes() if r.service.name in names]
    if not tables:
        return routes
    out: list[Route] = []
    for wanted in tables:
        hits = [r for r in routes
                if wanted in (r.table.name, r.target_table, f"{r.target_schema}.{r.target_table}",
                              f"{r.service.name}.{r.table.name}")]
        if not hits:
            known = ", ".join(f"{r.service.name}.{r.table.name}" for r in routes)
            raise ConfigurationError(f"--table {wanted!r} matches no table of the chosen services (known: {known})")
        out += [r for r in hits if r not in out]
    return out


# --- the consistent point --------------------------------------------------------------------------


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


def _consistent_snapshots(settings: Settings, routes_by_service: dict[str, list[Route]], timeout: float,
                          report: VerifyReport) -> tuple[SourceSession, dict[str, TargetSession]]:
    controls: dict[str, HoldControl] = {}
    source: SourceSession | None = None
    targets: dict[str, TargetSession] = {}
    try:
        for service in routes_by_service:
            controls[service] = HoldControl(settings.target_dsn(service), service)
        with connect(settings.source_dsn, "the source database", autocommit=True,
                     application_name="splitter-verify") as conn:
            q = current_wal_lsn(conn)
        for control in controls.values():
            control.request(q)
        _wait_held(controls, q, timeout)

        slot = f"splitter_verify_{uuid.uuid4().hex[:16]}"
        replication = ReplicationConnection(settings.source_dsn)
        try:
            p, snapshot = replication.create_slot(slot, temporary=True)
            source = SourceSession(settings.source_dsn, snapshot)
        finally:
            # The snapshot is imported (or failed to be): neither the slot nor the connection is needed now.
            replication.close()
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


class _Tracker:
    """Turns "so many chunk lines hashed" into `Progress` against the catalog's row estimates."""

    def __init__(self, sink: Callable[[Progress], None] | None, estimates: list[int], chunk_rows: int) -> None:
        self.sink = sink
        self.estimates = estimates
        self.total = sum(estimates)
        self.chunk_rows = chunk_rows
        self.started = time.monotonic()
        self.done = 0  # estimated rows of the tables finished
        self.table = ""
        self.index = 0
        self.lines = 0

    def start(self, index: int, table: str) -> None:
        self.index, self.table, self.lines = index, table, 0

    def hashed(self, lines: int) -> None:
        self.lines += lines
        self._emit(self.done + min(self.lines * self.chunk_rows, self.estimates[self.index]), self.index)

    def finish(self) -> None:
        self.done += self.estimates[self.index]
        self._emit(self.done, self.index + 1)

    def _emit(self, rows: int, tables_done: int) -> None:
        if self.sink is not None:
            self.sink(Progress(self.table, tables_done, len(self.estimates), rows, self.total,
                               time.monotonic() - self.started))


# --- verify ----------------------------------------------------------------------------------------


def verify(settings: Settings, *, services: Sequence[str] | None = None, tables: Sequence[str] | None = None,
           sample: int = DEFAULT_SAMPLE, chunk_rows: int = DEFAULT_CHUNK_ROWS, timeout: float = DEFAULT_TIMEOUT,
           progress: Callable[[Progress], None] | None = None, consistent: bool = True) -> VerifyReport:
    """Compare the chosen service tables with the topology's projection of their source tables."""
    if chunk_rows < 1:
        raise ConfigurationError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if sample < 0:
        raise ConfigurationError(f"sample must not be negative, got {sample}")
    started = time.monotonic()
    routes = select_routes(settings, services, tables)
    by_service: dict[str, list[Route]] = {}
    for route in routes:
        by_service.setdefault(route.service.name, []).append(route)
    report = VerifyReport([], consistent)

    if consistent:
        source, targets = _consistent_snapshots(settings, by_service, timeout, report)
    else:
        source = SourceSession(settings.source_dsn, None)
        targets = {}
        try:
            for service in by_service:
                targets[service] = TargetSession(settings.target_dsn(service), service)
                targets[service].begin()
        except BaseException:
            for target in targets.values():
                target.close()
            source.close()
            raise
    recorder: ProgressRecorder | None = None
    try:
        recorder = ProgressRecorder({service: settings.target_dsn(service) for service in by_service},
                                    {service: len(service_routes) for service, service_routes in by_service.items()})
        plans = []
        for route in routes:
            target = targets[route.service.name]
            plans.append((source.plan(route, target.columns(route), chunk_rows), target))
        tracker = _Tracker(progress, [source.estimate_rows(plan.route) for plan, _ in plans], chunk_rows)
        for i, (plan, target) in enumerate(plans):
            table_started = time.monotonic()
            route = plan.route
            name = f"{route.target_schema}.{route.target_table}"
            table_report = TableReport(route.service.name, name, f"{route.source_schema}.{route.source_table}",
                                       route.table.key)
            tracker.start(i, name)
            summary = target.compare_chunks(plan, source, tracker.hashed)
            table_report.source_rows = summary.source_rows
            table_report.target_rows = summary.target_rows
            table_report.chunks = summary.chunks
            table_report.chunks_differing = len(summary.differing)
            if summary.differing:
                _diff_rows(table_report, plan, source, target, summary.differing, sample)
            target.finish_table()
            table_report.seconds = time.monotonic() - table_started
            report.tables.append(table_report)
            tracker.finish()
            recorder.table_done(route.service.name, not table_report.ok)
    finally:
        if recorder is not None:
            recorder.close()
        for target in targets.values():
            target.close()
        source.close()
    report.seconds = time.monotonic() - started
    return report


def _diff_rows(report: TableReport, plan: TablePlan, source: SourceSession, target: TargetSession,
               differing: list[int], sample: int) -> None:
    merge_rows(report, plan.column_names, plan.key_index, source_rows_of(source, plan, differing),
               target.rows(plan, differing), sample)


def verify_quiesced(settings: Settings, **kwargs: Any) -> VerifyReport:
    """`verify` without the snapshot and the hold: for a source known idle and workers caught up."""
    return verify(settings, consistent=False, **kwargs)


# --- command line ----------------------------------------------------------------------------------


__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "Progress",
    "ProgressLine",
    "RowDifference",
    "TableReport",
    "VerifyReport",
    "merge_rows",
    "select_routes",
    "verify",
    "verify_quiesced",
]
