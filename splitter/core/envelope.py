"""The change-log contract: what one Kafka record of the `<source>.changes` topic holds.

Owns: encoding capture's decoded changes into records (value, key, headers) and reading them back
in workers.  Values follow Debezium's change-event shape (`before`, `after`, `source`, `op`,
`ts_ms`) so existing Kafka tooling can read the log; column values stay in PostgreSQL's text form.
Headers let a worker route a record before parsing its value:

    splitter.kind    b"row" | b"commit" | b"message"
    splitter.table   b"schema.table"            (row records)
    splitter.lsn     commit LSN, decimal ASCII  (every record)
    splitter.schema  JSON [[column, type, is_key], ...] of the source relation (row records),
                     built once per relation by capture, so workers never ask the source.
    splitter.origin  the replication origin the transaction was applied under (row and commit
                     records; absent when it had none): a worker skips its own reverse stream's echo.

Three record kinds: `row` (one change, op c/u/d/t; `source.lsn` is the *commit* LSN of its
transaction and `source.sequence` its position inside it), `commit` (ends a transaction: its
xid, commit LSN, how many records it had and how many rows of each table: transaction boundaries are
visible in the log), and `message` (a `pg_logical_emit_message` with a `splitter.` prefix: heartbeats,
markers).

A row record's key is `["schema.table", {primary key}]`, its table first, so that a worker drops another
service's row from the key alone (`row_key_prefixes`), without reading its headers (converting them was
half of what reading a record cost).  Logs written before that carry the primary key alone, a JSON object
(never an array, whatever the key's columns are named), and commit records without `tables`: workers read
those as before (`CommitMarker.tables` None).

Unchanged TOASTed values are absent from `after` and listed in `unchanged_toast`, never sent
as null.  Must not: do I/O, import drivers, or interpret values (they stay text).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from splitter.core.errors import MalformedMessageError

KIND_HEADER = "splitter.kind"
TABLE_HEADER = "splitter.table"
LSN_HEADER = "splitter.lsn"
SCHEMA_HEADER = "splitter.schema"
ORIGIN_HEADER = "splitter.origin"

KIND_ROW = b"row"
#: How every row record's key begins (`encode_row`); a record with another key is read whole.
ROW_KEY_PREFIX = b'["'

KIND_COMMIT = b"commit"
KIND_MESSAGE = b"message"

CONNECTOR = "splitter"
ENVELOPE_VERSION = "1"

Op = Literal["c", "u", "d", "t", "r"]
Row = dict[str, str | None]
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class ColumnSchema:
    """A source column as workers need it: name, the SQL type to read its text as, key membership."""

    name: str
    sql_type: str
    is_key: bool


@dataclass(frozen=True, slots=True)
class RelationSchema:
    """A source table's columns in order; encoded once per relation into the schema header."""

    schema: str
    table: str
    columns: tuple[ColumnSchema, ...]
    #: The key columns in order, computed once: workers read them for every change they apply.
    key_columns: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_columns", tuple(c.name for c in self.columns if c.is_key))

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def header_bytes(self) -> bytes:
        return orjson.dumps([[c.name, c.sql_type, c.is_key] for c in self.columns])

    @classmethod
    def from_header(cls, qualified: str, raw: bytes) -> RelationSchema:
        try:
            items = orjson.loads(raw)
            columns = tuple(ColumnSchema(str(n), str(t), bool(k)) for n, t, k in items)
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            raise MalformedMessageError(f"schema header of {qualified} is not valid: {exc}") from exc
        schema, _, table = qualified.partition(".")
        if not table or not columns:
            raise MalformedMessageError(f"schema header of {qualified!r} names no table or no columns")
        return cls(schema, table, columns)


@dataclass(frozen=True, slots=True)
class RowChange:
    """One decoded row record, as a worker consumes it."""

    op: Op
    table: str
    before: Row | None
    after: Row | None
    unchanged_toast: tuple[str, ...]
    commit_lsn: int
    xid: int
    sequence: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class CommitMarker:
    """End of one source transaction in the log."""

    commit_lsn: int
    end_lsn: int
    xid: int
    events: int
    ts_ms: int
    #: Row records per table ("schema.table"); None in a log written before commits carried them.
    tables: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """A `pg_logical_emit_message` with a `splitter.` prefix (heartbeat, watermark, cutover marker)."""

    lsn: int
    prefix: str
    content: str
    transactional: bool
    ts_ms: int


