"""Realistic generated data for a bento_social source database, fast and deterministic.

Owns: filling an empty `bento_social` (schema from `devtools.fixtures`) with rows that look like the real
thing: names from many languages, unicode and emoji in bios and content, NULLs in nullable columns, empty
strings, long TOASTed posts and comments, millisecond timestamps, skewed popularity; and counters that
agree with the rows they count.  Everything is generated server-side (INSERT ... SELECT over
generate_series), so a hundred thousand users take seconds, not minutes.

Determinism: every random choice is a hash of (seed, row number, purpose) through `hashint8extended`, not a
call to random(), so the same seed gives the same rows whatever order the server evaluates them in.

Invariants kept (tests check them): usernames are unique (user_db enforces it, the source does not);
users.follower_count equals the number of followers rows with following_id = id (NULL stands for 0 only
for users nobody follows); the other counters (post_count, comment_count, liked_count, reply_count) also
match their rows.

Must not: create or alter schema objects other than its own pg_temp helper functions, commit or roll back
the caller's transaction, or touch a database other than the one `conn` is connected to.
"""

from __future__ import annotations

import random
from typing import Any

import psycopg
from psycopg import sql

TOPIC_COUNT = 20

FIRST_NAMES = [
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Mateo", "Sofia", "Lucas", "Mia", "Ethan", "Chloé", "José",
    "Zoë", "Łukasz", "Søren", "Aiko", "Yuki", "Priya", "Arjun", "Fatima", "Omar", "Ngozi", "Chen", "Mei",
    "Ana", "Bruno", "Ingrid", "Björn", "Thảo", "Ali", "Hana", "Kwame", "Amélie", "Dmitri", "Saoirse", "Raúl",
]  # fmt: skip
LAST_NAMES = [
    "Smith", "García", "Müller", "Rossi", "Dubois", "Nguyen", "Kowalski", "Silva", "Tanaka", "Kim",
    "O'Brien", "Hansen", "Novák", "Okafor", "Haddad", "Patel", "Ivanova", "Lindqvist", "Yılmaz", "Chen",
    "Fernández", "Schäfer", "Costa", "Sato", "Mensah", "Brown", "Jensen", "Petrov", "Abe", "Nowak",
]  # fmt: skip
WORDS = [
    "coffee", "morning", "bento", "lunch", "today", "weekend", "project", "ship", "launch", "great",
    "team", "music", "city", "walk", "rain", "sunny", "book", "reading", "travel", "train", "photo",
    "garden", "recipe", "ramen", "code", "release", "idea", "question", "anyone", "thanks", "love",
    "new", "old", "tiny", "huge", "finally", "again", "why", "how", "best", "worst", "friends", "family",
    "game", "match", "goal", "win", "lost", "learning", "postgres", "kafka", "deploy", "bug", "fix",
]  # fmt: skip
INTL = [
    "こんにちは世界", "Ça va ? 😊", "Привет всем!", "¡Olé! 🎉", "مرحبا بالجميع", "Grüße aus Köln",
    "🍣🍜🍱", "naïve café crème", "ẞtraße", "日本語のテキスト", "👩‍💻 shipping", "Zażółć gęślą jaźń",
]  # fmt: skip
TOPICS = [
    ("Technology", "#2563eb"), ("Food", "#f97316"), ("Travel", "#0ea5e9"), ("Music", "#a855f7"),
    ("Sports", "#22c55e"), ("Books", "#78716c"), ("Photography", "#111827"), ("Gaming", "#ef4444"),
    ("Science", "#14b8a6"), ("Art & Design", "#ec4899"), ("Movies", "#eab308"), ("Fitness", "#84cc16"),
    ("Parenting", "#f43f5e"), ("Finance", "#065f46"), ("Pets", "#d97706"), ("DIY", "#64748b"),
    ("Fashion", "#db2777"), ("Cars", "#1f2937"), ("Gardening", "#15803d"), ("日本", "#dc2626"),
]  # fmt: skip

SENTENCE_POOL = 2048  # generated sentences rows draw their text from (a scalar subquery per row is cheap)


