"""Tests of connectors.pgoutput on bytes captured from PostgreSQL 18 (see capture_pgoutput.py).

The fixtures' workloads are described in each file's header.  Tests assert on values the workload
fixed (text, order of messages, flags) and on relations between LSNs and xids, never on absolute
OIDs/LSNs, so re-capturing keeps them valid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.pg.pgoutput.decoder import PgOutputDecoder, decode_message
from connectors.pg.pgoutput.messages import (
    PG_EPOCH_UNIX_MS,
    UNCHANGED_TOAST,
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
    RollbackPrepared,
    StreamAbort,
    StreamCommit,
    StreamPrepare,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    UnchangedToast,
    Update,
    pg_time_to_unix_ms,
)
from splitter.core.errors import MalformedMessageError

DATA = Path(__file__).parent / "data"
BIG = "toast-me-" * 400
M = TypeVar("M", bound=Message)


def load(name: str) -> list[bytes]:
    """Messages of a fixture file: one hex message per line, ``#`` starts a comment."""
    lines = (line.split("#", 1)[0].strip() for line in (DATA / name).read_text().splitlines())
    return [bytes.fromhex(line) for line in lines if line]


def decode_all(raw: list[bytes]) -> list[Message]:
    decoder = PgOutputDecoder()
    messages = [decoder.decode(m) for m in raw]
    assert not decoder.in_stream
    return messages


def names(messages: list[Message]) -> list[str]:
    return [type(m).__name__ for m in messages]


def one(messages: list[Message], kind: type[M], index: int = 0) -> M:
    """The ``index``-th message of type ``kind``."""
    return [m for m in messages if isinstance(m, kind)][index]


@pytest.fixture(scope="module")
def v1() -> list[Message]:
    return decode_all(load("pgoutput_v1.txt"))


@pytest.fixture(scope="module")
def v1_binary() -> list[Message]:
    return decode_all(load("pgoutput_v1_binary.txt"))


# --------------------------------------------------------------------------- protocol 1


V1_ORDER = [
    "Begin", "Type", "Relation", "Insert", "Commit",          # all types, TOAST
    "Begin", "Insert", "Commit",                              # NULLs, empty strings
    "Begin", "Update", "Commit",                              # unchanged TOAST
    "Begin", "Update", "Commit",                              # PK change
    "Begin", "Relation", "Insert", "Update", "Delete", "Commit",  # replica identity full
    "Begin", "Delete", "Commit",                              # delete, default identity
    "LogicalMessage", "Begin", "LogicalMessage", "Commit",    # non-transactional comes first
    "Begin", "Relation", "Insert", "Relation", "Insert", "Relation", "Truncate", "Commit",
    "Begin", "Relation", "Relation", "Truncate", "Commit",
    "Begin", "Origin", "Relation", "Insert", "Commit",
]  # fmt: skip


def test_v1_message_order(v1: list[Message]) -> None:
    assert names(v1) == V1_ORDER


def test_v1_decode_message_matches_decoder(v1: list[Message]) -> None:
    assert [decode_message(m) for m in load("pgoutput_v1.txt")] == v1


def test_relation_columns_types_and_key_flags(v1: list[Message]) -> None:
    rel = one(v1, Relation)
    assert isinstance(rel, Relation)
    assert (rel.namespace, rel.name, rel.replica_identity, rel.xid) == ("public", "everything", "d", None)
    assert [(c.name, c.is_key) for c in rel.columns] == [
        ("id", True), ("name", False), ("label", False), ("amount", False), ("created_at", False),
        ("active", False), ("feeling", False), ("blob", False), ("big", False),
    ]  # fmt: skip
    typ = one(v1, Type)
    assert isinstance(typ, Type)
    assert (typ.namespace, typ.name) == ("public", "mood")
    by_name = {c.name: c for c in rel.columns}
    # Built-in type OIDs are fixed; the enum's comes from the Type message sent just before.
    assert {n: c.type_oid for n, c in by_name.items() if n != "feeling"} == {
        "id": 23, "name": 25, "label": 1043, "amount": 1700, "created_at": 1114, "active": 16,
        "blob": 17, "big": 25,
    }  # fmt: skip
    assert by_name["feeling"].type_oid == typ.oid
    assert by_name["label"].type_modifier == 20 + 4  # varchar(20): length plus VARHDRSZ
    assert by_name["amount"].type_modifier == ((12 << 16) | 4) + 4  # numeric(12,4)
    assert by_name["created_at"].type_modifier == 3
    assert by_name["id"].type_modifier == -1


