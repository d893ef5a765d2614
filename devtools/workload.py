"""A concurrent, realistic write workload against a bento_social source database.

Owns: the application-like writes the tests and benchmarks replay while splitter runs: sign-ups, profile
edits, posts (some long enough to be TOASTed), comments and replies, likes and unlikes, saves, follows and
unfollows, notifications, moderation, deletes, a primary-key change, multi-table transactions, NULLs,
unicode and empty strings, and (only when asked, through `truncate_once`) a TRUNCATE.

Every operation keeps the data valid under the service databases' constraints as the topology maps them:
usernames stay unique (user_db enforces it), counters move in the same transaction as the rows they
count, so users.follower_count always equals the number of followers rows with following_id = id at every
commit (user_db's invariant), and every value fits the narrower target types.

Determinism: `seed` fixes each thread's choice of operations and generated values.  Row ids are always
fresh random UUIDs (never derived from the seed), so two runs against the same database never collide;
thread interleaving is of course not deterministic.

Errors: deadlocks, serialization failures and lock timeouts (classified by SQLSTATE, never by message
text) are retried with backoff; anything else stops the run and is re-raised by `run`.
Must not: change schema, touch databases other than the one `dsn` names, or use splitter's machinery
(it plays the application, not the tool; it shares only the word lists of `splitter.datagen`).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from devtools.datagen import FIRST_NAMES, INTL, LAST_NAMES, WORDS

# SQLSTATEs a retry cures: serialization_failure, deadlock_detected, lock_not_available.
RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
MAX_ATTEMPTS = 20

# Source tables `truncate_once` accepts.
TRUNCATABLE = frozenset(
    {"users", "followers", "posts", "topics", "comments", "comment_likes", "notifications", "post_likes",
     "post_saves"}
)  # fmt: skip

# Relative frequency of each operation in the random mix.
WEIGHTS: dict[str, int] = {
    "sign_up": 4,
    "update_profile": 4,
    "change_username": 1,
    "deactivate_user": 1,
    "delete_user": 1,
    "create_post": 6,
    "edit_post_large": 2,
    "touch_toasted_post": 2,
    "change_post_id": 1,
    "delete_post": 1,
    "like_post": 10,
    "unlike_post": 4,
    "save_post": 3,
    "unsave_post": 1,
    "follow": 6,
    "unfollow": 3,
    "comment": 8,
    "moderate_comment": 2,
    "delete_comment": 1,
    "like_comment": 3,
    "notify": 4,
    "read_notifications": 3,
    "delete_notification": 1,
}
OP_KINDS: tuple[str, ...] = tuple(WEIGHTS)


class WorkloadError(RuntimeError):
    """An operation failed with an error a retry cannot cure; the run stopped."""


@dataclass
class _Ctx:
    """What one operation needs: the thread's cursor and random generator."""

    cur: psycopg.Cursor[Any]
    rng: random.Random


