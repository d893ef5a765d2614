"""The reverse tables of shared tables: each service writes back only what it owns (no servers).

The topology is the repository's (users: rows and login columns auth's, profile columns user's, reverse
defaults first_name and last_name; followers: interaction's, user_db a read copy).  The catalog facts
handed to `reverse_problems` are written here the way `connectors.pg.cutover_sql.writeback_columns` reads
them from devtools/sql/bento_social.sql.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from splitter.pipeline.config import build_settings
from splitter.topology.inversion import SourceColumn, column_problems, invert_service, reverse_problems
from splitter.topology.loading import validate
from splitter.topology.model import Ownership, Service, Table, Topology
from splitter.topology.ownership import read_copies, recommended_order, retired_tables, table_owners

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = build_settings(topology_path=str(ROOT / "topology.py"), source_dsn="host=db.invalid", kafka="k.invalid:9",
                          env={}).topology

# public.users as the catalog describes it (devtools/sql/bento_social.sql): name, NOT NULL, has a default.
USERS = [SourceColumn(name, not_null, has_default, "", "", name == "id") for name, not_null, has_default in (
    ("id", True, False), ("cover", False, False), ("avatar", False, False), ("username", True, False),
    ("first_name", True, False), ("last_name", True, False), ("password", True, False), ("salt", True, False),
    ("role", True, True), ("bio", False, False), ("website_url", False, False), ("follower_count", False, True),
    ("post_count", False, True), ("status", False, True), ("created_at", True, True), ("updated_at", True, True))]


def _reverse(topology: Topology, service: str) -> dict[str, Table]:
    return {t.name: t for t in invert_service(topology, service, f"{service}.reverse").services[0].tables}


def test_auth_updates_only_its_columns_and_its_inserts_fill_the_rest_insert_only() -> None:
    users = _reverse(TOPOLOGY, "auth")["public.users"]
    assert users.key == ("id",) and users.scope.rows
    assert set(users.columns) == {"id", "username", "password", "salt", "role", "status", "created_at",
                                  "updated_at", "first_name", "last_name"}
    assert users.columns["password"] == '"password_hash"'
    # updated_at is user's (auth_db only reads it); first_name/last_name come from the reverse defaults.
    assert users.scope.frozen == {"updated_at", "first_name", "last_name"}
    assert users.columns["first_name"] == "''" and users.columns["last_name"] == "''"
    assert column_problems(users, USERS) == []


def test_user_updates_only_the_profile_of_rows_it_does_not_own() -> None:
    tables = _reverse(TOPOLOGY, "user")
    users = tables["public.users"]
    assert not users.scope.rows and users.scope.frozen == frozenset()
    assert set(users.columns) == {"id", "first_name", "last_name", "cover", "avatar", "bio", "website_url",
                                  "follower_count", "post_count", "updated_at"}
    # It inserts nothing, so the NOT NULL login columns it does not map back need no value.
    assert column_problems(users, USERS) == []
    assert "public.followers" not in tables  # user_db.followers is a read copy: nothing to write back


def test_interaction_writes_followers_back_whole() -> None:
    followers = _reverse(TOPOLOGY, "interaction")["public.followers"]
    assert followers.scope.full
    assert dict(followers.columns) == {"follower_id": '"follower_id"', "following_id": '"following_id"',
                                       "created_at": '"created_at"'}


def _without_reverse_defaults(topology: Topology) -> Topology:
    shared = tuple(dataclasses.replace(o, reverse_defaults={}) if o.table == "users" else o for o in topology.shared)
    return dataclasses.replace(topology, shared=shared)


def test_a_row_owner_that_cannot_fill_a_not_null_column_is_refused_naming_it() -> None:
    topology = _without_reverse_defaults(TOPOLOGY)
    users = _reverse(topology, "auth")["public.users"]
    problems = reverse_problems(users, USERS)
    assert [(p.code, p.column) for p in problems] == [("reverse-insert-incomplete", "first_name"),
                                                      ("reverse-insert-incomplete", "last_name")]
    assert "public.users.first_name is NOT NULL without a default" in problems[0].message
    assert "auth.users" in problems[0].message and "reverse_defaults" in problems[0].message
    # The service that only updates users needs no insert: it is not refused.
    assert column_problems(_reverse(topology, "user")["public.users"], USERS) == []


def test_generated_and_identity_columns_written_back_are_refused_for_every_owner() -> None:
    users = _reverse(TOPOLOGY, "user")["public.users"]
    catalog = [dataclasses.replace(c, generated="s") if c.name == "bio" else
               dataclasses.replace(c, identity="a") if c.name == "id" else c for c in USERS]
    assert [(p.code, p.column) for p in reverse_problems(users, catalog)] == [
        ("reverse-identity-always", "id"), ("reverse-generated", "bio")]


def test_ownership_table_read_copies_order_and_retirement() -> None:
    users = table_owners(TOPOLOGY, "public", "users")
    followers = table_owners(TOPOLOGY, "public", "followers")
    assert users is not None and followers is not None
    assert (users.row_owner, users.owners) == ("auth", ("auth", "user"))
    assert users.owned_by("auth") == {"id", "username", "password", "salt", "role", "status", "created_at"}
    assert read_copies(TOPOLOGY, users) == {"auth": {"updated_at"}, "user": {"username", "status", "created_at"}}
    assert read_copies(TOPOLOGY, followers) == {"user": {"created_at"}}
    assert followers.owners == ("interaction",)
    order = recommended_order(TOPOLOGY)
    assert order[-3:] == ["auth", "interaction", "user"] and set(order) == {s.name for s in TOPOLOGY.services}
    assert {t.name for t in retired_tables(TOPOLOGY, ["auth", "interaction"])} >= {"public.followers"}
    assert "public.users" not in {t.name for t in retired_tables(TOPOLOGY, ["auth", "interaction"])}


def test_a_service_owning_nothing_anywhere_gets_an_empty_reverse_topology() -> None:
    topology = Topology(source_database="src", services=(
        Service("a", database="a_db", tables=(Table("t", source="t", key=("id",), columns={"id": "id", "v": "v"}),)),
        Service("b", database="b_db", tables=(Table("t", source="t", key=("id",), columns={"id": "id", "v": "v"}),)),
    ), shared=(Ownership("t", rows="a", columns={"a": ("v",)}),))
    validate(topology)  # the declarations and the ownership are valid
    assert _reverse(topology, "b") == {}
    assert _reverse(topology, "a")["public.t"].scope.full