def test_insert_text_values_unicode_and_toast(v1: list[Message]) -> None:
    rel, ins = one(v1, Relation), one(v1, Insert)
    assert isinstance(rel, Relation) and isinstance(ins, Insert)
    assert ins.relation_oid == rel.oid
    assert ins.new == (
        "1", "héllo wörld 🎉 日本語", "short", "12345.6789", "2024-02-29 13:14:15.123", "t", "happy",
        "\\x00ff10", BIG,
    )  # fmt: skip


def test_nulls_and_empty_strings(v1: list[Message]) -> None:
    ins = one(v1, Insert, 1)
    assert isinstance(ins, Insert)
    assert ins.new == ("2", "", "", None, None, None, None, None, None)


def test_unchanged_toast_is_a_sentinel_not_null(v1: list[Message]) -> None:
    upd = one(v1, Update)
    assert isinstance(upd, Update)
    assert (upd.old, upd.old_kind) == (None, None)
    assert upd.new[:2] == ("1", "renamed")
    assert upd.new[-1] is UNCHANGED_TOAST
    assert upd.new[-1] is not None
    assert repr(UNCHANGED_TOAST) == "UNCHANGED_TOAST"
    assert isinstance(UNCHANGED_TOAST, UnchangedToast)


def test_primary_key_change_sends_old_key(v1: list[Message]) -> None:
    upd = one(v1, Update, 1)
    assert isinstance(upd, Update)
    assert upd.old_kind == "K"
    # The old key tuple has every column; the non-key ones are sent as 'n'.
    assert upd.old == ("2", None, None, None, None, None, None, None, None)
    assert upd.new == ("3", "", "", None, None, None, None, None, None)


def test_replica_identity_full_sends_old_row(v1: list[Message]) -> None:
    rel = one(v1, Relation, 1)
    assert isinstance(rel, Relation)
    assert (rel.name, rel.replica_identity) == ("full_ident", "f")
    assert all(c.is_key for c in rel.columns)  # with FULL, every column is flagged as key
    upd, dele = one(v1, Update, 2), one(v1, Delete)
    assert upd == Update(rel.oid, ("1", "first"), "O", ("1", "second"))
    assert dele == Delete(rel.oid, ("1", "second"), "O")


def test_delete_default_identity_sends_key(v1: list[Message]) -> None:
    dele = one(v1, Delete, 1)
    assert isinstance(dele, Delete)
    assert (dele.old_kind, dele.old) == ("K", ("3", None, None, None, None, None, None, None, None))


def test_logical_messages(v1: list[Message]) -> None:
    raw, txn = one(v1, LogicalMessage), one(v1, LogicalMessage, 1)
    assert raw == LogicalMessage(False, raw.lsn, "splitter.raw", b"\x00\xff")
    assert txn == LogicalMessage(True, txn.lsn, "splitter", b"in a transaction")
    assert isinstance(raw.content, bytes)


def test_truncate_options(v1: list[Message]) -> None:
    plain, cascade = one(v1, Truncate), one(v1, Truncate, 1)
    assert isinstance(plain, Truncate) and isinstance(cascade, Truncate)
    rels = {m.oid: m.name for m in v1 if isinstance(m, Relation)}
    assert (plain.cascade, plain.restart_identity) == (False, False)
    assert [rels[o] for o in plain.relation_oids] == ["full_ident"]
    assert (cascade.cascade, cascade.restart_identity) == (True, True)
    assert sorted(rels[o] for o in cascade.relation_oids) == ["child", "parent"]