def _sentences(seed: int) -> list[str]:
    """A deterministic pool of sentences of 1 to 45 words, some with unicode."""
    rng = random.Random(seed)
    pool = []
    for _ in range(SENTENCE_POOL):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 45))]
        if rng.random() < 0.1:
            words.insert(rng.randrange(len(words) + 1), rng.choice(INTL))
        text = " ".join(words)
        pool.append(text[:1].upper() + text[1:] + rng.choice((".", ".", "!", "?", "", " :)")))
    return pool


# Helper functions and the sentence table live in pg_temp for the duration of one generate() call.  The
# seed is baked into the functions (as a literal) so every call site only names its purpose ("salt").
_HELPERS = """
CREATE FUNCTION pg_temp.dg_rnd(i bigint, salt integer) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $f$ SELECT (hashint8extended(i, {seed}::bigint * 1000 + salt) & 9007199254740991)::double precision
                  / 9007199254740992.0 $f$;
CREATE FUNCTION pg_temp.dg_pick(i bigint, salt integer, n bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $f$ SELECT floor(pg_temp.dg_rnd(i, salt) * n)::bigint $f$;
CREATE FUNCTION pg_temp.dg_id(kind text, i bigint) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $f$ SELECT md5(kind || ':' || {seed}::text || ':' || i::text)::uuid::text $f$;
CREATE FUNCTION pg_temp.dg_ts(i bigint, salt integer) RETURNS timestamp
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $f$ SELECT date_trunc('milliseconds', timestamp '2022-01-01 00:00:00'
                  + pg_temp.dg_rnd(i, salt) * interval '700 days') $f$;
CREATE FUNCTION pg_temp.dg_long(i bigint, salt integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $f$ SELECT 'Long read ' || i || E':\\n' || string_agg(md5(salt || ':' || i || ':' || k), ' ' ORDER BY k)
             FROM generate_series(1, 160 + pg_temp.dg_pick(i, salt + 1, 240)::integer) AS k $f$;
CREATE TEMPORARY TABLE dg_text (id integer PRIMARY KEY, txt text NOT NULL);
"""

_DROP_HELPERS = """
DROP TABLE pg_temp.dg_text;
DROP FUNCTION pg_temp.dg_long(bigint, integer);
DROP FUNCTION pg_temp.dg_ts(bigint, integer);
DROP FUNCTION pg_temp.dg_id(text, bigint);
DROP FUNCTION pg_temp.dg_pick(bigint, integer, bigint);
DROP FUNCTION pg_temp.dg_rnd(bigint, integer);
"""


def _text(salt: int) -> str:
    """SQL for a sentence from the pool, chosen by row number g and `salt`."""
    return f"(SELECT s.txt FROM pg_temp.dg_text AS s WHERE s.id = pg_temp.dg_pick(g, {salt}, {SENTENCE_POOL}))"


def _intl(salt: int) -> str:
    """SQL for one of the unicode phrases, chosen by row number g and `salt`."""
    return f"(%(intl)s::text[])[1 + pg_temp.dg_pick(g, {salt}, cardinality(%(intl)s::text[]))]"


def _first_name(salt: int) -> str:
    return f"(%(first)s::text[])[1 + pg_temp.dg_pick(g, {salt}, cardinality(%(first)s::text[]))]"