class Workload:
    """Concurrent application writes against bento_social.

    `threads` connections each run a random weighted mix of OP_KINDS (starting with one pass over every
    kind, so even a short run exercises them all).  `rate` caps the total operations per second (None:
    as fast as the server allows).  `counts()` reports committed operations per kind.
    """

    def __init__(self, dsn: str, seed: int = 0, threads: int = 2, rate: float | None = None) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for unthrottled)")
        self.dsn = dsn
        self.seed = seed
        self.threads = threads
        self.rate = rate
        self._lock = threading.Lock()
        self._done: Counter[str] = Counter()
        self._skipped: Counter[str] = Counter()
        self._retries = 0
        self._errors: list[BaseException] = []
        self._failed = threading.Event()
        self._ops: dict[str, Callable[[_Ctx], bool]] = {kind: getattr(self, f"_op_{kind}") for kind in OP_KINDS}

    # ------------------------------------------------------------------ public

    def counts(self) -> dict[str, int]:
        """Committed operations per kind, so far."""
        with self._lock:
            return dict(self._done)

    def skipped(self) -> dict[str, int]:
        """Operations that found nothing to act on (e.g. unfollow with no follows left), per kind."""
        with self._lock:
            return dict(self._skipped)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._done.values())

    @property
    def retries(self) -> int:
        with self._lock:
            return self._retries

    def run(self, stop_event: threading.Event) -> None:
        """Run until `stop_event` is set; re-raise the first non-retryable error as WorkloadError."""
        workers = [
            threading.Thread(target=self._thread_main, args=(i, stop_event), name=f"workload-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if self._errors:
            first = self._errors[0]
            raise WorkloadError(f"workload operation failed: {type(first).__name__}: {first}") from first

    def run_for(self, seconds: float) -> dict[str, int]:
        """Run for `seconds`, then stop; return counts()."""
        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        timer.daemon = True
        timer.start()
        try:
            self.run(stop)
        finally:
            timer.cancel()
            stop.set()
        return self.counts()

    def perform(self, kind: str, conn: psycopg.Connection[Any] | None = None, rng: random.Random | None = None) -> bool:
        """Run one operation of `kind` in its own transaction (with retries); False if it found nothing to do."""
        if kind not in self._ops:
            raise ValueError(f"unknown operation {kind!r} (known: {', '.join(OP_KINDS)})")
        rng = rng or random.Random(self.seed)
        if conn is not None:
            return self._perform(conn, kind, rng)
        with psycopg.connect(self.dsn, autocommit=True) as own:
            return self._perform(own, kind, rng)

    def truncate_once(self, table: str) -> None:
        """TRUNCATE one source table now, in one transaction (never part of the random mix).

        Truncating followers also zeroes users.follower_count in the same transaction, so the user_db
        invariant holds across the truncate as at every other commit.
        """
        if table not in TRUNCATABLE:
            raise ValueError(f"{table!r} is not a bento_social table (known: {', '.join(sorted(TRUNCATABLE))})")

        def body(ctx: _Ctx) -> bool:
            ctx.cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
            if table == "followers":
                ctx.cur.execute("UPDATE users SET follower_count = 0 WHERE follower_count <> 0")
            return True

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self._transact(conn, random.Random(self.seed), body)
        with self._lock:
            self._done["truncate"] += 1

    # --------------------------------------------------------------- machinery

    def _thread_main(self, index: int, stop_event: threading.Event) -> None:
        rng = random.Random(self.seed * 1_000_003 + index)
        kinds = list(OP_KINDS)
        weights = [WEIGHTS[k] for k in kinds]
        warmup = list(kinds) if index == 0 else []
        rng.shuffle(warmup)
        interval = self.threads / self.rate if self.rate else 0.0
        next_at = time.monotonic()
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not (stop_event.is_set() or self._failed.is_set()):
                    kind = warmup.pop() if warmup else rng.choices(kinds, weights)[0]
                    self._perform(conn, kind, rng)
                    if interval:
                        next_at += interval
                        delay = next_at - time.monotonic()
                        if delay > 0 and stop_event.wait(delay):
                            break
        except BaseException as exc:  # recorded and re-raised by run(); stop the other threads
            with self._lock:
                self._errors.append(exc)
            self._failed.set()

    def _perform(self, conn: psycopg.Connection[Any], kind: str, rng: random.Random) -> bool:
        did = self._transact(conn, rng, self._ops[kind])
        with self._lock:
            (self._done if did else self._skipped)[kind] += 1
        return did

    def _transact(self, conn: psycopg.Connection[Any], rng: random.Random, body: Callable[[_Ctx], bool]) -> bool:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with conn.transaction(), conn.cursor() as cur:
                    return body(_Ctx(cur, rng))
            except psycopg.Error as exc:
                if exc.sqlstate not in RETRY_SQLSTATES or attempt == MAX_ATTEMPTS:
                    raise
                with self._lock:
                    self._retries += 1
                time.sleep(min(0.5, 0.005 * 2**attempt) * (0.5 + rng.random()))
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def _pick(ctx: _Ctx, table: str, columns: Sequence[str], where: str = "") -> tuple[Any, ...] | None:
        """A random-ish existing row: the first at or after a random point of the table's leading key."""
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        lead = sql.Identifier(columns[0])
        extra = sql.SQL(f" AND ({where})" if where else "")  # `where` is one of this module's constants
        probe = str(uuid.UUID(int=ctx.rng.getrandbits(128)))
        query = sql.SQL("SELECT {cols} FROM {table} WHERE {lead} >= %s{extra} ORDER BY {lead} LIMIT 1").format(
            cols=cols, table=sql.Identifier(table), lead=lead, extra=extra
        )
        ctx.cur.execute(query, (probe,))
        row = ctx.cur.fetchone()
        if row is None:
            first = sql.SQL("SELECT {cols} FROM {table} WHERE true{extra} ORDER BY {lead} LIMIT 1").format(
                cols=cols, table=sql.Identifier(table), lead=lead, extra=extra
            )
            ctx.cur.execute(first)
            row = ctx.cur.fetchone()
        return tuple(row) if row is not None else None

    def _pick_id(self, ctx: _Ctx, table: str, where: str = "") -> str | None:
        row = self._pick(ctx, table, ("id",), where)
        return None if row is None else str(row[0])

    @staticmethod
    def _new_id() -> str:
        return str(uuid.uuid4())

    @staticmethod
    def _sentence(rng: random.Random, low: int = 3, high: int = 30) -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words) + 1), rng.choice(INTL))
        text = " ".join(words)
        return text[:1].upper() + text[1:] + rng.choice((".", "!", "?", ""))

    @staticmethod
    def _large_text(rng: random.Random) -> str:
        """5-20 kB of text that compresses poorly, so PostgreSQL stores it out of line (TOASTed)."""
        size = rng.randint(5_000, 20_000)
        chunks = ["Long read ✍️ "]
        total = 0
        while total < size:
            chunk = f"{rng.getrandbits(256):064x}"
            chunks.append(chunk)
            total += len(chunk) + 1
        return " ".join(chunks)

    @staticmethod
    def _username(rng: random.Random, user_id: str) -> str:
        # Unique by construction: the full id (hex digits only) is part of it; datagen's usernames end in
        # ".<number>" and never contain "_", so the two never meet.
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        return f"{first.lower()}.{last.lower()}_{user_id.replace('-', '')}"[:100]

    @staticmethod
    def _add_follower_count(ctx: _Ctx, user_ids: Sequence[str], delta: int) -> None:
        if user_ids:
            ctx.cur.execute(
                "UPDATE users SET follower_count = coalesce(follower_count, 0) + %s WHERE id = ANY(%s)",
                (delta, list(user_ids)),
            )

    @staticmethod
    def _notify(ctx: _Ctx, receiver: str, actor: str | None, action: str, content: str | None) -> None:
        ctx.cur.execute(
            "INSERT INTO notifications (id, receiver_id, actor_id, content, action, is_sent, is_read,"
            " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, now(), now())",
            (str(uuid.uuid4()), receiver, actor, content, action, ctx.rng.choice((None, False, True)), False),
        )

    # -------------------------------------------------------------- operations
    # Each returns True when it changed something, False when there was nothing to act on.

    def _op_sign_up(self, ctx: _Ctx) -> bool:
        rng = ctx.rng
        user_id = self._new_id()
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        ctx.cur.execute(
            "INSERT INTO users (id, cover, avatar, username, first_name, last_name, password, salt, role, bio,"
            " website_url, follower_count, post_count, status, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now())",
            (
                user_id,
                None,
                rng.choice((None, "", f"https://cdn.bento.social/avatars/{user_id}.png")),
                self._username(rng, user_id),
                first,
                last,
                "$2b$10$" + f"{rng.getrandbits(318):080x}"[:53],
                f"{rng.getrandbits(64):016x}",
                "admin" if rng.random() < 0.01 else "user",
                rng.choice((None, "", self._sentence(rng, 2, 12), f"{rng.choice(INTL)} {rng.choice(WORDS)}")),
                rng.choice((None, None, "", f"https://{last.lower()}.example.org/")),
                rng.choice((None, 0)),  # legacy sign-up paths left the counters NULL
                rng.choice((None, 0)),
                rng.choice((None, "pending", "active")),
            ),
        )
        return True

    def _op_update_profile(self, ctx: _Ctx) -> bool:
        user_id = self._pick_id(ctx, "users")
        if user_id is None:
            return False
        rng = ctx.rng
        ctx.cur.execute(
            "UPDATE users SET bio = %s, website_url = %s, avatar = %s, cover = %s, updated_at = now() WHERE id = %s",
            (
                rng.choice((None, "", self._sentence(rng, 1, 20)[:255], "🌸 " + rng.choice(INTL))),
                rng.choice((None, "", "https://example.net/~" + user_id[:8])),
                rng.choice((None, f"https://cdn.bento.social/avatars/{uuid.uuid4()}.png")),
                rng.choice((None, f"https://cdn.bento.social/covers/{uuid.uuid4()}.jpg")),
                user_id,
            ),
        )
        return True

    def _op_change_username(self, ctx: _Ctx) -> bool:
        user_id = self._pick_id(ctx, "users")
        if user_id is None:
            return False
        # A fresh name containing a fresh UUID: never one anybody has or had.
        ctx.cur.execute(
            "UPDATE users SET username = %s, updated_at = now() WHERE id = %s",
            (self._username(ctx.rng, str(uuid.uuid4())), user_id),
        )
        return True

    def _op_deactivate_user(self, ctx: _Ctx) -> bool:
        user_id = self._pick_id(ctx, "users")
        if user_id is None:
            return False
        status = ctx.rng.choice((None, "inactive", "banned", "active", "deleted"))
        ctx.cur.execute("UPDATE users SET status = %s, updated_at = now() WHERE id = %s", (status, user_id))
        return True

    def _op_delete_user(self, ctx: _Ctx) -> bool:
        user_id = self._pick_id(ctx, "users")
        if user_id is None:
            return False
        # Whom they followed loses a follower; who followed them loses the edge; then the account goes.
        ctx.cur.execute("DELETE FROM followers WHERE follower_id = %s RETURNING following_id", (user_id,))
        followed = sorted(str(r[0]) for r in ctx.cur.fetchall())
        self._add_follower_count(ctx, followed, -1)
        ctx.cur.execute("DELETE FROM followers WHERE following_id = %s", (user_id,))
        ctx.cur.execute("DELETE FROM notifications WHERE receiver_id = %s", (user_id,))
        ctx.cur.execute("DELETE FROM users WHERE id = %s", (user_id,))
        return True

    def _op_create_post(self, ctx: _Ctx) -> bool:
        rng = ctx.rng
        author = self._pick_id(ctx, "users")
        topic = self._pick_id(ctx, "topics")
        if author is None or topic is None:
            return False
        post_id = self._new_id()
        image = rng.choice((None, None, f"https://cdn.bento.social/posts/{post_id}.webp"))
        roll = rng.random()
        if roll < 0.1:
            content = self._large_text(rng)
        elif roll < 0.15 and image is not None:
            content = ""
        else:
            content = self._sentence(rng, 3, 60)
        ctx.cur.execute(
            "INSERT INTO posts (id, content, image, author_id, topic_id, is_featured, comment_count, liked_count,"
            " type, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now())",
            (
                post_id,
                content,
                image,
                author,
                topic,
                rng.choice((None, False, False, True)),
                rng.choice((None, 0)),
                rng.choice((None, 0)),
                rng.choice((None, "media" if image else "text")),
            ),
        )
        ctx.cur.execute("UPDATE users SET post_count = coalesce(post_count, 0) + 1 WHERE id = %s", (author,))
        ctx.cur.execute("UPDATE topics SET post_count = coalesce(post_count, 0) + 1 WHERE id = %s", (topic,))
        return True

    def _op_edit_post_large(self, ctx: _Ctx) -> bool:
        post_id = self._pick_id(ctx, "posts")
        if post_id is None:
            return False
        ctx.cur.execute(
            "UPDATE posts SET content = %s, updated_at = now() WHERE id = %s", (self._large_text(ctx.rng), post_id)
        )
        return True

    def _op_touch_toasted_post(self, ctx: _Ctx) -> bool:
        # An update that leaves a TOASTed column unchanged: pgoutput sends it as "unchanged toast".
        post_id = self._pick_id(ctx, "posts", "octet_length(content) > 4000")
        if post_id is None:
            return False
        ctx.cur.execute(
            "UPDATE posts SET is_featured = NOT coalesce(is_featured, false), updated_at = now() WHERE id = %s",
            (post_id,),
        )
        return True

    def _op_change_post_id(self, ctx: _Ctx) -> bool:
        # A primary-key change, carried to every row that refers to the post, in one transaction.
        old = self._pick_id(ctx, "posts")
        if old is None:
            return False
        new = self._new_id()
        ctx.cur.execute("UPDATE posts SET id = %s, updated_at = now() WHERE id = %s", (new, old))
        ctx.cur.execute("UPDATE post_likes SET post_id = %s WHERE post_id = %s", (new, old))
        ctx.cur.execute("UPDATE post_saves SET post_id = %s WHERE post_id = %s", (new, old))
        ctx.cur.execute("UPDATE comments SET post_id = %s WHERE post_id = %s", (new, old))
        return True

    def _op_delete_post(self, ctx: _Ctx) -> bool:
        row = self._pick(ctx, "posts", ("id", "author_id", "topic_id"))
        if row is None:
            return False
        post_id, author, topic = (str(v) for v in row)
        ctx.cur.execute("DELETE FROM posts WHERE id = %s", (post_id,))
        ctx.cur.execute("DELETE FROM post_likes WHERE post_id = %s", (post_id,))
        ctx.cur.execute("DELETE FROM post_saves WHERE post_id = %s", (post_id,))
        ctx.cur.execute("DELETE FROM comments WHERE post_id = %s", (post_id,))
        ctx.cur.execute(
            "UPDATE users SET post_count = greatest(coalesce(post_count, 0) - 1, 0) WHERE id = %s", (author,)
        )
        ctx.cur.execute(
            "UPDATE topics SET post_count = greatest(coalesce(post_count, 0) - 1, 0) WHERE id = %s", (topic,)
        )
        return True

    def _op_like_post(self, ctx: _Ctx) -> bool:
        post = self._pick(ctx, "posts", ("id", "author_id"))
        user_id = self._pick_id(ctx, "users")
        if post is None or user_id is None:
            return False
        post_id, author = str(post[0]), str(post[1])
        ctx.cur.execute(
            "INSERT INTO post_likes (post_id, user_id, created_at) VALUES (%s, %s, clock_timestamp())"
            " ON CONFLICT DO NOTHING",
            (post_id, user_id),
        )
        if ctx.cur.rowcount == 0:
            return False
        ctx.cur.execute("UPDATE posts SET liked_count = coalesce(liked_count, 0) + 1 WHERE id = %s", (post_id,))
        self._notify(ctx, author, user_id, "liked", ctx.rng.choice((None, "", "liked your post ❤️")))
        return True

    def _op_unlike_post(self, ctx: _Ctx) -> bool:
        row = self._pick(ctx, "post_likes", ("post_id", "user_id"))
        if row is None:
            return False
        ctx.cur.execute("DELETE FROM post_likes WHERE post_id = %s AND user_id = %s", row)
        if ctx.cur.rowcount == 0:
            return False
        ctx.cur.execute(
            "UPDATE posts SET liked_count = greatest(coalesce(liked_count, 0) - 1, 0) WHERE id = %s", (row[0],)
        )
        return True

    def _op_save_post(self, ctx: _Ctx) -> bool:
        post_id = self._pick_id(ctx, "posts")
        user_id = self._pick_id(ctx, "users")
        if post_id is None or user_id is None:
            return False
        ctx.cur.execute(
            "INSERT INTO post_saves (post_id, user_id, created_at) VALUES (%s, %s, clock_timestamp())"
            " ON CONFLICT DO NOTHING",
            (post_id, user_id),
        )
        return ctx.cur.rowcount > 0

    def _op_unsave_post(self, ctx: _Ctx) -> bool:
        row = self._pick(ctx, "post_saves", ("post_id", "user_id"))
        if row is None:
            return False
        ctx.cur.execute("DELETE FROM post_saves WHERE post_id = %s AND user_id = %s", row)
        return ctx.cur.rowcount > 0

    def _op_follow(self, ctx: _Ctx) -> bool:
        follower = self._pick_id(ctx, "users")
        following = self._pick_id(ctx, "users")
        if follower is None or following is None or follower == following:
            return False
        # The edge and the counter move together: user_db's invariant holds at every commit.
        ctx.cur.execute(
            "INSERT INTO followers (follower_id, following_id, created_at) VALUES (%s, %s, clock_timestamp())"
            " ON CONFLICT DO NOTHING",
            (follower, following),
        )
        if ctx.cur.rowcount == 0:
            return False
        self._add_follower_count(ctx, [following], +1)
        self._notify(ctx, following, follower, "followed", ctx.rng.choice((None, "started following you")))
        return True

    def _op_unfollow(self, ctx: _Ctx) -> bool:
        row = self._pick(ctx, "followers", ("following_id", "follower_id"))
        if row is None:
            return False
        ctx.cur.execute(
            "DELETE FROM followers WHERE following_id = %s AND follower_id = %s RETURNING following_id", row
        )
        if ctx.cur.fetchone() is None:
            return False
        self._add_follower_count(ctx, [str(row[0])], -1)
        return True

    def _op_comment(self, ctx: _Ctx) -> bool:
        rng = ctx.rng
        user_id = self._pick_id(ctx, "users")
        if user_id is None:
            return False
        parent: tuple[Any, ...] | None = None
        if rng.random() < 0.3:
            parent = self._pick(ctx, "comments", ("id", "post_id", "user_id"), "parent_id IS NULL")
        if parent is not None:
            parent_id, post_id, notify = str(parent[0]), str(parent[1]), str(parent[2])
        else:
            post = self._pick(ctx, "posts", ("id", "author_id"))
            if post is None:
                return False
            parent_id, post_id, notify = None, str(post[0]), str(post[1])
        roll = rng.random()
        content = self._large_text(rng) if roll < 0.02 else "" if roll < 0.05 else self._sentence(rng, 1, 40)
        ctx.cur.execute(
            "INSERT INTO comments (id, user_id, post_id, parent_id, content, status, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, clock_timestamp(), NULL)",
            (self._new_id(), user_id, post_id, parent_id, content, rng.choice(("pending", "approved"))),
        )
        ctx.cur.execute("UPDATE posts SET comment_count = coalesce(comment_count, 0) + 1 WHERE id = %s", (post_id,))
        if parent_id is not None:
            ctx.cur.execute("UPDATE comments SET reply_count = reply_count + 1 WHERE id = %s", (parent_id,))
        self._notify(ctx, notify, user_id, "replied", rng.choice((None, "", "replied: " + content[:80])))
        return True

    def _op_moderate_comment(self, ctx: _Ctx) -> bool:
        comment_id = self._pick_id(ctx, "comments")
        if comment_id is None:
            return False
        ctx.cur.execute(
            "UPDATE comments SET status = %s, updated_at = clock_timestamp() WHERE id = %s",
            (ctx.rng.choice(("approved", "rejected", "spam", "deleted", "pending")), comment_id),
        )
        return True

    def _op_delete_comment(self, ctx: _Ctx) -> bool:
        comment_id = self._pick_id(ctx, "comments", "reply_count = 0")
        if comment_id is None:
            return False
        ctx.cur.execute("DELETE FROM comments WHERE id = %s RETURNING post_id, parent_id", (comment_id,))
        row = ctx.cur.fetchone()
        if row is None:
            return False
        ctx.cur.execute("DELETE FROM comment_likes WHERE comment_id = %s", (comment_id,))
        ctx.cur.execute(
            "UPDATE posts SET comment_count = greatest(coalesce(comment_count, 0) - 1, 0) WHERE id = %s", (row[0],)
        )
        if row[1] is not None:
            ctx.cur.execute("UPDATE comments SET reply_count = greatest(reply_count - 1, 0) WHERE id = %s", (row[1],))
        return True

    def _op_like_comment(self, ctx: _Ctx) -> bool:
        comment_id = self._pick_id(ctx, "comments")
        user_id = self._pick_id(ctx, "users")
        if comment_id is None or user_id is None:
            return False
        ctx.cur.execute(
            "INSERT INTO comment_likes (comment_id, user_id, created_at) VALUES (%s, %s, clock_timestamp())"
            " ON CONFLICT DO NOTHING",
            (comment_id, user_id),
        )
        if ctx.cur.rowcount == 0:
            return False
        ctx.cur.execute("UPDATE comments SET liked_count = liked_count + 1 WHERE id = %s", (comment_id,))
        return True

    def _op_notify(self, ctx: _Ctx) -> bool:
        receiver = self._pick_id(ctx, "users")
        if receiver is None:
            return False
        rng = ctx.rng
        actor = None if rng.random() < 0.2 else self._pick_id(ctx, "users")
        content = rng.choice((None, "", "🎉 " + rng.choice(INTL), self._sentence(rng, 2, 15)))
        self._notify(ctx, receiver, actor, rng.choice(("liked", "followed", "replied")), content)
        return True

    def _op_read_notifications(self, ctx: _Ctx) -> bool:
        row = self._pick(ctx, "notifications", ("id", "receiver_id"))
        if row is None:
            return False
        # One statement, many rows: everything this receiver had becomes read and sent.
        ctx.cur.execute(
            "UPDATE notifications SET is_read = true, is_sent = coalesce(is_sent, true), updated_at = now()"
            " WHERE receiver_id = %s",
            (row[1],),
        )
        return True

    def _op_delete_notification(self, ctx: _Ctx) -> bool:
        notification_id = self._pick_id(ctx, "notifications")
        if notification_id is None:
            return False
        ctx.cur.execute("DELETE FROM notifications WHERE id = %s", (notification_id,))
        return ctx.cur.rowcount > 0
