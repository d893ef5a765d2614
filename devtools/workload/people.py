"""The workload's operations on people: accounts, the follow graph and notifications.

Owns: sign-ups, profile edits, username changes, deactivation and deletion of users, follows and unfollows
(with users.follower_count moving in the same transaction, so user_db's invariant holds at every commit),
and creating, reading and deleting notifications.
Must not: open connections, commit, retry or choose which operation runs next (``driver.py`` and ``mix.py``
do); each function runs inside the transaction of the cursor in its ``Ctx``.
"""

from __future__ import annotations

import uuid

from devtools.datagen import FIRST_NAMES, INTL, LAST_NAMES, WORDS
from devtools.workload.rows import (
    Ctx,
    add_follower_count,
    insert_notification,
    new_id,
    pick,
    pick_id,
    sentence,
    username,
)

# Each returns True when it changed something, False when there was nothing to act on.


def sign_up(ctx: Ctx) -> bool:
    rng = ctx.rng
    user_id = new_id()
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    ctx.cur.execute(
        "INSERT INTO users (id, cover, avatar, username, first_name, last_name, password, salt, role, bio,"
        " website_url, follower_count, post_count, status, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now())",
        (
            user_id,
            None,
            rng.choice((None, "", f"https://cdn.bento.social/avatars/{user_id}.png")),
            username(rng, user_id),
            first,
            last,
            "$2b$10$" + f"{rng.getrandbits(318):080x}"[:53],
            f"{rng.getrandbits(64):016x}",
            "admin" if rng.random() < 0.01 else "user",
            rng.choice((None, "", sentence(rng, 2, 12), f"{rng.choice(INTL)} {rng.choice(WORDS)}")),
            rng.choice((None, None, "", f"https://{last.lower()}.example.org/")),
            rng.choice((None, 0)),  # legacy sign-up paths left the counters NULL
            rng.choice((None, 0)),
            rng.choice((None, "pending", "active")),
        ),
    )
    return True


def update_profile(ctx: Ctx) -> bool:
    user_id = pick_id(ctx, "users")
    if user_id is None:
        return False
    rng = ctx.rng
    ctx.cur.execute(
        "UPDATE users SET bio = %s, website_url = %s, avatar = %s, cover = %s, updated_at = now() WHERE id = %s",
        (
            rng.choice((None, "", sentence(rng, 1, 20)[:255], "🌸 " + rng.choice(INTL))),
            rng.choice((None, "", "https://example.net/~" + user_id[:8])),
            rng.choice((None, f"https://cdn.bento.social/avatars/{uuid.uuid4()}.png")),
            rng.choice((None, f"https://cdn.bento.social/covers/{uuid.uuid4()}.jpg")),
            user_id,
        ),
    )
    return True


def change_username(ctx: Ctx) -> bool:
    user_id = pick_id(ctx, "users")
    if user_id is None:
        return False
    # A fresh name containing a fresh UUID: never one anybody has or had.
    ctx.cur.execute(
        "UPDATE users SET username = %s, updated_at = now() WHERE id = %s",
        (username(ctx.rng, str(uuid.uuid4())), user_id),
    )
    return True


def deactivate_user(ctx: Ctx) -> bool:
    user_id = pick_id(ctx, "users")
    if user_id is None:
        return False
    status = ctx.rng.choice((None, "inactive", "banned", "active", "deleted"))
    ctx.cur.execute("UPDATE users SET status = %s, updated_at = now() WHERE id = %s", (status, user_id))
    return True


def delete_user(ctx: Ctx) -> bool:
    user_id = pick_id(ctx, "users")
    if user_id is None:
        return False
    # Whom they followed loses a follower; who followed them loses the edge; then the account goes.
    ctx.cur.execute("DELETE FROM followers WHERE follower_id = %s RETURNING following_id", (user_id,))
    followed = sorted(str(r[0]) for r in ctx.cur.fetchall())
    add_follower_count(ctx, followed, -1)
    ctx.cur.execute("DELETE FROM followers WHERE following_id = %s", (user_id,))
    ctx.cur.execute("DELETE FROM notifications WHERE receiver_id = %s", (user_id,))
    ctx.cur.execute("DELETE FROM users WHERE id = %s", (user_id,))
    return True


def follow(ctx: Ctx) -> bool:
    follower = pick_id(ctx, "users")
    following = pick_id(ctx, "users")
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
    add_follower_count(ctx, [following], +1)
    insert_notification(ctx, following, follower, "followed", ctx.rng.choice((None, "started following you")))
    return True


def unfollow(ctx: Ctx) -> bool:
    row = pick(ctx, "followers", ("following_id", "follower_id"))
    if row is None:
        return False
    ctx.cur.execute("DELETE FROM followers WHERE following_id = %s AND follower_id = %s RETURNING following_id", row)
    if ctx.cur.fetchone() is None:
        return False
    add_follower_count(ctx, [str(row[0])], -1)
    return True


def notify(ctx: Ctx) -> bool:
    receiver = pick_id(ctx, "users")
    if receiver is None:
        return False
    rng = ctx.rng
    actor = None if rng.random() < 0.2 else pick_id(ctx, "users")
    content = rng.choice((None, "", "🎉 " + rng.choice(INTL), sentence(rng, 2, 15)))
    insert_notification(ctx, receiver, actor, rng.choice(("liked", "followed", "replied")), content)
    return True


def read_notifications(ctx: Ctx) -> bool:
    row = pick(ctx, "notifications", ("id", "receiver_id"))
    if row is None:
        return False
    # One statement, many rows: everything this receiver had becomes read and sent.
    ctx.cur.execute(
        "UPDATE notifications SET is_read = true, is_sent = coalesce(is_sent, true), updated_at = now()"
        " WHERE receiver_id = %s",
        (row[1],),
    )
    return True


def delete_notification(ctx: Ctx) -> bool:
    notification_id = pick_id(ctx, "notifications")
    if notification_id is None:
        return False
    ctx.cur.execute("DELETE FROM notifications WHERE id = %s", (notification_id,))
    return ctx.cur.rowcount > 0