def test_origin_message(v1: list[Message]) -> None:
    begin, origin = v1[-5], v1[-4]
    assert isinstance(begin, Begin) and isinstance(origin, Origin)
    assert origin == Origin(0xAB12CD34, "splitter_test_origin")
    # The origin's commit timestamp (pg_replication_origin_xact_setup) becomes the commit time.
    assert begin.commit_time_unix_ms == 1_704_067_200_000  # 2024-01-01T00:00:00Z


def test_transaction_lsns_are_consistent(v1: list[Message]) -> None:
    begins = [m for m in v1 if isinstance(m, Begin)]
    commits = [m for m in v1 if isinstance(m, Commit)]
    assert len(begins) == len(commits) == 10
    for begin, commit in zip(begins, commits, strict=True):
        assert commit.commit_lsn == begin.final_lsn
        assert commit.commit_time == begin.commit_time
        assert commit.end_lsn > commit.commit_lsn
        assert commit.flags == 0
    assert [b.final_lsn for b in begins] == sorted(b.final_lsn for b in begins)
    assert len({b.xid for b in begins}) == len(begins)


def test_changes_refer_to_announced_relations(v1: list[Message]) -> None:
    seen: set[int] = set()
    for m in v1:
        if isinstance(m, Relation):
            seen.add(m.oid)
        elif isinstance(m, Insert | Update | Delete):
            assert m.relation_oid in seen
        elif isinstance(m, Truncate):
            assert set(m.relation_oids) <= seen


def test_binary_mode_values(v1: list[Message], v1_binary: list[Message]) -> None:
    assert names(v1_binary) == names(v1)
    ins = one(v1_binary, Insert)
    assert isinstance(ins, Insert)
    new = ins.new
    assert new[0] == struct.pack(">i", 1)
    assert new[1] == "héllo wörld 🎉 日本語".encode()
    assert new[5] == b"\x01"
    assert new[6] == b"happy"  # enums are sent as their label even in binary mode
    assert new[7] == b"\x00\xff\x10"
    assert new[8] == BIG.encode()
    # timestamp: int64 microseconds since 2000-01-01
    (us,) = struct.unpack(">q", new[4])  # type: ignore[arg-type]
    assert pg_time_to_unix_ms(us) == 1_709_212_455_123  # 2024-02-29T13:14:15.123Z
    upd = one(v1_binary, Update)
    assert isinstance(upd, Update) and upd.new[-1] is UNCHANGED_TOAST
    empty = one(v1_binary, Insert, 1)
    assert isinstance(empty, Insert) and empty.new[1:4] == (b"", b"", None)


def test_pg_time_conversion() -> None:
    assert pg_time_to_unix_ms(0) == PG_EPOCH_UNIX_MS
    assert pg_time_to_unix_ms(1_500) == PG_EPOCH_UNIX_MS + 1
    assert pg_time_to_unix_ms(-1) == PG_EPOCH_UNIX_MS - 1


# --------------------------------------------------------------------------- streaming (v2, v4)


@pytest.fixture(scope="module", params=["pgoutput_stream_v2.txt", "pgoutput_stream_v4.txt"])
def stream(request: pytest.FixtureRequest) -> tuple[str, list[Message]]:
    return request.param, decode_all(load(request.param))


def collapse(messages: list[Message]) -> list[str]:
    """Message names with runs of Inserts folded into one entry."""
    out: list[str] = []
    for name in names(messages):
        if not (name == "Insert" and out and out[-1] == "Insert*"):
            out.append("Insert*" if name == "Insert" else name)
    return out


