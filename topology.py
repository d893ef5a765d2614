"""The bento_social split: which service takes which source table, keyed how, reshaped how.

Every target column is one SQL expression over the source row, written with the source's plain column
names.  The same expression runs in the backfill SELECT, in the worker's INSERT ... SELECT and in verify's
checksums, so the three cannot drift apart.  The target DDL is in splitter/sql/targets/<database>.sql.

The real-world differences this split exercises, and where:

* projection: auth.users keeps only the login columns of users;
* renamed column: auth.users.password_hash <- users.password;
* renamed table, reordered key: interaction.follows <- followers, keyed (follower_id, following_id);
* fan-out: users -> auth_db and user_db; followers -> user_db and interaction_db;
* nullable in the source, NOT NULL in the target: coalesce(...) (users.status, counters, posts.type,
  posts.is_featured, comments.updated_at, notifications.content/is_sent/is_read);
* timestamp(3) -> timestamp(0): date_trunc('second', created_at), so the narrowing truncates explicitly
  instead of letting the assignment cast round to the nearest second (user_db followers, interaction
  post_likes);
* target-only columns: user_db users.visibility and notification_db notifications.channel are declared
  here as constants; auth_db users.mfa_enabled is not declared, so its database default fills it;
* every target database defines its own enum types, several with values the source lacks, some with
  different defaults, and wider varchars (see the DDL headers);
* a unique index the source never enforced: user_db users(username);
* shared tables (`shared`): users is owned by auth (its rows, the login columns) and user (the profile
  columns); followers, taken whole by user_db and interaction_db, is owned by interaction (follow and
  unfollow are its writes), user_db keeps a read copy.  Each service is cut over on its own.

Left out on purpose: comment_likes.  No service takes it (likes of comments are dropped by the split; the
comment service keeps only comments.liked_count).  It is deliberately NOT listed in `unrouted`, so that
`splitter plan` reports it as a source table no service takes.
"""

from __future__ import annotations

from splitter.topology.model import Ownership, Service, Table, Topology

