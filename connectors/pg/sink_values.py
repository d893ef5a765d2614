"""What the PostgreSQL sink and the worker hand each other: values only.

The verbs of the sink contract are `splitter.pipeline.sink`'s Protocols; its nouns live here, on the
floor both sides can import.  Owns: the facts the apply session reports (`Rejected`: the database
refused a change; `MissingRows`: partial updates that found no row; `Replacement`: whether rows can be
written as delete-then-insert), what the pipeline tells it
(`ApplyMode`, with the pipeline's answer to missing rows; `Resolution` of a dead-letter request) and
what a commit carries besides the data (`CommitExtras`, `ChunkDone`), and the stable name of a route
(`route_key`) the pipeline's write scopes are given by.  Must not: decide anything (the
pipeline does), or do I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from connectors.pg.state.dead_letters import DeadLetter
from connectors.pg.state.ownership_moves import StoredMove
from splitter.topology.model import Route

Key = tuple[str | None, ...]
#: A route by its names, stable across reloads of the topology: (source schema.table, target schema.table).
RouteKey = tuple[str, str]


def route_key(route: Route) -> RouteKey:
    return f"{route.source_schema}.{route.source_table}", f"{route.target_schema}.{route.target_table}"


@dataclass(frozen=True)
class ChunkDone:
    """A backfill chunk applied in this transaction (its progress is recorded with it)."""

    job_id: int
    chunk: int
    copied: int
    skipped: int
    last_key: Sequence[str | None] | None
    final: bool
    repaired: Sequence[Sequence[str | None]] = ()
    copied_keys: Sequence[Sequence[str | None]] = ()  # source keys of the rows it copied
    high_lsn: int = 0  # where its high watermark is in the log
    deleted: int = 0  # target rows it removed because the source no longer has them


@dataclass(frozen=True)
class Rejected:
    """The database refused a change's data (SQLSTATE class 22 or 23); it was rolled back to its savepoint."""

    sqlstate: str | None
    message: str
    constraint: str | None = None  # the constraint or unique index that refused it, when the server names one
    table: str | None = None  # the target table it refused it in, schema-qualified


@dataclass(frozen=True)
class Replacement:
    """Whether the rows of some source tables can be written as delete-then-insert in the target (a fact).

    `tables`: the source tables asked about that feed the refusing target table (all of them when it is
    not known).  `blockers`: what would make delete-then-insert differ from an update in a target table
    those tables feed (a trigger that fires in the apply session, a column the topology does not write);
    empty when nothing does.
    """

    tables: frozenset[str]
    blockers: tuple[str, ...]


@dataclass(frozen=True)
class MissingRows:
    """Updates of one route that left TOASTed columns out and found no row in the target (a fact, not a verdict)."""

    route: Route
    unchanged: frozenset[str]  # the columns they left out
    updates: int  # how many of them found no row
    keys: frozenset[Key]  # where their rows are in the source after them
    backfill_job: int | None  # the running backfill of the route's source table, if one is running


#: What the sink does with missing rows: "note" them for the running backfill to copy (in the same
#: transaction), or "skip" them.  A policy that allows neither raises, and the sink rolls back.
MissingRowsAction = Literal["note", "skip"]


@dataclass(frozen=True)
class ApplyMode:
    """How the pipeline wants one batch applied."""

    # Re-applying what the database already saw (a replay): over the present state, the key a row moves to
    # may already be taken by its own future, so the sink clears it first.
    replaying: bool
    on_missing: Callable[[MissingRows], MissingRowsAction]


@dataclass(frozen=True)
class CommitExtras:
    """What a commit writes besides the data and its checkpoint, in the same transaction."""

    transactions: int  # source transactions the data holds (added to the checkpoint's count)
    paused: tuple[int, int] | None = None  # (requested LSN, held LSN): the worker now holds
    letters: Sequence[DeadLetter] = ()  # changes set aside, stored with the data
    chunks: Sequence[ChunkDone] = ()  # backfill chunks the data holds
    moves: Sequence[StoredMove] = ()  # ownership moves at the checkpoint's position, recorded with it
    # The source tables' shapes that began by the checkpoint: table -> (offset it began at, schema header).
    shapes: Mapping[str, tuple[int, bytes]] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolution:
    """The pipeline's answer to a dead-letter request: mark `ids` with `status`; the request's `result` text."""

    ids: Sequence[int]
    status: Literal["retried", "dropped"]
    result: str
