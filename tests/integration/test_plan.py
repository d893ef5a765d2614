"""`splitter plan` against real servers: the shipped schemas plan clean, and each kind of breakage is found.

Each test builds its own databases (`make_databases`), loads the shipped DDL, breaks things the way
an operator's real schemas drift, and checks that the plan names the right service, table and column
and exits non-zero.  Nothing here mocks a database: the facts come from PostgreSQL's catalogs and
from PostgreSQL planning the topology's expressions.
"""

from __future__ import annotations

import dataclasses
import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devtools import fixtures
from devtools.embedded.postgres import EmbeddedPostgres
from devtools.embedded.process import free_port
from splitter.ops.plan import ERROR, INFO, WARNING, Finding, PlanResult, build_plan, run_plan
from splitter.pipeline.config import Settings, build_settings
from splitter.topology.loading import expression_origin
from splitter.topology.model import Topology
from tests import roles
from tests.conftest import KafkaServer

REPO = Path(__file__).resolve().parents[2]

Key = tuple[str, str, str | None, str | None, str | None]  # severity, code, service, table, column


def _key(f: Finding) -> Key:
    return (f.severity, f.code, f.service, f.table, f.column)


def _keys(plan: PlanResult, severity: str | None = None) -> set[Key]:
    return {_key(f) for f in plan.findings if severity is None or f.severity == severity}


def _find(plan: PlanResult, code: str, **where: str | None) -> Finding:
    for f in plan.findings:
        if f.code == code and all(getattr(f, k) == v for k, v in where.items()):
            return f
    raise AssertionError(f"no finding {code} {where}; got:\n" + "\n".join(map(str, plan.findings)))


def _settings(dsns: dict[str, str], *, topology_path: Path = REPO / "topology.py",
              target: Callable[[str], str] | None = None) -> Settings:
    settings = build_settings(topology_path=str(topology_path), source_dsn=dsns["bento_social"],
                              kafka="127.0.0.1:9", env={}, slot="plan_test_slot", publication="plan_test_pub")
    if target is None:  # splitter's role, with the shipped grants (tests of other roles pass their DSNs)
        return roles.as_role(dataclasses.replace(
            settings, target_dsns={s.name: dsns[s.database] for s in settings.topology.services}))
    return dataclasses.replace(settings, target_dsns={s.name: target(s.database) for s in settings.topology.services})