STREAM_ORDER = [
    "StreamStart", "Relation", "Insert*", "StreamStop", "StreamStart", "Insert*", "StreamStop",
    "StreamCommit",                                                      # txn 1
    "StreamStart", "Relation", "Insert*", "StreamStop", "StreamAbort",   # txn 2: subxact aborted
    "StreamStart", "Relation", "Insert*", "StreamStop", "StreamCommit",
    "StreamStart", "Relation", "Insert*", "StreamStop",                  # txn 3, open
    "LogicalMessage", "StreamAbort",                                     # ...then rolled back
    "Begin", "Insert*", "Commit",                                        # txn 4, small
    "StreamStart", "Relation", "Insert*", "StreamStop", "StreamStart", "Insert*", "StreamStop",
    "StreamCommit",                                                      # txn 5, prepared + committed
    "Begin", "LogicalMessage", "Commit",                                 # end marker
]  # fmt: skip


def stream_blocks(messages: list[Message]) -> list[tuple[StreamStart, list[Message]]]:
    blocks: list[tuple[StreamStart, list[Message]]] = []
    current: list[Message] | None = None
    for m in messages:
        if isinstance(m, StreamStart):
            current = []
            blocks.append((m, current))
        elif isinstance(m, StreamStop):
            current = None
        elif current is not None:
            current.append(m)
    return blocks


def ids(messages: list[Message], xid: int | None = None) -> list[int]:
    return [
        int(m.new[0])  # type: ignore[arg-type]
        for m in messages
        if isinstance(m, Insert) and (xid is None or m.xid == xid)
    ]


def test_stream_message_order(stream: tuple[str, list[Message]]) -> None:
    assert collapse(stream[1]) == STREAM_ORDER


def test_stream_changes_carry_xid_only_inside_blocks(stream: tuple[str, list[Message]]) -> None:
    inside = False
    for m in stream[1]:
        if isinstance(m, StreamStart | StreamStop):
            inside = isinstance(m, StreamStart)
        elif isinstance(m, Insert | Relation):
            assert (m.xid is not None) == inside
        elif isinstance(m, LogicalMessage):
            assert m.xid is None


def test_stream_first_segment_flag(stream: tuple[str, list[Message]]) -> None:
    seen: set[int] = set()
    for start, changes in stream_blocks(stream[1]):
        assert start.first_segment == (start.xid not in seen)
        seen.add(start.xid)
        # A change inside a block belongs to the block's transaction or one of its subtransactions.
        assert all(getattr(c, "xid", None) is not None for c in changes)


def test_streamed_commit(stream: tuple[str, list[Message]]) -> None:
    messages = stream[1]
    commit = one(messages, StreamCommit)
    assert isinstance(commit, StreamCommit)
    assert ids(messages, commit.xid) == list(range(1, 601))
    assert commit.end_lsn > commit.commit_lsn
    assert commit.commit_time_unix_ms > PG_EPOCH_UNIX_MS


def test_streamed_subtransaction_abort(stream: tuple[str, list[Message]]) -> None:
    name, messages = stream
    sub_abort = one(messages, StreamAbort)
    assert isinstance(sub_abort, StreamAbort)
    assert sub_abort.subxid != sub_abort.xid
    # The rows inserted after SAVEPOINT carry the subtransaction's xid; the others the top level's.
    sub_ids = ids(messages, sub_abort.subxid)
    assert sub_ids and all(20_001 <= i <= 20_300 for i in sub_ids)
    top_ids = ids(messages, sub_abort.xid)
    assert top_ids == list(range(10_001, 10_301)) + list(range(30_001, 30_101))
    commit = one(messages, StreamCommit, 1)
    assert isinstance(commit, StreamCommit) and commit.xid == sub_abort.xid
    if name.endswith("v4.txt"):
        assert sub_abort.abort_lsn is not None and sub_abort.abort_time is not None
        assert sub_abort.abort_lsn < commit.commit_lsn
        assert sub_abort.abort_time <= commit.commit_time
    else:
        assert (sub_abort.abort_lsn, sub_abort.abort_time) == (None, None)


