"""What the routed workload writes: per service, operations that each write ONE service's owned data.

Owns: ``Write`` (one single-row, single-table write described in source terms: the service whose data it
is, the source table, insert/update/delete, key, values), ``Pools`` (the rows one thread may touch: the
keys partition rows among threads, so two threads never write one row and the ledger's order is the
commit order), and ``OPERATIONS`` with their weights.  Ownership follows topology.py's `shared`: auth
owns user rows and the login columns, user the profile, interaction followers, likes and saves.
Must not: run SQL, choose a database or know the routing (``routed.py`` does); write two services' data
in one operation (an application must not, while one of them is fenced).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from devtools.datagen import FIRST_NAMES, INTL, LAST_NAMES, WORDS

Kind = Literal["insert", "update", "delete"]


@dataclass(frozen=True)
class Write:
    service: str
    table: str  # source table
    kind: Kind
    key: dict[str, str]  # source key column -> value
    values: dict[str, Any] = field(default_factory=dict)  # source column -> value (insert: the whole row)


@dataclass
class Pools:
    """One thread's rows (source table -> keys it may update or delete) and the ids it may refer to."""

    mine: dict[str, list[dict[str, str]]]
    refs: dict[str, list[str]]  # table -> ids any thread may point at (authors, topics, posts)

    def pick(self, rng: random.Random, table: str) -> dict[str, str] | None:
        rows = self.mine.get(table) or []
        return rng.choice(rows) if rows else None

    def ref(self, rng: random.Random, table: str) -> str | None:
        ids = self.refs.get(table) or []
        return rng.choice(ids) if ids else None


