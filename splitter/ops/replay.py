"""`splitter replay`: rewind one service's position in the change log and re-apply from there.

Owns: turning --from-offset / --from-time / --from-lsn into an exact starting point (the first record of
the transaction there, and the commit LSN to re-apply after), refusing what cannot be replayed (a
range retention already deleted, a point ahead of what the service applied), the dry-run report, the
confirmation, and handing the request to the running worker through its database (the worker is the
only writer of its service database; other services keep streaming).  A replay that skips records the
service never applied (`accept_gap`) also opens a backfill job for each of the service's source tables,
before the worker serves the request: until `splitter backfill` takes the job over, an update that finds
no row (its insert was in the lost stretch) is noted for that copy instead of stopping the service.
Must not: write service tables.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from connectors.kafka.log_reader import LogPoint, LogReader
from connectors.pg.client import Connection, connect
from connectors.pg.source import relation_schema
from connectors.pg.state import backfills as backfill_store
from connectors.pg.state import dead_letters
from connectors.pg.state.schema import ensure_state_schema, read_checkpoint
from splitter.core.errors import ConfigurationError, FatalError
from splitter.core.lsn import lsn_to_str
from splitter.ops.backfill import DEFAULT_CHUNK_ROWS
from splitter.pipeline.config import Settings


@dataclass(frozen=True)
class ReplayPlan:
    service: str
    start_offset: int
    after_lsn: int  # transactions with a commit LSN above this are re-applied
    start_time_ms: int
    end_offset: int
    records: int
    service_records: int
    transactions: int
    last_lsn: int | None
    skipped: tuple[int, int] | None = None  # offsets [a, b] the service has not applied and will not (a gap)


def _fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else "?"


def parse_time(text: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigurationError(f"--from-time {text!r} is not an ISO 8601 time (e.g. 2026-11-28T09:30:00Z)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def plan_replay(settings: Settings, service: str, *, from_offset: int | None = None, from_time_ms: int | None = None,
                from_lsn: int | None = None, accept_gap: bool = False) -> ReplayPlan:
    """What a replay would re-apply.  `accept_gap`: allow starting past where the service has applied (the
    records in between are gone); the tables then need `splitter backfill`."""
    svc = settings.topology.service(service)
    tables = {f"{r.source_schema}.{r.source_table}".encode() for r in settings.topology.routes_for(svc)}
    with connect(settings.target_dsn(service), f"database of service {service}", autocommit=True) as conn:
        ensure_state_schema(conn)
        cp = read_checkpoint(conn, service)
    if cp is None:
        raise FatalError(f"service {service} has no checkpoint yet (its initial copy has not finished): nothing "
                         f"to replay")
    with LogReader(settings.kafka_bootstrap, settings.topic, config=settings.kafka_client("consumer")) as reader:
        first = reader.earliest()
        if first is None:
            raise FatalError(f"topic {settings.topic!r} holds no records: nothing to replay")
        # The end of the log, read rather than asked for (tansu's high watermark is wrong after batches).
        tail = deque(reader.points(max(first.offset, cp.offset)), maxlen=1)
        end = tail[0].offset + 1 if tail else first.offset
        available = (f"the log still holds offsets {first.offset}..{end - 1} (from {_fmt_ms(first.timestamp_ms)}, "
                     f"LSN {lsn_to_str(first.lsn) if first.lsn else '?'})")
        if from_time_ms is not None:
            found = reader.offset_for_time(from_time_ms)
            if found is None:
                raise ConfigurationError(f"no record at or after {_fmt_ms(from_time_ms)}; {available}")
            from_offset = found
        elif from_lsn is not None:
            found = reader.first_at_or_after_lsn(from_lsn, first.offset, end)
            if found is None:
                raise ConfigurationError(f"no record at or after LSN {lsn_to_str(from_lsn)}; {available}")
            from_offset = found
        assert from_offset is not None
        if from_offset < first.offset:
            raise ConfigurationError(f"offset {from_offset} of topic {settings.topic!r} was deleted by retention; "
                                     f"{available}. Replay from a later point, or re-copy the table with "
                                     f"`splitter backfill`")
        if from_offset >= end:
            raise ConfigurationError(f"offset {from_offset} is past the end of the log; {available}")
        applied_up_to = cp.offset if cp.offset >= 0 else first.offset - 1
        skipped = (applied_up_to + 1, from_offset - 1) if from_offset > applied_up_to + 1 else None
        if skipped is not None and not accept_gap:
            raise ConfigurationError(
                f"service {service} has applied only up to offset {applied_up_to}; replaying from {from_offset} "
                f"would skip offsets {skipped[0]}..{skipped[1]} (if they are gone from the log, pass --accept-gap "
                f"and re-copy the service's tables with `splitter backfill`)")
        point = reader.at(from_offset)
        assert point is not None
        lsn = point.lsn if point.lsn is not None else 1
        start = reader.transaction_start(from_offset, lsn, first.offset)
        # Counted as they stream by: a replay range can be far larger than memory.
        records = service_records = transactions = 0
        start_point: LogPoint | None = None
        last_lsn: int | None = None
        counted_lsn: int | None = None
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
    return ReplayPlan(service, start, lsn - 1, (start_point or point).timestamp_ms, end, records, service_records,
                      transactions, last_lsn, skipped)


def describe(plan: ReplayPlan) -> str:
    text = (f"replay service {plan.service}: from offset {plan.start_offset} ({_fmt_ms(plan.start_time_ms)}) to "
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


def _open_recovery_jobs(settings: Settings, service: str, conn: Connection) -> None:
    """A backfill job for each source table of `service`, from the first key (one running is superseded: it
    may have passed keys whose changes were in the skipped stretch)."""
    svc = settings.topology.service(service)
    tables = sorted({(r.source_schema, r.source_table) for r in settings.topology.routes_for(svc)})
    with connect(settings.source_dsn, "the source database", autocommit=True) as source:
        headers = {t: relation_schema(source, *t).header_bytes().decode() for t in tables}
    with conn.transaction():
        for (schema, table), header in headers.items():
            backfill_store.start_job(conn, service, f"{schema}.{table}", header, DEFAULT_CHUNK_ROWS, deletes=True)


def submit(settings: Settings, plan: ReplayPlan, wait: float = 60.0) -> str:
    with connect(settings.target_dsn(plan.service), f"database of service {plan.service}",
                 autocommit=True) as conn:
        if plan.skipped is not None:
            _open_recovery_jobs(settings, plan.service, conn)
        request_id = dead_letters.submit_request(conn, plan.service, "replay", from_offset=plan.start_offset,
                                                 from_lsn=plan.after_lsn)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            done, result = dead_letters.request_result(conn, request_id)
            if done is not None:
                return result or "done"
            time.sleep(0.3)
    return (f"request {request_id} is queued; the worker of service {plan.service} performs it when it runs "
            f"(is it running?)")
