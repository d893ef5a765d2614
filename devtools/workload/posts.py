"""The workload's operations on content: posts, likes, saves and comments.

Owns: creating, editing (some long enough to be TOASTed), re-keying and deleting posts, likes and saves,
comments and replies with their counters, moderation and deletion of comments, likes of comments.
Must not: open connections, commit, retry or choose which operation runs next (``driver.py`` and ``mix.py``
do); each function runs inside the transaction of the cursor in its ``Ctx``.
"""

from __future__ import annotations

from typing import Any

from devtools.workload.rows import Ctx, insert_notification, large_text, new_id, pick, pick_id, sentence

# Each returns True when it changed something, False when there was nothing to act on.


def create_post(ctx: Ctx) -> bool:
    rng = ctx.rng
    author = pick_id(ctx, "users")
    topic = pick_id(ctx, "topics")
    if author is None or topic is None:
        return False
    post_id = new_id()
    image = rng.choice((None, None, f"https://cdn.bento.social/posts/{post_id}.webp"))
    roll = rng.random()
    if roll < 0.1:
        content = large_text(rng)
    elif roll < 0.15 and image is not None:
        content = ""
    else:
        content = sentence(rng, 3, 60)
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


def edit_post_large(ctx: Ctx) -> bool:
    post_id = pick_id(ctx, "posts")
    if post_id is None:
        return False
    ctx.cur.execute("UPDATE posts SET content = %s, updated_at = now() WHERE id = %s", (large_text(ctx.rng), post_id))
    return True


def touch_toasted_post(ctx: Ctx) -> bool:
    # An update that leaves a TOASTed column unchanged: pgoutput sends it as "unchanged toast".
    post_id = pick_id(ctx, "posts", "octet_length(content) > 4000")
    if post_id is None:
        return False
    ctx.cur.execute(
        "UPDATE posts SET is_featured = NOT coalesce(is_featured, false), updated_at = now() WHERE id = %s",
        (post_id,),
    )
    return True


def change_post_id(ctx: Ctx) -> bool:
    # A primary-key change, carried to every row that refers to the post, in one transaction.
    old = pick_id(ctx, "posts")
    if old is None:
        return False
    new = new_id()
    ctx.cur.execute("UPDATE posts SET id = %s, updated_at = now() WHERE id = %s", (new, old))
    ctx.cur.execute("UPDATE post_likes SET post_id = %s WHERE post_id = %s", (new, old))
    ctx.cur.execute("UPDATE post_saves SET post_id = %s WHERE post_id = %s", (new, old))
    ctx.cur.execute("UPDATE comments SET post_id = %s WHERE post_id = %s", (new, old))
    return True


def delete_post(ctx: Ctx) -> bool:
    row = pick(ctx, "posts", ("id", "author_id", "topic_id"))
    if row is None:
        return False
    post_id, author, topic = (str(v) for v in row)
    ctx.cur.execute("DELETE FROM posts WHERE id = %s", (post_id,))
    ctx.cur.execute("DELETE FROM post_likes WHERE post_id = %s", (post_id,))
    ctx.cur.execute("DELETE FROM post_saves WHERE post_id = %s", (post_id,))
    ctx.cur.execute("DELETE FROM comments WHERE post_id = %s", (post_id,))
    ctx.cur.execute("UPDATE users SET post_count = greatest(coalesce(post_count, 0) - 1, 0) WHERE id = %s", (author,))
    ctx.cur.execute("UPDATE topics SET post_count = greatest(coalesce(post_count, 0) - 1, 0) WHERE id = %s", (topic,))
    return True


def like_post(ctx: Ctx) -> bool:
    post = pick(ctx, "posts", ("id", "author_id"))
    user_id = pick_id(ctx, "users")
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
    insert_notification(ctx, author, user_id, "liked", ctx.rng.choice((None, "", "liked your post ❤️")))
    return True


def unlike_post(ctx: Ctx) -> bool:
    row = pick(ctx, "post_likes", ("post_id", "user_id"))
    if row is None:
        return False
    ctx.cur.execute("DELETE FROM post_likes WHERE post_id = %s AND user_id = %s", row)
    if ctx.cur.rowcount == 0:
        return False
    ctx.cur.execute("UPDATE posts SET liked_count = greatest(coalesce(liked_count, 0) - 1, 0) WHERE id = %s", (row[0],))
    return True


def save_post(ctx: Ctx) -> bool:
    post_id = pick_id(ctx, "posts")
    user_id = pick_id(ctx, "users")
    if post_id is None or user_id is None:
        return False
    ctx.cur.execute(
        "INSERT INTO post_saves (post_id, user_id, created_at) VALUES (%s, %s, clock_timestamp())"
        " ON CONFLICT DO NOTHING",
        (post_id, user_id),
    )
    return ctx.cur.rowcount > 0


def unsave_post(ctx: Ctx) -> bool:
    row = pick(ctx, "post_saves", ("post_id", "user_id"))
    if row is None:
        return False
    ctx.cur.execute("DELETE FROM post_saves WHERE post_id = %s AND user_id = %s", row)
    return ctx.cur.rowcount > 0


def comment(ctx: Ctx) -> bool:
    rng = ctx.rng
    user_id = pick_id(ctx, "users")
    if user_id is None:
        return False
    parent: tuple[Any, ...] | None = None
    if rng.random() < 0.3:
        parent = pick(ctx, "comments", ("id", "post_id", "user_id"), "parent_id IS NULL")
    if parent is not None:
        parent_id, post_id, notify = str(parent[0]), str(parent[1]), str(parent[2])
    else:
        post = pick(ctx, "posts", ("id", "author_id"))
        if post is None:
            return False
        parent_id, post_id, notify = None, str(post[0]), str(post[1])
    roll = rng.random()
    content = large_text(rng) if roll < 0.02 else "" if roll < 0.05 else sentence(rng, 1, 40)
    ctx.cur.execute(
        "INSERT INTO comments (id, user_id, post_id, parent_id, content, status, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, clock_timestamp(), NULL)",
        (new_id(), user_id, post_id, parent_id, content, rng.choice(("pending", "approved"))),
    )
    ctx.cur.execute("UPDATE posts SET comment_count = coalesce(comment_count, 0) + 1 WHERE id = %s", (post_id,))
    if parent_id is not None:
        ctx.cur.execute("UPDATE comments SET reply_count = reply_count + 1 WHERE id = %s", (parent_id,))
    insert_notification(ctx, notify, user_id, "replied", rng.choice((None, "", "replied: " + content[:80])))
    return True


def moderate_comment(ctx: Ctx) -> bool:
    comment_id = pick_id(ctx, "comments")
    if comment_id is None:
        return False
    ctx.cur.execute(
        "UPDATE comments SET status = %s, updated_at = clock_timestamp() WHERE id = %s",
        (ctx.rng.choice(("approved", "rejected", "spam", "deleted", "pending")), comment_id),
    )
    return True


def delete_comment(ctx: Ctx) -> bool:
    comment_id = pick_id(ctx, "comments", "reply_count = 0")
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


def like_comment(ctx: Ctx) -> bool:
    comment_id = pick_id(ctx, "comments")
    user_id = pick_id(ctx, "users")
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