def test_streamed_toplevel_abort(stream: tuple[str, list[Message]]) -> None:
    name, messages = stream
    abort = one(messages, StreamAbort, 1)
    assert isinstance(abort, StreamAbort)
    assert abort.subxid == abort.xid
    assert ids(messages, abort.xid) and all(40_001 <= i <= 40_600 for i in ids(messages, abort.xid))
    flush = one(messages, LogicalMessage)
    assert flush == LogicalMessage(False, flush.lsn, "splitter", b"flush")
    if name.endswith("v4.txt"):
        assert abort.abort_lsn is not None and abort.abort_lsn > flush.lsn


def test_small_transaction_is_not_streamed(stream: tuple[str, list[Message]]) -> None:
    messages = stream[1]
    begin = one(messages, Begin)
    index = messages.index(begin)
    ins, commit = messages[index + 1], messages[index + 2]
    assert isinstance(begin, Begin) and isinstance(ins, Insert) and isinstance(commit, Commit)
    assert ins.new == ("0", "small") and ins.xid is None
    assert commit.commit_lsn == begin.final_lsn


# --------------------------------------------------------------------------- two-phase (v3)


@pytest.fixture(scope="module")
def twophase() -> list[Message]:
    return decode_all(load("pgoutput_twophase_v3.txt"))


def test_twophase_order(twophase: list[Message]) -> None:
    expected = [
        *STREAM_ORDER[:-11],
        "StreamStart", "Relation", "Insert*", "StreamStop", "StreamStart", "Insert*", "StreamStop",
        "StreamPrepare", "CommitPrepared",
        "BeginPrepare", "Insert*", "Prepare", "RollbackPrepared",
        "Begin", "LogicalMessage", "Commit",
    ]  # fmt: skip
    assert collapse(twophase) == expected


def test_streamed_prepare_then_commit_prepared(twophase: list[Message]) -> None:
    prep, done = one(twophase, StreamPrepare), one(twophase, CommitPrepared)
    assert isinstance(prep, StreamPrepare) and isinstance(done, CommitPrepared)
    assert (prep.gid, done.gid) == ("gid_big", "gid_big")
    assert prep.xid == done.xid
    assert ids(twophase, prep.xid) == list(range(50_001, 50_601))
    assert prep.end_lsn > prep.prepare_lsn
    assert done.commit_lsn >= prep.end_lsn and done.end_lsn > done.commit_lsn
    assert done.commit_time >= prep.prepare_time


def test_prepare_then_rollback_prepared(twophase: list[Message]) -> None:
    begin, prep, rollback = one(twophase, BeginPrepare), one(twophase, Prepare), one(twophase, RollbackPrepared)
    assert isinstance(begin, BeginPrepare) and isinstance(prep, Prepare)
    assert isinstance(rollback, RollbackPrepared)
    assert begin.gid == prep.gid == rollback.gid == "gid_small"
    assert begin.xid == prep.xid == rollback.xid
    assert (begin.prepare_lsn, begin.end_lsn, begin.prepare_time) == (
        prep.prepare_lsn, prep.end_lsn, prep.prepare_time,
    )  # fmt: skip
    assert rollback.prepare_end_lsn == prep.end_lsn
    assert rollback.prepare_time == prep.prepare_time
    assert rollback.rollback_end_lsn > rollback.prepare_end_lsn
    assert rollback.rollback_time >= rollback.prepare_time
    ins = twophase[twophase.index(begin) + 1]
    assert isinstance(ins, Insert) and ins.new == ("-1", "prepared")


# --------------------------------------------------------------------------- stream state


def test_stream_state_violations() -> None:
    start = struct.pack(">cIB", b"S", 1234, 1)
    decoder = PgOutputDecoder()
    with pytest.raises(MalformedMessageError, match="StreamStop"):
        decoder.decode(b"E")
    decoder.decode(start)
    assert decoder.in_stream
    with pytest.raises(MalformedMessageError, match="already open"):
        decoder.decode(start)
    assert decoder.decode(b"E") == StreamStop()
    assert not decoder.in_stream


def test_decoder_accepts_memoryview_and_bytearray() -> None:
    raw = load("pgoutput_v1.txt")[3]
    expected = decode_message(raw)
    assert PgOutputDecoder().decode(memoryview(raw)) == expected
    assert decode_message(bytearray(raw)) == expected
    assert decode_message(memoryview(b"xx" + raw)[2:]) == expected