def _exec(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in statements:
            conn.execute(stmt.encode())


@pytest.fixture
def dbs(make_databases: Callable[..., dict[str, str]]) -> dict[str, str]:
    """bento_social and the seven service databases with the shipped DDL, no rows."""
    out = make_databases("plan")
    with psycopg.connect(out["bento_social"]) as conn:
        fixtures.load_source_schema(conn)
    for database in fixtures.TARGET_DATABASES:
        with psycopg.connect(out[database]) as conn:
            fixtures.load_target_schema(conn, database)
    return out


def test_shipped_schemas_plan_clean(dbs: dict[str, str], kafka_server: KafkaServer) -> None:
    settings = dataclasses.replace(_settings(dbs), kafka_bootstrap=kafka_server.bootstrap)
    plan = build_plan(settings)

    assert _keys(plan, ERROR) == set()
    assert _keys(plan, WARNING) == {
        (WARNING, "not-migrated", None, "public.comment_likes", None),
        (WARNING, "unique-not-enforced-in-source", "user", "users.users", "username"),
        # The test's broker is one broker: the change log capture would create there has one replica.
        (WARNING, "log-not-durable", None, None, None),
    }
    assert "replication factor 1" in _find(plan, "log-not-durable").message
    unique = _find(plan, "unique-not-enforced-in-source")
    assert "users_username_key" in unique.message
    # A finding about a column points at the line of its expression (issue 16), not at the `Table(` line.
    users = settings.topology.service("user").tables[0]
    assert unique.origin == str(expression_origin(users, "username")) != str(users.origin)
    infos = _keys(plan, INFO)
    assert (INFO, "filled-by-default", "auth", "auth.users", "mfa_enabled") in infos
    # The timestamp(3) -> timestamp(0) routes truncate explicitly: reported, not warned about.
    assert (INFO, "precision-truncated", "user", "users.followers", "created_at") in infos
    assert (INFO, "precision-truncated", "interaction", "interaction.post_likes", "created_at") in infos
    # The grants script created the publication complete: run neither creates nor extends it.
    assert not {k for k in infos if k[1] in ("publication-created", "publication-extended")}

    out = io.StringIO()
    assert run_plan(settings, json_output=True, out=out) == 0
    doc = json.loads(out.getvalue())
    assert doc["errors"] == 0
    routes = {(r["service"], r["target"]): r for r in doc["routes"]}
    assert len(routes) == 10
    assert all(r["target_status"] == "ok" for r in doc["routes"])
    auth = {c["column"]: c for c in routes[("auth", "auth.users")]["columns"]}
    # Enums are read as text in the source; the target keeps its own enum type.
    assert (auth["role"]["source_type"], auth["role"]["target_type"]) == ("text", "auth.user_role")
    assert auth["password_hash"]["expression"] == "password"
    assert auth["mfa_enabled"]["filled_by"] == "default"
    follows = {c["column"]: c for c in routes[("user", "users.followers")]["columns"]}
    assert follows["created_at"]["target_type"] == "timestamp(0) without time zone"
    assert {"severity", "code", "service", "table", "column", "message", "origin"} <= set(doc["findings"][0])

    assert doc["cutover_order"] == ["post", "topic", "comment", "notification", "auth", "interaction", "user"]
    ownership = {t["table"]: t for t in doc["ownership"]}
    users = ownership["public.users"]
    assert users["rows"] == "auth" and users["reverse_defaults"] == {"first_name": "''", "last_name": "''"}
    assert {o["service"]: o["columns"] for o in users["owners"]} == {
        "auth": ["created_at", "id", "password", "role", "salt", "status", "username"],
        "user": ["avatar", "bio", "cover", "first_name", "follower_count", "last_name", "post_count", "updated_at",
                 "website_url"]}
    assert {c["service"]: c["columns"] for c in users["read_copies"]} == {
        "auth": ["updated_at"], "user": ["created_at", "status", "username"]}
    followers = ownership["public.followers"]
    assert [o["service"] for o in followers["owners"]] == ["interaction"]
    assert followers["read_copies"] == [{"service": "user", "rows": True, "columns": ["created_at"]}]

    text = io.StringIO()
    assert run_plan(settings, json_output=False, out=text) == 0
    assert "public.comment_likes" in text.getvalue()
    assert "plan OK" in text.getvalue()
    lines = text.getvalue().splitlines()
    at = lines.index(next(x for x in lines if x.startswith("public.users  rows: auth")))
    assert lines[at + 1].split() == ["auth", "owns", "rows,", "created_at,", "id,", "password,", "role,", "salt,",
                                     "status,", "username"]
    assert lines[at + 3].split() == ["auth", "reads", "updated_at", "(read", "copy)"]
    assert "public.posts  rows and every column: post" in lines
    order = lines.index("RECOMMENDED CUTOVER ORDER")
    assert lines[order + 1].strip() == "post, topic, comment, notification, auth, interaction, user"


def _break_schemas(dbs: dict[str, str]) -> None:
    _exec(dbs["bento_social"],
          "ALTER TABLE post_likes DROP CONSTRAINT post_likes_pkey",
          "ALTER TABLE topics REPLICA IDENTITY NOTHING",
          "ALTER TABLE topics ALTER post_count TYPE bigint")
    _exec(dbs["post_db"], "ALTER TABLE post.posts DROP COLUMN image")
    _exec(dbs["topic_db"], "ALTER TABLE topic.topics ADD COLUMN archived boolean NOT NULL")
    _exec(dbs["comment_db"], "ALTER TABLE comment.comments ALTER parent_id SET NOT NULL",
          # An insert can give it the source's value (OVERRIDING SYSTEM VALUE), an update cannot.
          "ALTER TABLE comment.comments ALTER reply_count DROP DEFAULT, "
          "ALTER reply_count ADD GENERATED ALWAYS AS IDENTITY")
    _exec(dbs["user_db"], "ALTER TABLE users.users ALTER first_name TYPE varchar(50)")
    # PostgreSQL cannot drop an enum label: replace the type by one without 'admin'.
    _exec(dbs["auth_db"],
          "ALTER TYPE auth.user_role RENAME TO user_role_old",
          "CREATE TYPE auth.user_role AS ENUM ('user', 'moderator')",
          "ALTER TABLE auth.users ALTER role DROP DEFAULT, "
          "ALTER role TYPE auth.user_role USING role::text::auth.user_role, ALTER role SET DEFAULT 'user'")
    _exec(dbs["notification_db"],
          "ALTER TABLE notification.notifications ALTER is_read DROP DEFAULT, "
          "ALTER is_read TYPE integer USING is_read::int")
    _exec(dbs["interaction_db"],
          "ALTER TABLE interaction.follows ALTER created_at TYPE timestamp(0)",
          "ALTER TABLE interaction.post_saves DROP CONSTRAINT post_saves_pkey")


def _break_topology(topology: Topology) -> Topology:
    def edit(service: str, table: str, **columns: str) -> Any:
        svc = topology.service(service)
        tables = tuple(dataclasses.replace(t, columns={**t.columns, **columns}) if t.name == table else t
                       for t in svc.tables)
        return dataclasses.replace(svc, tables=tables)

    replaced = {
        "user": edit("user", "users", post_count="lower(post_count)"),  # no lower(integer)
        "notification": edit("notification", "notifications", actor_id="actor"),  # no such source column
    }
    return dataclasses.replace(topology, services=tuple(replaced.get(s.name, s) for s in topology.services))


def test_broken_schemas_are_reported(dbs: dict[str, str]) -> None:
    _break_schemas(dbs)
    settings = _settings(dbs)
    settings = dataclasses.replace(settings, topology=_break_topology(settings.topology))
    plan = build_plan(settings)

    assert _keys(plan, ERROR) == {
        # source preflight
        (ERROR, "no-primary-key", None, "public.post_likes", None),
        (ERROR, "replica-identity", None, "public.post_likes", None),
        (ERROR, "replica-identity", None, "public.topics", None),
        (ERROR, "key-outside-primary-key", "interaction", "interaction.post_likes", None),
        # topology expressions
        (ERROR, "expression-fails", "user", "users.users", "post_count"),
        (ERROR, "source-column-missing", "notification", "notification.notifications", "actor_id"),
        # target schemas
        (ERROR, "target-column-missing", "post", "post.posts", "image"),
        (ERROR, "target-column-unfilled", "topic", "topic.topics", "archived"),
        (ERROR, "not-null-from-nullable", "comment", "comment.comments", "parent_id"),
        (ERROR, "generated-always", "comment", "comment.comments", "reply_count"),
        (ERROR, "enum-label-missing", "auth", "auth.users", "role"),
        (ERROR, "incompatible-type", "notification", "notification.notifications", "is_read"),
        (ERROR, "key-not-unique", "interaction", "interaction.post_saves", None),
    }
    warnings = _keys(plan, WARNING)
    assert (WARNING, "varchar-narrowed", "user", "users.users", "first_name") in warnings
    assert (WARNING, "integer-narrowed", "topic", "topic.topics", "post_count") in warnings
    assert (WARNING, "precision-narrowed", "interaction", "interaction.follows", "created_at") in warnings

    enum = _find(plan, "enum-label-missing")
    assert "'admin'" in enum.message and "moderator" in enum.message
    auth_users = settings.topology.service("auth").tables[0]
    assert enum.origin == str(expression_origin(auth_users, "role")) != str(auth_users.origin)
    assert "lower" in _find(plan, "expression-fails").message
    assert "actor" in _find(plan, "source-column-missing").message
    assert "users.users.first_name" in _find(plan, "varchar-narrowed").message
    assert "character varying(50)" in _find(plan, "varchar-narrowed").message

    out = io.StringIO()
    assert run_plan(settings, json_output=True, out=out) == 1
    doc = json.loads(out.getvalue())
    assert doc["errors"] == len(_keys(plan, ERROR))
    assert any(f["code"] == "target-column-missing" and f["column"] == "image" for f in doc["findings"])


def test_source_preflight_and_unreachable_service(pg_factory: Callable[..., EmbeddedPostgres]) -> None:
    server = pg_factory(extra_settings={"wal_level": "replica", "max_replication_slots": "0",
                                        "max_wal_senders": "0"})
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE bento_social")
    with psycopg.connect(server.dsn("bento_social")) as conn:
        fixtures.load_source_schema(conn)
    port = free_port()  # nothing listens there
    settings = _settings({"bento_social": server.dsn("bento_social")},
                         target=lambda db: f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/{db}")
    plan = build_plan(settings)

    errors = _keys(plan, ERROR)
    assert {(ERROR, "wal-level", None, None, None), (ERROR, "no-free-slot", None, None, None),
            (ERROR, "no-free-wal-sender", None, None, None)} <= errors
    unreachable = {f.service for f in plan.findings if f.code == "connection-failed"}
    assert unreachable == {s.name for s in settings.topology.services}

    out = io.StringIO()
    assert run_plan(settings, out=out) == 1
    text = out.getvalue()
    assert "s3cret-pw" not in text and "Traceback" not in text
    line = next(x for x in text.splitlines() if "connection-failed" in x and "[user]" in x)
    assert "user_db" in line and "***" in line


def test_missing_privileges_are_reported(dbs: dict[str, str], pg_server: Any) -> None:
    role = f"plan_{uuid.uuid4().hex[:8]}"
    password = "pw-" + uuid.uuid4().hex[:8]
    admin_dsn = pg_server.dsn()
    _exec(admin_dsn, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        ident = sql.Identifier(role).as_string(None)
        user_db = sql.Identifier(str(conninfo_to_dict(dbs["user_db"])["dbname"])).as_string(None)
        _exec(dbs["user_db"],
              f"REVOKE TEMP ON DATABASE {user_db} FROM PUBLIC",
              f"GRANT USAGE ON SCHEMA users TO {ident}",
              f"GRANT SELECT, INSERT ON users.users TO {ident}")

        def as_role(dsn: str) -> str:
            return make_conninfo(dsn, user=role, password=password)

        settings = _settings({**dbs, "bento_social": as_role(dbs["bento_social"])},
                             target=lambda db: as_role(dbs[db]) if db == "user_db" else dbs[db])
        plan = build_plan(settings)

        errors = _keys(plan, ERROR)
        assert {
            (ERROR, "no-replication-role", None, None, None),
            (ERROR, "no-select", None, "public.users", None),
            (ERROR, "no-create-publication", None, None, None),
            (ERROR, "not-table-owner", None, "public.users", None),
            (ERROR, "no-temp", "user", None, None),
            (ERROR, "no-create-schema", "user", None, None),
            (ERROR, "no-session-replication-role", "user", None, None),
            (ERROR, "missing-privilege", "user", "users.users", None),
            (ERROR, "missing-privilege", "user", "users.followers", None),
        } <= errors
        assert (WARNING, "no-replication-origin", "user", None, None) in _keys(plan)
        lacking = _find(plan, "missing-privilege", table="users.users").message
        assert "UPDATE, DELETE" in lacking and "INSERT" not in lacking
        # Permission failures while planning expressions are privilege findings, not expression errors.
        assert not {f for f in plan.findings if f.code.startswith(("expression-fails", "incompatible"))}
        assert password not in json.dumps([f.as_dict() for f in plan.findings])
    finally:
        for dsn in (dbs["bento_social"], dbs["user_db"]):
            _exec(dsn, f"DROP OWNED BY {sql.Identifier(role).as_string(None)}")
        _exec(admin_dsn, f"DROP ROLE {sql.Identifier(role).as_string(None)}")


def _users(dsn: str, rows: list[tuple[str, str, str | None, str | None]]) -> None:
    """Insert source users (id, username, bio, website_url); the other columns get plain values."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for user_id, username, bio, website in rows:
            conn.execute("INSERT INTO users (id, username, first_name, last_name, password, salt, bio, website_url) "
                         "VALUES (%s, %s, 'F', 'L', 'pw', 'salt', %s, %s)", (user_id, username, bio, website))


def _rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query.encode()).fetchall()


def test_rows_the_targets_would_refuse_are_counted_and_named(dbs: dict[str, str]) -> None:
    # user_db enforces what the source does not: usernames unique, and (narrowed here) website_url
    # varchar(20) and bio NOT NULL, which topology.py maps without coalesce.
    _exec(dbs["user_db"], "ALTER TABLE users.users ALTER COLUMN website_url TYPE varchar(20)",
          "ALTER TABLE users.users ALTER COLUMN bio SET NOT NULL")
    _users(dbs["bento_social"], [
        ("u1", "alice", "b", None), ("u2", "bob", "b", "https://a.example/x"), ("u3", "alice", "b", None),
        ("u4", "carol", None, None), ("u5", "dave", "b", "https://bento.social/a-long-profile-page"),
        ("u6", "bob", "b", None), ("u7", "alice", "b   ", None), ("u8", "erin", "b", "https://e.example/x      "),
    ])
    src = dbs["bento_social"]
    dup_groups = _rows(src, "SELECT username, min(id), max(id), count(*) FROM users GROUP BY username "
                            "HAVING count(*) > 1 ORDER BY min(id)")
    nulls = [r[0] for r in _rows(src, "SELECT id FROM users WHERE bio IS NULL ORDER BY id")]
    too_long = [r[0] for r in _rows(src, "SELECT id FROM users WHERE length(rtrim(website_url, ' ')) > 20 ORDER BY id")]
    assert dup_groups == [("alice", "u1", "u7", 3), ("bob", "u2", "u6", 2)] and nulls == ["u4"] and too_long == ["u5"]

    settings = _settings(dbs)
    plan = build_plan(settings)

    dup = _find(plan, "data-duplicates", service="user", table="users.users", column="username")
    assert dup.severity == ERROR
    refused = sum(n - 1 for *_, n in dup_groups)
    assert f"by {refused} source row(s): {len(dup_groups)} value(s) occur more than once" in dup.message
    for value, first, last, _ in dup_groups:
        assert f"(username)=({value}) in (id)=({first}) and (id)=({last})" in dup.message
    assert "users_username_key" in dup.message and "on_error='stop'" in dup.message
    null = _find(plan, "data-null", service="user", table="users.users", column="bio")
    assert null.severity == ERROR and f"for {len(nulls)} source row(s)" in null.message
    assert f"first: (id)=({nulls[0]})" in null.message
    long = _find(plan, "data-too-long", service="user", table="users.users", column="website_url")
    assert long.severity == ERROR and f"for {len(too_long)} source row(s)" in long.message
    assert f"first: (id)=({too_long[0]})" in long.message
    # auth_db's username is wider and not unique: nothing to count there.
    assert not [f for f in plan.findings if f.code.startswith("data-") and f.service != "user"]

    text = io.StringIO()
    assert run_plan(settings, out=text) == 1
    assert "data-duplicates" in text.getvalue() and "plan FAILED" in text.getvalue()


def _edited_topology(tmp_path: Path, old: str, new: str) -> Path:
    """The repository's topology.py with `old` replaced by `new` (each must occur once)."""
    text = (REPO / "topology.py").read_text()
    assert text.count(old) == 1, old
    path = tmp_path / "topology.py"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(("old", "new", "needle"), [
    # username given to user too: two owners.
    ('"user": ("first_name",', '"user": ("username", "first_name",',
     "ownership of users: column 'username' has two owners (auth, user)"),
    # bio taken from user: nobody owns it.
    ('"avatar", "bio", "website_url"', '"avatar", "website_url"',
     "ownership of users: column 'bio' (read by user) has no owner"),
])
def test_plan_refuses_a_column_with_two_owners_or_none(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       old: str, new: str, needle: str) -> None:
    from splitter import cli

    path = _edited_topology(tmp_path, old, new)
    # Refused when the topology loads, before the plan connects anywhere (so no server is needed).
    code = cli.main(["plan", "--topology", str(path), "--source-dsn", "postgresql://u:Secret-9@127.0.0.1:9/src",
                     "--kafka", "127.0.0.1:9"])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert needle in err and f"{path}:" in err, err
    assert "Traceback" not in err and "Secret-9" not in out + err


def test_plan_refuses_a_row_owner_whose_reverse_inserts_miss_a_not_null_column(dbs: dict[str, str],
                                                                               tmp_path: Path) -> None:
    path = _edited_topology(tmp_path, """reverse_defaults={"first_name": "''", "last_name": "''"},""", "")
    not_null = {r[0] for r in _rows(dbs["bento_social"], """
        SELECT column_name FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = 'users' AND is_nullable = 'NO' AND column_default IS NULL""")}
    # auth maps back id, username, password (from password_hash), salt and created_at; the source's other
    # NOT NULL columns without a default are the profile's names.
    assert not_null - {"id", "username", "password", "salt", "created_at"} == {"first_name", "last_name"}
    settings = _settings(dbs, topology_path=path)
    plan = build_plan(settings)

    refused = {_key(f) for f in plan.findings if f.code == "reverse-insert-incomplete"}
    assert {(ERROR, "reverse-insert-incomplete", "auth", "public.users", "first_name"),
            (ERROR, "reverse-insert-incomplete", "auth", "public.users", "last_name")} <= refused
    # user only updates users (auth owns the rows): its reverse stream inserts nothing, so it is not refused.
    assert not [f for f in plan.findings if f.service == "user" and f.table == "public.users"]
    first = _find(plan, "reverse-insert-incomplete", column="first_name")
    assert "public.users.first_name is NOT NULL without a default" in first.message
    assert first.origin is not None and first.origin.startswith(f"{path}:")

    out = io.StringIO()
    assert run_plan(settings, out=out) == 1
    line = next(x for x in out.getvalue().splitlines() if "reverse-insert-incomplete" in x and "first_name" in x)
    assert line.startswith("ERROR") and "[auth: public.users.first_name]" in line
    assert "plan FAILED" in out.getvalue()
