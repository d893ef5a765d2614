"""Changes while streaming, on one pipeline: TRUNCATE of several tables in one statement (of two services, with
rows written after it in the same and the next transaction), TRUNCATE of a partitioned table published through
its root (and of one of its partitions, which PostgreSQL does not publish), updates and deletes under replica
identity DEFAULT and FULL (key changes, unchanged TOASTed values, the identity switched while streaming), and a
subscriber whose table has columns of its own.

Every expected value comes from the test's own SQL on the source (`setup.text_rows`); the subscriber's own
columns must hold their defaults, or what the service wrote into them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from splitter.core.exit_codes import DIFFERENT, OK
from splitter.ops.plan import WARNING, build_plan
from tests.anyschema import setup
from tests.conftest import KafkaServer

DATABASES = ("truncated_db", "other_db", "identity_db", "subscriber_db")
#: (database, table, key, columns compared)
TABLES = (
    ("truncated_db", "trunc_a", "id", ["v"]),
    ("truncated_db", "trunc_b", "id", ["a_id", "v"]),
    ("truncated_db", "events", "id", ["region", "payload"]),
    ("other_db", "trunc_c", "id", ["v"]),
    ("identity_db", "ri_default", "id", ["v", "n", "big"]),
    ("identity_db", "ri_full", "id", ["v", "n", "big"]),
    ("subscriber_db", "subscribed", "id", ["name", "qty", "big"]),
)
#: 128 kB that compresses badly: stored out of line, so an update of other columns leaves it unchanged-TOAST.
BIG = "(SELECT string_agg(md5(g::text || {seed}), '') FROM generate_series(1, 4000) g)"
#: The subscriber's columns of its own, as its defaults fill them (streaming_target.sql).
OWN_DEFAULTS = ("new", "2000-01-01 00:00:00+00", "7", None)


def _assert_same(dsns: dict[str, str], only: str | None = None) -> None:
    problems = []
    for database, table, key, columns in TABLES:
        if only is not None and table != only:
            continue
        source = setup.text_rows(dsns[setup.SOURCE], table, columns, key)
        target = setup.text_rows(dsns[database], table, columns, key)
        problems += [f"{database}.{table}: {p}" for p in setup.differences(source, target, columns)]
    assert not problems, "\n".join(problems[:40])


def _rows(dsn: str, query: str) -> list[tuple[str | None, ...]]:
    """`query`'s rows in the server's own text (READ_OPTIONS), not psycopg's parse of it."""
    with psycopg.connect(dsn, options=setup.READ_OPTIONS) as conn:
        result = conn.pgconn.exec_(query.encode())
        assert result.status == psycopg.pq.ExecStatus.TUPLES_OK, result.get_error_message()
        return [tuple(None if (v := result.get_value(r, c)) is None else v.decode() for c in range(result.nfields))
                for r in range(result.ntuples)]


def _local_ids(dsn: str) -> dict[str | None, str | None]:
    """The subscriber's own identity value of each row, by id."""
    return {row[0]: row[1] for row in _rows(dsn, "SELECT id, local_id FROM subscribed")}


def _initial() -> list[str]:
    return [
        "INSERT INTO trunc_a (v) SELECT 'a' || g FROM generate_series(1, 3) g",
        "INSERT INTO trunc_b SELECT g, g, 'b' || g FROM generate_series(1, 3) g",
        "INSERT INTO trunc_c SELECT g, 'c' || g FROM generate_series(1, 2) g",
        "INSERT INTO events VALUES ('eu', 1, 'e1'), ('us', 2, 'u2'), ('mars', 3, 'm3'), ('eu', 4, 'e4')",
        *(f"INSERT INTO {t} SELECT g, 'v' || g, g * 1.5, {BIG.format(seed='g')} FROM generate_series(1, 8) g"
          for t in ("ri_default", "ri_full")),
        f"INSERT INTO subscribed SELECT g, 'n' || g, g, {BIG.format(seed='g')} FROM generate_series(1, 4) g",
    ]


def _truncates(source: str) -> None:
    # One statement over three tables of two services, between writes of the same transaction; RESTART
    # IDENTITY gives trunc_a's ids 1, 2, ... again, which the service must take as new rows.
    setup.execute(source, [
        "INSERT INTO trunc_a (v) VALUES ('before the truncate')",
        "UPDATE trunc_b SET v = 'updated before the truncate' WHERE id = 1",
        "TRUNCATE trunc_a, trunc_b, trunc_c RESTART IDENTITY",
        "INSERT INTO trunc_a (v) VALUES ('after, same transaction'), ('second after')",
        "INSERT INTO trunc_b VALUES (10, 1, 'after, same transaction')",
    ])
    setup.execute(source, ["INSERT INTO trunc_b VALUES (11, 2, 'next transaction')",
                           "INSERT INTO trunc_c VALUES (1, 'next transaction')"])
    # The partitioned table, by its root: every partition is emptied; rows after it land in the service.
    setup.execute(source, [
        "UPDATE events SET region = 'us' WHERE id = 1",
        "TRUNCATE events",
        "INSERT INTO events VALUES ('eu', 10, 'after, same transaction'), ('mars', 11, 'after')",
    ])
    setup.execute(source, ["INSERT INTO events VALUES ('us', 12, 'next transaction'), ('eu', 13, 'e13')"])


