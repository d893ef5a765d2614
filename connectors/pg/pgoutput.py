"""Decoder for PostgreSQL's ``pgoutput`` logical replication message format.

Owns: turning the bytes of one pgoutput message (the payload of an XLogData frame, or one row of
``pg_logical_slot_peek_binary_changes``) into an immutable value, for protocol versions 1 to 4
(see "Logical Replication Message Formats" in the PostgreSQL manual).  Column values stay in the
form pgoutput sends them: text as ``str``, binary as ``bytes``, SQL NULL as ``None`` and an unchanged
TOASTed value as the ``UNCHANGED_TOAST`` sentinel, so no value is ever reinterpreted here.

Must not: do I/O, import psycopg or Kafka clients, or know about relations beyond the message it is
decoding (mapping a relation OID to its last Relation message is the caller's job).

Every malformed input raises :class:`splitter.errors.MalformedMessageError` naming the message type
and byte offset; no ``IndexError``/``struct.error``/``UnicodeDecodeError`` escapes.  Bounds are
checked explicitly rather than by catching exceptions, so the error can say exactly where it broke.

This sits on the hot path of every row change, so parsing uses precompiled ``struct.Struct``
unpackers on the whole buffer and plain functions with local variables rather than a reader object.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, NoReturn, TypeAlias

from splitter.core.errors import MalformedMessageError

__all__ = [
    "PG_EPOCH_UNIX_MS",
    "UNCHANGED_TOAST",
    "Begin",
    "BeginPrepare",
    "ColumnValue",
    "Commit",
    "CommitPrepared",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Message",
    "Origin",
    "PgOutputDecoder",
    "Prepare",
    "Relation",
    "RelationColumn",
    "RollbackPrepared",
    "StreamAbort",
    "StreamCommit",
    "StreamPrepare",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "TupleData",
    "Type",
    "UnchangedToast",
    "Update",
    "decode_message",
    "pg_time_to_unix_ms",
]

# 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch, in Unix milliseconds.
PG_EPOCH_UNIX_MS: Final = 946_684_800_000


def pg_time_to_unix_ms(pg_us: int) -> int:
    """Convert a PostgreSQL wire timestamp (microseconds since 2000-01-01 UTC) to Unix milliseconds."""
    # Floor division keeps pre-epoch values monotonic (rounds toward the past).
    return pg_us // 1000 + PG_EPOCH_UNIX_MS


class UnchangedToast(enum.Enum):
    """Type of the sentinel for a TOASTed column that an UPDATE did not change (tuple kind ``'u'``).

    pgoutput does not send such a value at all, so it must never be confused with NULL.
    """

    UNCHANGED_TOAST = "u"

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    __str__ = __repr__


UNCHANGED_TOAST: Final = UnchangedToast.UNCHANGED_TOAST

ColumnValue: TypeAlias = str | bytes | Literal[UnchangedToast.UNCHANGED_TOAST] | None
TupleData: TypeAlias = tuple[ColumnValue, ...]


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Begin:
    """``B``: start of a (non-streamed) transaction."""

    final_lsn: int
    commit_time: int  # microseconds since 2000-01-01 UTC, as sent
    xid: int

    @property
    def commit_time_unix_ms(self) -> int:
        return pg_time_to_unix_ms(self.commit_time)


@dataclass(frozen=True, slots=True)
class Commit:
    """``C``: end of a (non-streamed) transaction."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int

    @property
    def commit_time_unix_ms(self) -> int:
        return pg_time_to_unix_ms(self.commit_time)


@dataclass(frozen=True, slots=True)
class Origin:
    """``O``: the transaction was replayed from another node (replication origin ``name``)."""

    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    is_key: bool
    name: str
    type_oid: int
    type_modifier: int


