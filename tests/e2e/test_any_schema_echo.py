"""PostgreSQL 15 as a service database after a cutover: its reverse stream carries the service's own writes
(a TRUNCATE too) back to the source, and never the rows the forward worker wrote into it.

Before PostgreSQL 16 pgoutput has no `origin` option, so the reverse capture on the service database gets the
forward worker's transactions too (each with its replication origin) and must leave them out itself
(`Capture._drop_origin_rows`).  The forward worker writes into a cut-over service's database when it shares a
table (`echo_topology.py`): the source's writes to `profile` go on after `owner` moved and reach owner_db.  An
echo would be written back into the source by owner's reverse worker; a trigger in the source (ENABLE ALWAYS,
so it fires under the reverse worker's session_replication_role = replica too) notes every write the
reverse worker makes, and only owner_db's own writes may be among them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from devtools.embedded.postgres import EmbeddedPostgres
from splitter.core.exit_codes import OK
from tests.anyschema import setup
from tests.conftest import KafkaServer
from tests.harness import PipelineEnv

DATABASES = ("owner_db", "profile_db")
#: In the source only: every write to accounts, with the session_replication_role it was made under.
NOTE_WRITES = """
CREATE TABLE accounts_writes (n bigserial PRIMARY KEY, op text NOT NULL, id integer NOT NULL, role text NOT NULL);
CREATE FUNCTION note_accounts_write() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
AS $$ BEGIN
    INSERT INTO accounts_writes (op, id, role) VALUES (TG_OP, CASE TG_OP WHEN 'DELETE' THEN OLD.id ELSE NEW.id END,
                                                       current_setting('session_replication_role'));
    RETURN NULL;
END $$;
CREATE TRIGGER note_writes AFTER INSERT OR UPDATE OR DELETE ON accounts FOR EACH ROW
    EXECUTE FUNCTION note_accounts_write();
ALTER TABLE accounts ENABLE ALWAYS TRIGGER note_writes;
"""


def _one(dsn: str, query: str) -> tuple[object, ...] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query.encode()).fetchone()


def _eventually(env: PipelineEnv, dsn: str, query: str, expect: tuple[object, ...] | None,
                timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (got := _one(dsn, query)) != expect:
        assert time.monotonic() < deadline, f"{query}: {got!r}, expected {expect!r}\n{env.logs()}"
        time.sleep(0.2)


def _assert_same(env: PipelineEnv) -> None:
    problems = []
    for database, columns in (("owner_db", ["login", "profile"]), ("profile_db", ["profile"])):
        source = setup.text_rows(env.source, "accounts", columns)
        target = setup.text_rows(env.dsns[database], "accounts", columns)
        problems += [f"{database}: {p}" for p in setup.differences(source, target, columns)]
    assert not problems, "\n".join(problems)


def test_a_postgresql_15_service_writes_back_its_own_changes_and_never_the_forward_workers(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        pg_factory: Callable[..., EmbeddedPostgres], unique_name: Callable[[str], str], tmp_path: Path) -> None:
    if not (setup.PG15_BIN / "postgres").exists():
        pytest.skip("Debian's postgresql-15 is not installed (.ci/run installs it)")
    pg15 = pg_factory(bin_dir=setup.PG15_BIN)
    env = setup.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, schema="echo.sql",
                        target_schema="echo_target.sql", topology=setup.HERE / "echo_topology.py", databases=DATABASES,
                        target_server=pg15)
    source, owner_db = env.source, env.dsns["owner_db"]
    setup.execute(source, [
        NOTE_WRITES, "INSERT INTO accounts SELECT g, 'login ' || g, 'profile ' || g FROM generate_series(1, 5) g"])
    env.start("run", "run")
    try:
        env.wait_caught_up(timeout=180)
        _assert_same(env)
        assert env.command("cutover", "--service", "owner", "--yes", "--max-lag", "10s", "--timeout", "60s") == OK, \
            env.logs()
        before = _one(source, "SELECT max(n) FROM accounts_writes")

        # The source's own writes of profile (profile is not cut over): the forward worker writes them into
        # owner_db, under its replication origin.
        setup.execute(source, ["UPDATE accounts SET profile = 'edited in the source ' || id WHERE id IN (1, 2)"])
        _eventually(env, owner_db, "SELECT profile FROM accounts WHERE id = 2", ("edited in the source 2",))
        # owner_db's own writes, after those: they, and only they, come back.
        setup.execute(owner_db, ["UPDATE accounts SET login = 'renamed in owner_db' WHERE id = 3"])
        setup.execute(owner_db, ["INSERT INTO accounts VALUES (6, 'signed up in owner_db', 'p6')",
                                 "DELETE FROM accounts WHERE id = 5"])
        setup.execute(owner_db, ["UPDATE accounts SET login = 'last' WHERE id = 4"])
        _eventually(env, source, "SELECT login FROM accounts WHERE id = 4", ("last",))
        env.wait_caught_up(timeout=60)
        _assert_same(env)

        with psycopg.connect(source, autocommit=True) as conn:
            reverse_writes = conn.execute("SELECT op, id FROM accounts_writes WHERE n > %s AND role = 'replica' "
                                          "ORDER BY id, op", before).fetchall()
        # (A batch applies its deletes first, then its upserts: compared in key order.)
        assert reverse_writes == [("UPDATE", 3), ("UPDATE", 4), ("DELETE", 5), ("INSERT", 6)], (
            "the source was written by the reverse stream other than with owner_db's own changes (the forward "
            f"worker's rows, ids 1 and 2, echoed back?)\n{env.logs()}")

        # A TRUNCATE in owner_db (it owns the rows) empties the source's table, and with it profile_db's.
        setup.execute(owner_db, ["TRUNCATE accounts", "INSERT INTO accounts VALUES (7, 'after the truncate', NULL)"])
        _eventually(env, source, "SELECT string_agg(id::text, ',') FROM accounts", ("7",))
        env.wait_caught_up(timeout=60)
        _assert_same(env)
    finally:
        env.stop_all()