def _source_block(database: str, schema: str, table: str, commit_lsn: int, xid: int,
                  sequence: int, ts_ms: int) -> dict[str, Any]:
    return {
        "version": ENVELOPE_VERSION,
        "connector": CONNECTOR,
        "db": database,
        "schema": schema,
        "table": table,
        "lsn": commit_lsn,
        "txId": xid,
        "sequence": sequence,
        "ts_ms": ts_ms,
    }


def encode_row(
    *,
    database: str,
    relation: RelationSchema,
    op: Op,
    before: Mapping[str, str | None] | None,
    after: Mapping[str, str | None] | None,
    unchanged_toast: Sequence[str],
    commit_lsn: int,
    xid: int,
    sequence: int,
    ts_ms: int,
    now_ms: int,
) -> tuple[bytes, bytes]:
    """Return (key, value) of a row record.  The key names the table, then holds the row's primary key (an
    array: a key written before, the primary key's object alone, cannot be taken for one)."""
    value: dict[str, Any] = {
        "before": before,
        "after": after,
        "source": _source_block(database, relation.schema, relation.table, commit_lsn, xid, sequence, ts_ms),
        "op": op,
        "ts_ms": now_ms,
    }
    if unchanged_toast:
        value["unchanged_toast"] = list(unchanged_toast)
    image = after if after is not None else before
    key_cols = relation.key_columns
    primary_key = {c: image.get(c) for c in key_cols} if image is not None and key_cols else None
    key = orjson.dumps([relation.qualified, primary_key])
    return key, orjson.dumps(value)


def row_key_prefixes(tables: Iterable[bytes]) -> tuple[bytes, ...]:
    """How the keys of `tables`' row records begin (`bytes.startswith` takes the tuple: one call per record)."""
    return tuple(b"[" + orjson.dumps(t.decode()) + b"," for t in tables)


def encode_commit(*, commit_lsn: int, end_lsn: int, xid: int, events: int, ts_ms: int,
                  tables: Mapping[str, int]) -> bytes:
    """A commit record: `events` counts every record of the transaction (rows and transactional messages),
    `tables` its rows per table ("schema.table"): a worker that never reads other tables' rows checks its own."""
    return orjson.dumps(
        {"op": "commit", "txId": xid, "lsn": commit_lsn, "end_lsn": end_lsn, "events": events, "ts_ms": ts_ms,
         "tables": tables}
    )


def encode_message(*, lsn: int, prefix: str, content: str, transactional: bool, ts_ms: int) -> bytes:
    return orjson.dumps(
        {"op": "message", "lsn": lsn, "prefix": prefix, "content": content,
         "transactional": transactional, "ts_ms": ts_ms}
    )


def row_headers(relation_header: bytes, qualified: str, commit_lsn: int, origin: str | None = None) -> Headers:
    headers: Headers = [
        (KIND_HEADER, KIND_ROW),
        (TABLE_HEADER, qualified.encode()),
        (LSN_HEADER, str(commit_lsn).encode()),
        (SCHEMA_HEADER, relation_header),
    ]
    return headers if origin is None else [*headers, (ORIGIN_HEADER, origin.encode())]


def commit_headers(commit_lsn: int, origin: str | None = None) -> Headers:
    headers: Headers = [(KIND_HEADER, KIND_COMMIT), (LSN_HEADER, str(commit_lsn).encode())]
    return headers if origin is None else [*headers, (ORIGIN_HEADER, origin.encode())]


def message_headers(lsn: int) -> Headers:
    return [(KIND_HEADER, KIND_MESSAGE), (LSN_HEADER, str(lsn).encode())]


def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    """Headers as a dict (the last value of a repeated name wins); None values dropped."""
    found = dict(headers or ())  # built in C: every worker does this for every record of the log
    if None in found.values():
        return {k: v for k, v in found.items() if v is not None}
    return found  # type: ignore[return-value]  # no None left


def header_lsn(headers: Mapping[str, bytes], offset: int, topic: str) -> int:
    """The commit LSN header of the record at `offset` of `topic` (every splitter record has one)."""
    try:
        return int(headers[LSN_HEADER])
    except (KeyError, ValueError) as exc:
        raise MalformedMessageError(f"record at offset {offset} of {topic!r} has no valid {LSN_HEADER} header: "
                                    f"it was not written by splitter capture") from exc


