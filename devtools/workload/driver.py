"""A concurrent, realistic write workload against a bento_social source database: the driver loop.

Owns: ``Workload``, which plays the application while splitter runs: ``threads`` connections each run the
weighted random mix of ``mix.py`` (people, posts, comments, likes, follows, notifications, moderation,
deletes, a primary-key change, multi-table transactions, NULLs, unicode and empty strings; TOASTed posts),
throttled to ``rate``, each operation in its own transaction; per-kind counts; and (only when asked,
through ``truncate_once``) a TRUNCATE.

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
(it plays the application, not the tool; it shares only the word lists of `devtools.datagen`).  What one
operation writes lives in ``people.py``/``posts.py``, not here.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from devtools.workload.mix import OP_KINDS, OPERATIONS, WEIGHTS
from devtools.workload.rows import Ctx

# SQLSTATEs a retry cures: serialization_failure, deadlock_detected, lock_not_available.
RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
MAX_ATTEMPTS = 20

# Source tables `truncate_once` accepts.
TRUNCATABLE = frozenset(
    {"users", "followers", "posts", "topics", "comments", "comment_likes", "notifications", "post_likes",
     "post_saves"}
)  # fmt: skip


class WorkloadError(RuntimeError):
    """An operation failed with an error a retry cannot cure; the run stopped."""


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
        if kind not in OPERATIONS:
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

        def body(ctx: Ctx) -> bool:
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
        did = self._transact(conn, rng, OPERATIONS[kind])
        with self._lock:
            (self._done if did else self._skipped)[kind] += 1
        return did

    def _transact(self, conn: psycopg.Connection[Any], rng: random.Random, body: Callable[[Ctx], bool]) -> bool:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with conn.transaction(), conn.cursor() as cur:
                    return body(Ctx(cur, rng))
            except psycopg.Error as exc:
                if exc.sqlstate not in RETRY_SQLSTATES or attempt == MAX_ATTEMPTS:
                    raise
                with self._lock:
                    self._retries += 1
                time.sleep(min(0.5, 0.005 * 2**attempt) * (0.5 + rng.random()))
        raise AssertionError("unreachable")
