"""Transaction shapes through the stream: savepoints rolled back inside a committed transaction, aborted
transactions, two-phase commit (COMMIT PREPARED and ROLLBACK PREPARED), a transaction the server spills to
disk (larger than `logical_decoding_work_mem`), and one transaction over 100 tables.

What must arrive is exactly what the source committed: the test's own SQL reads both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.anyschema import setup
from tests.anyschema.transactions_topology import PARTS
from tests.conftest import KafkaServer, PgServer

DATABASES = ("ledger_db", "parts_db")
SPILLED_ROWS = 20_000


def _assert_same(dsns: dict[str, str]) -> None:
    problems = []
    for database, tables, columns in (("ledger_db", ["ledger"], ["what", "amount"]), ("parts_db", PARTS, ["v"])):
        for table in tables:
            source = setup.text_rows(dsns[setup.SOURCE], table, columns)
            target = setup.text_rows(dsns[database], table, columns)
            problems += [f"{table}: {p}" for p in setup.differences(source, target, columns)]
    assert not problems, "\n".join(problems[:40])


def _spill_txns(dsn: str, slot: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(sum(spill_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = %s",
                           (slot,)).fetchone()
    return int(row[0]) if row else 0


def test_transaction_shapes_arrive_exactly_as_committed(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer, pg_server: PgServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = setup.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path,
                        schema="transactions.sql", topology=setup.HERE / "transactions_topology.py",
                        databases=DATABASES)
    source = env.source
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        # The walsender decodes with the database's setting: 64 kB makes the large transaction spill.
        admin.execute(f"ALTER DATABASE {psycopg.conninfo.conninfo_to_dict(source)['dbname']} "
                      "SET logical_decoding_work_mem = '64kB'")
    setup.execute(source, ["INSERT INTO ledger VALUES (1, 'opening', 100)"])
    env.start("run", "run")
    try:
        env.wait_caught_up(timeout=180)

        with psycopg.connect(source) as conn:  # savepoints: one kept, one rolled back, one released
            conn.execute("INSERT INTO ledger VALUES (2, 'kept', 1)")
            conn.execute("SAVEPOINT a")
            conn.execute("INSERT INTO ledger VALUES (3, 'rolled back', 1)")
            conn.execute("UPDATE ledger SET amount = -1 WHERE id = 1")
            conn.execute("ROLLBACK TO SAVEPOINT a")
            conn.execute("SAVEPOINT b")
            conn.execute("INSERT INTO ledger VALUES (4, 'released', 1)")
            conn.execute("RELEASE SAVEPOINT b")
        with psycopg.connect(source) as conn:  # aborted
            conn.execute("INSERT INTO ledger VALUES (5, 'aborted', 1)")
            conn.execute("DELETE FROM ledger WHERE id = 1")
            conn.rollback()
        with psycopg.connect(source, autocommit=True) as conn:  # two-phase commit
            conn.execute("BEGIN")
            conn.execute("INSERT INTO ledger VALUES (6, 'prepared, committed', 1)")
            conn.execute("PREPARE TRANSACTION 'any_schema_commit'")
            conn.execute("BEGIN")
            conn.execute("INSERT INTO ledger VALUES (7, 'prepared, rolled back', 1)")
            conn.execute("UPDATE ledger SET what = 'never' WHERE id = 2")
            conn.execute("PREPARE TRANSACTION 'any_schema_rollback'")
            conn.execute("INSERT INTO ledger VALUES (8, 'between', 1)")
            conn.execute("COMMIT PREPARED 'any_schema_commit'")
            conn.execute("ROLLBACK PREPARED 'any_schema_rollback'")
        spilled_before = _spill_txns(source, env.slot)
        with psycopg.connect(source) as conn:  # spilled by the server, with a rolled-back savepoint inside
            conn.execute(f"INSERT INTO ledger SELECT g, repeat('x', 100), g FROM generate_series(1000, "
                         f"{1000 + SPILLED_ROWS}) g")
            conn.execute("SAVEPOINT big")
            conn.execute("UPDATE ledger SET amount = 0 WHERE id >= 1000")
            conn.execute("ROLLBACK TO SAVEPOINT big")
            conn.execute("UPDATE ledger SET what = 'spilled' WHERE id % 7 = 0")
        with psycopg.connect(source) as conn:  # 100 tables in one transaction
            for name in PARTS:
                conn.execute(f"INSERT INTO {name} SELECT g, '{name}:' || g FROM generate_series(1, 5) g")
            for name in PARTS[::3]:
                conn.execute(f"DELETE FROM {name} WHERE id = 2")
        env.wait_caught_up(timeout=180)
        _assert_same(env.dsns)
        assert _spill_txns(source, env.slot) > spilled_before, "the large transaction was not spilled"
        assert env.command("verify") == 0, env.logs()
    finally:
        env.stop_all()
