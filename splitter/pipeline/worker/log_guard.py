"""Whether the change log a worker reads is the log its checkpoint was taken in.

A checkpoint's offset means something only in the log it was taken in.  A broker that restarted empty, or a
topic deleted and created again, has a log with the same name in which the offset is past the end (the
worker would wait silently) or names another record (it would go on from there, missing changes); brokers
such as tansu report no out-of-range error, so `auto.offset.reset=error` cannot be relied on.  Owns the
checks, all of which raise the consumer's `OffsetGoneError` (the worker stops with its lost-offset error
and recovery):

* **At a checkpoint** (the start, and after a replay request), before anything is read: the topic exists;
  its id (Kafka's, new for every creation of a topic) is the one recorded for this service's checkpoint
  (`connectors.pg.state.log_identity`, written here once a check passed); the log still holds the records
  after the checkpoint (its earliest offset is not past them: retention); and, while no id was recorded
  yet (first start, older versions, a broker without topic ids), the log itself is compared: the record at
  the checkpoint offset must exist and carry an LSN at or before the checkpoint's; for a checkpoint that
  applied nothing, the first record the log holds must (at offset 0 that is capture's log-start marker,
  whose LSN is just before the slot position the log streams from).  That is exact: capture writes each log
  as one commit-ordered stream (re-sent copies included) from its marker on, so every commit after the LSN
  of any record comes after that record; a record past the checkpoint's LSN means commits may lie before it.
  A replay's checkpoint is the operator's choice, planned against the log as it is: only its id is recorded.
* **While streaming**, every `IDENTITY_INTERVAL` seconds: the topic still exists with the same id.

Must not: read or move the worker's position (the loop does), or write anything but the id row.
"""

from __future__ import annotations

import time

from connectors.kafka.admin import TopicProbe
from connectors.kafka.consumer import OffsetGoneError
from connectors.kafka.log_reader import LogReader
from connectors.pg.client import connect
from connectors.pg.state.log_identity import SERVICE, LogIdentity, read_log_identity, write_log_identity
from connectors.pg.state.schema import FROM_BEGINNING, Checkpoint
from splitter.core.dsn import service_database
from splitter.core.errors import RetryableError
from splitter.core.lsn import lsn_to_str
from splitter.pipeline.config import Settings
from splitter.pipeline.log_identity import marker_position

#: How often a streaming worker asks whether its topic is still the same log.
IDENTITY_INTERVAL = 2.0
#: How long the record at a checkpoint may take to arrive before the log is asked how far it goes.
RECORD_TIMEOUT = 3.0