# Rows that others count are inserted first, and the counting rows last, with their counters computed
# from what is there: users, posts and topics are written once, never rewritten by a counter UPDATE.
# Each statement takes %(n)s (users), %(first)s, %(last)s, %(intl)s, %(topics)s ... as parameters.
_STATEMENTS: tuple[str, ...] = (
    # followers: ~5 per user, popularity skewed towards low user numbers, no self-follows.
    """
    INSERT INTO followers (follower_id, following_id, created_at)
    SELECT pg_temp.dg_id('user', a), pg_temp.dg_id('user', b), pg_temp.dg_ts(g, 40)
      FROM generate_series(1, 5 * %(n)s::bigint) AS g
     CROSS JOIN LATERAL (SELECT 1 + pg_temp.dg_pick(g, 41, %(n)s) AS a,
                                1 + floor(%(n)s * pg_temp.dg_rnd(g, 42) ^ 2)::bigint AS b) AS p
     WHERE a <> b
    ON CONFLICT DO NOTHING
    """,
    # post_likes (~7 per user, popular posts skewed) and post_saves (~2 per user).
    """
    INSERT INTO post_likes (post_id, user_id, created_at)
    SELECT pg_temp.dg_id('post', 1 + floor(3 * %(n)s * pg_temp.dg_rnd(g, 50) ^ 2)::bigint),
           pg_temp.dg_id('user', 1 + pg_temp.dg_pick(g, 51, %(n)s)),
           pg_temp.dg_ts(g, 52)
      FROM generate_series(1, 7 * %(n)s::bigint) AS g
    ON CONFLICT DO NOTHING
    """,
    """
    INSERT INTO post_saves (post_id, user_id, created_at)
    SELECT pg_temp.dg_id('post', 1 + pg_temp.dg_pick(g, 55, 3 * %(n)s)),
           pg_temp.dg_id('user', 1 + pg_temp.dg_pick(g, 56, %(n)s)),
           pg_temp.dg_ts(g, 57)
      FROM generate_series(1, 2 * %(n)s::bigint) AS g
    ON CONFLICT DO NOTHING
    """,
    # comments, top level: ~3.5 per user; a few long (TOASTed), a few empty, some unicode.
    f"""
    INSERT INTO comments (id, user_id, post_id, parent_id, content, liked_count, reply_count, status,
                          created_at, updated_at)
    SELECT pg_temp.dg_id('comment', g),
           pg_temp.dg_id('user', 1 + pg_temp.dg_pick(g, 60, %(n)s)),
           pg_temp.dg_id('post', 1 + pg_temp.dg_pick(g, 61, 3 * %(n)s)),
           NULL,
           CASE WHEN pg_temp.dg_rnd(g, 62) < 0.005 THEN pg_temp.dg_long(g, 63)
                WHEN pg_temp.dg_rnd(g, 62) < 0.015 THEN ''
                WHEN pg_temp.dg_rnd(g, 62) < 0.12 THEN {_intl(64)}
                ELSE {_text(65)} END,
           0, 0,
           (CASE WHEN pg_temp.dg_rnd(g, 67) < 0.70 THEN 'approved'
                 WHEN pg_temp.dg_rnd(g, 67) < 0.85 THEN 'pending'
                 WHEN pg_temp.dg_rnd(g, 67) < 0.90 THEN 'rejected'
                 WHEN pg_temp.dg_rnd(g, 67) < 0.95 THEN 'deleted'
                 ELSE 'spam' END)::"CommentStatus",
           pg_temp.dg_ts(g, 68),
           CASE WHEN pg_temp.dg_rnd(g, 69) < 0.6 THEN NULL
                ELSE date_trunc('milliseconds', pg_temp.dg_ts(g, 68) + pg_temp.dg_rnd(g, 70) * interval '2 days')
           END
      FROM generate_series(1, (7 * %(n)s::bigint + 1) / 2) AS g
    """,
    # comments, replies: ~1.5 per user, each on the same post as its (top-level) parent.
    f"""
    INSERT INTO comments (id, user_id, post_id, parent_id, content, liked_count, reply_count, status,
                          created_at, updated_at)
    SELECT pg_temp.dg_id('reply', g),
           pg_temp.dg_id('user', 1 + pg_temp.dg_pick(g, 80, %(n)s)),
           parent.post_id,
           parent.id,
           CASE WHEN pg_temp.dg_rnd(g, 81) < 0.1 THEN '@' || {_first_name(82)} || ' ' || {_intl(83)}
                ELSE {_text(84)} END,
           0, 0,
           (CASE WHEN pg_temp.dg_rnd(g, 86) < 0.8 THEN 'approved' ELSE 'pending' END)::"CommentStatus",
           date_trunc('milliseconds', parent.created_at + pg_temp.dg_rnd(g, 87) * interval '5 days'),
           NULL
      FROM generate_series(1, (3 * %(n)s::bigint + 1) / 2) AS g
     CROSS JOIN LATERAL (
           (SELECT c.id, c.post_id, c.created_at FROM comments AS c
             WHERE c.id >= pg_temp.dg_id('parent', g) ORDER BY c.id LIMIT 1)
           UNION ALL
           (SELECT c.id, c.post_id, c.created_at FROM comments AS c ORDER BY c.id LIMIT 1)
           LIMIT 1) AS parent
    """,
    # comment_likes: ~3 per user (no service takes this table).
    """
    INSERT INTO comment_likes (comment_id, user_id, created_at)
    SELECT c.id, pg_temp.dg_id('user', 1 + pg_temp.dg_pick(g, 90, %(n)s)), pg_temp.dg_ts(g, 91)
      FROM generate_series(1, 3 * %(n)s::bigint) AS g
     CROSS JOIN LATERAL (
           (SELECT id FROM comments WHERE id >= pg_temp.dg_id('liked', g) ORDER BY id LIMIT 1)
           UNION ALL
           (SELECT id FROM comments ORDER BY id LIMIT 1)
           LIMIT 1) AS c
    ON CONFLICT DO NOTHING
    """,
    # The only counter rewrite: comments with replies or likes (a minority of comments).
    """
    UPDATE comments AS c SET reply_count = coalesce(r.replies, 0), liked_count = coalesce(r.likes, 0)
      FROM (SELECT id, sum(replies)::integer AS replies, sum(likes)::integer AS likes
              FROM (SELECT parent_id AS id, count(*) AS replies, 0 AS likes FROM comments
                     WHERE parent_id IS NOT NULL GROUP BY parent_id
                    UNION ALL
                    SELECT comment_id, 0, count(*) FROM comment_likes GROUP BY comment_id) AS x
             GROUP BY id) AS r
     WHERE c.id = r.id
    """,
    # notifications: ~5 per user; system notifications without actor, NULL/empty/unicode content.
    f"""
    INSERT INTO notifications (id, receiver_id, actor_id, content, action, is_sent, is_read,
                               created_at, updated_at)
    SELECT pg_temp.dg_id('notification', g),
           pg_temp.dg_id('user', 1 + pg_temp.dg_pick(g, 100, %(n)s)),
           CASE WHEN pg_temp.dg_rnd(g, 101) < 0.1 THEN NULL
                ELSE pg_temp.dg_id('user', 1 + pg_temp.dg_pick(g, 102, %(n)s)) END,
           CASE WHEN pg_temp.dg_rnd(g, 103) < 0.2 THEN NULL
                WHEN pg_temp.dg_rnd(g, 103) < 0.25 THEN ''
                WHEN pg_temp.dg_rnd(g, 103) < 0.35 THEN {_intl(104)}
                ELSE {_first_name(105)}
                     || CASE act WHEN 'liked' THEN ' liked your post'
                                 WHEN 'followed' THEN ' started following you'
                                 ELSE ' replied to your comment' END END,
           act::"NotificationAction",
           CASE WHEN pg_temp.dg_rnd(g, 106) < 0.1 THEN NULL ELSE pg_temp.dg_rnd(g, 106) < 0.9 END,
           CASE WHEN pg_temp.dg_rnd(g, 107) < 0.1 THEN NULL ELSE pg_temp.dg_rnd(g, 107) < 0.5 END,
           date_trunc('second', pg_temp.dg_ts(g, 108)),
           date_trunc('second', pg_temp.dg_ts(g, 108) + pg_temp.dg_rnd(g, 109) * interval '1 day')
      FROM generate_series(1, 5 * %(n)s::bigint) AS g
     CROSS JOIN LATERAL (
           SELECT CASE WHEN pg_temp.dg_rnd(g, 110) < 0.6 THEN 'liked'
                       WHEN pg_temp.dg_rnd(g, 110) < 0.8 THEN 'followed'
                       ELSE 'replied' END AS act) AS a
    """,
    # posts: ~3 per user, 2 percent long (TOASTed), some empty with an image, unicode; counters from
    # the comments and likes already there (a zero counter is sometimes NULL, as in the monolith).
    f"""
    INSERT INTO posts (id, content, image, author_id, topic_id, is_featured, comment_count, liked_count,
                       type, created_at, updated_at)
    SELECT p.id,
           CASE WHEN pg_temp.dg_rnd(g, 20) < 0.02 THEN pg_temp.dg_long(g, 21)
                WHEN pg_temp.dg_rnd(g, 20) < 0.04 AND p.img IS NOT NULL THEN ''
                WHEN pg_temp.dg_rnd(g, 20) < 0.15 THEN {_intl(22)} || ' ' || {_text(23)}
                ELSE {_text(24)} END,
           p.img,
           pg_temp.dg_id('user', 1 + pg_temp.dg_pick(g, 26, %(n)s)),
           pg_temp.dg_id('topic', 1 + pg_temp.dg_pick(g, 27, %(topics)s)),
           CASE WHEN pg_temp.dg_rnd(g, 28) < 0.10 THEN NULL ELSE pg_temp.dg_rnd(g, 28) > 0.95 END,
           CASE WHEN c.n IS NOT NULL THEN c.n WHEN pg_temp.dg_rnd(g, 33) < 0.2 THEN NULL ELSE 0 END,
           CASE WHEN l.n IS NOT NULL THEN l.n WHEN pg_temp.dg_rnd(g, 34) < 0.2 THEN NULL ELSE 0 END,
           (CASE WHEN pg_temp.dg_rnd(g, 29) < 0.03 THEN NULL
                 WHEN p.img IS NULL THEN 'text' ELSE 'media' END)::"PostType",
           date_trunc('second', pg_temp.dg_ts(g, 30)),
           date_trunc('second', pg_temp.dg_ts(g, 30) + pg_temp.dg_rnd(g, 31) * interval '3 days')
      FROM generate_series(1, 3 * %(n)s::bigint) AS g
     CROSS JOIN LATERAL (
           SELECT pg_temp.dg_id('post', g) AS id,
                  CASE WHEN pg_temp.dg_rnd(g, 32) < 0.7 THEN NULL
                       ELSE 'https://cdn.bento.social/posts/' || pg_temp.dg_id('image', g) || '.webp' END
                  AS img) AS p
      LEFT JOIN (SELECT post_id, count(*)::integer AS n FROM comments GROUP BY post_id) AS c
             ON c.post_id = p.id
      LEFT JOIN (SELECT post_id, count(*)::integer AS n FROM post_likes GROUP BY post_id) AS l
             ON l.post_id = p.id
    """,
    # users: unique usernames (first.last.n), NULLs, empty strings, unicode bios; counters from the
    # followers and posts already there (NULL stands for 0 only where nobody follows / nothing posted).
    f"""
    INSERT INTO users (id, cover, avatar, username, first_name, last_name, password, salt, role, bio,
                       website_url, follower_count, post_count, status, created_at, updated_at)
    SELECT u.id,
           CASE WHEN pg_temp.dg_rnd(g, 1) < 0.6 THEN NULL
                ELSE 'https://cdn.bento.social/covers/' || pg_temp.dg_id('cover', g) || '.jpg' END,
           CASE WHEN pg_temp.dg_rnd(g, 2) < 0.25 THEN NULL
                WHEN pg_temp.dg_rnd(g, 2) < 0.27 THEN ''
                ELSE 'https://cdn.bento.social/avatars/' || pg_temp.dg_id('avatar', g) || '.png' END,
           lower(u.first_name) || '.' || lower(u.last_name) || '.' || g,
           u.first_name, u.last_name,
           '$2b$10$' || substr(md5('pw' || g) || md5('pw2' || g), 1, 53),
           substr(md5('salt' || g), 1, 16),
           (CASE WHEN pg_temp.dg_rnd(g, 3) < 0.02 THEN 'admin' ELSE 'user' END)::"UserRole",
           CASE WHEN pg_temp.dg_rnd(g, 4) < 0.30 THEN NULL
                WHEN pg_temp.dg_rnd(g, 4) < 0.38 THEN ''
                WHEN pg_temp.dg_rnd(g, 4) < 0.55 THEN {_intl(5)} || ' ' || left({_text(6)}, 200)
                ELSE left({_text(7)}, 250) END,
           CASE WHEN pg_temp.dg_rnd(g, 9) < 0.70 THEN NULL
                WHEN pg_temp.dg_rnd(g, 9) < 0.75 THEN ''
                ELSE 'https://' || lower(u.last_name) || g || '.example.com/' END,
           CASE WHEN f.n IS NOT NULL THEN f.n WHEN pg_temp.dg_rnd(g, 10) < 0.3 THEN NULL ELSE 0 END,
           CASE WHEN p.n IS NOT NULL THEN p.n WHEN pg_temp.dg_rnd(g, 11) < 0.3 THEN NULL ELSE 0 END,
           (CASE WHEN pg_temp.dg_rnd(g, 12) < 0.05 THEN NULL
                 WHEN pg_temp.dg_rnd(g, 12) < 0.85 THEN 'active'
                 WHEN pg_temp.dg_rnd(g, 12) < 0.90 THEN 'pending'
                 WHEN pg_temp.dg_rnd(g, 12) < 0.95 THEN 'inactive'
                 WHEN pg_temp.dg_rnd(g, 12) < 0.98 THEN 'banned'
                 ELSE 'deleted' END)::"UserStatus",
           date_trunc('second', pg_temp.dg_ts(g, 13)),
           date_trunc('second', pg_temp.dg_ts(g, 13) + pg_temp.dg_rnd(g, 14) * interval '60 days')
      FROM generate_series(1, %(n)s::bigint) AS g
     CROSS JOIN LATERAL (
           SELECT pg_temp.dg_id('user', g) AS id,
                  (%(first)s::text[])[1 + pg_temp.dg_pick(g, 15, cardinality(%(first)s::text[]))] AS first_name,
                  (%(last)s::text[])[1 + pg_temp.dg_pick(g, 16, cardinality(%(last)s::text[]))] AS last_name) AS u
      LEFT JOIN (SELECT following_id, count(*)::integer AS n FROM followers GROUP BY following_id) AS f
             ON f.following_id = u.id
      LEFT JOIN (SELECT author_id, count(*)::integer AS n FROM posts GROUP BY author_id) AS p
             ON p.author_id = u.id
    """,
    # topics: fixed names; post_count from the posts (never NULL here: every topic has posts at scale).
    """
    INSERT INTO topics (id, name, color, post_count, created_at, updated_at)
    SELECT pg_temp.dg_id('topic', t.ord), t.name, t.color, coalesce(p.n, 0),
           timestamp '2021-06-01' + t.ord * interval '1 day',
           timestamp '2021-06-01' + t.ord * interval '1 day' + interval '3 hours'
      FROM unnest(%(topic_names)s::text[], %(topic_colors)s::text[]) WITH ORDINALITY AS t(name, color, ord)
      LEFT JOIN (SELECT topic_id, count(*)::integer AS n FROM posts GROUP BY topic_id) AS p
             ON p.topic_id = pg_temp.dg_id('topic', t.ord)
    """,
)

