"""The reverse route (what a cut-over service's writes are copied back as) and the cutover's small parsers.

No servers: these check the pure parts the e2e tests rely on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from splitter.cli.options import parse_duration
from splitter.core.errors import ConfigurationError
from splitter.pipeline.config import Settings, build_settings
from splitter.pipeline.reverse import reverse_names, reverse_settings, reverse_topology
from splitter.topology.inversion import inverse_source_column, invert_route
from splitter.topology.model import Route, Service, Table, Topology

ROOT = Path(__file__).resolve().parents[2]


def _settings(**kwargs: str) -> Settings:
    return build_settings(topology_path=str(ROOT / "topology.py"), source_dsn="host=db.invalid password=s3cret",
                          kafka="broker.invalid:9092", env={}, **kwargs)


@pytest.mark.parametrize(("expr", "expected"), [
    ("id", ("id", True)),
    ('"Weird Name"', ("Weird Name", True)),
    ("coalesce(type, 'text')", ("type", False)),
    ("coalesce(is_featured, false)", ("is_featured", False)),
    ("coalesce(updated_at, created_at)", ("updated_at", False)),  # the first column; its value projects onto itself
    ("coalesce(lower(a), b)", None),
    ("date_trunc('second', created_at)", ("created_at", False)),  # the truncated value projects onto itself
    ("pg_catalog.date_trunc('second', created_at)", ("created_at", False)),
    ("date_trunc('second', created_at + interval '1 hour')", None),
    ("date_trunc(unit, created_at)", None),
    ("'public'", None),
    ("lower(username)", None),
    ("src.id", None),
])
def test_only_plain_columns_coalesce_and_date_trunc_map_back(expr: str, expected: tuple[str, bool] | None) -> None:
    assert inverse_source_column(expr) == expected


def test_post_maps_back_column_for_column() -> None:
    settings = _settings()
    [route] = settings.topology.routes_for(settings.topology.service("post"))
    table = invert_route(route, settings.topology)
    assert table is not None and table.scope.full
    assert table.name == "public.posts" and table.source == "post.posts" and table.key == ("id",)
    assert table.columns == {c: f'"{c}"' for c in ("id", "author_id", "topic_id", "type", "content", "image",
                                                   "is_featured", "comment_count", "liked_count", "created_at",
                                                   "updated_at")}


def test_lossy_and_target_only_columns_are_left_out_and_renames_are_inverted() -> None:
    settings = _settings()
    user = reverse_topology(settings, "user").services[0]
    [users] = user.tables  # user owns nothing of followers: no reverse table for it
    assert "visibility" not in users.columns.values()  # target-only constant
    assert users.columns["follower_count"] == '"follower_count"'
    post_likes = reverse_topology(settings, "interaction").services[0].tables[0]
    assert post_likes.name == "public.post_likes"
    assert post_likes.columns["created_at"] == '"created_at"'  # date_trunc: its truncated value goes back
    auth = reverse_topology(settings, "auth").services[0].tables[0]
    assert auth.columns["password"] == '"password_hash"'


def test_a_computed_key_cannot_be_reversed() -> None:
    service = Service("s", database="s_db", tables=(
        Table("t", source="t", key=("k",), columns={"k": "lower(id)", "v": "v"}),))
    topology = Topology(source_database="src", services=(service,))
    [route] = topology.routes_for(service)
    with pytest.raises(ConfigurationError, match="key column 'k' is computed"):
        invert_route(route, topology)


def test_reverse_settings_swap_the_roles_and_never_reuse_forward_names() -> None:
    settings = _settings(slot="s" * 60, publication="splitter", topic="bento_social.changes")
    names = reverse_names(settings, "post")
    assert len(names.slot) <= 63 and names.slot != settings.slot and names.slot.endswith("_rev_post")
    assert names.topic == "bento_social.changes.reverse.post" and names.service == "post.reverse"
    rs = reverse_settings(settings, "post")
    assert rs.source_dsn == settings.target_dsn("post")
    assert rs.target_dsns == {"post.reverse": settings.source_dsn}
    assert rs.topology.source_database == "post_db" and rs.topology.source_schema == "post"
    assert [(r.source_schema, r.source_table, r.target_schema, r.target_table) for r in rs.topology.routes()] == \
        [("post", "posts", "public", "posts")]
    # The forward worker's group and origin are never the reverse one's.
    assert rs.group_id("post.reverse") != settings.group_id("post")


def test_two_long_slot_names_stay_distinct() -> None:
    a = reverse_names(_settings(slot="a" * 50 + "x" * 13), "post").slot
    b = reverse_names(_settings(slot="a" * 50 + "y" * 13), "post").slot
    assert a != b and len(a) <= 63 and len(b) <= 63


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("2m", 120.0), ("1.5", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("soon")


def test_a_coalesce_over_two_columns_writes_back_its_first_column() -> None:
    # comments.updated_at <- coalesce(updated_at, created_at): an edit made in comment_db reaches the source's
    # updated_at, and the projection of the value written is that value.
    [route] = reverse_topology(_settings(), "comment").routes()
    assert isinstance(route, Route)
    assert route.table.columns["updated_at"] == '"updated_at"' and route.table.columns["created_at"] == '"created_at"'
