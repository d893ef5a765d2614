"""What every workload operation shares: its context, picking existing rows, generated values, common writes.

Owns: ``Ctx`` (the thread's cursor and random generator), picking a random-ish existing row, fresh ids,
sentences, large (TOASTed) texts, unique usernames, and the two writes several operations make
(follower counters, notifications).
Must not: commit, retry or open connections (``driver.py`` does), or decide which operation runs.
Values come from ``ctx.rng`` in a fixed order, so a seed fixes them; row ids are always fresh random UUIDs.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from devtools.datagen import FIRST_NAMES, INTL, LAST_NAMES, WORDS


@dataclass
class Ctx:
    """What one operation needs: the thread's cursor and random generator."""

    cur: psycopg.Cursor[Any]
    rng: random.Random


def pick(ctx: Ctx, table: str, columns: Sequence[str], where: str = "") -> tuple[Any, ...] | None:
    """A random-ish existing row: the first at or after a random point of the table's leading key."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    lead = sql.Identifier(columns[0])
    extra = sql.SQL(f" AND ({where})" if where else "")  # `where` is a constant in an operation module
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


def pick_id(ctx: Ctx, table: str, where: str = "") -> str | None:
    row = pick(ctx, table, ("id",), where)
    return None if row is None else str(row[0])


def new_id() -> str:
    return str(uuid.uuid4())


def sentence(rng: random.Random, low: int = 3, high: int = 30) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words) + 1), rng.choice(INTL))
    text = " ".join(words)
    return text[:1].upper() + text[1:] + rng.choice((".", "!", "?", ""))


def large_text(rng: random.Random) -> str:
    """5-20 kB of text that compresses poorly, so PostgreSQL stores it out of line (TOASTed)."""
    size = rng.randint(5_000, 20_000)
    chunks = ["Long read ✍️ "]
    total = 0
    while total < size:
        chunk = f"{rng.getrandbits(256):064x}"
        chunks.append(chunk)
        total += len(chunk) + 1
    return " ".join(chunks)


def username(rng: random.Random, user_id: str) -> str:
    # Unique by construction: the full id (hex digits only) is part of it; datagen's usernames end in
    # ".<number>" and never contain "_", so the two never meet.
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return f"{first.lower()}.{last.lower()}_{user_id.replace('-', '')}"[:100]


def add_follower_count(ctx: Ctx, user_ids: Sequence[str], delta: int) -> None:
    if user_ids:
        ctx.cur.execute(
            "UPDATE users SET follower_count = coalesce(follower_count, 0) + %s WHERE id = ANY(%s)",
            (delta, list(user_ids)),
        )


def insert_notification(ctx: Ctx, receiver: str, actor: str | None, action: str, content: str | None) -> None:
    ctx.cur.execute(
        "INSERT INTO notifications (id, receiver_id, actor_id, content, action, is_sent, is_read,"
        " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, now(), now())",
        (str(uuid.uuid4()), receiver, actor, content, action, ctx.rng.choice((None, False, True)), False),
    )
