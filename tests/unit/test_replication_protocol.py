"""Tests of connectors.replication_protocol: real CopyData frames from PostgreSQL 18 plus bytes
built by hand from the "Streaming Replication Protocol" chapter of the PostgreSQL manual."""

from __future__ import annotations

import contextlib
import re
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.pg.pgoutput.decoder import decode_message
from connectors.pg.pgoutput.messages import Begin, Commit, Insert, Relation
from connectors.pg.replication_protocol import (
    PG_EPOCH_UNIX_US,
    PrimaryKeepalive,
    XLogData,
    parse_copy_data,
    pg_epoch_us_now,
    standby_status_update,
)
from splitter.core.errors import ConfigurationError, MalformedMessageError
from splitter.core.lsn import lsn_to_str, str_to_lsn

DATA = Path(__file__).parent / "data"


def load(name: str) -> list[bytes]:
    lines = (line.split("#", 1)[0].strip() for line in (DATA / name).read_text().splitlines())
    return [bytes.fromhex(line) for line in lines if line]


# --------------------------------------------------------------------------- real frames


def test_captured_frames() -> None:
    frames = [parse_copy_data(f) for f in load("copy_frames.txt")]
    keepalives = [f for f in frames if isinstance(f, PrimaryKeepalive)]
    xlog = [f for f in frames if isinstance(f, XLogData)]
    assert keepalives and all(not k.reply_requested for k in keepalives)
    messages = [decode_message(x.payload) for x in xlog]
    assert [type(m).__name__ for m in messages] == ["Begin", "Relation", "Insert", "Commit"]
    begin, rel, ins, commit = messages
    assert isinstance(begin, Begin) and isinstance(rel, Relation)
    assert isinstance(ins, Insert) and isinstance(commit, Commit)
    assert rel.name == "full_ident" and ins.new == ("7", "over the wire")
    assert commit.commit_lsn == begin.final_lsn
    # The Commit frame's WAL position is the end of the commit record: what to confirm once applied.
    assert xlog[-1].wal_start == xlog[-1].wal_end == commit.end_lsn
    for frame in frames:
        assert frame.send_time > 0


def test_xlogdata_payload_is_zero_copy() -> None:
    raw = load("copy_frames.txt")[1]
    frame = parse_copy_data(raw)
    assert isinstance(frame, XLogData)
    assert isinstance(frame.payload, memoryview)
    assert frame.payload.obj is raw
    assert bytes(frame.payload) == raw[25:]


# --------------------------------------------------------------------------- hand-built frames


def test_xlogdata_layout() -> None:
    raw = b"w" + struct.pack(">QQq", 0x16_B374D848, 0x16_B374D900, 123_456) + b"payload"
    frame = parse_copy_data(bytearray(raw))
    assert isinstance(frame, XLogData)
    assert (frame.wal_start, frame.wal_end, frame.send_time) == (0x16_B374D848, 0x16_B374D900, 123_456)
    assert bytes(frame.payload) == b"payload"
    empty = parse_copy_data(raw[:25])
    assert isinstance(empty, XLogData) and bytes(empty.payload) == b""


@pytest.mark.parametrize(("flag", "expected"), [(0, False), (1, True)])
def test_keepalive_layout(flag: int, expected: bool) -> None:
    raw = b"k" + struct.pack(">Qq", 0xFFFF_FFFF_FFFF_FFFF, -5) + bytes([flag])
    assert parse_copy_data(raw) == PrimaryKeepalive(0xFFFF_FFFF_FFFF_FFFF, -5, expected)


def test_standby_status_update_layout() -> None:
    msg = standby_status_update(300, 200, 100, now_us=42, reply_requested=True)
    assert len(msg) == 34
    assert struct.unpack(">cQQQq?", msg) == (b"r", 300, 200, 100, 42, True)


def test_standby_status_update_uses_current_time() -> None:
    before = pg_epoch_us_now()
    (_, _, _, _, sent, reply) = struct.unpack(">cQQQq?", standby_status_update(1, 1, 1))
    assert before <= sent <= pg_epoch_us_now()
    assert reply is False


def test_standby_status_update_rejects_out_of_range_lsn() -> None:
    with pytest.raises(ValueError, match="flushed"):
        standby_status_update(0, -1, 0)
    with pytest.raises(ValueError, match="written"):
        standby_status_update(1 << 64, 0, 0)


def test_pg_epoch_us_now() -> None:
    assert abs(pg_epoch_us_now() + PG_EPOCH_UNIX_US - time.time() * 1_000_000) < 5_000_000


# --------------------------------------------------------------------------- malformed frames


def test_every_truncation_raises_malformed() -> None:
    for raw in load("copy_frames.txt"):
        limit = 25 if raw[:1] == b"w" else len(raw)  # XLogData may legally carry any payload length
        for size in range(limit):
            with pytest.raises(MalformedMessageError):
                parse_copy_data(raw[:size])


def test_keepalive_with_trailing_bytes() -> None:
    raw = b"k" + struct.pack(">Qq?", 1, 2, False)
    with pytest.raises(MalformedMessageError, match="keepalive"):
        parse_copy_data(raw + b"\x00")


def test_unknown_and_empty_frames() -> None:
    with pytest.raises(MalformedMessageError, match="empty"):
        parse_copy_data(b"")
    with pytest.raises(MalformedMessageError, match="unknown message type 0x72"):
        parse_copy_data(standby_status_update(1, 1, 1))  # 'r' only travels client -> server


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes_only_raise_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedMessageError):
        parse_copy_data(data)


# --------------------------------------------------------------------------- LSN text form


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("16/B374D848", 0x16_B374_D848),
        ("0/1E282C8", 0x1E2_82C8),
        ("FFFFFFFF/FFFFFFFF", 0xFFFF_FFFF_FFFF_FFFF),
    ],
)
def test_lsn_known_values(text: str, value: int) -> None:
    assert str_to_lsn(text) == value
    assert lsn_to_str(value) == text


def test_lsn_parse_is_lenient_on_case_and_padding() -> None:
    assert str_to_lsn("16/b374d848") == str_to_lsn(" 00000016/B374D848\n") == 0x16_B374_D848


@pytest.mark.parametrize("text", ["", "1", "1/", "/1", "G/1", "1/2/3", "123456789/0", "0/123456789", "-1/0", "0x1/0"])
def test_bad_lsn_text_names_the_text(text: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(repr(text))):
        str_to_lsn(text)


def test_lsn_to_str_out_of_range() -> None:
    with pytest.raises(ValueError):
        lsn_to_str(-1)
    with pytest.raises(ValueError):
        lsn_to_str(1 << 64)


@given(st.integers(0, 0xFFFF_FFFF_FFFF_FFFF))
def test_lsn_round_trip(value: int) -> None:
    assert str_to_lsn(lsn_to_str(value)) == value
