"""The `splitter.ownership` message and the write scopes a worker takes from it (pure: no servers)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest

from connectors.pg.sink_values import route_key
from connectors.pg.state.ownership_moves import StoredMove
from splitter.core.errors import FatalError, MalformedMessageError
from splitter.pipeline.worker.moves import Move, concerning, decode_moves, encode_moves, route_scopes
from splitter.pipeline.worker.scopes import WriteScopes
from splitter.topology.loading import load_topology
from splitter.topology.model import FULL, Route, WriteScope
from splitter.topology.ownership import moved_scope

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = load_topology(ROOT / "topology.py")


def _routes(service: str) -> dict[str, Route]:
    return {f"{r.source_schema}.{r.source_table}": r for r in TOPOLOGY.routes_for(TOPOLOGY.service(service))}


def test_moves_encode_to_the_documented_json_and_decode_back() -> None:
    moves = [Move("auth", "public.users", "service"), Move("", "public.followers", "retired"),
             Move("user", "public.users", "source")]
    content = encode_moves(moves)
    assert orjson.loads(content) == {"moves": [
        {"service": "auth", "table": "public.users", "home": "service"},
        {"service": "", "table": "public.followers", "home": "retired"},
        {"service": "user", "table": "public.users", "home": "source"}]}
    assert decode_moves(content) == moves


@pytest.mark.parametrize(("content", "named"), [
    ("not json", "not JSON"),
    ("[]", '{"moves": [...]}'),
    ('{"moves": {}}', '{"moves": [...]}'),
    ('{"moves": [], "extra": 1}', '{"moves": [...]}'),
    ('{"moves": []}', "names no move"),
    ('{"moves": ["auth"]}', "move 0 is not an object"),
    ('{"moves": [{"service": "auth", "table": "public.users"}]}', "move 0 is not an object"),
    ('{"moves": [{"service": "auth", "table": "public.users", "home": "service", "x": 1}]}', "not an object"),
    ('{"moves": [{"service": 1, "table": "public.users", "home": "service"}]}', "must be strings"),
    ('{"moves": [{"service": "auth", "table": "public.users", "home": "away"}]}', "home 'away'"),
    ('{"moves": [{"service": "auth", "table": "users", "home": "service"}]}', "table 'users'"),
    ('{"moves": [{"service": "auth", "table": "public.Users", "home": "service"}]}', "plain identifiers"),
    ('{"moves": [{"service": "auth", "table": "public.users; drop", "home": "service"}]}', "plain identifiers"),
    ('{"moves": [{"service": "auth", "table": "a.b.c", "home": "service"}]}', "plain identifiers"),
    ('{"moves": [{"service": "auth", "table": "public.users", "home": "retired"}]}', "names no service"),
    ('{"moves": [{"service": "", "table": "public.users", "home": "service"}]}', "names no service"),
    ('{"moves": [{"service": "auth", "table": "public.users", "home": "service"}, '
     '{"service": "auth", "table": "public.users", "home": "source"}]}', "move 1: auth of public.users appears twice"),
    ('{"moves": [{"service": "auth", "table": "public.users", "home": "service"}, '
     '{"service": "", "table": "public.users", "home": "retired"}]}', "retires and moves public.users"),
])
def test_a_malformed_message_is_refused_naming_the_problem(content: str, named: str) -> None:
    with pytest.raises(MalformedMessageError, match=re.escape(named)):
        decode_moves(content)


def test_encoding_refuses_what_decoding_would() -> None:
    with pytest.raises(MalformedMessageError, match="home 'elsewhere'"):
        encode_moves([Move("auth", "public.users", "elsewhere")])
    with pytest.raises(MalformedMessageError, match="names no move"):
        encode_moves([])


def test_a_worker_takes_its_own_moves_and_retirements_of_tables_it_routes() -> None:
    routes = TOPOLOGY.routes_for(TOPOLOGY.service("user"))
    moves = [Move("auth", "public.users", "service"), Move("user", "public.users", "service"),
             Move("interaction", "public.followers", "service"), Move("", "public.followers", "retired"),
             Move("", "public.posts", "retired"), Move("user", "public.posts", "service")]
    assert concerning(moves, "user", routes) == [Move("user", "public.users", "service"),
                                                 Move("", "public.followers", "retired")]


def test_scopes_follow_the_last_move_of_each_routed_table() -> None:
    auth = _routes("auth")["public.users"]
    user = _routes("user")
    # auth owns the rows and the login columns: once its writes moved, its forward stream only updates the rest.
    scopes = route_scopes(TOPOLOGY, [auth], {"public.users": "service"})
    assert scopes == {("public.users", "auth.users"): WriteScope(
        frozen=frozenset({"id", "username", "password_hash", "salt", "role", "status", "created_at"}), rows=False)}
    # user owns the profile (and its constant column), not the rows: inserts and deletes still come from the source.
    scopes = route_scopes(TOPOLOGY, list(user.values()), {"public.users": "service"})
    assert scopes == {("public.users", "users.users"): WriteScope(
        frozen=frozenset({"first_name", "last_name", "cover", "avatar", "bio", "website_url", "follower_count",
                          "post_count", "updated_at", "visibility"}), rows=True)}
    followers = user["public.followers"]
    assert route_scopes(TOPOLOGY, [auth, followers],
                        {"public.users": "source", "public.followers": "retired"}) == {
        route_key(auth): FULL, route_key(followers): None}
    assert route_scopes(TOPOLOGY, [auth], {}) == {}


class _NoStore:
    """A ScopeSession that holds no moves and remembers the scopes it was given."""

    def __init__(self) -> None:
        self.scopes: dict[tuple[str, str], WriteScope | None] = {}

    def ownership_moves(self, through_lsn: int) -> list[StoredMove]:
        return []

    def set_scopes(self, scopes: Mapping[tuple[str, str], WriteScope | None]) -> None:
        self.scopes = dict(scopes)


def test_a_worker_stops_at_an_ownership_message_it_cannot_read_whatever_its_on_error() -> None:
    scopes = WriteScopes("auth", _NoStore())
    with pytest.raises(FatalError, match=r"ownership message at offset 7 cannot be read .*home 'away'"):
        scopes.moves_at('{"moves": [{"service": "auth", "table": "public.users", "home": "away"}]}', 7, 100, [])


def test_the_moves_of_a_message_become_the_workers_scopes_once_committed() -> None:
    store = _NoStore()
    scopes = WriteScopes("auth", store)
    routes = TOPOLOGY.routes_for(TOPOLOGY.service("auth"))
    scopes.restore(TOPOLOGY, routes, 50)
    assert store.scopes == {}
    moves = scopes.moves_at(encode_moves([Move("auth", "public.users", "service"),
                                          Move("user", "public.users", "service")]), 7, 100, routes)
    assert moves == (StoredMove("public.users", "auth", "service", 100),)
    scopes.moved(moves, TOPOLOGY, routes)
    assert store.scopes == {("public.users", "auth.users"): moved_scope(TOPOLOGY, routes[0])}
