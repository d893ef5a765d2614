"""Root fixtures: the servers every test shares, and per-test databases and topic names.

Owns: one PostgreSQL and one Kafka-protocol broker per test session (private child processes from
`connectors.embedded`, or servers you already run: set `SPLITTER_TEST_PG_DSN` to a DSN for the `postgres`
database of a superuser, and/or `SPLITTER_TEST_KAFKA` to a bootstrap address), and per-test isolation on
them (uniquely named databases, topics and groups), so tests never see each other's data.

Must not: know the project's schema or topology (DDL and topology fixtures live in `fixtures/` and
`splitter.datagen`), or restart/kill the shared servers (crash tests start their own with `pg_factory`).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devtools.embedded.kafka import EmbeddedKafka
from devtools.embedded.postgres import EmbeddedPostgres
from tests import roles

#: Logical names of the databases one test gets: the source and the seven service databases.
SOURCE_DB = "bento_social"
SERVICE_DBS: tuple[str, ...] = (
    "auth_db",
    "user_db",
    "post_db",
    "topic_db",
    "comment_db",
    "notification_db",
    "interaction_db",
)
ALL_DBS: tuple[str, ...] = (SOURCE_DB, *SERVICE_DBS)

PG_DSN_ENV = "SPLITTER_TEST_PG_DSN"
#: Debian's PostgreSQL 15 (`.ci/run` installs it): a server of another major version, where a test needs one.
PG15_BIN = Path("/usr/lib/postgresql/15/bin")
KAFKA_ENV = "SPLITTER_TEST_KAFKA"


class PgServer:
    """The session's PostgreSQL: `dsn(dbname)` for any database on it; `embedded` is None if external."""

    def __init__(self, base_dsn: str, embedded: EmbeddedPostgres | None = None) -> None:
        self._base_dsn = base_dsn
        self.embedded = embedded

    def dsn(self, dbname: str = "postgres") -> str:
        if self.embedded is not None:
            return self.embedded.dsn(dbname)
        return make_conninfo(self._base_dsn, dbname=dbname)

    def __repr__(self) -> str:
        return f"PgServer(embedded={self.embedded is not None})"


class KafkaServer:
    """The session's broker: `bootstrap` for clients; `embedded` is None if external."""

    def __init__(self, bootstrap: str, embedded: EmbeddedKafka | None = None) -> None:
        self.bootstrap = bootstrap
        self.embedded = embedded

    def __repr__(self) -> str:
        return f"KafkaServer({self.bootstrap!r}, embedded={self.embedded is not None})"


def _slug(text: str, limit: int) -> str:
    """Lower-case letters, digits and underscores only, at most `limit` long (safe in any identifier)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "t"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    external = os.environ.get(PG_DSN_ENV)
    if external:
        with psycopg.connect(external, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SHOW wal_level").fetchone()
        if row is None or row[0] != "logical":
            pytest.fail(f"{PG_DSN_ENV} server has wal_level={row and row[0]}; the tests need wal_level=logical")
        yield PgServer(external)
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    server.start()
    try:
        yield PgServer(server.dsn(), server)
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    external = os.environ.get(KAFKA_ENV)
    if external:
        yield KafkaServer(external)
        return
    broker = EmbeddedKafka(log_path=tmp_path_factory.mktemp("kafka") / "tansu.log")
    broker.start()
    try:
        yield KafkaServer(broker.bootstrap, broker)
    finally:
        broker.cleanup()


@pytest.fixture
def pg_factory(tmp_path: Path) -> Iterator[Callable[..., EmbeddedPostgres]]:
    """Start a private PostgreSQL for one test (crash tests kill it); all are stopped afterwards.

    Call `pg_factory(**kwargs)`; kwargs go to `EmbeddedPostgres` (e.g. `fsync=True`). Not affected by
    `SPLITTER_TEST_PG_DSN`: a test that needs to kill a server needs one of its own.
    """
    servers: list[EmbeddedPostgres] = []

    def make(**kwargs: object) -> EmbeddedPostgres:
        server = EmbeddedPostgres(tmp_path / f"pg{len(servers)}", **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.cleanup()


@pytest.fixture
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    """A private tansu for one test that freezes, kills or restarts it (the session's broker is shared)."""
    server = EmbeddedKafka(log_path=tmp_path_factory.mktemp("kafka") / "tansu.log")
    server.start()
    try:
        yield server
    finally:
        server.resume()  # a frozen broker cannot be stopped
        server.cleanup()


def drop_databases(admin_dsn: str, names: Sequence[str]) -> None:
    """Drop `names` and whatever would block the drop, on the server of `admin_dsn`.

    Order matters: subscriptions (they pin a database and own a remote slot), prepared transactions,
    replication slots (their walsenders first), then `DROP DATABASE ... WITH (FORCE)` which terminates
    the remaining backends.
    """
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        existing = [
            row[0] for row in admin.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", [list(names)])
        ]
        for name in existing:
            _drop_subscriptions(make_conninfo(admin_dsn, dbname=name))
        for name in existing:
            for (gid,) in admin.execute("SELECT gid FROM pg_prepared_xacts WHERE database = %s", [name]).fetchall():
                with psycopg.connect(make_conninfo(admin_dsn, dbname=name), autocommit=True) as conn:
                    conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
        admin.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
            " WHERE database = ANY(%s) AND active_pid IS NOT NULL",
            [existing],
        )
        for (slot,) in admin.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = ANY(%s)", [existing]
        ).fetchall():
            # A terminated walsender releases its slot a moment later; retry briefly.
            for _attempt in range(50):
                try:
                    admin.execute("SELECT pg_drop_replication_slot(%s)", [slot])
                    break
                except psycopg.errors.ObjectInUse:
                    admin.execute("SELECT pg_sleep(0.1)")
                except psycopg.errors.UndefinedObject:
                    break
        for name in existing:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        _drop_idle_origins(admin)


