"""Framing of PostgreSQL's streaming replication protocol inside CopyBoth mode.

Owns: the CopyData payloads exchanged after ``START_REPLICATION`` (XLogData ``w`` and primary
keepalive ``k`` from the server, standby status update ``r`` to it), LSN text form, and the
PostgreSQL timestamp epoch.  See "Streaming Replication Protocol" in the PostgreSQL manual.

Must not: do I/O or import psycopg.  The connection loop calls ``get_copy_data``/``put_copy_data``
itself and hands the bytes here, so this module is tested on bytes alone.
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass
from typing import Final

from splitter.core.errors import MalformedMessageError

__all__ = [
    "PG_EPOCH_UNIX_US",
    "PrimaryKeepalive",
    "XLogData",
    "parse_copy_data",
    "pg_epoch_us_now",
    "standby_status_update",
]

# 2000-01-01T00:00:00Z in Unix microseconds: the epoch of every timestamp on the replication wire.
PG_EPOCH_UNIX_US: Final = 946_684_800_000_000

_MAX_LSN: Final = 0xFFFF_FFFF_FFFF_FFFF

_XLOG_HEADER = struct.Struct(">QQq")  # wal_start, wal_end, send_time (after the 'w')
_KEEPALIVE = struct.Struct(">Qq?")  # wal_end, send_time, reply_requested (after the 'k')
_STATUS_UPDATE = struct.Struct(">cQQQq?")

_LSN_RE: Final = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


@dataclass(frozen=True, slots=True)
class XLogData:
    """``w``: a chunk of WAL; in logical replication, exactly one pgoutput message.

    ``payload`` is a zero-copy view into the CopyData buffer it came from.
    """

    wal_start: int
    wal_end: int
    send_time: int  # microseconds since 2000-01-01 UTC
    payload: memoryview


@dataclass(frozen=True, slots=True)
class PrimaryKeepalive:
    """``k``: the server's heartbeat; ``reply_requested`` means answer now or be disconnected."""

    wal_end: int
    send_time: int
    reply_requested: bool


def parse_copy_data(data: bytes | bytearray | memoryview) -> XLogData | PrimaryKeepalive:
    """Parse one CopyData payload received from the server in CopyBoth mode."""
    view = memoryview(data)
    if not view:
        raise MalformedMessageError("replication CopyData: empty message at byte offset 0")
    tag = view[0]
    if tag == 0x77:  # 'w'
        if len(view) < 1 + _XLOG_HEADER.size:
            raise MalformedMessageError(
                f"replication XLogData: truncated header ({len(view)} of {1 + _XLOG_HEADER.size} bytes)"
                f" at byte offset {len(view)}"
            )
        start, end, send_time = _XLOG_HEADER.unpack_from(view, 1)
        return XLogData(start, end, send_time, view[1 + _XLOG_HEADER.size :])
    if tag == 0x6B:  # 'k'
        if len(view) != 1 + _KEEPALIVE.size:
            raise MalformedMessageError(
                f"replication keepalive: expected {1 + _KEEPALIVE.size} bytes, got {len(view)}"
                f" at byte offset {min(len(view), 1 + _KEEPALIVE.size)}"
            )
        wal_end, send_time, _ = _KEEPALIVE.unpack_from(view, 1)
        # Only 1 means "reply now"; don't let a stray nonzero byte force replies.
        return PrimaryKeepalive(wal_end, send_time, view[17] == 1)
    raise MalformedMessageError(f"replication CopyData: unknown message type {tag:#04x} at byte offset 0")


def pg_epoch_us_now() -> int:
    """The current time as microseconds since 2000-01-01 UTC (the replication wire's clock)."""
    return time.time_ns() // 1000 - PG_EPOCH_UNIX_US


def standby_status_update(
    written_lsn: int,
    flushed_lsn: int,
    applied_lsn: int,
    now_us: int | None = None,
    reply_requested: bool = False,
) -> bytes:
    """Build an ``r`` message.

    The server treats ``flushed_lsn`` as the position it may discard WAL up to (it becomes the slot's
    confirmed_flush_lsn), so only pass what is durably handled downstream.
    """
    for name, lsn in (("written", written_lsn), ("flushed", flushed_lsn), ("applied", applied_lsn)):
        if not 0 <= lsn <= _MAX_LSN:
            raise ValueError(f"{name} LSN {lsn} is outside 0..2^64-1")
    return _STATUS_UPDATE.pack(
        b"r",
        written_lsn,
        flushed_lsn,
        applied_lsn,
        pg_epoch_us_now() if now_us is None else now_us,
        reply_requested,
    )

