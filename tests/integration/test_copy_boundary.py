"""The copy/stream boundary is exact: a transaction committed at the slot's consistent point is applied once.

A slot created with an exported snapshot streams every commit whose record starts at or after its
consistent point P; the snapshot holds exactly the transactions committed before P.  So a transaction
whose commit record starts exactly at P is not in the copy and must be applied from the stream, which a
checkpoint at P would skip (workers skip commit LSNs at or below their checkpoint).

The test hammers the source with small transactions while it creates slots, runs the real initial copy
from each slot's snapshot (which writes the service's checkpoint), and decodes the slot's first
transactions itself (pgoutput Begin messages, parsed here) to see which transaction sits at P.  Whether a
transaction is in the copy comes from the service table (each row carries the xid that wrote it).
"""

from __future__ import annotations

import itertools
import random
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from connectors.pg.source import ReplicationConnection
from splitter.core.lsn import str_to_lsn
from splitter.pipeline.config import build_settings
from splitter.pipeline.initial_copy import initial_copy, service_state
from tests import roles

MAX_ATTEMPTS = 200
ENOUGH_HITS = 5
TIME_BUDGET = 45.0  # seconds of attempts at most
WRITERS = 3


def _topology(path: Path) -> Path:
    path.write_text(
        "from splitter.topology import Service, Table, Topology\n"
        "TOPOLOGY = Topology(source_database='src', services=(Service('ticks', database='dst', tables=(\n"
        "    Table('ticks', source='ticks', key=('id',), columns={'id': 'id', 'writer_xid': 'writer_xid'}),\n"
        ")),))\n")
    return path


class Writers:
    """Threads committing one-row transactions on the source, each open for a moment before its commit.

    A transaction open while the slot-creating backend logs its running-transactions record, committing
    right after it, is what puts a commit record exactly at the consistent point.
    """

    def __init__(self, dsn: str, threads: int) -> None:
        self._dsn = dsn
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.commits = 0
        self.errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(self._dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    with self._lock:
                        row_id = next(self._ids)
                    with conn.transaction():
                        conn.execute("INSERT INTO ticks VALUES (%s, (pg_current_xact_id()::text::bigint "
                                     "& 4294967295))", (row_id,))
                        time.sleep(rng.uniform(0, 0.002))
                    self.commits += 1
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)


@dataclass(frozen=True)
class Decoded:
    xid: int
    commit_lsn: int


def _first_transactions(conn: psycopg.Connection, slot: str, publication: str) -> list[Decoded]:
    """The slot's first few transactions, from their pgoutput Begin messages ('B', final LSN, time, xid)."""
    rows = conn.execute(
        "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, 6, 'proto_version', '1', "
        "'publication_names', %s)", (slot, publication)).fetchall()
    out = []
    for (data,) in rows:
        data = bytes(data)
        if data[:1] == b"B":
            final_lsn, _ts, xid = struct.unpack(">QqI", data[1:21])
            out.append(Decoded(xid, final_lsn))
    return out


@pytest.mark.timeout(240)
def test_a_commit_at_the_consistent_point_is_copied_or_applied(
        make_databases: Callable[..., dict[str, str]], unique_name: Callable[[str], str], tmp_path: Path) -> None:
    dbs = make_databases(names=("src", "dst"))
    publication = unique_name("pub")[:63]
    with psycopg.connect(dbs["src"], autocommit=True) as conn:
        conn.execute("CREATE TABLE ticks (id bigint PRIMARY KEY, writer_xid bigint NOT NULL)")
        conn.execute(f'CREATE PUBLICATION "{publication}" FOR TABLE ticks')
    with psycopg.connect(dbs["dst"], autocommit=True) as conn:
        conn.execute("CREATE TABLE ticks (id bigint PRIMARY KEY, writer_xid bigint NOT NULL)")
    settings = roles.as_role(build_settings(
        topology_path=str(_topology(tmp_path / "topology.py")), source_dsn=dbs["src"], kafka="unused:9092",
        target_dsns={"ticks": dbs["dst"]}, publication=publication, env={}))
    [service] = settings.topology.services

    attempts = hits = 0
    lost: list[str] = []
    doubled: list[str] = []
    started = time.monotonic()
    with Writers(dbs["src"], WRITERS) as writers, \
            psycopg.connect(dbs["src"], autocommit=True) as src, psycopg.connect(dbs["dst"], autocommit=True) as dst:
        while attempts < MAX_ATTEMPTS and hits < ENOUGH_HITS and time.monotonic() - started < TIME_BUDGET:
            attempts += 1
            slot = f"boundary_{attempts}_{unique_name('')[-8:]}"
            assert service_state(settings, service) is None
            repl = ReplicationConnection(settings.source_dsn)  # what capture does, as splitter's role
            try:
                consistent, snapshot = repl.create_slot(slot)
                initial_copy(settings, snapshot, consistent, [service])
            finally:
                repl.close()
            try:
                row = dst.execute("SELECT commit_lsn::text FROM splitter.checkpoints WHERE service = 'ticks'"
                                  ).fetchone()
                assert row is not None, "the initial copy wrote no checkpoint"
                checkpoint = str_to_lsn(row[0])
                decoded = _first_transactions(src, slot, publication)
                assert decoded, "no transaction after the consistent point: are the writers running?"
                assert decoded[0].commit_lsn >= consistent
                for txn in decoded:
                    in_copy = dst.execute("SELECT count(*) FROM ticks WHERE writer_xid = %s",
                                          (txn.xid,)).fetchone() == (1,)
                    applied = txn.commit_lsn > checkpoint  # the worker's rule: commit LSN <= checkpoint is skipped
                    what = (f"attempt {attempts}: xid {txn.xid} committed at {txn.commit_lsn:X}, consistent point "
                            f"{consistent:X}, checkpoint {checkpoint:X}")
                    if txn.commit_lsn == consistent:
                        hits += 1
                    if not in_copy and not applied:
                        lost.append(what)
                    if in_copy and applied:
                        doubled.append(what)
            finally:
                src.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                dst.execute("TRUNCATE ticks")
                dst.execute("DELETE FROM splitter.checkpoints")
                src.execute("DELETE FROM ticks WHERE id < (SELECT max(id) - 200 FROM ticks)")
        assert not writers.errors, writers.errors

    print(f"\n{attempts} slot creations, {hits} with a commit exactly at the consistent point, "
          f"{writers.commits} source commits, {time.monotonic() - started:.1f}s")
    assert not lost, f"transactions neither copied nor applied ({hits} boundary hits in {attempts} attempts): {lost}"
    assert not doubled, f"transactions both copied and applied: {doubled}"
    assert hits > 0, f"no commit landed exactly at the consistent point in {attempts} attempts: the test proves nothing"