def _load(raw: bytes | None, what: str) -> dict[str, Any]:
    if raw is None:
        raise MalformedMessageError(f"{what} record has no value")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessageError(f"{what} record value is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise MalformedMessageError(f"{what} record value is not a JSON object")
    return value


#: The types of a column value in text form: what row images hold.
TEXT_OR_NULL = frozenset({str, type(None)})


def _row_image(value: Any, name: str) -> Row | None:
    if value is None:
        return None
    # JSON object keys are always text; the values' types are checked in C (this runs for every change applied).
    if not isinstance(value, dict) or not TEXT_OR_NULL.issuperset(map(type, value.values())):
        raise MalformedMessageError(f"row record field {name!r} is not an object of text values")
    return value


def decode_row(raw: bytes | None) -> RowChange:
    return row_change(_load(raw, "row"))


def row_change(value: dict[str, Any]) -> RowChange:
    """The change a row record's parsed JSON holds (what `decode_row` reads; a stored event is one too)."""
    try:
        source = value["source"]
        op = value["op"]
        if op not in ("c", "u", "d", "t", "r"):
            raise MalformedMessageError(f"row record has unknown op {op!r}")
        change = RowChange(
            op=op,
            table=f"{source['schema']}.{source['table']}",
            before=_row_image(value.get("before"), "before"),
            after=_row_image(value.get("after"), "after"),
            unchanged_toast=tuple(value.get("unchanged_toast") or ()),
            commit_lsn=int(source["lsn"]),
            xid=int(source["txId"]),
            sequence=int(source["sequence"]),
            ts_ms=int(source["ts_ms"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessageError(f"row record lacks or mistypes a field: {exc!r}") from exc
    if op in ("c", "r", "u") and change.after is None:
        raise MalformedMessageError(f"row record with op {op!r} has no 'after' image")
    if op == "d" and change.before is None:
        raise MalformedMessageError("row record with op 'd' has no 'before' image")
    return change


_SEQUENCE_KEY = b'"sequence":'


def row_sequence(raw: bytes | None) -> int | None:
    """A row record's `source.sequence`, read without parsing the record; None when it is not readable.

    Workers read it for every row record of every table (to count each transaction's records), so it must
    cost far less than decoding.  `encode_row` writes the source block after the row images, and no key
    after that block ends in `sequence`; a key inside the images that does (a column named so) cannot
    follow it, and its value would be quoted text or null anyway.  Any other layout is decoded in full.
    """
    if raw is None:
        return None
    at = raw.rfind(_SEQUENCE_KEY)
    if at >= 0:
        start = at + len(_SEQUENCE_KEY)
        end = raw.find(b",", start)
        digits = raw[start:end] if end > start else b""
        if digits.isdigit():
            return int(digits)
    try:
        return decode_row(raw).sequence
    except MalformedMessageError:
        return None


def decode_commit(raw: bytes | None) -> CommitMarker:
    value = _load(raw, "commit")
    try:
        marker = CommitMarker(
            commit_lsn=int(value["lsn"]), end_lsn=int(value["end_lsn"]), xid=int(value["txId"]),
            events=int(value["events"]), ts_ms=int(value["ts_ms"]), tables=_table_counts(value.get("tables")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessageError(f"commit record lacks or mistypes a field: {exc!r}") from exc
    if marker.tables is not None and sum(marker.tables.values()) > marker.events:
        raise MalformedMessageError(f"commit record counts more rows in its tables than records ({marker.events})")
    return marker


def _table_counts(raw: Any) -> dict[str, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TypeError(f"'tables' is {type(raw).__name__}, not an object")
    # Every worker reads every commit record: checked as parsed (JSON object keys are text), not copied.
    if not all(type(n) is int and n >= 0 for n in raw.values()):
        raise ValueError("'tables' holds a count that is not a whole number")
    return raw


def decode_message(raw: bytes | None) -> ControlMessage:
    value = _load(raw, "message")
    try:
        return ControlMessage(
            lsn=int(value["lsn"]), prefix=str(value["prefix"]), content=str(value["content"]),
            transactional=bool(value["transactional"]), ts_ms=int(value["ts_ms"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessageError(f"message record lacks or mistypes a field: {exc!r}") from exc
