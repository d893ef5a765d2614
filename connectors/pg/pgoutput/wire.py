"""Byte-level readers of the pgoutput wire format, shared by every per-message parser.

Owns: the integer unpackers, the bounds checks, NUL-terminated strings, TupleData (the per-column loop
of every row change) and the one place a malformed message turns into
:class:`splitter.core.errors.MalformedMessageError`, with the message type and byte offset.

Must not: know about message types beyond the name it reports, keep state, or do I/O.  Every function
takes the whole buffer and an offset and returns the offset after what it read: plain functions with
local variables, no reader object, because this runs for every column of every row change.
"""

from __future__ import annotations

import struct
from typing import NoReturn

from connectors.pg.pgoutput.messages import UNCHANGED_TOAST, ColumnValue, TupleData
from splitter.core.errors import MalformedMessageError

I16 = struct.Struct(">h")
I32 = struct.Struct(">i")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")


def fail(kind: str, offset: int, problem: str) -> NoReturn:
    raise MalformedMessageError(f"pgoutput {kind} message: {problem} at byte offset {offset}")


def need(data: bytes, pos: int, n: int, kind: str, what: str) -> None:
    if pos + n > len(data):
        fail(kind, pos, f"truncated {what} (need {n} bytes, have {max(len(data) - pos, 0)})")


def expect_end(data: bytes, pos: int, kind: str) -> None:
    if pos != len(data):
        fail(kind, pos, f"{len(data) - pos} unexpected trailing bytes")


def read_string(data: bytes, pos: int, kind: str, what: str) -> tuple[str, int]:
    """Read a NUL-terminated UTF-8 string; return it and the offset after the NUL."""
    nul = data.find(b"\0", pos)
    if nul < 0:
        fail(kind, pos, f"unterminated string for {what}")
    try:
        return data[pos:nul].decode("utf-8"), nul + 1
    except UnicodeDecodeError as exc:
        fail(kind, pos + exc.start, f"invalid UTF-8 in {what}")


def read_tuple(data: bytes, pos: int, kind: str) -> tuple[TupleData, int]:
    """Read TupleData; return the values and the offset after them.

    The per-column loop is unavoidable; everything in it is a local lookup.
    """
    size = len(data)
    if pos + 2 > size:
        fail(kind, pos, "truncated tuple column count")
    (ncols,) = I16.unpack_from(data, pos)
    if ncols < 0:
        fail(kind, pos, f"negative tuple column count {ncols}")
    pos += 2
    values: list[ColumnValue] = []
    append = values.append
    unpack_len = I32.unpack_from
    for _ in range(ncols):
        if pos >= size:
            fail(kind, pos, "truncated tuple: missing column kind")
        tag = data[pos]
        pos += 1
        if tag == 0x74 or tag == 0x62:  # 't' text, 'b' binary
            if pos + 4 > size:
                fail(kind, pos, "truncated column value length")
            (length,) = unpack_len(data, pos)
            if length < 0:
                fail(kind, pos, f"negative column value length {length}")
            pos += 4
            stop = pos + length
            if stop > size:
                fail(kind, pos, f"truncated column value (need {length} bytes, have {size - pos})")
            if tag == 0x74:
                try:
                    append(data[pos:stop].decode("utf-8"))
                except UnicodeDecodeError as exc:
                    fail(kind, pos + exc.start, "invalid UTF-8 in text column value")
            else:
                append(data[pos:stop])
            pos = stop
        elif tag == 0x6E:  # 'n'
            append(None)
        elif tag == 0x75:  # 'u'
            append(UNCHANGED_TOAST)
        else:
            fail(kind, pos - 1, f"unknown tuple column kind {tag:#04x}")
    return tuple(values), pos


def read_xid(data: bytes, pos: int, streaming: bool, kind: str) -> tuple[int | None, int]:
    if not streaming:
        return None, pos
    need(data, pos, 4, kind, "transaction id")
    return U32.unpack_from(data, pos)[0], pos + 4