class LogGuard:
    def __init__(self, settings: Settings, service: str) -> None:
        self._settings = settings
        self._service = service
        self._topic = settings.topic
        self._probe = TopicProbe(settings.kafka_bootstrap, settings.topic, settings.kafka_client("admin"))
        self._due: tuple[Checkpoint, bool] | None = None  # a checkpoint to check before reading on
        self._topic_id: str | None = None  # the id of the log this worker reads, once checked
        self._next = 0.0

    def expect(self, cp: Checkpoint, replayed: bool = False) -> None:
        """The worker reads on from `cp` (a replay's when `replayed`): check it before the next read."""
        self._due = (cp, replayed)

    def check(self, next_offset: int) -> None:
        """Before a read: the checkpoint's checks if one is due, else (now and then) the topic's id."""
        if self._due is not None:
            cp, replayed = self._due
            self._at_checkpoint(cp, replayed)
            self._due = None
            self._next = time.monotonic() + IDENTITY_INTERVAL
            return
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + IDENTITY_INTERVAL
        try:
            current = self._probe.topic_id(timeout=1.0)
        except RetryableError:
            return  # the broker does not answer: the consumer waits as well; asked again later
        self._same_log(current, self._topic_id, next_offset, "the log this worker was reading")

    def _same_log(self, current: str | None, known: str | None, offset: int | None, known_as: str) -> None:
        if current is None:
            raise OffsetGoneError(self._topic, offset, "the topic does not exist any more")
        if known and current and current != known:
            raise OffsetGoneError(self._topic, offset, f"the topic was created again: its id is {current}, {known_as} "
                                                       f"had id {known}")

    def _at_checkpoint(self, cp: Checkpoint, replayed: bool) -> None:
        next_offset = cp.offset + 1 if cp.offset != FROM_BEGINNING else 0
        current = self._probe.topic_id()
        dsn = self._settings.target_dsn(self._service)
        with connect(dsn, service_database(self._service), autocommit=True) as conn:
            stored = read_log_identity(conn, SERVICE, self._service)
            if current is None and cp.offset == FROM_BEGINNING and stored is None:
                # Nothing read yet: capture creates the topic when it first starts (the reverse stream's
                # worker can start first).
                raise RetryableError(f"topic {self._topic!r} does not exist yet: waiting for capture to create it")
            if stored is not None and stored.topic != self._topic and not replayed:
                raise OffsetGoneError(self._topic, next_offset, f"this service's checkpoint is in topic "
                                                                f"{stored.topic!r}, not {self._topic!r}")
            known = stored.topic_id if stored is not None and stored.topic == self._topic else None
            self._same_log(current, None if replayed else known,
                           next_offset, f"the log of this service's checkpoint (recorded {_since(stored)})")
            assert current is not None
            if not replayed:
                self._check_records(cp, next_offset, verified=bool(known and known == current))
            if stored is None or stored.topic != self._topic or stored.topic_id != current:
                write_log_identity(conn, SERVICE, self._service, self._topic, current)
        self._topic_id = current

    def _check_records(self, cp: Checkpoint, next_offset: int, verified: bool) -> None:
        with LogReader(self._settings.kafka_bootstrap, self._topic,
                       config=self._settings.kafka_client("consumer")) as reader:
            low, high = reader.watermarks()
            if cp.offset == FROM_BEGINNING:
                if not verified or low > 0:  # the recorded log, whole: nothing of it is missing
                    self._check_start(cp, reader, low, high)
                return
            if low > next_offset:
                raise OffsetGoneError(self._topic, next_offset, f"the log starts at offset {low}")
            if verified:
                return  # the recorded log: its records are the ones this service applied
            found = reader.record(cp.offset, timeout=RECORD_TIMEOUT)
            if found is None:
                if high > cp.offset:
                    raise RetryableError(f"the record at offset {cp.offset} of topic {self._topic!r} did not arrive "
                                         f"within {RECORD_TIMEOUT:.0f}s")
                raise OffsetGoneError(self._topic, next_offset, f"the log ends before offset {cp.offset}, where this "
                                                                f"service's checkpoint is")
            point = found[0]
            if point.lsn is not None and point.lsn > cp.commit_lsn:
                raise OffsetGoneError(
                    self._topic, next_offset, f"the record at offset {cp.offset} carries LSN {lsn_to_str(point.lsn)}, "
                                              f"after this service's checkpoint at {lsn_to_str(cp.commit_lsn)}: it "
                                              f"is not the log this service applied")

    def _check_start(self, cp: Checkpoint, reader: LogReader, low: int, high: int) -> None:
        """A checkpoint that applied nothing: the first record the log holds must not be past it.

        A log's first record is capture's log-start marker, whose LSN is just before the slot position the log
        streams from; after retention, the oldest record kept.  Either way every commit after its LSN follows it.
        """
        first = reader.record(low, timeout=RECORD_TIMEOUT) if high > low else None
        if first is None:
            # Capture writes the log-start marker before anything else, and before any copy: it comes.
            raise RetryableError(f"topic {self._topic!r} holds no record yet: waiting for capture to start the log")
        point, value = first
        if point.lsn is not None and point.lsn <= cp.commit_lsn:
            return
        start = marker_position(value)
        what = (f"a log-start marker: the log streams from slot position {lsn_to_str(start)}" if start is not None
                else f"LSN {lsn_to_str(point.lsn)}" if point.lsn is not None else "no LSN")
        raise OffsetGoneError(self._topic, low, f"the first record the log holds (offset {low}) carries {what}, after "
                                                f"this service's copy at {lsn_to_str(cp.commit_lsn)}: the changes in "
                                                f"between are not in it")


def _since(stored: LogIdentity | None) -> str:
    return f"{stored.since:%Y-%m-%d %H:%M}" if stored is not None else "never"
