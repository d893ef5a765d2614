"""What a worker may write since ownership moved, and which records are its own writes coming back.

Owns: the home of each routed table's last ownership move (read back from the service database at the
checkpoint's position when the worker starts or rewinds, changed by an ownership message), the write
scopes the sink applies from it, the moves of a message that concern this worker, as the commit at the
message's position records them, and the replication origin of this service's own reverse stream (rows
the source's log carries under it are the service's own changes echoed back: the worker skips them).
Must not: commit (the loop flushes through `commit`), decode messages itself (`moves` does) or move the
read position.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from connectors.pg.origins import origin_name
from connectors.pg.state.ownership_moves import StoredMove
from splitter.core.envelope import ORIGIN_HEADER
from splitter.core.errors import FatalError, MalformedMessageError
from splitter.pipeline.sink import ScopeSession
from splitter.pipeline.worker.moves import concerning, decode_moves, route_scopes
from splitter.topology.model import Route, Topology

log = logging.getLogger(__name__)

#: The ownership moves one commit records.
Moves = tuple[StoredMove, ...]


def echo_origin(service: str) -> bytes:
    """The origin header value of rows `service`'s reverse worker wrote into the source."""
    return origin_name(f"{service}.reverse").encode()


class WriteScopes:
    """The ownership moves one worker has applied, and the scopes its sink writes within."""

    def __init__(self, service: str, sink: ScopeSession) -> None:
        self._service = service
        self._sink = sink
        self._homes: dict[str, str] = {}  # source table -> home of its last move applied
        self._echo = echo_origin(service)

    def echoed(self, headers: Mapping[str, bytes]) -> bool:
        """Whether the record is this service's own change echoed back by its reverse stream (skipped)."""
        return headers.get(ORIGIN_HEADER) == self._echo

    def restore(self, topology: Topology, routes: Sequence[Route], through_lsn: int) -> None:
        """The scopes at a checkpoint: each table's last move recorded at or before `through_lsn`."""
        self._homes = {m.table: m.home for m in self._sink.ownership_moves(through_lsn)}
        self.routes_changed(topology, routes)

    def routes_changed(self, topology: Topology, routes: Sequence[Route]) -> None:
        self._sink.set_scopes(route_scopes(topology, routes, self._homes))

    def moves_at(self, content: str, offset: int, lsn: int, routes: Sequence[Route]) -> Moves:
        """The moves of the ownership message at `offset` that concern this worker, as they are recorded.

        A message that cannot be read stops the worker whatever its on_error: it says what the worker may
        overwrite from here on, so going past it could overwrite another service's writes.
        """
        try:
            moves = decode_moves(content)
        except MalformedMessageError as exc:
            raise FatalError(f"service {self._service}: the ownership message at offset {offset} cannot be read "
                             f"({exc}); the worker stops before it rather than write past it") from exc
        return tuple(StoredMove(m.table, m.service, m.home, lsn) for m in concerning(moves, self._service, routes))

    def moved(self, moves: Sequence[StoredMove], topology: Topology, routes: Sequence[Route]) -> None:
        """`moves` are committed: write within their scopes from now on."""
        for m in moves:
            if self._homes.get(m.table) == "retired":
                continue  # retirement is final: a later move of the table's other owners does not revive it
            self._homes[m.table] = m.home
            log.info("service %s: the writes of %s %s (ownership move at %X)", self._service, m.table,
                     _WHERE[m.home], m.lsn)
        self.routes_changed(topology, routes)


_WHERE = {"service": "moved to its database: its forward stream writes only what it does not own",
          "source": "are back in the source: its forward stream writes everything again",
          "retired": "have stopped: the table is retired, nothing of it is applied any more"}
