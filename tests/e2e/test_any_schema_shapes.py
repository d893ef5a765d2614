"""Table shapes through the initial copy, the stream and verify: quoted identifiers in schema, table and
column names outside `public`, a partitioned table published through its root with rows moving between
partitions, identity and stored generated columns kept GENERATED ALWAYS in the service, a replica identity
on another unique index than the primary key, and a table of 1,000 columns.

Each service table must read back as its source table does (the test's own SQL on both sides); `items.total`
is computed by the service database from the columns splitter copies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from splitter.ops.plan import ERROR, build_plan
from tests.anyschema import setup
from tests.anyschema.shapes_topology import WIDE_COLUMNS
from tests.conftest import KafkaServer

QUOTED = '"Odd ""Schema"""."Mixed Case ""T"""'
DATABASES = ("quoted_db", "partition_db", "generated_db", "coded_db", "wide_db")
#: (database, source table, target table, key, columns compared)
TABLES = (
    ("quoted_db", ('Odd "Schema"', 'Mixed Case "T"'), ('Target "Schema"', 'Mixed Case "T"'), "select",
     ["Col With Space", 'quo"te', "UPPER"]),
    ("partition_db", ("public", "events"), ("public", "events"), "id", ["region", "payload"]),
    ("generated_db", ("public", "items"), ("public", "items"), "id", ["price", "qty", "total"]),
    ("coded_db", ("public", "coded"), ("public", "coded"), "code", ["id", "note"]),
    ("wide_db", ("public", "wide"), ("public", "wide"), "id", WIDE_COLUMNS),
)


def _writes(first: int) -> list[str]:
    wide_values = ", ".join(f"{first} + {i}" for i in range(1, 1000))
    return [
        f"INSERT INTO {QUOTED} VALUES ({first}, 'a b', 'q''\"', -1), ({first + 1}, NULL, 'x', NULL)",
        f"INSERT INTO events VALUES ('eu', {first}, 'e1'), ('us', {first + 1}, 'u1'), ('mars', {first + 2}, 'm')",
        "INSERT INTO items (price, qty) VALUES (1.25, 4), (99999999.99, 0)",
        f"INSERT INTO coded VALUES ({first}, 'c{first}', 'n'), ({first + 1}, 'c{first + 1}', NULL)",
        f"INSERT INTO wide VALUES ({first}, {wide_values}), ({first + 1}, {wide_values})",
    ]


def _changes(first: int) -> list[str]:
    return [
        f"UPDATE {QUOTED} SET \"Col With Space\" = 'changed', \"select\" = \"select\" + 500"
        f" WHERE \"select\" = {first}",
        f"DELETE FROM {QUOTED} WHERE \"select\" = {first + 1}",
        # Moves between partitions: a delete in one and an insert in the other, under the root's name.
        f"UPDATE events SET region = 'us', payload = 'moved' WHERE id = {first}",
        f"UPDATE events SET region = 'eu' WHERE id = {first + 2}",
        f"DELETE FROM events WHERE id = {first + 1}",
        "UPDATE items SET qty = qty + 1",
        # The row key is the code index: an update of the code names the old code, a delete only the code.
        f"UPDATE coded SET id = id + 500, note = 'moved' WHERE id = {first}",
        f"UPDATE coded SET code = 'recoded' WHERE id = {first + 1}",
        "DELETE FROM coded WHERE code = 'recoded'",
        f"UPDATE wide SET c999 = -1, c1 = NULL WHERE id = {first}",
        f"DELETE FROM wide WHERE id = {first + 1}",
    ]


def _assert_same(env_dsns: dict[str, str]) -> None:
    problems = []
    for database, source_table, target_table, key, columns in TABLES:
        source = setup.text_rows(env_dsns[setup.SOURCE], source_table, columns, key)
        target = setup.text_rows(env_dsns[database], target_table, columns, key)
        problems += [f"{database}: {p}" for p in setup.differences(source, target, columns)]
    assert not problems, "\n".join(problems[:40])


def test_table_shapes_are_copied_streamed_and_verified_exactly(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = setup.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path,
                        schema="shapes.sql", target_schema="shapes_target.sql",
                        topology=setup.HERE / "shapes_topology.py", databases=DATABASES)
    setup.execute(env.source, _writes(1))
    # Every shape here is supported: plan refuses none (a GENERATED ALWAYS identity key takes the source's
    # values, as the apply's OVERRIDING SYSTEM VALUE lets it; quoted names, partitions, 1,000 columns).
    errors = [(f.code, f.table, f.column) for f in build_plan(env.settings()).findings if f.severity == ERROR]
    assert errors == [], errors
    env.start("run", "run")
    try:
        env.wait_caught_up(timeout=180)
        _assert_same(env.dsns)
        setup.execute(env.source, _writes(100))
        setup.execute(env.source, _changes(100))
        setup.execute(env.source, _changes(1))
        env.wait_caught_up(timeout=180)
        _assert_same(env.dsns)
        assert env.command("verify") == 0, env.logs()
    finally:
        env.stop_all()
