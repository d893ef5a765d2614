"""The pure parts of per-service fences: trigger names, trigger events, and what each cutover fences of
topology.py's shared tables, with the messages a refused writer reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg import sql

from connectors.pg import fence
from connectors.pg.fence import FenceSpec
from splitter.ops.cutover import fence_specs
from splitter.topology.loading import load_topology
from splitter.topology.model import Topology

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(str(ROOT / "topology.py"))


def test_trigger_names_are_per_service_and_kind() -> None:
    assert fence.trigger_name("auth") == "splitter_fence_auth"
    assert fence.trigger_name("auth", fence.READ_COPY) == "splitter_read_copy_auth"
    assert fence.trigger_name("auth") != fence.trigger_name("user")


@pytest.mark.parametrize("service", ["s" * 80, "ü" * 40])
def test_long_trigger_names_fit_in_63_bytes_and_stay_apart(service: str) -> None:
    name, other = fence.trigger_name(service + "a"), fence.trigger_name(service + "b")
    assert len(name.encode()) <= 63 and len(other.encode()) <= 63
    assert name != other
    assert name.startswith("splitter_fence_")


def test_events_name_the_columns_and_rows() -> None:
    def text(columns: tuple[str, ...] | None, rows: bool) -> str:
        return fence._events(columns, rows).as_string(None)

    assert text(None, True) == "INSERT OR UPDATE OR DELETE OR TRUNCATE"
    assert text(("password", "salt"), False) == 'UPDATE OF "password", "salt"'
    assert text(("id",), True) == 'INSERT OR UPDATE OF "id" OR DELETE OR TRUNCATE'
    assert text((), True) == "INSERT OR DELETE OR TRUNCATE"
    assert isinstance(fence._events(None, False), sql.Composable)


def test_a_spec_must_stop_something() -> None:
    with pytest.raises(ValueError, match="must stop something"):
        FenceSpec("public", "users", "m", "user", (), rows=False)


def test_source_fence_of_auth_is_its_rows_and_login_columns(topology: Topology) -> None:
    [spec] = fence_specs.source_fence(topology, "auth")
    assert (spec.schema, spec.table, spec.service, spec.rows) == ("public", "users", "auth", True)
    assert spec.columns == ("id", "username", "password", "salt", "role", "status", "created_at")
    assert spec.message == ("inserts and deletes of users, and users.id, users.username, users.password, "
                            "users.salt, users.role, users.status, users.created_at moved to service auth "
                            "(auth_db); write there")


def test_source_fence_of_user_is_the_profile_columns_and_not_followers(topology: Topology) -> None:
    [spec] = fence_specs.source_fence(topology, "user")  # user owns nothing of followers
    assert (spec.table, spec.rows) == ("users", False)
    assert spec.columns is not None and "bio" in spec.columns and "password" not in spec.columns
    assert spec.message.startswith("users.first_name, users.last_name, ")
    assert spec.message.endswith("users.updated_at moved to service user (user_db); write there")


def test_a_sole_owner_fences_whole_tables(topology: Topology) -> None:
    specs = fence_specs.source_fence(topology, "interaction")
    assert {s.table for s in specs} == {"post_likes", "post_saves", "followers"}
    assert all(s.columns is None and s.rows for s in specs)
    [post] = fence_specs.source_fence(topology, "post")
    assert post.message == "posts moved to service post (post_db); write there"


def test_service_fence_is_whole_target_tables(topology: Topology) -> None:
    specs = fence_specs.service_fence(topology, "user")
    assert [(s.schema, s.table, s.columns, s.rows) for s in specs] == [
        ("users", "users", None, True), ("users", "followers", None, True)]
    assert specs[0].message == "users moved to bento_social (service user was rolled back); write there"


def test_read_copy_fence_of_user(topology: Topology) -> None:
    users, followers = fence_specs.read_copy_fence(topology, "user")
    assert (users.schema, users.table, users.columns, users.rows) == \
        ("users", "users", ("id", "username", "status", "created_at"), True)
    assert users.message == ("users.id, users.username, users.status, users.created_at and the rows of users in "
                             "user_db are a read copy owned by service auth; write them where splitter.routing "
                             "sends service auth")
    assert (followers.table, followers.columns, followers.rows) == \
        ("followers", ("following_id", "follower_id", "created_at"), True)
    assert followers.message == ("followers in user_db is a read copy owned by service interaction; write it "
                                 "where splitter.routing sends service interaction")


def test_read_copy_fence_of_auth_and_of_a_sole_owner(topology: Topology) -> None:
    [users] = fence_specs.read_copy_fence(topology, "auth")  # the profile's edit time is user's
    # The key too: auth's key update would reach bento_social as a delete and an insert, dropping user's profile.
    assert (users.columns, users.rows) == (("updated_at", "id"), False)
    assert users.message == ("users.updated_at in auth_db is a read copy owned by service user; write it where "
                             "splitter.routing sends service user; the key (id) of users in auth_db cannot change: "
                             "other services own parts of its rows (insert a new row and delete the old one "
                             "instead)")
    assert fence_specs.read_copy_fence(topology, "interaction") == []
    assert fence_specs.read_copy_fence(topology, "post") == []


def test_messages_name_several_owners() -> None:
    assert fence_specs.read_copy_message("t", "x_db", ("a", "b"), False, False, ["p", "q"]) == \
        "t.a, t.b in x_db are a read copy owned by services p, q; write them where splitter.routing sends them"
    assert fence_specs.moved_message("t", (), True, "service s (s_db)") == \
        "inserts and deletes of t moved to service s (s_db); write there"
