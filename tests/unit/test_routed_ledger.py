"""The routed workload's ledger and evaluator, and how it names a source column in each service database."""

from __future__ import annotations

from datetime import datetime

import pytest

from devtools.workload.ledger import Ledger, Unknown, evaluate, truncate
from devtools.workload.routed import target_column
from splitter.topology.loading import load_topology
from tests.harness import TOPOLOGY

AT = datetime(2024, 5, 6, 7, 8, 9, 123456)


def test_evaluate_covers_the_forms_topology_uses() -> None:
    assert evaluate("status", {"status": "banned"}) == "banned"
    assert evaluate("coalesce(status, 'active')", {"status": None}) == "active"
    assert evaluate("coalesce(updated_at, created_at)", {"updated_at": None, "created_at": AT}) == AT
    assert evaluate("date_trunc('second', created_at)", {"created_at": AT}) == AT.replace(microsecond=0)
    assert evaluate("coalesce(is_featured, false)", {"is_featured": None}) is False
    assert evaluate("coalesce(follower_count, 0)", {"follower_count": None}) == 0
    assert evaluate("'public'", {}) == "public"
    assert evaluate("''", {}) == ""


def test_evaluate_refuses_what_it_cannot_know() -> None:
    with pytest.raises(Unknown):
        evaluate("status", {})  # never written
    with pytest.raises(Unknown):
        evaluate("lower(username)", {"username": "A"})


def test_truncate_cuts_like_the_column_stores() -> None:
    assert truncate(AT, 3) == AT.replace(microsecond=123000)
    assert truncate(AT, 0) == AT.replace(microsecond=0)
    assert truncate("x", 0) == "x"


def test_ledger_keeps_the_last_value_and_deletions() -> None:
    ledger = Ledger()
    ledger.inserted("users", {"id": "u1"}, {"username": "a", "salt": "s"})
    ledger.updated("users", {"id": "u1"}, {"username": "b"})
    ledger.updated("users", {"id": "u2"}, {"bio": "only this is known"})
    ledger.inserted("followers", {"following_id": "u1", "follower_id": "u2"}, {"created_at": AT})
    ledger.deleted("followers", {"follower_id": "u2", "following_id": "u1"})  # key order does not matter
    snap = ledger.snapshot()
    assert snap["users"][(("id", "u1"),)] == {"id": "u1", "username": "b", "salt": "s"}
    assert snap["users"][(("id", "u2"),)] == {"id": "u2", "bio": "only this is known"}
    assert snap["followers"] == {(("follower_id", "u2"), ("following_id", "u1")): None}
    assert len(ledger) == 3


def test_source_columns_are_written_under_the_target_names() -> None:
    topology = load_topology(TOPOLOGY)
    routes = {(r.service.name, r.target_table): r for r in topology.routes()}
    assert target_column(routes["auth", "users"], "password") == ("password_hash", "password")
    assert target_column(routes["auth", "users"], "status") == ("status", "coalesce(status, 'active')")
    assert target_column(routes["auth", "users"], "first_name") is None  # auth has no profile
    assert target_column(routes["interaction", "follows"], "follower_id") == ("follower_id", "follower_id")
    assert target_column(routes["interaction", "post_likes"], "created_at") == (
        "created_at", "date_trunc('second', created_at)")
    assert target_column(routes["comment", "comments"], "updated_at") == (
        "updated_at", "coalesce(updated_at, created_at)")
