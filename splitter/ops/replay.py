"""`splitter replay`: rewind one service's position in the change log and re-apply from there.

Owns: turning a `StartPoint` (--from-offset / --from-time / --from-lsn, checked by `replay_start`) into an
exact starting point (the first record of the transaction there, and the commit LSN to re-apply after),
with the broker's own indexes (watermarks, the time index) and the service's checkpoint; refusing what
cannot be replayed (a range retention already deleted, a point past the end of the log or before its
start, a point ahead of what the service applied) before reading any range; counting only the range that
is replayed, with progress; the dry-run report (text and JSON), and handing the request to the running
worker through its database (the worker is the only writer of its service database; other services keep
streaming).  A replay that skips records the service never applied (`accept_gap`) also opens a backfill
job for each of the service's source tables, before the worker serves the request: until `splitter
backfill` takes the job over, an update that finds no row (its insert was in the lost stretch) is noted
for that copy instead of stopping the service.
Must not: write service tables, or read the log outside the range replayed (plus the few records that
confirm where it ends and where a time or LSN is).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from connectors.kafka.log_reader import LogBounds, LogPoint, LogReader
from connectors.pg.client import Connection, connect
from connectors.pg.source import relation_schema
from connectors.pg.state import backfills as backfill_store
from connectors.pg.state import dead_letters
from connectors.pg.state.schema import ensure_state_schema, read_checkpoint
from splitter.core.dsn import SOURCE_DATABASE, service_database
from splitter.core.errors import ConfigurationError, FatalError
from splitter.core.lsn import lsn_to_str
from splitter.core.progress import Progress, ProgressSink, ignore
from splitter.ops.backfill import DEFAULT_CHUNK_ROWS
from splitter.ops.replay_start import StartPoint, fmt_ms, parse_time
from splitter.pipeline.config import Settings

TASK = "replay"
# How many records the count reads between two progress reports (the sink decides what to show).
_PROGRESS_EVERY = 5000


@dataclass(frozen=True)
class ReplayPlan:
    service: str
    start_offset: int
    after_lsn: int  # transactions with a commit LSN above this are re-applied
    start_time_ms: int
    end_offset: int  # the next offset after the range (the end of the log when it was read)
    records: int
    service_records: int
    transactions: int
    last_lsn: int | None
    skipped: tuple[int, int] | None = None  # offsets [a, b] the service has not applied and will not (a gap)
    requested: StartPoint | None = None
    log: LogBounds | None = None  # what the log held when planned
    seconds: float = 0.0  # how long planning took


@dataclass(frozen=True)
class ReplayResult:
    """What became of a submitted replay: `done` once the worker performed it (`message` is its answer)."""

    request_id: int
    done: bool
    message: str


def _holds(bounds: LogBounds) -> str:
    first = bounds.first
    return (f"the log still holds offsets {first.offset}..{bounds.last.offset} (from {fmt_ms(first.timestamp_ms)}"
            f", LSN {lsn_to_str(first.lsn) if first.lsn else '?'}, to {fmt_ms(bounds.last.timestamp_ms)}"
            f", LSN {lsn_to_str(bounds.last.lsn) if bounds.last.lsn else '?'})")


def _resolve(reader: LogReader, bounds: LogBounds, start: StartPoint, topic: str, accept_gap: bool) -> int:
    """The offset `start` names, or a `ConfigurationError` when the log does not hold it; reads no range."""
    available = _holds(bounds)
    first, last = bounds.first, bounds.last
    gap_hint = ("; pass --accept-gap to start from its first record (re-copy the service's tables afterwards "
                "with `splitter backfill`)")
    if start.time_ms is not None:
        if start.time_ms > last.timestamp_ms:
            raise ConfigurationError(f"{start.describe()} is after the last record of the log (offset "
                                     f"{last.offset}, {fmt_ms(last.timestamp_ms)}): nothing to replay; {available}")
        if start.time_ms < first.timestamp_ms and not accept_gap:
            raise ConfigurationError(f"{start.describe()} is before the first record of the log (offset "
                                     f"{first.offset}, {fmt_ms(first.timestamp_ms)}): what was written before it is "
                                     f"not in the log (retention, or before the log began); {available}{gap_hint}")
        found = reader.first_at_or_after_time(start.time_ms, bounds)
        if found is None:
            raise ConfigurationError(f"no record at or after {fmt_ms(start.time_ms)}; {available}")
        return found
    if start.lsn is not None:
        if last.lsn is not None and start.lsn > last.lsn:
            raise ConfigurationError(f"{start.describe()} is after the last record of the log (offset "
                                     f"{last.offset}, LSN {lsn_to_str(last.lsn)}): nothing to replay; {available}")
        if first.lsn is not None and start.lsn < first.lsn:
            if not accept_gap:
                raise ConfigurationError(f"{start.describe()} is before the first record of the log (offset "
                                         f"{first.offset}, LSN {lsn_to_str(first.lsn)}): what was committed before "
                                         f"it is not in the log; {available}{gap_hint}")
            return first.offset
        found = reader.first_at_or_after_lsn(start.lsn, first.offset, bounds.end)
        if found is None:
            raise ConfigurationError(f"no record at or after LSN {lsn_to_str(start.lsn)}; {available}")
        return found
    assert start.offset is not None
    if start.offset < first.offset:
        raise ConfigurationError(f"offset {start.offset} of topic {topic!r} was deleted by retention; "
                                 f"{available}. Replay from a later point, or re-copy the table with "
                                 f"`splitter backfill`")
    if start.offset >= bounds.end:
        raise ConfigurationError(f"offset {start.offset} is past the end of the log; {available}")
    return start.offset


def plan_replay(settings: Settings, service: str, *, from_offset: int | None = None, from_time_ms: int | None = None,
                from_lsn: int | None = None, accept_gap: bool = False, progress: ProgressSink = ignore) -> ReplayPlan:
    """What a replay would re-apply.  `accept_gap`: allow starting past where the service has applied (the
    records in between are gone), or before the log's first record; the tables then need `splitter backfill`.
    Every refusal comes before the range is read; the count of the range reports to `progress`."""
    started = time.monotonic()
    requested = StartPoint(from_offset, from_time_ms, from_lsn)
    svc = settings.topology.service(service)
    tables = {f"{r.source_schema}.{r.source_table}".encode() for r in settings.topology.routes_for(svc)}
    with connect(settings.target_dsn(service), service_database(service), autocommit=True) as conn:
        ensure_state_schema(conn)
        cp = read_checkpoint(conn, service)
    if cp is None:
        raise FatalError(f"service {service} has no checkpoint yet (its initial copy has not finished): nothing "
                         f"to replay")
    with LogReader(settings.kafka_bootstrap, settings.topic, config=settings.kafka_client("consumer")) as reader:
        bounds = reader.bounds()
        if bounds is None:
            raise FatalError(f"topic {settings.topic!r} holds no records: nothing to replay")
        first, end = bounds.first, bounds.end
        offset = _resolve(reader, bounds, requested, settings.topic, accept_gap)
        applied_up_to = cp.offset if cp.offset >= 0 else first.offset - 1
        skipped = (applied_up_to + 1, offset - 1) if offset > applied_up_to + 1 else None
        if skipped is not None and not accept_gap:
            raise ConfigurationError(
                f"service {service} has applied only up to offset {applied_up_to}; replaying from {offset} "
                f"would skip offsets {skipped[0]}..{skipped[1]} (if they are gone from the log, pass --accept-gap "
                f"and re-copy the service's tables with `splitter backfill`)")
        point = reader.at(offset)
        if point is None:
            raise FatalError(f"the record at offset {offset} of topic {settings.topic!r} could not be read")
        lsn = point.lsn if point.lsn is not None else 1
        start = reader.transaction_start(offset, lsn, first.offset)
        # Counted as they stream by: a replay range can be far larger than memory.
        records = service_records = transactions = 0
        start_point: LogPoint | None = None
        last_lsn: int | None = None
        counted_lsn: int | None = None
        total = end - start
        for p in reader.points(start):
            if p.offset >= end:
                break  # written since the end was read (heartbeats): not part of what this plan describes
            records += 1
            start_point = start_point or p
            last_lsn = p.lsn
            if p.table in tables:
                service_records += 1
                if p.lsn != counted_lsn:  # a transaction's records share its commit LSN and are contiguous
                    transactions += 1
                    counted_lsn = p.lsn
            if records % _PROGRESS_EVERY == 0:
                progress(Progress(TASK, records, total, "records", time.monotonic() - started,
                                  stage=f"offset {p.offset}"))
            if p.offset == end - 1:
                break  # the range is read: stop without waiting for the end-of-partition event
        progress(Progress(TASK, records, total, "records", time.monotonic() - started, finished=True))
    return ReplayPlan(service, start, lsn - 1, (start_point or point).timestamp_ms, end, records, service_records,
                      transactions, last_lsn, skipped, requested, bounds, time.monotonic() - started)


def describe(plan: ReplayPlan) -> str:
    text = (f"replay service {plan.service}: from offset {plan.start_offset} ({fmt_ms(plan.start_time_ms)}) to "
            f"the end of the log (offset {plan.end_offset - 1}); re-applies every transaction with commit LSN above "
            f"{lsn_to_str(plan.after_lsn)} up to {lsn_to_str(plan.last_lsn) if plan.last_lsn else '?'}: "
            f"{plan.service_records} change(s) of this service in {plan.transactions} transaction(s), out of "
            f"{plan.records} record(s) read")
    if plan.skipped is not None:
        text += (f". SKIPS offsets {plan.skipped[0]}..{plan.skipped[1]}, which the service never applied: re-copy "
                 f"each of its tables afterwards with `splitter backfill --service {plan.service} --table T` (it "
                 f"also removes the rows deleted in what was skipped), then check with `splitter verify --service "
                 f"{plan.service}`")
    return text


def _point_dict(point: LogPoint) -> dict[str, Any]:
    return {"offset": point.offset, "time": fmt_ms(point.timestamp_ms),
            "lsn": lsn_to_str(point.lsn) if point.lsn is not None else None}


def plan_dict(plan: ReplayPlan) -> dict[str, Any]:
    """The plan in `splitter replay --json` (README "JSON output", replay, describes each field)."""
    return {
        "service": plan.service,
        "requested": plan.requested.to_dict() if plan.requested is not None else None,
        "start_offset": plan.start_offset,
        "start_time": fmt_ms(plan.start_time_ms),
        "after_lsn": lsn_to_str(plan.after_lsn),
        "last_offset": plan.end_offset - 1,
        "last_lsn": lsn_to_str(plan.last_lsn) if plan.last_lsn is not None else None,
        "records": plan.records,
        "service_records": plan.service_records,
        "transactions": plan.transactions,
        "skipped": {"first_offset": plan.skipped[0], "last_offset": plan.skipped[1]} if plan.skipped else None,
        "log": {"first": _point_dict(plan.log.first), "last": _point_dict(plan.log.last)} if plan.log else None,
        "seconds": round(plan.seconds, 3),
    }


def _open_recovery_jobs(settings: Settings, service: str, conn: Connection) -> None:
    """A backfill job for each source table of `service`, from the first key (one running is superseded: it
    may have passed keys whose changes were in the skipped stretch)."""
    svc = settings.topology.service(service)
    tables = sorted({(r.source_schema, r.source_table) for r in settings.topology.routes_for(svc)})
    with connect(settings.source_dsn, SOURCE_DATABASE, autocommit=True) as source:
        headers = {t: relation_schema(source, *t).header_bytes().decode() for t in tables}
    with conn.transaction():
        for (schema, table), header in headers.items():
            backfill_store.start_job(conn, service, f"{schema}.{table}", header, DEFAULT_CHUNK_ROWS, deletes=True)


def submit_replay(settings: Settings, plan: ReplayPlan, wait: float = 60.0) -> ReplayResult:
    """Queue the replay for the service's worker and wait up to `wait` seconds for its answer."""
    with connect(settings.target_dsn(plan.service), service_database(plan.service),
                 autocommit=True) as conn:
        if plan.skipped is not None:
            _open_recovery_jobs(settings, plan.service, conn)
        request_id = dead_letters.submit_request(conn, plan.service, "replay", from_offset=plan.start_offset,
                                                 from_lsn=plan.after_lsn)
        done, result = dead_letters.wait_for_result(conn, request_id, wait)
    if done:
        return ReplayResult(request_id, True, result or "done")
    return ReplayResult(request_id, False,
                        f"request {request_id} is queued; the worker of service {plan.service} performs it when it "
                        f"runs (is it running?)")


def submit(settings: Settings, plan: ReplayPlan, wait: float = 60.0) -> str:
    """`submit_replay`, as the line the command prints."""
    return submit_replay(settings, plan, wait).message


__all__ = ["ReplayPlan", "ReplayResult", "describe", "parse_time", "plan_dict", "plan_replay", "submit",
           "submit_replay"]
