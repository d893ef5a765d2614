"""Online backfill in a worker: the DBLog watermark window of one chunk.

Between a chunk's low and high watermark in the change log, the worker notes which rows of the table
the stream changed; at the high watermark it applies the rows `splitter backfill` copied in between,
minus those (the stream carries their newer values), at that point of the log, in the next commit.  A
scan chunk that names its key range also deletes there the target rows in that range the chunk does not
hold, minus those the stream changed (`connectors.pg.backfill_deletes` finds them).
Owns: reading watermarks, the open window, turning a chunk into units of the pending batch with the
chunk's progress (`ChunkDone`), and the routes of a table a backfill adds (the topology file read again).
Must not: read the source, or commit (the chunk goes with the batch).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.pg.backfill_deletes import KeyRange
from connectors.pg.sink_values import ChunkDone, Key
from splitter.core import envelope
from splitter.core.envelope import RelationSchema, RowChange
from splitter.core.errors import FatalError, MalformedMessageError
from splitter.pipeline.config import Settings
from splitter.pipeline.sink import BackfillSession
from splitter.pipeline.worker.schema_policy import SchemaPolicy, read_relation
from splitter.pipeline.worker.state import Pending
from splitter.topology.loading import load_topology
from splitter.topology.model import Route, Service

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Window:
    """An open backfill chunk: between its low and high watermark, the keys the stream changed."""

    job_id: int
    chunk: int
    table: bytes
    low_offset: int
    keys: set[Key] = field(default_factory=set)
    # Updates that left TOASTed columns out: they cannot replace the copied row, so they are re-applied
    # on top of it (setting the same values twice is harmless), in log order.
    partials: dict[Key, list[tuple[RowChange, RelationSchema]]] = field(default_factory=dict)
    truncated: bool = False

    def track(self, change: RowChange, headers: dict[str, bytes]) -> None:
        raw = headers.get(envelope.SCHEMA_HEADER)
        if raw is None:
            return
        if change.op == "t":
            self.truncated = True
            return
        relation = read_relation(self.table.decode(), raw)
        new_key = tuple(change.after.get(k) for k in relation.key_columns) if change.after is not None else None
        old_key = tuple(change.before.get(k) for k in relation.key_columns) if change.before is not None else None
        if change.op == "u" and change.unchanged_toast and new_key is not None and old_key in (None, new_key):
            self.partials.setdefault(new_key, []).append((change, relation))
            return
        for key in (old_key, new_key):
            if key is not None:
                self.keys.add(key)


@dataclass(frozen=True)
class Watermark:
    """A backfill watermark message, as `splitter backfill` writes it (values as they came)."""

    service: Any
    table: Any
    job_id: int
    chunk: int
    kind: Any  # "low" | "high"
    # A repair chunk names the missed keys it copies again (see connectors.pg.state.backfills).
    repaired: list[list[str | None]] | None
    final: bool
    # The source keys a scan chunk covers, when it also removes the target rows the source no longer has.
    key_range: KeyRange | None = None


def read_watermark(offset: int, message: envelope.ControlMessage) -> Watermark:
    try:
        mark = orjson.loads(message.content)
        service, table, job_id, chunk, kind = (mark["service"], mark["table"], int(mark["job"]),
                                               int(mark["chunk"]), mark["mark"])
        repaired: list[list[str | None]] | None = mark.get("repair")
        if repaired is not None and not (isinstance(repaired, list) and all(isinstance(k, list) for k in repaired)):
            raise TypeError("'repair' is not a list of keys")
        key_range = _key_range(mark["range"]) if "range" in mark else None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedMessageError(f"backfill watermark at offset {offset} is not valid: {exc}") from exc
    return Watermark(service, table, job_id, chunk, kind, repaired, bool(mark.get("final")), key_range)


def _key_range(value: Any) -> KeyRange:
    """`[after, through]`, each a key (a list of texts) or null (the first / the last key)."""
    if not (isinstance(value, list) and len(value) == 2
            and all(k is None or (isinstance(k, list) and all(v is None or isinstance(v, str) for v in k))
                    for k in value)):
        raise TypeError("'range' is not [key or null, key or null]")
    after, through = value
    return KeyRange(None if after is None else tuple(after), None if through is None else tuple(through))


class BackfillWindow:
    """The watermark window of one worker."""

    def __init__(self, sink: BackfillSession, schema: SchemaPolicy) -> None:
        self._sink = sink
        self._schema = schema
        self.open: Window | None = None

    def track(self, table: bytes | None, value: bytes | None, headers: dict[str, bytes]) -> None:
        """Note a row record of the log (any table; only the open window's counts)."""
        window = self.open
        if window is not None and table == window.table:
            window.track(envelope.decode_row(value), headers)

    def on_mark(self, mark: Watermark, offset: int, lsn: int, ts_ms: int, applied_lsn: int,
                pending: Pending) -> None:
        """Low watermark: open the window.  High: add the chunk, minus the rows the stream changed, to `pending`."""
        table = mark.table
        if mark.kind == "low":
            self.open = Window(mark.job_id, mark.chunk, table.encode(), offset)
            return
        window = self.open
        if mark.kind != "high" or window is None or (window.job_id, window.chunk) != (mark.job_id, mark.chunk):
            return  # a high without its low in this run: the backfill command sends that chunk again
        self.open = None
        if lsn <= applied_lsn:
            return  # applied before a restart
        job, rows = self._sink.backfill_chunk(mark.job_id, mark.chunk)
        if job is None:
            return
        header = job.relation_header.encode()
        relation = read_relation(table, header)
        self._schema.check(relation, offset, header)
        keys = relation.key_columns
        copied = skipped = 0
        copied_keys: list[list[str | None]] = []
        chunk_keys: set[Key] = set()
        last_key: Key | None = None
        if not pending.transactions:
            pending.started = time.monotonic()
        for row in rows:
            values = {k: (None if v is None else str(v)) for k, v in row.items()}
            key = tuple(values.get(k) for k in keys)
            last_key = key
            chunk_keys.add(key)
            if window.truncated or key in window.keys:
                skipped += 1
                continue
            change = RowChange("r", table, None, values, (), lsn, 0, 0, ts_ms)
            pending.add((offset, change, relation))
            for partial, partial_relation in window.partials.get(key, ()):
                pending.add((offset, partial, partial_relation))
            copied += 1
            copied_keys.append(list(key))
        deleted = 0
        if mark.key_range is not None and not window.truncated:
            # Rows of the range the source no longer has, except those the stream changed inside the window:
            # it decides them, as it does the copied rows (a truncate there emptied the table already).
            present = chunk_keys | window.keys | window.partials.keys()
            for key in self._sink.backfill_absent_keys(table, relation, mark.key_range, present):
                before = dict(zip(keys, key, strict=True))
                pending.add((offset, RowChange("d", table, before, None, (), lsn, 0, 0, ts_ms), relation))
                deleted += 1
        pending.transactions += 1
        if mark.repaired is not None:
            last_key = None  # a repair chunk copies keys again; it does not move the key cursor
        pending.chunks.append(ChunkDone(mark.job_id, mark.chunk, copied, skipped, list(last_key) if last_key else None,
                                        mark.final, mark.repaired or (), copied_keys, lsn, deleted))


def reload_routes(settings: Settings, service: str, table: str) -> tuple[Settings, Service, list[Route]]:
    """A backfill names `table`, which the worker does not route: the current topology file's routes for it."""
    path = settings.topology_path
    if path is None:
        raise FatalError(f"service {service}: a backfill of {table} arrived but the topology file is "
                         f"unknown; restart the worker with the new topology")
    topology = load_topology(path)
    routes = topology.routes_for(topology.service(service))
    if table not in {f"{r.source_schema}.{r.source_table}" for r in routes}:
        raise FatalError(f"service {service}: a backfill of {table} arrived but {path} does not route "
                         f"{table} to this service")
    log.info("service %s: reloaded %s; now routing %s", service, path, table)
    return dataclasses.replace(settings, topology=topology), topology.service(service), routes