@dataclass(frozen=True, slots=True)
class Relation:
    """``R``: describes a relation before its first change in a session (and after DDL on it).

    ``namespace`` is empty for ``pg_catalog``.  ``replica_identity`` is the relreplident letter:
    ``d`` default, ``n`` nothing, ``f`` full, ``i`` index.  ``xid`` is set only inside a stream block.
    """

    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[RelationColumn, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Type:
    """``Y``: describes a non-built-in data type used by a following Relation."""

    oid: int
    namespace: str
    name: str
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: TupleData
    xid: int | None = None  # inside a stream block: the (sub)transaction that made the change


@dataclass(frozen=True, slots=True)
class Update:
    """``U``. ``old`` is the replica-identity key (``old_kind='K'``), the whole old row
    (``'O'``, REPLICA IDENTITY FULL), or absent when the key did not change."""

    relation_oid: int
    old: TupleData | None
    old_kind: Literal["K", "O"] | None
    new: TupleData
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old: TupleData
    old_kind: Literal["K", "O"]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Truncate:
    cascade: bool
    restart_identity: bool
    relation_oids: tuple[int, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """``M``: from ``pg_logical_emit_message``; only sent with the ``messages`` option on."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class StreamStart:
    """``S`` (protocol 2+): opens a block of changes of the in-progress transaction ``xid``."""

    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    """``E`` (protocol 2+): closes the current stream block."""


@dataclass(frozen=True, slots=True)
class StreamCommit:
    """``c`` (protocol 2+): the streamed transaction ``xid`` committed."""

    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int

    @property
    def commit_time_unix_ms(self) -> int:
        return pg_time_to_unix_ms(self.commit_time)


@dataclass(frozen=True, slots=True)
class StreamAbort:
    """``A`` (protocol 2+): streamed (sub)transaction ``subxid`` of ``xid`` aborted.

    ``subxid == xid`` means the whole transaction aborted.  ``abort_lsn``/``abort_time`` are only sent
    with protocol 4 and ``streaming = parallel``.
    """

    xid: int
    subxid: int
    abort_lsn: int | None = None
    abort_time: int | None = None


@dataclass(frozen=True, slots=True)
class BeginPrepare:
    """``b`` (protocol 3+, two_phase): start of a transaction being prepared."""

    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class Prepare:
    """``P`` (protocol 3+): the transaction ``gid`` was prepared (PREPARE TRANSACTION)."""

    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class CommitPrepared:
    """``K`` (protocol 3+): COMMIT PREPARED of ``gid``."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class RollbackPrepared:
    """``r`` (protocol 3+): ROLLBACK PREPARED of ``gid``."""

    flags: int
    prepare_end_lsn: int
    rollback_end_lsn: int
    prepare_time: int
    rollback_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class StreamPrepare:
    """``p`` (protocol 3+): a streamed transaction was prepared."""

    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


Message: TypeAlias = (
    Begin
    | Commit
    | Origin
    | Relation
    | Type
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
    | StreamStart
    | StreamStop
    | StreamCommit
    | StreamAbort
    | BeginPrepare
    | Prepare
    | CommitPrepared
    | RollbackPrepared
    | StreamPrepare
)

_STREAM_STOP: Final = StreamStop()

# Row-change constructors that set the slots directly.  A frozen dataclass's own __init__ goes
# through object.__setattr__ per field, which made construction about 40% of decoding a small
# Insert; these build an identical, still-frozen object in well under half the time.


def _slot_setter(cls: type, name: str) -> Callable[[object, object], None]:
    """The raw slot descriptor's setter, which bypasses the dataclass's frozen __setattr__."""
    setter: Callable[[object, object], None] = vars(cls)[name].__set__
    return setter


_set_insert_oid = _slot_setter(Insert, "relation_oid")
_set_insert_new = _slot_setter(Insert, "new")
_set_insert_xid = _slot_setter(Insert, "xid")
_set_update_oid = _slot_setter(Update, "relation_oid")
_set_update_old = _slot_setter(Update, "old")
_set_update_old_kind = _slot_setter(Update, "old_kind")
_set_update_new = _slot_setter(Update, "new")
_set_update_xid = _slot_setter(Update, "xid")
_set_delete_oid = _slot_setter(Delete, "relation_oid")
_set_delete_old = _slot_setter(Delete, "old")
_set_delete_old_kind = _slot_setter(Delete, "old_kind")
_set_delete_xid = _slot_setter(Delete, "xid")
_object_new = object.__new__


def _new_insert(relation_oid: int, new: TupleData, xid: int | None) -> Insert:
    obj: Insert = _object_new(Insert)
    _set_insert_oid(obj, relation_oid)
    _set_insert_new(obj, new)
    _set_insert_xid(obj, xid)
    return obj


def _new_update(
    relation_oid: int, old: TupleData | None, old_kind: Literal["K", "O"] | None, new: TupleData, xid: int | None
) -> Update:
    obj: Update = _object_new(Update)
    _set_update_oid(obj, relation_oid)
    _set_update_old(obj, old)
    _set_update_old_kind(obj, old_kind)
    _set_update_new(obj, new)
    _set_update_xid(obj, xid)
    return obj


def _new_delete(relation_oid: int, old: TupleData, old_kind: Literal["K", "O"], xid: int | None) -> Delete:
    obj: Delete = _object_new(Delete)
    _set_delete_oid(obj, relation_oid)
    _set_delete_old(obj, old)
    _set_delete_old_kind(obj, old_kind)
    _set_delete_xid(obj, xid)
    return obj


# --------------------------------------------------------------------------- low-level readers

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_XID_OID = struct.Struct(">II")
# Fixed-layout prefixes, unpacked in one call each.
_BEGIN = struct.Struct(">QqI")  # final_lsn, commit_time, xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit_lsn, end_lsn, commit_time
_STREAM_COMMIT = struct.Struct(">IBQQq")
_STREAM_START = struct.Struct(">IB")
_STREAM_ABORT = struct.Struct(">II")
_STREAM_ABORT_V4 = struct.Struct(">IIQq")
_BEGIN_PREPARE = struct.Struct(">QQqI")  # prepare_lsn, end_lsn, prepare_time, xid
_PREPARE = struct.Struct(">BQQqI")  # flags, lsn, end_lsn, time, xid
_ROLLBACK_PREPARED = struct.Struct(">BQQqqI")
_REL_COLUMN = struct.Struct(">Ii")  # type oid, typmod
_MESSAGE_HEAD = struct.Struct(">BQ")  # flags, lsn
_TRUNCATE_HEAD = struct.Struct(">iB")  # nrelations, options

_TRUNCATE_CASCADE: Final = 1
_TRUNCATE_RESTART_IDENTITY: Final = 2


def _fail(kind: str, offset: int, problem: str) -> NoReturn:
    raise MalformedMessageError(f"pgoutput {kind} message: {problem} at byte offset {offset}")


def _need(data: bytes, pos: int, n: int, kind: str, what: str) -> None:
    if pos + n > len(data):
        _fail(kind, pos, f"truncated {what} (need {n} bytes, have {max(len(data) - pos, 0)})")


def _end(data: bytes, pos: int, kind: str) -> None:
    if pos != len(data):
        _fail(kind, pos, f"{len(data) - pos} unexpected trailing bytes")


def _string(data: bytes, pos: int, kind: str, what: str) -> tuple[str, int]:
    """Read a NUL-terminated UTF-8 string; return it and the offset after the NUL."""
    nul = data.find(b"\0", pos)
    if nul < 0:
        _fail(kind, pos, f"unterminated string for {what}")
    try:
        return data[pos:nul].decode("utf-8"), nul + 1
    except UnicodeDecodeError as exc:
        _fail(kind, pos + exc.start, f"invalid UTF-8 in {what}")


def _tuple(data: bytes, pos: int, kind: str) -> tuple[TupleData, int]:
    """Read TupleData; return the values and the offset after them.

    The per-column loop is unavoidable; everything in it is a local lookup.
    """
    size = len(data)
    if pos + 2 > size:
        _fail(kind, pos, "truncated tuple column count")
    (ncols,) = _I16.unpack_from(data, pos)
    if ncols < 0:
        _fail(kind, pos, f"negative tuple column count {ncols}")
    pos += 2
    values: list[ColumnValue] = []
    append = values.append
    unpack_len = _I32.unpack_from
    for _ in range(ncols):
        if pos >= size:
            _fail(kind, pos, "truncated tuple: missing column kind")
        tag = data[pos]
        pos += 1
        if tag == 0x74 or tag == 0x62:  # 't' text, 'b' binary
            if pos + 4 > size:
                _fail(kind, pos, "truncated column value length")
            (length,) = unpack_len(data, pos)
            if length < 0:
                _fail(kind, pos, f"negative column value length {length}")
            pos += 4
            stop = pos + length
            if stop > size:
                _fail(kind, pos, f"truncated column value (need {length} bytes, have {size - pos})")
            if tag == 0x74:
                try:
                    append(data[pos:stop].decode("utf-8"))
                except UnicodeDecodeError as exc:
                    _fail(kind, pos + exc.start, "invalid UTF-8 in text column value")
            else:
                append(data[pos:stop])
            pos = stop
        elif tag == 0x6E:  # 'n'
            append(None)
        elif tag == 0x75:  # 'u'
            append(UNCHANGED_TOAST)
        else:
            _fail(kind, pos - 1, f"unknown tuple column kind {tag:#04x}")
    return tuple(values), pos


def _xid(data: bytes, pos: int, streaming: bool, kind: str) -> tuple[int | None, int]:
    if not streaming:
        return None, pos
    _need(data, pos, 4, kind, "transaction id")
    return _U32.unpack_from(data, pos)[0], pos + 4


# --------------------------------------------------------------------------- per-message parsers
# Each takes the whole buffer (type byte at offset 0) and whether a stream block is open.


def _begin(data: bytes, streaming: bool) -> Begin:
    _need(data, 1, _BEGIN.size, "Begin", "body")
    _end(data, 1 + _BEGIN.size, "Begin")
    return Begin(*_BEGIN.unpack_from(data, 1))


def _commit(data: bytes, streaming: bool) -> Commit:
    _need(data, 1, _COMMIT.size, "Commit", "body")
    _end(data, 1 + _COMMIT.size, "Commit")
    return Commit(*_COMMIT.unpack_from(data, 1))


def _origin(data: bytes, streaming: bool) -> Origin:
    _need(data, 1, 8, "Origin", "commit LSN")
    (lsn,) = _U64.unpack_from(data, 1)
    name, pos = _string(data, 9, "Origin", "origin name")
    _end(data, pos, "Origin")
    return Origin(lsn, name)


def _relation(data: bytes, streaming: bool) -> Relation:
    kind = "Relation"
    xid, pos = _xid(data, 1, streaming, kind)
    _need(data, pos, 4, kind, "relation OID")
    (oid,) = _U32.unpack_from(data, pos)
    namespace, pos = _string(data, pos + 4, kind, "namespace")
    name, pos = _string(data, pos, kind, "relation name")
    _need(data, pos, 3, kind, "replica identity and column count")
    identity = chr(data[pos])
    (ncols,) = _I16.unpack_from(data, pos + 1)
    if ncols < 0:
        _fail(kind, pos + 1, f"negative column count {ncols}")
    pos += 3
    columns = []
    for _ in range(ncols):
        _need(data, pos, 1, kind, "column flags")
        flags = data[pos]
        col_name, pos = _string(data, pos + 1, kind, "column name")
        _need(data, pos, _REL_COLUMN.size, kind, "column type")
        type_oid, typmod = _REL_COLUMN.unpack_from(data, pos)
        pos += _REL_COLUMN.size
        columns.append(RelationColumn(bool(flags & 1), col_name, type_oid, typmod))
    _end(data, pos, kind)
    return Relation(oid, namespace, name, identity, tuple(columns), xid)


def _type(data: bytes, streaming: bool) -> Type:
    kind = "Type"
    xid, pos = _xid(data, 1, streaming, kind)
    _need(data, pos, 4, kind, "type OID")
    (oid,) = _U32.unpack_from(data, pos)
    namespace, pos = _string(data, pos + 4, kind, "namespace")
    name, pos = _string(data, pos, kind, "type name")
    _end(data, pos, kind)
    return Type(oid, namespace, name, xid)


def _change_head(data: bytes, streaming: bool, kind: str) -> tuple[int | None, int, int]:
    """Read the ``[xid] oid`` head of I/U/D and check the tuple marker byte after it exists.

    Returns (xid, relation OID, offset of the marker).  One call instead of three: this is per row.
    """
    if streaming:
        if len(data) < 10:
            _fail(kind, 1, f"truncated transaction id, relation OID and tuple marker ({len(data)} bytes)")
        xid, oid = _XID_OID.unpack_from(data, 1)
        return xid, oid, 9
    if len(data) < 6:
        _fail(kind, 1, f"truncated relation OID and tuple marker ({len(data)} bytes)")
    return None, _U32.unpack_from(data, 1)[0], 5


def _insert(data: bytes, streaming: bool) -> Insert:
    xid, oid, pos = _change_head(data, streaming, "Insert")
    if data[pos] != 0x4E:  # 'N'
        _fail("Insert", pos, f"expected new-tuple marker 'N', got {data[pos]:#04x}")
    new, pos = _tuple(data, pos + 1, "Insert")
    if pos != len(data):
        _end(data, pos, "Insert")
    return _new_insert(oid, new, xid)


def _update(data: bytes, streaming: bool) -> Update:
    xid, oid, pos = _change_head(data, streaming, "Update")
    marker = data[pos]
    old: TupleData | None = None
    old_kind: Literal["K", "O"] | None = None
    if marker == 0x4B or marker == 0x4F:  # 'K' key, 'O' old row
        old_kind = "K" if marker == 0x4B else "O"
        old, pos = _tuple(data, pos + 1, "Update")
        _need(data, pos, 1, "Update", "new-tuple marker")
        marker = data[pos]
    if marker != 0x4E:  # 'N'
        _fail("Update", pos, f"expected tuple marker 'K', 'O' or 'N', got {marker:#04x}")
    new, pos = _tuple(data, pos + 1, "Update")
    if pos != len(data):
        _end(data, pos, "Update")
    return _new_update(oid, old, old_kind, new, xid)


def _delete(data: bytes, streaming: bool) -> Delete:
    xid, oid, pos = _change_head(data, streaming, "Delete")
    marker = data[pos]
    if marker != 0x4B and marker != 0x4F:
        _fail("Delete", pos, f"expected old-tuple marker 'K' or 'O', got {marker:#04x}")
    old, pos = _tuple(data, pos + 1, "Delete")
    if pos != len(data):
        _end(data, pos, "Delete")
    return _new_delete(oid, old, "K" if marker == 0x4B else "O", xid)


def _truncate(data: bytes, streaming: bool) -> Truncate:
    kind = "Truncate"
    xid, pos = _xid(data, 1, streaming, kind)
    _need(data, pos, _TRUNCATE_HEAD.size, kind, "relation count and options")
    count, options = _TRUNCATE_HEAD.unpack_from(data, pos)
    if count < 0:
        _fail(kind, pos, f"negative relation count {count}")
    pos += _TRUNCATE_HEAD.size
    _need(data, pos, 4 * count, kind, "relation OIDs")
    oids = struct.unpack_from(f">{count}I", data, pos)
    _end(data, pos + 4 * count, kind)
    return Truncate(bool(options & _TRUNCATE_CASCADE), bool(options & _TRUNCATE_RESTART_IDENTITY), oids, xid)


def _message(data: bytes, streaming: bool) -> LogicalMessage:
    kind = "Message"
    xid, pos = _xid(data, 1, streaming, kind)
    _need(data, pos, _MESSAGE_HEAD.size, kind, "flags and LSN")
    flags, lsn = _MESSAGE_HEAD.unpack_from(data, pos)
    prefix, pos = _string(data, pos + _MESSAGE_HEAD.size, kind, "prefix")
    _need(data, pos, 4, kind, "content length")
    (length,) = _I32.unpack_from(data, pos)
    if length < 0:
        _fail(kind, pos, f"negative content length {length}")
    pos += 4
    _need(data, pos, length, kind, "content")
    _end(data, pos + length, kind)
    return LogicalMessage(bool(flags & 1), lsn, prefix, data[pos : pos + length], xid)


def _stream_start(data: bytes, streaming: bool) -> StreamStart:
    _need(data, 1, _STREAM_START.size, "StreamStart", "body")
    _end(data, 1 + _STREAM_START.size, "StreamStart")
    xid, first = _STREAM_START.unpack_from(data, 1)
    return StreamStart(xid, first == 1)


def _stream_stop(data: bytes, streaming: bool) -> StreamStop:
    _end(data, 1, "StreamStop")
    return _STREAM_STOP


def _stream_commit(data: bytes, streaming: bool) -> StreamCommit:
    _need(data, 1, _STREAM_COMMIT.size, "StreamCommit", "body")
    _end(data, 1 + _STREAM_COMMIT.size, "StreamCommit")
    return StreamCommit(*_STREAM_COMMIT.unpack_from(data, 1))


def _stream_abort(data: bytes, streaming: bool) -> StreamAbort:
    # Protocol 4 with streaming=parallel appends abort LSN and time; the length tells which.
    if len(data) == 1 + _STREAM_ABORT_V4.size:
        return StreamAbort(*_STREAM_ABORT_V4.unpack_from(data, 1))
    _need(data, 1, _STREAM_ABORT.size, "StreamAbort", "body")
    _end(data, 1 + _STREAM_ABORT.size, "StreamAbort")
    return StreamAbort(*_STREAM_ABORT.unpack_from(data, 1))


def _gid(data: bytes, layout: struct.Struct, kind: str) -> str:
    """Check a fixed ``layout`` after the type byte and read the NUL-terminated GID that ends it."""
    _need(data, 1, layout.size, kind, "body")
    gid, pos = _string(data, 1 + layout.size, kind, "GID")
    _end(data, pos, kind)
    return gid


def _begin_prepare(data: bytes, streaming: bool) -> BeginPrepare:
    gid = _gid(data, _BEGIN_PREPARE, "BeginPrepare")
    lsn, end_lsn, prepare_time, xid = _BEGIN_PREPARE.unpack_from(data, 1)
    return BeginPrepare(lsn, end_lsn, prepare_time, xid, gid)


def _prepare(data: bytes, streaming: bool) -> Prepare:
    gid = _gid(data, _PREPARE, "Prepare")
    flags, lsn, end_lsn, prepare_time, xid = _PREPARE.unpack_from(data, 1)
    return Prepare(flags, lsn, end_lsn, prepare_time, xid, gid)


def _commit_prepared(data: bytes, streaming: bool) -> CommitPrepared:
    gid = _gid(data, _PREPARE, "CommitPrepared")
    flags, lsn, end_lsn, commit_time, xid = _PREPARE.unpack_from(data, 1)
    return CommitPrepared(flags, lsn, end_lsn, commit_time, xid, gid)


def _rollback_prepared(data: bytes, streaming: bool) -> RollbackPrepared:
    gid = _gid(data, _ROLLBACK_PREPARED, "RollbackPrepared")
    flags, prepare_end, rollback_end, prepare_time, rollback_time, xid = _ROLLBACK_PREPARED.unpack_from(data, 1)
    return RollbackPrepared(flags, prepare_end, rollback_end, prepare_time, rollback_time, xid, gid)


def _stream_prepare(data: bytes, streaming: bool) -> StreamPrepare:
    gid = _gid(data, _PREPARE, "StreamPrepare")
    flags, lsn, end_lsn, prepare_time, xid = _PREPARE.unpack_from(data, 1)
    return StreamPrepare(flags, lsn, end_lsn, prepare_time, xid, gid)


_PARSERS: Final[dict[int, Callable[[bytes, bool], Message]]] = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _message,
    ord("S"): _stream_start,
    ord("E"): _stream_stop,
    ord("c"): _stream_commit,
    ord("A"): _stream_abort,
    ord("b"): _begin_prepare,
    ord("P"): _prepare,
    ord("K"): _commit_prepared,
    ord("r"): _rollback_prepared,
    ord("p"): _stream_prepare,
}


def _unknown(data: bytes) -> NoReturn:
    if not data:
        raise MalformedMessageError("pgoutput message: empty buffer at byte offset 0")
    raise MalformedMessageError(f"pgoutput message: unknown message type {data[0]:#04x} at byte offset 0")


class PgOutputDecoder:
    """Decodes a sequence of pgoutput messages from one replication session.

    The only state is whether a stream block (StreamStart .. StreamStop) is open, because inside one
    the change messages (R, Y, I, U, D, T, M) carry a leading transaction id.  A decoder whose input
    was malformed should be discarded along with the session: its state is then meaningless.
    """

    __slots__ = ("_in_stream",)

    def __init__(self) -> None:
        self._in_stream = False

    @property
    def in_stream(self) -> bool:
        return self._in_stream

    def decode(self, data: bytes | bytearray | memoryview) -> Message:
        """Decode one message; raises MalformedMessageError on anything that breaks the protocol."""
        if type(data) is not bytes:
            data = bytes(data)
        parser = _PARSERS.get(data[0]) if data else None
        if parser is None:
            _unknown(data)
        message = parser(data, self._in_stream)
        # Only the two stream-framing messages change state; check the cheap type test first.
        if type(message) is StreamStart:
            if self._in_stream:
                raise MalformedMessageError("pgoutput StreamStart message: stream block already open")
            self._in_stream = True
        elif message is _STREAM_STOP:
            if not self._in_stream:
                raise MalformedMessageError("pgoutput StreamStop message: no stream block open")
            self._in_stream = False
        return message


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Decode one message outside any stream block (protocol 1, or streaming off)."""
    if type(data) is not bytes:
        data = bytes(data)
    parser = _PARSERS.get(data[0]) if data else None
    if parser is None:
        _unknown(data)
    return parser(data, False)