# --------------------------------------------------------------------------- malformed input


def samples() -> list[tuple[str, bytes, bool]]:
    """One real message of each type: (name, bytes, needs an open stream block)."""
    out: dict[str, tuple[str, bytes, bool]] = {}
    for name in ("pgoutput_v1.txt", "pgoutput_twophase_v3.txt", "pgoutput_stream_v4.txt"):
        decoder = PgOutputDecoder()
        for raw in load(name):
            in_stream = decoder.in_stream
            kind = type(decoder.decode(raw)).__name__
            key = f"{kind}{'-streamed' if in_stream and kind != 'StreamStop' else ''}"
            if kind == "Update":  # keep each Update shape: plain ('N'), 'K' and 'O'
                key += chr(raw[9 if in_stream else 5])
            if kind == "StreamAbort":  # with and without the v4 abort LSN and time
                key += str(len(raw))
            # The TOASTed insert is 3.6kB; its prefixes are covered by the smaller Inserts.
            if len(raw) < 1000:
                out.setdefault(key, (f"{key}@{name}", raw, in_stream))
    return list(out.values())


SAMPLES = samples()


def decoder_for(in_stream: bool) -> PgOutputDecoder:
    decoder = PgOutputDecoder()
    if in_stream:
        decoder.decode(struct.pack(">cIB", b"S", 1, 1))
    return decoder


def test_samples_cover_every_message_type() -> None:
    kinds = {type(decoder_for(in_stream).decode(raw)).__name__ for _, raw, in_stream in SAMPLES}
    assert kinds >= {
        "Begin", "Commit", "Origin", "Relation", "Type", "Insert", "Update", "Delete", "Truncate",
        "LogicalMessage", "StreamStart", "StreamStop", "StreamCommit", "StreamAbort", "BeginPrepare",
        "Prepare", "CommitPrepared", "RollbackPrepared", "StreamPrepare",
    }  # fmt: skip