SOURCE_TABLES: tuple[str, ...] = (
    "users",
    "followers",
    "posts",
    "topics",
    "comments",
    "comment_likes",
    "notifications",
    "post_likes",
    "post_saves",
)


def generate(conn: psycopg.Connection[Any], scale: int, seed: int = 42) -> dict[str, int]:
    """Fill the empty bento_social `conn` is connected to; `scale` is the number of users.

    Roughly: posts 3x, comments 5x, post_likes 7x + comment_likes 3x, post_saves 2x, followers 5x,
    notifications 5x, topics 20.  Runs in one transaction (a savepoint if the caller has one open) and
    returns the row count of every source table.
    """
    if scale < 2:
        raise ValueError("scale must be at least 2 users")
    params: dict[str, Any] = {
        "n": scale,
        "first": FIRST_NAMES,
        "last": LAST_NAMES,
        "intl": INTL,
        "topics": TOPIC_COUNT,
        "topic_names": [name for name, _ in TOPICS],
        "topic_colors": [color for _, color in TOPICS],
    }
    helpers = sql.SQL(_HELPERS).format(seed=sql.Literal(int(seed)))
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(helpers)
        with cur.copy("COPY pg_temp.dg_text (id, txt) FROM STDIN") as copy:
            for number, sentence in enumerate(_sentences(seed)):
                copy.write_row((number, sentence))
        cur.execute("ANALYZE pg_temp.dg_text")
        for statement in _STATEMENTS:
            cur.execute(statement, params)
        cur.execute(_DROP_HELPERS)
        counts = {table: _count(cur, table) for table in SOURCE_TABLES}
    # Fresh statistics, so the workload's and the tests' first queries get sensible plans.
    with conn.transaction(), conn.cursor() as cur:
        for table in SOURCE_TABLES:
            cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return counts


def _count(cur: psycopg.Cursor[Any], table: str) -> int:
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    row = cur.fetchone()
    assert row is not None
    return int(row[0])
