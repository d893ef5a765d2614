"""Ownership moves: the `splitter.ownership` message, and what a worker's routes may write after one.

The cutover writes, into the source's log, where the writes of a shared table went: to the service's own
database ("service": its forward stream then writes only what the service does not own), back to the
source ("source": everything again), or nowhere any more ("retired": no stream feeds the table).  The
content is JSON, `{"moves": [{"service": "auth", "table": "public.users", "home": "service"}, ...]}`;
a retired move names service "".  Owns: `Move`, encoding and strictly decoding the content, which moves
concern a worker, and the write scope of each of its routes given the last move of its table.  Must
not: do I/O or know where moves are stored (the worker's `scopes` and `connectors.pg.state` do).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from connectors.pg.sink_values import RouteKey, route_key
from splitter.core.errors import MalformedMessageError
from splitter.topology.model import FULL, Route, Topology, WriteScope
from splitter.topology.ownership import moved_scope

#: Where a table's writes of the service went: its own database, back to the source, or nowhere (retired).
HOMES: Final = ("service", "source", "retired")
_FIELDS: Final = frozenset({"service", "table", "home"})
# schema.table, each a plain (unquoted, so lower-case) identifier.
_TABLE = re.compile(r"[a-z_][a-z0-9_$]{0,62}\.[a-z_][a-z0-9_$]{0,62}")


@dataclass(frozen=True)
class Move:
    """From the message's position on, `service`'s writes of source table `table` are at `home`."""

    service: str  # "" when the table is retired
    table: str  # schema.table of the source
    home: str  # one of HOMES


def _problem(move: Move) -> str | None:
    if move.home not in HOMES:
        return f"home {move.home!r} is not one of {', '.join(HOMES)}"
    if not _TABLE.fullmatch(move.table):
        return f"table {move.table!r} is not schema.table of plain identifiers"
    if move.home == "retired" and move.service:
        return f"a retired table names no service, but {move.table} names {move.service!r}"
    if move.home != "retired" and not move.service:
        return f"the {move.home!r} move of {move.table} names no service"
    return None


def _check(moves: Sequence[Move]) -> None:
    if not moves:
        raise MalformedMessageError("ownership message names no move")
    seen: set[tuple[str, str]] = set()
    for n, move in enumerate(moves):
        problem = _problem(move)
        if problem is None and (move.service, move.table) in seen:
            problem = f"{move.service or 'retired'} of {move.table} appears twice"
        if problem is not None:
            raise MalformedMessageError(f"ownership move {n}: {problem}")
        seen.add((move.service, move.table))
    retired = {m.table for m in moves if m.home == "retired"}
    both = sorted({m.table for m in moves if m.home != "retired"} & retired)
    if both:
        raise MalformedMessageError(f"ownership message retires and moves {', '.join(both)} at once")


def encode_moves(moves: Sequence[Move]) -> str:
    """The message content for `moves` (checked as `decode_moves` checks them)."""
    _check(moves)
    return orjson.dumps({"moves": [{"service": m.service, "table": m.table, "home": m.home} for m in moves]}).decode()


def decode_moves(content: str) -> list[Move]:
    """The moves of a message's content; MalformedMessageError naming what is wrong with anything else."""
    try:
        body: Any = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessageError(f"ownership message is not JSON: {exc}") from exc
    if not isinstance(body, dict) or set(body) != {"moves"} or not isinstance(body["moves"], list):
        raise MalformedMessageError('ownership message is not {"moves": [...]}')
    moves: list[Move] = []
    for n, item in enumerate(body["moves"]):
        if not isinstance(item, dict) or set(item) != _FIELDS:
            raise MalformedMessageError(f"ownership move {n} is not an object of exactly "
                                        f"{', '.join(sorted(_FIELDS))}")
        if not all(isinstance(item[f], str) for f in _FIELDS):
            raise MalformedMessageError(f"ownership move {n}: service, table and home must be strings")
        moves.append(Move(item["service"], item["table"], item["home"]))
    _check(moves)
    return moves


def concerning(moves: Iterable[Move], service: str, routes: Iterable[Route]) -> list[Move]:
    """The moves that change what `service`'s worker writes: its own, and retirements, of tables it routes."""
    tables = {f"{r.source_schema}.{r.source_table}" for r in routes}
    return [m for m in moves if m.table in tables and (m.service == service or m.home == "retired")]


def scope_after(topology: Topology, route: Route, home: str) -> WriteScope | None:
    """What `route` writes after a move of its table to `home` (None: nothing, the table is retired)."""
    if home == "retired":
        return None
    return moved_scope(topology, route) if home == "service" else FULL


def route_scopes(topology: Topology, routes: Iterable[Route],
                 homes: Mapping[str, str]) -> dict[RouteKey, WriteScope | None]:
    """The scope of each route whose source table has moved (`homes`: source table -> its last move's home)."""
    return {route_key(r): scope_after(topology, r, homes[table]) for r in routes
            if (table := f"{r.source_schema}.{r.source_table}") in homes}


__all__ = ["HOMES", "Move", "concerning", "decode_moves", "encode_moves", "route_scopes", "scope_after"]
