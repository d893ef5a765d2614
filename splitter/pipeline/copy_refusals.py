"""What the initial copy does with rows a service database refuses: the table's `on_error`, as the worker has it.

Owns: the route whose COPY the service database refused (a data error: SQLSTATE class 22 or 23) copied
again row by row (`connectors.pg.copy_rows`), and then, by the `on_error` of the route's table (its own,
else its service's: `splitter.topology.model.effective_on_error`):
  * "dead_letter": every refused row stored as a dead letter in the copy's own transaction (so it commits
    with the rows and the checkpoint), the rest copied.  A letter is the row as an insert ("r", the
    snapshot's read) at the copy's checkpoint, built by the sink's own `dead_letter`, so `splitter dlq`
    lists, retries and drops it like any other, and later changes of that row wait behind it (parked);
  * "stop": a FatalError naming the route, the first refused source row's key, the constraint and the
    database's reason; the caller rolls the service's copy back.
Must not: run SQL (the copy's connector does), commit, or decide anything about the slot.
"""

from __future__ import annotations

import logging
import time

from connectors.pg.copy import ServiceCopy
from connectors.pg.state.schema import FROM_BEGINNING, Checkpoint
from splitter.core.envelope import RowChange
from splitter.core.errors import DataRejectedError, FatalError
from splitter.pipeline.sink import dead_letter
from splitter.topology.model import Route, Service, effective_on_error, on_error_said

log = logging.getLogger(__name__)


def copy_refused_route(copy: ServiceCopy, service: Service, route: Route, checkpoint: Checkpoint,
                       refusal: DataRejectedError) -> tuple[int, int]:
    """Copy `route` again after its COPY was refused; (rows copied, rows set aside), or FatalError when its table's
    on_error is 'stop'."""
    said, change = on_error_said(service, route.table, "dead_letter")
    if effective_on_error(service, route.table) == "dead_letter":
        result = copy.copy_rows(route, stop_at_first=False)
        ts_ms = int(time.time() * 1000)
        table = f"{route.source_schema}.{route.source_table}"
        letters = [dead_letter(FROM_BEGINNING,
                               RowChange("r", table, None, row.image, (), checkpoint.commit_lsn, 0, i, ts_ms),
                               result.relation, row.sqlstate, f"initial copy: {row.message}")
                   for i, row in enumerate(result.refused)]
        copy.store_dead_letters(letters)
        if letters:
            first = result.refused[0]
            log.warning("initial copy of service %s: %s: the service database refused %d row(s), set aside as dead "
                        "letters (%s; `splitter dlq list --service %s`), the first (%s)=(%s): %s; "
                        "%d row(s) copied", service.name, route.describe(), len(letters), said, service.name,
                        ", ".join(result.relation.key_columns), _values(first.key), first.message, result.rows)
        return result.rows, len(letters)
    result = copy.copy_rows(route, stop_at_first=True)
    if not result.refused:
        raise FatalError(f"{refusal}; {said}, so nothing of it was copied") from refusal
    row = result.refused[0]
    raise FatalError(
        f"initial copy of service {service.name}: {route.describe()}: the service database refused source row "
        f"({', '.join(result.relation.key_columns)})=({_values(row.key)}): {row.message} "
        f"[constraint {row.constraint or '-'}, SQLSTATE {row.sqlstate}]. The {said}, so nothing of service "
        f"{service.name} was copied: fix the row in the source (`splitter plan` lists every such row), or {change} "
        f"to copy the rest and set such rows aside, then start capture again") from refusal


def _values(key: tuple[str | None, ...]) -> str:
    return ", ".join("NULL" if v is None else v for v in key)


__all__ = ["copy_refused_route"]