def _drop_idle_origins(admin: psycopg.Connection) -> None:
    """Drop the replication origins no session uses.  Origins belong to the cluster, not to a database, and
    each one that ever tracked progress holds one of the server's `max_replication_slots` origin states
    until it is dropped: without this, the suite's distinct service names ran the shared server out of them
    ("could not find free replication state slot").  Tests run one at a time, so an origin in use is the
    running test's own."""
    for (name,) in admin.execute("SELECT roname FROM pg_replication_origin").fetchall():
        with contextlib.suppress(psycopg.errors.ObjectInUse):
            admin.execute("SELECT pg_replication_origin_drop(%s)", [name])


def _drop_subscriptions(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        subs = conn.execute(
            "SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
            " WHERE d.datname = current_database()"
        ).fetchall()
        for (sub,) in subs:
            ident = sql.Identifier(sub)
            # Detach from the remote slot first: DROP SUBSCRIPTION would otherwise try to drop it, and
            # the publisher database may already be gone. The slot itself is dropped with its database.
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
            conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))


@pytest.fixture(scope="session")
def splitter_role(pg_server: PgServer) -> str:
    """splitter's own role on the session's server (roles are cluster-wide; each test's databases get their
    grants from `tests.roles.as_role`), as the shipped script creates it."""
    roles.create_role(pg_server.dsn())
    return roles.ROLE


@pytest.fixture
def make_databases(pg_server: PgServer, splitter_role: str,
                   request: pytest.FixtureRequest) -> Iterator[Callable[..., dict[str, str]]]:
    """Factory: `make_databases(prefix, names=ALL_DBS) -> {logical name: DSN}` of new, empty databases.

    The DSNs are the superuser's, for fixture setup; `tests.roles.as_role` grants a topology to splitter's
    role and gives the DSNs splitter runs with.

    Each call creates uniquely named databases (`<prefix>_<random>_<logical name>`) for this test, e.g.
    `dbs["bento_social"]`, `dbs["post_db"]`; the real name is the DSN's dbname. All are dropped when the
    test ends (backends terminated, their replication slots and subscriptions dropped first).
    """
    created: list[str] = []

    def make(prefix: str | None = None, names: Sequence[str] = ALL_DBS) -> dict[str, str]:
        stem = _slug(prefix or request.node.name, 24)
        tag = uuid.uuid4().hex[:6]
        out: dict[str, str] = {}
        with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
            for logical in names:
                # 63 bytes is PostgreSQL's identifier limit; longer names would be silently truncated.
                real = f"{stem}_{tag}_{_slug(logical, 30)}"[:63]
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(real)))
                created.append(real)
                out[logical] = pg_server.dsn(real)
        return out

    try:
        yield make
    finally:
        if created:
            drop_databases(pg_server.dsn(), created)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory: `unique_name(kind)` -> a name no other test uses (topics, consumer groups, slots)."""

    def make(kind: str = "") -> str:
        stem = _slug(request.node.name, 40)
        parts = [p for p in (kind, stem, uuid.uuid4().hex[:8]) if p]
        return "_".join(parts)

    return make


@pytest.fixture
def unique_topic(unique_name: Callable[[str], str]) -> str:
    """A Kafka topic name for this test alone (not created: tests create it with the settings they need)."""
    return unique_name("t")
