"""The application's write mix: which operations the workload runs and how often.

Owns: ``WEIGHTS`` (relative frequency of each operation kind), ``OP_KINDS`` (their order, which a seed's
choices depend on) and ``OPERATIONS`` (kind -> the function in ``people.py`` or ``posts.py`` that does it).
Must not: run anything itself: the loop, threads, rate and retries belong to ``driver.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from devtools.workload import people, posts
from devtools.workload.rows import Ctx

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

# Each returns True when it changed something, False when there was nothing to act on.
OPERATIONS: Mapping[str, Callable[[Ctx], bool]] = {
    "sign_up": people.sign_up,
    "update_profile": people.update_profile,
    "change_username": people.change_username,
    "deactivate_user": people.deactivate_user,
    "delete_user": people.delete_user,
    "create_post": posts.create_post,
    "edit_post_large": posts.edit_post_large,
    "touch_toasted_post": posts.touch_toasted_post,
    "change_post_id": posts.change_post_id,
    "delete_post": posts.delete_post,
    "like_post": posts.like_post,
    "unlike_post": posts.unlike_post,
    "save_post": posts.save_post,
    "unsave_post": posts.unsave_post,
    "follow": people.follow,
    "unfollow": people.unfollow,
    "comment": posts.comment,
    "moderate_comment": posts.moderate_comment,
    "delete_comment": posts.delete_comment,
    "like_comment": posts.like_comment,
    "notify": people.notify,
    "read_notifications": people.read_notifications,
    "delete_notification": people.delete_notification,
}
assert tuple(OPERATIONS) == OP_KINDS, "every kind in WEIGHTS has exactly one operation, in the same order"