def _identity_changes(table: str) -> list[list[str]]:
    """The same changes for either replica identity: each inner list one transaction."""
    return [
        [f"UPDATE {table} SET v = 'only v' WHERE id = 1"],  # big: unchanged TOAST
        [f"UPDATE {table} SET id = 102 WHERE id = 2"],  # the key changes, big unchanged
        [f"UPDATE {table} SET id = 103, v = NULL, big = 'small now' WHERE id = 3"],
        [f"DELETE FROM {table} WHERE id = 4"],
        # A key moved twice and taken again by a new row, in one transaction.
        [f"UPDATE {table} SET id = 105 WHERE id = 5", f"UPDATE {table} SET id = 205, n = -0.0 WHERE id = 105",
         f"INSERT INTO {table} VALUES (5, 'new row on an old key', NULL, NULL)"],
        [f"UPDATE {table} SET id = id + 1000 WHERE id > 100"],  # several rows' keys in one statement
        [f"UPDATE {table} SET n = NULL WHERE id = 6", f"DELETE FROM {table} WHERE id = 7"],
        [f"UPDATE {table} SET big = big || 'x', v = 'big changed' WHERE id = 8"],
    ]


def test_truncates_replica_identities_and_a_subscriber_of_its_own_shape_while_streaming(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = setup.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path,
                        schema="streaming.sql", target_schema="streaming_target.sql",
                        topology=setup.HERE / "streaming_topology.py", databases=DATABASES)
    source, subscriber = env.source, env.dsns["subscriber_db"]
    setup.execute(source, _initial())
    # plan says before data moves that a TRUNCATE of one partition alone will not reach the service.
    partitioned = [(f.code, f.table) for f in build_plan(env.settings()).findings if f.severity == WARNING
                   and "partition" in f.code]
    assert partitioned == [("partition-truncate-not-sent", "public.events")], partitioned
    env.start("run", "run")
    try:
        env.wait_caught_up(timeout=180)
        _assert_same(env.dsns)
        own = "SELECT id, status, seen_at, counter, note FROM subscribed ORDER BY id"
        assert _rows(subscriber, own) == [(str(i), *OWN_DEFAULTS) for i in range(1, 5)]
        local_ids = _local_ids(subscriber)
        assert len(set(local_ids.values())) == 4 and None not in local_ids.values()
        # The service writes its own columns; the stream must leave them alone.
        setup.execute(subscriber, ["UPDATE subscribed SET status = 'seen', note = 'by the service' WHERE id = 1"])

        _truncates(source)
        for table in ("ri_default", "ri_full"):
            for transaction in _identity_changes(table):
                setup.execute(source, transaction)
        setup.execute(source, [
            "UPDATE subscribed SET name = 'renamed', qty = qty + 1 WHERE id = 1",  # big: unchanged TOAST
            "UPDATE subscribed SET big = 'small' WHERE id = 2",
            "DELETE FROM subscribed WHERE id = 3",
            f"INSERT INTO subscribed VALUES (5, 'streamed', 5, {BIG.format(seed=5)}), (3, 'again', 3, NULL)",
        ])
        env.wait_caught_up(timeout=180)
        _assert_same(env.dsns)
        assert _rows(env.dsns["truncated_db"], "SELECT id, v FROM trunc_a ORDER BY id") == [
            ("1", "after, same transaction"), ("2", "second after")]
        assert _rows(env.dsns["other_db"], "SELECT id, v FROM trunc_c") == [("1", "next transaction")]
        assert _rows(env.dsns["truncated_db"], "SELECT id FROM events ORDER BY id") == [
            ("10",), ("11",), ("12",), ("13",)]

        # Replica identities switched while streaming: DEFAULT becomes FULL and FULL becomes DEFAULT.
        setup.execute(source, ["ALTER TABLE ri_default REPLICA IDENTITY FULL",
                               "ALTER TABLE ri_full REPLICA IDENTITY DEFAULT"])
        for table in ("ri_default", "ri_full"):
            setup.execute(source, [f"UPDATE {table} SET id = id + 10, v = 'after the switch' WHERE id = 1",
                                   f"UPDATE {table} SET n = 42 WHERE id = 6",
                                   f"DELETE FROM {table} WHERE id = 8"])
        env.wait_caught_up(timeout=180)
        _assert_same(env.dsns)

        # The subscriber's own columns: defaults on every row the stream created, the service's own values
        # kept through the source's updates, and each row's own identity value kept while it exists.
        assert _rows(subscriber, own) == [
            ("1", "seen", "2000-01-01 00:00:00+00", "7", "by the service"),
            *((str(i), *OWN_DEFAULTS) for i in (2, 3, 4, 5))]
        after = _local_ids(subscriber)
        assert {k: after[k] for k in ("1", "2", "4")} == {k: local_ids[k] for k in ("1", "2", "4")}
        assert len(set(after.values())) == 5 and None not in after.values()
        assert env.command("verify") == OK, env.logs()

        # TRUNCATE of one partition: with publish_via_partition_root PostgreSQL publishes nothing for it
        # (pgoutput leaves out a partition's truncate when the root is what is published), so the service keeps
        # the rows; verify reports them, and a backfill removes them.
        setup.execute(source, ["TRUNCATE events_eu", "INSERT INTO events VALUES ('us', 20, 'after a partition')"])
        env.wait_caught_up(timeout=120)
        assert _rows(env.dsns["truncated_db"], "SELECT id FROM events WHERE region = 'eu' ORDER BY id") == [
            ("10",), ("13",)]
        assert env.command("verify", "--service", "truncated") == DIFFERENT, env.logs()
        assert env.command("backfill", "--service", "truncated", "--table", "events") == OK, env.logs()
        env.wait_caught_up(timeout=120)
        _assert_same(env.dsns, only="events")
        assert env.command("verify", "--service", "truncated") == OK, env.logs()
    finally:
        env.stop_all()
