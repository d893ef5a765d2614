"""A service's `on_error` policy: stop the worker, or set aside what the database or the reader rejects.

Owns: the two decisions `on_error` makes, with what the operator is told: a row the database refused
(stop, or count it so the caller applies the batch again row by row) and a record that is not a valid
splitter event (stop, or store it as a dead letter).  Must not: apply or store anything itself.
"""

from __future__ import annotations

import logging

from connectors.kafka.consumer import LogRecord
from connectors.pg.state.dead_letters import DeadLetter
from splitter.core.errors import DataRejectedError, FatalError, MalformedMessageError
from splitter.pipeline.sink import unreadable_letter
from splitter.pipeline.worker.state import WorkerStats
from splitter.topology.model import Service

log = logging.getLogger(__name__)


def rejected_row(service: Service, exc: DataRejectedError, stats: WorkerStats) -> None:
    """The database rejected a row: stop, or (on_error=dead_letter) count it; the caller then isolates it."""
    if service.on_error != "dead_letter":
        raise FatalError(
            f"{exc} (SQLSTATE {exc.sqlstate}). Service {service.name} stops here (on_error=stop): "
            f"fix the target or the topology and restart, or set on_error='dead_letter' for this "
            f"service to isolate rejected rows") from exc
    stats.retries_by_kind["data_rejected"] = stats.retries_by_kind.get("data_rejected", 0) + 1


def unreadable_record(service: Service, record: LogRecord, exc: MalformedMessageError) -> DeadLetter:
    """A record that is not a valid splitter event: stop, or (on_error=dead_letter) the letter to store."""
    if service.on_error != "dead_letter":
        raise FatalError(f"service {service.name}: {exc} (offset {record.offset}); the worker stops here "
                         f"(on_error=stop). Set on_error='dead_letter' to set such records aside") from exc
    log.warning("service %s: dead-lettering unreadable record at offset %d: %s", service.name, record.offset, exc)
    return unreadable_letter(record.offset, record.value, str(exc))
