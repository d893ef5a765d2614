"""A service worker, split by job: read the change log, apply whole source transactions, exactly once.

`loop` (the `Worker`: reading, reassembling transactions, holds) is where to start; its jobs are
`pacing` (when to commit and how long to wait for the log), `commit` (THE commit order: target
transaction, dead-letter copy, Kafka offset), `parts` (large transactions), `window` (online backfill
watermarks), `requests` (replay, dlq retry/drop), `isolation` (row-by-row apply and apply modes),
`on_error` (stop or set aside, by the refused row's table), `schema_policy` (source schema changes),
`dead_letter_topic` (the dead-letter copy), `moves` and `scopes` (ownership moves in the log: what the
worker may write once its service moved; its own echoed changes), `tally`, `source_order`, `log_guard`
and `state` (what they hold in memory).  The sink they talk to is `splitter.pipeline.sink.Sink`.  Must
not: import a driver (connectors/ does that).
"""

from splitter.pipeline.worker.loop import Worker
from splitter.pipeline.worker.pacing import POSITION_WRITE_INTERVAL
from splitter.pipeline.worker.state import WorkerStats

__all__ = ["POSITION_WRITE_INTERVAL", "Worker", "WorkerStats"]
