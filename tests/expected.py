"""What each service table must hold, computed by hand from the source, and what it does hold.

Owns: one pair of HAND-WRITTEN queries per target table: the projection of the source the service must
end up with (expected) and the rows the service database has (actual), every column cast to text so the
comparison is exact (no float, timestamp or enum round-trips through Python).  Also the user_db
invariant (follower_count agrees with the followers rows).
Must not: use splitter's topology model or SQL rendering.  These queries restate topology.py on purpose:
a test that computed its expectation with the code under test would agree with any bug in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class TableSpec:
    """One target table: its qualified name, the target columns in order, and the two queries."""

    service: str
    table: str
    target: tuple[str, str]  # (schema, table) in the service database
    columns: tuple[str, ...]
    expected_sql: str  # against bento_social, hand-written
    actual_sql: sql.Composed  # against the service database: every target column, cast to text


def _spec(service: str, table: str, target: tuple[str, str], columns: tuple[str, ...], expected: str) -> TableSpec:
    actual = sql.SQL("SELECT {cols} FROM {table}").format(
        cols=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
        table=sql.Identifier(*target),
    )
    return TableSpec(service, table, target, columns, expected, actual)


SPECS: dict[tuple[str, str], TableSpec] = {
    (s.service, s.table): s
    for s in (
        _spec(
            "auth", "users", ("auth", "users"),
            ("id", "username", "password_hash", "salt", "role", "status", "mfa_enabled", "created_at",
             "updated_at"),
            """SELECT id::text, username::text, password::text, salt::text, role::text,
                      coalesce(status::text, 'active'), 'false', created_at::text, updated_at::text
                 FROM public.users""",
        ),
        _spec(
            "user", "users", ("users", "users"),
            ("id", "username", "first_name", "last_name", "cover", "avatar", "bio", "website_url",
             "follower_count", "post_count", "status", "visibility", "created_at", "updated_at"),
            """SELECT id::text, username::text, first_name::text, last_name::text, cover::text, avatar::text,
                      bio::text, website_url::text, coalesce(follower_count, 0)::text,
                      coalesce(post_count, 0)::text, coalesce(status::text, 'active'), 'public',
                      created_at::text, updated_at::text
                 FROM public.users""",
        ),
        _spec(
            "user", "followers", ("users", "followers"),
            ("following_id", "follower_id", "created_at"),
            """SELECT following_id::text, follower_id::text,
                      date_trunc('second', created_at)::timestamp(0)::text
                 FROM public.followers""",
        ),
        _spec(
            "post", "posts", ("post", "posts"),
            ("id", "author_id", "topic_id", "type", "content", "image", "is_featured", "comment_count",
             "liked_count", "created_at", "updated_at"),
            """SELECT id::text, author_id::text, topic_id::text, coalesce(type::text, 'text'), content,
                      image::text, coalesce(is_featured, false)::text, coalesce(comment_count, 0)::text,
                      coalesce(liked_count, 0)::text, created_at::text, updated_at::text
                 FROM public.posts""",
        ),
        _spec(
            "topic", "topics", ("topic", "topics"),
            ("id", "name", "color", "post_count", "created_at", "updated_at"),
            """SELECT id::text, name::text, color::text, coalesce(post_count, 0)::text, created_at::text,
                      updated_at::text
                 FROM public.topics""",
        ),
        _spec(
            "comment", "comments", ("comment", "comments"),
            ("id", "post_id", "user_id", "parent_id", "content", "liked_count", "reply_count", "status",
             "created_at", "updated_at"),
            """SELECT id::text, post_id::text, user_id::text, parent_id::text, content, liked_count::text,
                      reply_count::text, status::text, created_at::text,
                      coalesce(updated_at, created_at)::text
                 FROM public.comments""",
        ),
        _spec(
            "notification", "notifications", ("notification", "notifications"),
            ("id", "receiver_id", "actor_id", "action", "content", "channel", "is_sent", "is_read",
             "created_at", "updated_at"),
            """SELECT id::text, receiver_id::text, actor_id::text, action::text, coalesce(content, ''),
                      'in_app', coalesce(is_sent, false)::text, coalesce(is_read, false)::text,
                      created_at::text, updated_at::text
                 FROM public.notifications""",
        ),
        _spec(
            "interaction", "post_likes", ("interaction", "post_likes"),
            ("post_id", "user_id", "created_at"),
            """SELECT post_id::text, user_id::text, date_trunc('second', created_at)::timestamp(0)::text
                 FROM public.post_likes""",
        ),
        _spec(
            "interaction", "post_saves", ("interaction", "post_saves"),
            ("user_id", "post_id", "created_at"),
            "SELECT user_id::text, post_id::text, created_at::text FROM public.post_saves",
        ),
        _spec(
            "interaction", "follows", ("interaction", "follows"),
            ("follower_id", "following_id", "created_at"),
            "SELECT follower_id::text, following_id::text, created_at::text FROM public.followers",
        ),
    )
}  # fmt: skip

SERVICE_DATABASES: dict[str, str] = {
    "auth": "auth_db",
    "user": "user_db",
    "post": "post_db",
    "topic": "topic_db",
    "comment": "comment_db",
    "notification": "notification_db",
    "interaction": "interaction_db",
}

Row = tuple[str | None, ...]


def spec(service: str, table: str) -> TableSpec:
    try:
        return SPECS[(service, table)]
    except KeyError:
        known = ", ".join(f"{s}.{t}" for s, t in SPECS)
        raise KeyError(f"no hand-written spec for {service}.{table} (known: {known})") from None


def tables_of(service: str) -> list[str]:
    """The target tables of `service`, in declaration order."""
    return [t for s, t in SPECS if s == service]


def _rows(conn: psycopg.Connection[Any], query: str | sql.Composed) -> set[Row]:
    with conn.cursor() as cur:
        cur.execute(query.encode() if isinstance(query, str) else query)
        return {tuple(row) for row in cur.fetchall()}


def expected_rows(source_conn: psycopg.Connection[Any], service: str, table: str) -> set[Row]:
    """The rows `service`.`table` must hold, computed by hand from bento_social, every value as text."""
    return _rows(source_conn, spec(service, table).expected_sql)


def actual_rows(target_conn: psycopg.Connection[Any], service: str, table: str) -> set[Row]:
    """The rows `service`.`table` holds in its service database, every value as text."""
    return _rows(target_conn, spec(service, table).actual_sql)


def diff(expected: set[Row], actual: set[Row], columns: tuple[str, ...], limit: int = 10) -> list[str]:
    """Readable differences, at most `limit`: rows missing from the target, rows it should not have."""
    lines: list[str] = []
    missing = sorted(expected - actual, key=_sort_key)
    extra = sorted(actual - expected, key=_sort_key)
    for sign, rows in (("-", missing), ("+", extra)):
        for row in rows:
            if len(lines) >= limit:
                break
            shown = ", ".join(f"{c}={_short(v)}" for c, v in zip(columns, row, strict=True))
            lines.append(f"  {sign} ({shown})")
    if len(missing) + len(extra) > len(lines):
        lines.append(f"  ... {len(missing)} missing and {len(extra)} unexpected rows in all")
    return lines


def assert_table_matches(
    source_conn: psycopg.Connection[Any], target_conn: psycopg.Connection[Any], service: str, table: str
) -> None:
    """Raise AssertionError with a readable diff (first 10 differences) if the target table is wrong."""
    s = spec(service, table)
    expected = expected_rows(source_conn, service, table)
    actual = actual_rows(target_conn, service, table)
    if expected != actual:
        lines = diff(expected, actual, s.columns)
        raise AssertionError(
            f"{service}.{s.target[0]}.{s.target[1]}: {len(expected)} rows expected, {len(actual)} found "
            "('-' missing in the target, '+' not expected):\n" + "\n".join(lines)
        )


def assert_service_matches(
    source_conn: psycopg.Connection[Any], target_conn: psycopg.Connection[Any], service: str
) -> None:
    """Every table of `service` matches its hand-computed expectation; the diff of all wrong tables."""
    problems: list[str] = []
    for table in tables_of(service):
        try:
            assert_table_matches(source_conn, target_conn, service, table)
        except AssertionError as exc:
            problems.append(str(exc))
    if problems:
        raise AssertionError("\n".join(problems))


def user_db_invariant_violations(conn: psycopg.Connection[Any]) -> int:
    """user_db users whose follower_count differs from the number of followers rows pointing at them."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT count(*)
                 FROM users.users AS u
                 LEFT JOIN (SELECT following_id, count(*) AS n FROM users.followers GROUP BY following_id) AS f
                        ON f.following_id = u.id
                WHERE u.follower_count <> coalesce(f.n, 0)"""
        )
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


def source_invariant_violations(conn: psycopg.Connection[Any]) -> int:
    """The same invariant in bento_social (NULL follower_count counts as 0, as user_db maps it)."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT count(*)
                 FROM public.users AS u
                 LEFT JOIN (SELECT following_id, count(*) AS n FROM public.followers GROUP BY following_id) AS f
                        ON f.following_id = u.id
                WHERE coalesce(u.follower_count, 0) <> coalesce(f.n, 0)"""
        )
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


def _short(value: str | None, width: int = 60) -> str:
    if value is None:
        return "NULL"
    return repr(value) if len(value) <= width else repr(value[:width]) + f"...({len(value)} chars)"


def _sort_key(row: Row) -> tuple[str, ...]:
    return tuple("" if v is None else v for v in row)