@pytest.mark.parametrize(("name", "raw", "in_stream"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_every_truncation_raises_malformed(name: str, raw: bytes, in_stream: bool) -> None:
    decoder = decoder_for(in_stream)
    for size in range(len(raw)):
        if name.startswith("StreamAbort") and size == 9:
            continue  # the first 9 bytes of a v4 StreamAbort are a complete v2 StreamAbort
        with pytest.raises(MalformedMessageError):
            decoder.decode(raw[:size])
        assert decoder.in_stream == in_stream


@pytest.mark.parametrize(("name", "raw", "in_stream"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_trailing_garbage_raises_malformed(name: str, raw: bytes, in_stream: bool) -> None:
    decoder = decoder_for(in_stream)
    for tail in (b"\x00", b"garbage"):
        with pytest.raises(MalformedMessageError, match="trailing"):
            decoder.decode(raw + tail)


def test_unknown_message_type() -> None:
    known = set(b"BCORYIUDTMSEcAbPKrp")
    for byte in range(256):
        if byte not in known:
            with pytest.raises(MalformedMessageError, match="unknown message type"):
                decode_message(bytes([byte]) + b"\x00" * 16)
    with pytest.raises(MalformedMessageError, match="empty"):
        decode_message(b"")


def insert(*columns: bytes) -> bytes:
    return b"I" + struct.pack(">I", 16384) + b"N" + struct.pack(">h", len(columns)) + b"".join(columns)


def text(value: bytes) -> bytes:
    return b"t" + struct.pack(">i", len(value)) + value


def test_hand_built_insert_round_trip() -> None:
    msg = insert(text(b"a"), b"n", b"u", b"b" + struct.pack(">i", 2) + b"\x00\x01", text(b""))
    assert decode_message(msg) == Insert(16384, ("a", None, UNCHANGED_TOAST, b"\x00\x01", ""))


def test_unknown_tuple_kind() -> None:
    with pytest.raises(MalformedMessageError, match=r"unknown tuple column kind 0x78 at byte offset 14"):
        decode_message(insert(text(b"a"), b"x"))


def test_bad_utf8_in_text_value() -> None:
    with pytest.raises(MalformedMessageError, match="UTF-8"):
        decode_message(insert(text(b"ok\xff")))
    # ...but the same bytes in binary format are fine.
    assert decode_message(insert(b"b" + struct.pack(">i", 3) + b"ok\xff")) == Insert(16384, (b"ok\xff",))


def test_bad_utf8_in_relation_name() -> None:
    rel = b"R" + struct.pack(">I", 1) + b"public\x00bad\xc3\x00d" + struct.pack(">h", 0)
    with pytest.raises(MalformedMessageError, match=r"Relation.*UTF-8"):
        decode_message(rel)


def test_negative_lengths() -> None:
    with pytest.raises(MalformedMessageError, match="negative column value length"):
        decode_message(insert(b"t" + struct.pack(">i", -1)))
    with pytest.raises(MalformedMessageError, match="negative tuple column count"):
        decode_message(b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", -1))
    with pytest.raises(MalformedMessageError, match="negative relation count"):
        decode_message(b"T" + struct.pack(">iB", -1, 0))
    with pytest.raises(MalformedMessageError, match="negative content length"):
        decode_message(b"M" + struct.pack(">BQ", 1, 5) + b"p\x00" + struct.pack(">i", -3))
    rel = b"R" + struct.pack(">I", 1) + b"s\x00t\x00d" + struct.pack(">h", -2)
    with pytest.raises(MalformedMessageError, match="negative column count"):
        decode_message(rel)


def test_bad_tuple_markers() -> None:
    with pytest.raises(MalformedMessageError, match="new-tuple marker"):
        decode_message(b"I" + struct.pack(">I", 1) + b"K" + struct.pack(">h", 0))
    with pytest.raises(MalformedMessageError, match="'K', 'O' or 'N'"):
        decode_message(b"U" + struct.pack(">I", 1) + b"X" + struct.pack(">h", 0))
    with pytest.raises(MalformedMessageError, match="'K' or 'O'"):
        decode_message(b"D" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 0))


def test_error_names_message_type_and_offset() -> None:
    raw = load("pgoutput_v1.txt")[0]  # Begin
    with pytest.raises(MalformedMessageError, match=r"pgoutput Begin message: truncated .* offset 1"):
        decode_message(raw[:10])


# --------------------------------------------------------------------------- property tests

TYPE_BYTES = st.sampled_from(sorted(set(b"BCORYIUDTMSEcAbPKrp")))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedMessageError):
        decode_message(data)


@settings(max_examples=3000, deadline=None)
@given(TYPE_BYTES, st.binary(max_size=80), st.booleans())
def test_random_bodies_only_raise_malformed(type_byte: int, body: bytes, in_stream: bool) -> None:
    with contextlib.suppress(MalformedMessageError):
        decoder_for(in_stream).decode(bytes([type_byte]) + body)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_real_messages_only_raise_malformed(sample: tuple[str, bytes, bool], data: st.DataObject) -> None:
    _, raw, in_stream = sample
    position = data.draw(st.integers(0, len(raw) - 1))
    value = data.draw(st.integers(0, 255))
    mutated = raw[:position] + bytes([value]) + raw[position + 1 :]
    with contextlib.suppress(MalformedMessageError):
        decoder_for(in_stream).decode(mutated)


def test_row_changes_are_ordinary_frozen_dataclasses(v1: list[Message]) -> None:
    """The decoder builds I/U/D through slot setters for speed; they must match the real constructor."""
    for m in v1:
        if isinstance(m, Insert | Update | Delete):
            fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
            rebuilt = type(m)(**fields)
            assert rebuilt == m and hash(rebuilt) == hash(m) and repr(rebuilt) == repr(m)
            with pytest.raises(dataclasses.FrozenInstanceError):
                m.xid = 1  # type: ignore[misc]