TOPOLOGY = Topology(
    source_database="bento_social",
    services=(
        Service(
            "auth",
            database="auth_db",
            schema="auth",
            tables=(
                Table(
                    "users",
                    source="users",
                    key=("id",),
                    # Projection: only what login needs.  mfa_enabled (target-only) is left to its DDL default.
                    columns={
                        "id": "id",
                        "username": "username",
                        "password_hash": "password",  # renamed
                        "salt": "salt",
                        "role": "role",  # target enum auth.user_role has an extra 'moderator'
                        "status": "coalesce(status, 'active')",  # nullable in the source, NOT NULL here
                        "created_at": "created_at",
                        "updated_at": "updated_at",
                    },
                ),
            ),
        ),
        Service(
            "user",
            database="user_db",
            schema="users",
            tables=(
                Table(
                    "users",
                    source="users",
                    key=("id",),
                    columns={
                        "id": "id",
                        "username": "username",  # unique in user_db, never enforced in the source
                        "first_name": "first_name",
                        "last_name": "last_name",
                        "cover": "cover",
                        "avatar": "avatar",
                        "bio": "bio",
                        "website_url": "website_url",
                        "follower_count": "coalesce(follower_count, 0)",
                        "post_count": "coalesce(post_count, 0)",
                        "status": "coalesce(status, 'active')",
                        # Target-only column, filled from a constant (its DDL default differs on purpose).
                        "visibility": "'public'",
                        "created_at": "created_at",
                        "updated_at": "updated_at",
                    },
                ),
                Table(
                    "followers",
                    source="followers",
                    key=("following_id", "follower_id"),
                    columns={
                        "following_id": "following_id",
                        "follower_id": "follower_id",
                        # timestamp(3) -> timestamp(0): truncate explicitly, never round.
                        "created_at": "date_trunc('second', created_at)",
                    },
                ),
            ),
        ),
        Service(
            "post",
            database="post_db",
            schema="post",
            tables=(
                Table(
                    "posts",
                    source="posts",
                    key=("id",),
                    columns={
                        "id": "id",
                        "author_id": "author_id",
                        "topic_id": "topic_id",
                        "type": "coalesce(type, 'text')",  # post.post_type adds 'link', 'poll'
                        "content": "content",  # often TOASTed
                        "image": "image",
                        "is_featured": "coalesce(is_featured, false)",  # no default in the target
                        "comment_count": "coalesce(comment_count, 0)",
                        "liked_count": "coalesce(liked_count, 0)",
                        "created_at": "created_at",
                        "updated_at": "updated_at",
                    },
                ),
            ),
        ),
        Service(
            "topic",
            database="topic_db",
            schema="topic",
            tables=(
                Table(
                    "topics",
                    source="topics",
                    key=("id",),
                    columns={
                        "id": "id",
                        "name": "name",
                        "color": "color",
                        "post_count": "coalesce(post_count, 0)",
                        "created_at": "created_at",
                        "updated_at": "updated_at",
                    },
                ),
            ),
        ),
        Service(
            "comment",
            database="comment_db",
            schema="comment",
            tables=(
                Table(
                    "comments",
                    source="comments",
                    key=("id",),
                    columns={
                        "id": "id",
                        "post_id": "post_id",
                        "user_id": "user_id",
                        "parent_id": "parent_id",
                        "content": "content",
                        "liked_count": "liked_count",
                        "reply_count": "reply_count",
                        "status": "status",  # comment.comment_status adds 'hidden'; default differs
                        "created_at": "created_at",  # stays timestamp(3)
                        "updated_at": "coalesce(updated_at, created_at)",  # nullable in the source
                    },
                ),
            ),
        ),
        Service(
            "notification",
            database="notification_db",
            schema="notification",
            tables=(
                Table(
                    "notifications",
                    source="notifications",
                    key=("id",),
                    columns={
                        "id": "id",
                        "receiver_id": "receiver_id",
                        "actor_id": "actor_id",
                        "action": "action",  # notification.notification_action adds values
                        "content": "coalesce(content, '')",
                        # Target-only enum column, filled from a constant (its DDL default is 'push').
                        "channel": "'in_app'",
                        "is_sent": "coalesce(is_sent, false)",
                        "is_read": "coalesce(is_read, false)",
                        "created_at": "created_at",
                        "updated_at": "updated_at",
                    },
                ),
            ),
        ),
        Service(
            "interaction",
            database="interaction_db",
            schema="interaction",
            tables=(
                Table(
                    "post_likes",
                    source="post_likes",
                    key=("post_id", "user_id"),
                    columns={
                        "post_id": "post_id",
                        "user_id": "user_id",
                        "created_at": "date_trunc('second', created_at)",  # timestamp(3) -> timestamp(0)
                    },
                ),
                Table(
                    "post_saves",
                    source="post_saves",
                    key=("user_id", "post_id"),  # the source's key, in the other order
                    columns={
                        "user_id": "user_id",
                        "post_id": "post_id",
                        "created_at": "created_at",
                    },
                ),
                Table(
                    "follows",  # renamed: fan-out of followers, also taken by user_db
                    source="followers",
                    key=("follower_id", "following_id"),
                    columns={
                        "follower_id": "follower_id",
                        "following_id": "following_id",
                        "created_at": "created_at",
                    },
                ),
            ),
        ),
    ),
    shared=(
        Ownership(
            "users",
            rows="auth",  # sign-up and account deletion are auth's writes
            columns={
                "auth": ("username", "password", "salt", "role", "status", "created_at"),
                # The profile; updated_at is the profile's edit time, so auth_db's copy is read-only.
                "user": ("first_name", "last_name", "cover", "avatar", "bio", "website_url", "follower_count",
                         "post_count", "updated_at"),
            },
            # A user signed up in auth_db has no profile yet: bento_social needs these NOT NULL columns.
            reverse_defaults={"first_name": "''", "last_name": "''"},
        ),
        Ownership(
            "followers",
            rows="interaction",
            columns={"interaction": ("created_at",)},
        ),
    ),
)