def now() -> datetime:
    """Wall-clock time as a timestamp without time zone (the executor cuts it to the column's precision)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _text(rng: random.Random, low: int, high: int, limit: int) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    if rng.random() < 0.2:
        words.append(rng.choice(INTL))
    return " ".join(words)[:limit]


def _id() -> str:
    return str(uuid.uuid4())


# --- auth: the account (rows of users and the login columns) ----------------------------------------------


def sign_up(rng: random.Random, pools: Pools) -> Write:
    user_id, at = _id(), now()
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return Write("auth", "users", "insert", {"id": user_id}, {
        "username": f"{first.lower()}.{last.lower()}_{user_id.replace('-', '')}"[:100],
        "password": "$2b$10$" + f"{rng.getrandbits(318):080x}"[:53], "salt": f"{rng.getrandbits(64):016x}",
        "role": "admin" if rng.random() < 0.02 else "user", "status": rng.choice(("active", "pending")),
        "created_at": at, "updated_at": at,
        # A new account has an empty profile (the topology's reverse defaults say the same).
        "first_name": "", "last_name": "",
    })


def change_password(rng: random.Random, pools: Pools) -> Write | None:
    key = pools.pick(rng, "users")
    return None if key is None else Write("auth", "users", "update", key, {
        "password": "$2b$12$" + f"{rng.getrandbits(318):080x}"[:53], "salt": f"{rng.getrandbits(64):016x}"})


def change_username(rng: random.Random, pools: Pools) -> Write | None:
    key = pools.pick(rng, "users")
    return None if key is None else Write("auth", "users", "update", key, {
        "username": f"{rng.choice(FIRST_NAMES).lower()}_{uuid.uuid4().hex}"[:100]})


def deactivate(rng: random.Random, pools: Pools) -> Write | None:
    key = pools.pick(rng, "users")
    return None if key is None else Write("auth", "users", "update", key,
                                          {"status": rng.choice(("inactive", "active", "banned"))})


# --- user: the profile -------------------------------------------------------------------------------------


def update_profile(rng: random.Random, pools: Pools) -> Write | None:
    key = pools.pick(rng, "users")
    if key is None:
        return None
    return Write("user", "users", "update", key, {
        "first_name": rng.choice(FIRST_NAMES), "last_name": rng.choice(LAST_NAMES),
        "bio": rng.choice((None, "", _text(rng, 1, 20, 255))),
        "avatar": rng.choice((None, f"https://cdn.bento.social/avatars/{uuid.uuid4()}.png")),
        "cover": rng.choice((None, f"https://cdn.bento.social/covers/{uuid.uuid4()}.jpg")),
        "website_url": rng.choice((None, "", f"https://example.net/~{key['id'][:8]}")),
        "updated_at": now(),
    })


# --- interaction: follows, likes, saves ----------------------------------------------------------------------


def _edge(rng: random.Random, pools: Pools, service: str, table: str, mine: str, other: str,
          other_table: str) -> Write | None:
    me, them = pools.pick(rng, "users"), pools.ref(rng, other_table)
    if me is None or them is None or them == me["id"]:
        return None
    return Write(service, table, "insert", {mine: me["id"], other: them}, {"created_at": now()})


def follow(rng: random.Random, pools: Pools) -> Write | None:
    return _edge(rng, pools, "interaction", "followers", "follower_id", "following_id", "users")


def like(rng: random.Random, pools: Pools) -> Write | None:
    return _edge(rng, pools, "interaction", "post_likes", "user_id", "post_id", "posts")


def save(rng: random.Random, pools: Pools) -> Write | None:
    return _edge(rng, pools, "interaction", "post_saves", "user_id", "post_id", "posts")


def _undo(table: str) -> Callable[[random.Random, Pools], Write | None]:
    def undo(rng: random.Random, pools: Pools) -> Write | None:
        key = pools.pick(rng, table)
        return None if key is None else Write("interaction", table, "delete", key)
    return undo


# --- post, topic, comment, notification: one table each -----------------------------------------------------


def create_post(rng: random.Random, pools: Pools) -> Write | None:
    author, topic = pools.ref(rng, "users"), pools.ref(rng, "topics")
    if author is None or topic is None:
        return None
    post_id, at = _id(), now()
    image = rng.choice((None, f"https://cdn.bento.social/posts/{post_id}.webp"))
    return Write("post", "posts", "insert", {"id": post_id}, {
        "content": _text(rng, 3, 60, 4000), "image": image, "author_id": author, "topic_id": topic,
        "is_featured": rng.choice((False, True)), "comment_count": 0, "liked_count": 0,
        "type": "media" if image else "text", "created_at": at, "updated_at": at})


def edit_post(rng: random.Random, pools: Pools) -> Write | None:
    key = pools.pick(rng, "posts")
    return None if key is None else Write("post", "posts", "update", key, {
        "content": _text(rng, 3, 60, 4000), "is_featured": rng.choice((False, True)), "updated_at": now()})


def create_topic(rng: random.Random, pools: Pools) -> Write:
    topic_id, at = _id(), now()
    return Write("topic", "topics", "insert", {"id": topic_id}, {
        "name": f"{rng.choice(WORDS)} {topic_id[:8]}", "color": f"#{rng.getrandbits(24):06x}", "post_count": 0,
        "created_at": at, "updated_at": at})


def rename_topic(rng: random.Random, pools: Pools) -> Write | None:
    key = pools.pick(rng, "topics")
    return None if key is None else Write("topic", "topics", "update", key, {
        "name": f"{rng.choice(WORDS)} {uuid.uuid4().hex[:8]}", "color": f"#{rng.getrandbits(24):06x}",
        "updated_at": now()})


def comment(rng: random.Random, pools: Pools) -> Write | None:
    user, post = pools.ref(rng, "users"), pools.ref(rng, "posts")
    if user is None or post is None:
        return None
    return Write("comment", "comments", "insert", {"id": _id()}, {
        "user_id": user, "post_id": post, "parent_id": None, "content": _text(rng, 1, 40, 2000),
        "liked_count": 0, "reply_count": 0, "status": rng.choice(("pending", "approved")), "created_at": now(),
        "updated_at": None})


def moderate(rng: random.Random, pools: Pools) -> Write | None:
    key = pools.pick(rng, "comments")
    return None if key is None else Write("comment", "comments", "update", key, {
        "status": rng.choice(("approved", "rejected", "spam", "deleted", "pending")), "updated_at": now()})


def notify(rng: random.Random, pools: Pools) -> Write | None:
    receiver = pools.ref(rng, "users")
    if receiver is None:
        return None
    at = now()
    return Write("notification", "notifications", "insert", {"id": _id()}, {
        "receiver_id": receiver, "actor_id": pools.ref(rng, "users"),
        "content": rng.choice((None, "", _text(rng, 2, 15, 500))),
        "action": rng.choice(("liked", "followed", "replied")), "is_sent": rng.choice((None, False)),
        "is_read": False, "created_at": at, "updated_at": at})


def read_notification(rng: random.Random, pools: Pools) -> Write | None:
    key = pools.pick(rng, "notifications")
    return None if key is None else Write("notification", "notifications", "update", key,
                                          {"is_read": True, "is_sent": True, "updated_at": now()})


Operation = Callable[[random.Random, Pools], Write | None]

# name -> (weight, operation); every service gets about the same share of the writes.
OPERATIONS: dict[str, tuple[int, Operation]] = {
    "sign_up": (3, sign_up),
    "change_password": (3, change_password),
    "change_username": (2, change_username),
    "deactivate": (2, deactivate),
    "update_profile": (10, update_profile),
    "follow": (4, follow),
    "unfollow": (2, _undo("followers")),
    "like": (2, like),
    "unlike": (1, _undo("post_likes")),
    "save": (1, save),
    "unsave": (1, _undo("post_saves")),
    "create_post": (4, create_post),
    "edit_post": (6, edit_post),
    "create_topic": (3, create_topic),
    "rename_topic": (7, rename_topic),
    "comment": (5, comment),
    "moderate": (5, moderate),
    "notify": (5, notify),
    "read_notification": (5, read_notification),
}
