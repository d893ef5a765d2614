"""`on_error`: stop the worker, or set aside what the database or the reader rejects.

Owns: the decisions `on_error` makes, with what the operator is told.  A refused row is decided by its
table's policy (`splitter.topology.model.effective_on_error`: the table's own, else its service's):
  * a batch (or part) the database rejected, before it is known which row of which table refused
    (`Rejections.batch`): stop when no table of the service sets rows aside (every row's table would
    stop), else count it so the caller applies the batch again row by row;
  * a change refused once applied alone (`Rejections.row`): stop if its table says "stop", else it
    becomes a dead letter (the caller stores it).
A record that is not a valid splitter event belongs to no table it could be trusted for: the service's
own policy decides (`unreadable_record`: stop, or store it as a dead letter).  Must not: apply or store
anything itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from connectors.kafka.consumer import LogRecord
from connectors.pg.sink_values import Rejected
from connectors.pg.state.dead_letters import DeadLetter
from splitter.core.envelope import RelationSchema, RowChange
from splitter.core.errors import DataRejectedError, FatalError, MalformedMessageError
from splitter.pipeline.sink import source_key, unreadable_letter
from splitter.pipeline.worker.state import Unit, WorkerStats
from splitter.topology.model import Route, Service, effective_on_error, on_error_said

log = logging.getLogger(__name__)

SET_ASIDE = "dead_letter"


class Rejections:
    """The decisions about changes one worker's service database refused, over its service and routes as they
    are when asked (`current`: a reloaded topology changes them)."""

    def __init__(self, current: Callable[[], tuple[Service, Sequence[Route]]], stats: WorkerStats) -> None:
        self._current = current
        self._stats = stats

    def batch(self, exc: DataRejectedError, units: Sequence[Unit] = ()) -> None:
        """The database rejected a batch (of `units`, when known) without saying which row: stop when no table of
        the service sets rows aside, else count it; the caller applies the batch row by row and `row` decides."""
        service, routes = self._current()
        if any(effective_on_error(service, r.table) == SET_ASIDE for r in routes):
            self._stats.retries_by_kind["data_rejected"] = self._stats.retries_by_kind.get("data_rejected", 0) + 1
            return
        sources = {c.table for _, c, _ in units}
        held = [r for r in routes if f"{r.source_schema}.{r.source_table}" in sources]
        if len(held) == 1:  # the refused row is of this table
            said, change = on_error_said(service, held[0].table, SET_ASIDE)
        else:
            said = f"every table of service {service.name} has on_error='stop'"
            change = (f"set on_error={SET_ASIDE!r} on the table (Table(..., on_error={SET_ASIDE!r})) or on service "
                      f"{service.name}")
        raise FatalError(f"{exc} (SQLSTATE {exc.sqlstate}). Service {service.name} stops here ({said}): fix the "
                         f"target or the topology and restart, or {change} to isolate rejected rows") from exc

    def row(self, offset: int, change: RowChange, relation: RelationSchema, rejected: Rejected) -> None:
        """A change the database refused applied alone: stop if its table's policy says so (else it is set aside:
        `isolation.RefusedRow`)."""
        service, routes = self._current()
        route = _route_of(service, routes, change.table, rejected.table)
        table = route.table if route is not None else None
        if effective_on_error(service, table) == SET_ASIDE:
            return
        said, how = on_error_said(service, table, SET_ASIDE)
        where = route.describe() if route is not None else change.table
        key = source_key(change, relation)
        shown = ", ".join("NULL" if v is None else v for v in key or ())
        row = f" of source row ({', '.join(relation.key_columns)})=({shown})" if key else ""
        raise FatalError(
            f"service {service.name}: {where}: the service database refused the change{row} at offset {offset}: "
            f"{rejected.message} (SQLSTATE {rejected.sqlstate}). Service {service.name} stops here ({said}): fix "
            f"the target or the source row and restart, or {how} to set such rows aside")


def _route_of(service: Service, routes: Sequence[Route], source: str, target: str | None) -> Route | None:
    """The route a refused change of `source` (schema.table) was written through: the one into `target` (the
    table the server names, when it names one); when that leaves several, one whose policy stops (setting the
    change aside could skip a row of a table that says stop; stopping skips nothing)."""
    feeding = [r for r in routes if f"{r.source_schema}.{r.source_table}" == source]
    candidates = [r for r in feeding if f"{r.target_schema}.{r.target_table}" == target] or feeding
    stopping = [r for r in candidates if effective_on_error(service, r.table) != SET_ASIDE]
    return next(iter(stopping or candidates), None)


def unreadable_record(service: Service, record: LogRecord, exc: MalformedMessageError) -> DeadLetter:
    """A record that is not a valid splitter event: stop, or (the service's on_error=dead_letter) the letter to
    store.  Such a record names no table it could be trusted for, so a table's own on_error has no say."""
    if effective_on_error(service) != SET_ASIDE:
        raise FatalError(f"service {service.name}: {exc} (offset {record.offset}); the worker stops here "
                         f"(on_error=stop). Set on_error='dead_letter' on the service to set such records aside "
                         f"(a table's own on_error does not cover a record that cannot be read)") from exc
    log.warning("service %s: dead-lettering unreadable record at offset %d: %s", service.name, record.offset, exc)
    return unreadable_letter(record.offset, record.value, str(exc))
