"""`splitter status`'s ownership section against a real source: per source table, who owns what and where
each owner's writes go now, from the cutover and routing rows the test writes itself.

The state is set up by hand, the way the cutover leaves it (auth switched and reverse streaming, interaction
complete; nobody else has a row), so the section is checked without running a cutover.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from connectors.pg.state.cutover import ensure_schema
from splitter.ops import status
from splitter.pipeline.config import build_settings

REPO = Path(__file__).resolve().parents[2]


def test_status_shows_per_table_owners_and_where_their_writes_go(
        make_databases: Callable[..., dict[str, str]]) -> None:
    dbs = make_databases("status_own")
    with psycopg.connect(dbs["bento_social"], autocommit=True) as conn:
        ensure_schema(conn)
        conn.execute("INSERT INTO splitter.cutover (service, state) VALUES ('auth', 'reverse_streaming'), "
                     "('interaction', 'complete')")
        conn.execute("INSERT INTO splitter.routing (service, home, database) VALUES ('auth', 'service', 'auth_db'), "
                     "('interaction', 'service', 'interaction_db')")
    settings = build_settings(topology_path=str(REPO / "topology.py"), source_dsn=dbs["bento_social"],
                              kafka="127.0.0.1:9", env={})
    settings = dataclasses.replace(settings, target_dsns={s.name: dbs[s.database] for s in settings.topology.services})

    snap = status.with_cutover(status.collect(settings), settings)
    out = io.StringIO()
    status.emit(snap, True, out, clear=False)
    tables: dict[str, Any] = {t["table"]: t for t in json.loads(out.getvalue())["ownership"]}

    users = tables["public.users"]
    assert users["rows"] == "auth" and users["retired"] is False
    owners = {o["service"]: o for o in users["owners"]}
    assert (owners["auth"]["state"], owners["auth"]["home"], owners["auth"]["writes_to"]) == \
        ("reverse_streaming", "service", "auth_db")
    assert (owners["user"]["state"], owners["user"]["home"], owners["user"]["writes_to"]) == \
        ("streaming", "source", "bento_social")
    assert owners["auth"]["rows"] and "password" in owners["auth"]["columns"]
    assert not owners["user"]["rows"] and "bio" in owners["user"]["columns"]
    # interaction is its only owner and complete: followers (and its other tables) are retired.
    for name in ("public.followers", "public.post_likes", "public.post_saves"):
        assert tables[name]["retired"] is True, name
        assert [o["writes_to"] for o in tables[name]["owners"]] == ["retired"], name
    assert tables["public.posts"]["owners"][0]["writes_to"] == "bento_social"
    assert tables["public.followers"]["read_copies"] == [{"service": "user", "columns": ["created_at"]}]

    text = io.StringIO()
    status.emit(snap, False, text, clear=False)
    lines = text.getvalue().splitlines()
    at = lines.index("public.users  rows: auth")
    assert lines[at + 1].split()[:5] == ["auth", "writes", "go", "to", "auth_db"]
    assert "(reverse_streaming)" in lines[at + 1] and "owns rows, created_at, id, password" in lines[at + 1]
    assert lines[at + 2].split()[:5] == ["user", "writes", "go", "to", "bento_social"]
    assert "public.followers  rows: interaction  retired: every owner is complete" in lines
    posts = lines.index("public.posts  rows: post")
    assert lines[posts + 1].split() == ["post", "writes", "go", "to", "bento_social", "(streaming)", "owns", "rows",
                                        "and", "every", "column"]
