"""Decoder for PostgreSQL's ``pgoutput`` logical replication message format.

Owns: turning the bytes of one pgoutput message (the payload of an XLogData frame, or one row of
``pg_logical_slot_peek_binary_changes``) into an immutable value of
:mod:`connectors.pg.pgoutput.messages`, for protocol versions 1 to 4 (see "Logical Replication Message
Formats" in the PostgreSQL manual), and the one piece of session state: whether a stream block is open.
Column values stay in the form pgoutput sends them: text as ``str``, binary as ``bytes``, SQL NULL as
``None`` and an unchanged TOASTed value as the ``UNCHANGED_TOAST`` sentinel, so no value is ever
reinterpreted here.

Must not: do I/O, import psycopg or Kafka clients, or know about relations beyond the message it is
decoding (mapping a relation OID to its last Relation message is the caller's job).

Every malformed input raises :class:`splitter.core.errors.MalformedMessageError` naming the message type
and byte offset; no ``IndexError``/``struct.error``/``UnicodeDecodeError`` escapes.  Bounds are
checked explicitly rather than by catching exceptions, so the error can say exactly where it broke.

This sits on the hot path of every row change, so parsing uses precompiled ``struct.Struct``
unpackers on the whole buffer and plain functions with local variables rather than a reader object
(the byte-level readers are in :mod:`connectors.pg.pgoutput.wire`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, Literal, NoReturn

from connectors.pg.pgoutput.messages import (
    Begin,
    BeginPrepare,
    Commit,
    CommitPrepared,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    Prepare,
    Relation,
    RelationColumn,
    RollbackPrepared,
    StreamAbort,
    StreamCommit,
    StreamPrepare,
    StreamStart,
    StreamStop,
    Truncate,
    TupleData,
    Type,
    Update,
    new_delete,
    new_insert,
    new_update,
)
from connectors.pg.pgoutput.wire import (
    I16,
    I32,
    U32,
    U64,
    expect_end,
    fail,
    need,
    read_string,
    read_tuple,
    read_xid,
)
from splitter.core.errors import MalformedMessageError

__all__ = ["PgOutputDecoder", "decode_message"]

_STREAM_STOP: Final = StreamStop()

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

# --------------------------------------------------------------------------- per-message parsers
# Each takes the whole buffer (type byte at offset 0) and whether a stream block is open.


def _begin(data: bytes, streaming: bool) -> Begin:
    need(data, 1, _BEGIN.size, "Begin", "body")
    expect_end(data, 1 + _BEGIN.size, "Begin")
    return Begin(*_BEGIN.unpack_from(data, 1))


def _commit(data: bytes, streaming: bool) -> Commit:
    need(data, 1, _COMMIT.size, "Commit", "body")
    expect_end(data, 1 + _COMMIT.size, "Commit")
    return Commit(*_COMMIT.unpack_from(data, 1))


def _origin(data: bytes, streaming: bool) -> Origin:
    need(data, 1, 8, "Origin", "commit LSN")
    (lsn,) = U64.unpack_from(data, 1)
    name, pos = read_string(data, 9, "Origin", "origin name")
    expect_end(data, pos, "Origin")
    return Origin(lsn, name)


def _relation(data: bytes, streaming: bool) -> Relation:
    kind = "Relation"
    xid, pos = read_xid(data, 1, streaming, kind)
    need(data, pos, 4, kind, "relation OID")
    (oid,) = U32.unpack_from(data, pos)
    namespace, pos = read_string(data, pos + 4, kind, "namespace")
    name, pos = read_string(data, pos, kind, "relation name")
    need(data, pos, 3, kind, "replica identity and column count")
    identity = chr(data[pos])
    (ncols,) = I16.unpack_from(data, pos + 1)
    if ncols < 0:
        fail(kind, pos + 1, f"negative column count {ncols}")
    pos += 3
    columns = []
    for _ in range(ncols):
        need(data, pos, 1, kind, "column flags")
        flags = data[pos]
        col_name, pos = read_string(data, pos + 1, kind, "column name")
        need(data, pos, _REL_COLUMN.size, kind, "column type")
        type_oid, typmod = _REL_COLUMN.unpack_from(data, pos)
        pos += _REL_COLUMN.size
        columns.append(RelationColumn(bool(flags & 1), col_name, type_oid, typmod))
    expect_end(data, pos, kind)
    return Relation(oid, namespace, name, identity, tuple(columns), xid)


def _type(data: bytes, streaming: bool) -> Type:
    kind = "Type"
    xid, pos = read_xid(data, 1, streaming, kind)
    need(data, pos, 4, kind, "type OID")
    (oid,) = U32.unpack_from(data, pos)
    namespace, pos = read_string(data, pos + 4, kind, "namespace")
    name, pos = read_string(data, pos, kind, "type name")
    expect_end(data, pos, kind)
    return Type(oid, namespace, name, xid)


def _change_head(data: bytes, streaming: bool, kind: str) -> tuple[int | None, int, int]:
    """Read the ``[xid] oid`` head of I/U/D and check the tuple marker byte after it exists.

    Returns (xid, relation OID, offset of the marker).  One call instead of three: this is per row.
    """
    if streaming:
        if len(data) < 10:
            fail(kind, 1, f"truncated transaction id, relation OID and tuple marker ({len(data)} bytes)")
        xid, oid = _XID_OID.unpack_from(data, 1)
        return xid, oid, 9
    if len(data) < 6:
        fail(kind, 1, f"truncated relation OID and tuple marker ({len(data)} bytes)")
    return None, U32.unpack_from(data, 1)[0], 5


def _insert(data: bytes, streaming: bool) -> Insert:
    xid, oid, pos = _change_head(data, streaming, "Insert")
    if data[pos] != 0x4E:  # 'N'
        fail("Insert", pos, f"expected new-tuple marker 'N', got {data[pos]:#04x}")
    new, pos = read_tuple(data, pos + 1, "Insert")
    if pos != len(data):
        expect_end(data, pos, "Insert")
    return new_insert(oid, new, xid)


def _update(data: bytes, streaming: bool) -> Update:
    xid, oid, pos = _change_head(data, streaming, "Update")
    marker = data[pos]
    old: TupleData | None = None
    old_kind: Literal["K", "O"] | None = None
    if marker == 0x4B or marker == 0x4F:  # 'K' key, 'O' old row
        old_kind = "K" if marker == 0x4B else "O"
        old, pos = read_tuple(data, pos + 1, "Update")
        need(data, pos, 1, "Update", "new-tuple marker")
        marker = data[pos]
    if marker != 0x4E:  # 'N'
        fail("Update", pos, f"expected tuple marker 'K', 'O' or 'N', got {marker:#04x}")
    new, pos = read_tuple(data, pos + 1, "Update")
    if pos != len(data):
        expect_end(data, pos, "Update")
    return new_update(oid, old, old_kind, new, xid)


def _delete(data: bytes, streaming: bool) -> Delete:
    xid, oid, pos = _change_head(data, streaming, "Delete")
    marker = data[pos]
    if marker != 0x4B and marker != 0x4F:
        fail("Delete", pos, f"expected old-tuple marker 'K' or 'O', got {marker:#04x}")
    old, pos = read_tuple(data, pos + 1, "Delete")
    if pos != len(data):
        expect_end(data, pos, "Delete")
    return new_delete(oid, old, "K" if marker == 0x4B else "O", xid)


def _truncate(data: bytes, streaming: bool) -> Truncate:
    kind = "Truncate"
    xid, pos = read_xid(data, 1, streaming, kind)
    need(data, pos, _TRUNCATE_HEAD.size, kind, "relation count and options")
    count, options = _TRUNCATE_HEAD.unpack_from(data, pos)
    if count < 0:
        fail(kind, pos, f"negative relation count {count}")
    pos += _TRUNCATE_HEAD.size
    need(data, pos, 4 * count, kind, "relation OIDs")
    oids = struct.unpack_from(f">{count}I", data, pos)
    expect_end(data, pos + 4 * count, kind)
    return Truncate(bool(options & _TRUNCATE_CASCADE), bool(options & _TRUNCATE_RESTART_IDENTITY), oids, xid)


def _message(data: bytes, streaming: bool) -> LogicalMessage:
    kind = "Message"
    xid, pos = read_xid(data, 1, streaming, kind)
    need(data, pos, _MESSAGE_HEAD.size, kind, "flags and LSN")
    flags, lsn = _MESSAGE_HEAD.unpack_from(data, pos)
    prefix, pos = read_string(data, pos + _MESSAGE_HEAD.size, kind, "prefix")
    need(data, pos, 4, kind, "content length")
    (length,) = I32.unpack_from(data, pos)
    if length < 0:
        fail(kind, pos, f"negative content length {length}")
    pos += 4
    need(data, pos, length, kind, "content")
    expect_end(data, pos + length, kind)
    return LogicalMessage(bool(flags & 1), lsn, prefix, data[pos : pos + length], xid)


def _stream_start(data: bytes, streaming: bool) -> StreamStart:
    need(data, 1, _STREAM_START.size, "StreamStart", "body")
    expect_end(data, 1 + _STREAM_START.size, "StreamStart")
    xid, first = _STREAM_START.unpack_from(data, 1)
    return StreamStart(xid, first == 1)


def _stream_stop(data: bytes, streaming: bool) -> StreamStop:
    expect_end(data, 1, "StreamStop")
    return _STREAM_STOP


def _stream_commit(data: bytes, streaming: bool) -> StreamCommit:
    need(data, 1, _STREAM_COMMIT.size, "StreamCommit", "body")
    expect_end(data, 1 + _STREAM_COMMIT.size, "StreamCommit")
    return StreamCommit(*_STREAM_COMMIT.unpack_from(data, 1))


def _stream_abort(data: bytes, streaming: bool) -> StreamAbort:
    # Protocol 4 with streaming=parallel appends abort LSN and time; the length tells which.
    if len(data) == 1 + _STREAM_ABORT_V4.size:
        return StreamAbort(*_STREAM_ABORT_V4.unpack_from(data, 1))
    need(data, 1, _STREAM_ABORT.size, "StreamAbort", "body")
    expect_end(data, 1 + _STREAM_ABORT.size, "StreamAbort")
    return StreamAbort(*_STREAM_ABORT.unpack_from(data, 1))


def _gid(data: bytes, layout: struct.Struct, kind: str) -> str:
    """Check a fixed ``layout`` after the type byte and read the NUL-terminated GID that ends it."""
    need(data, 1, layout.size, kind, "body")
    gid, pos = read_string(data, 1 + layout.size, kind, "GID")
    expect_end(data, pos, kind)
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
