"""The dead-letter topic of a service: a copy, for alerting and tooling, of the changes set aside.

Owns: the topic's name (`<change log topic>.dlq.<service>`), creating it and its producer when the first
letter comes, and the JSON value of each copy.  The `splitter.dead_letters` table is the record of
truth: a copy that fails is logged and dropped.  Must not: decide when a change is dead-lettered, or
publish before the letters are committed (`commit` calls it after the target transaction).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson

from connectors.kafka.admin import ensure_topic
from connectors.kafka.producer import ChangeLogProducer
from connectors.pg.state.dead_letters import DeadLetter
from splitter.core.lsn import lsn_to_str
from splitter.pipeline.config import Settings

log = logging.getLogger(__name__)


class DeadLetterTopic:
    def __init__(self, settings: Settings, service: str) -> None:
        self.topic = f"{settings.topic}.dlq.{service}"
        self._settings = settings
        self._service = service
        self._producer: ChangeLogProducer | None = None

    def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Copy committed dead letters to the topic (never raises: the table already holds them)."""
        try:
            if self._producer is None:
                s = self._settings
                ensure_topic(s.kafka_bootstrap, self.topic, settings=s.kafka_config.topic,
                             config=s.kafka_client("admin"))
                self._producer = ChangeLogProducer(s.kafka_bootstrap, self.topic, s.kafka_client("producer"))
            for letter in letters:
                value = orjson.dumps({
                    "service": self._service, "table": letter.source_table, "op": letter.op,
                    "key": letter.source_key, "sqlstate": letter.sqlstate, "error": letter.error,
                    "offset": letter.kafka_offset, "lsn": lsn_to_str(letter.commit_lsn) if letter.commit_lsn else None,
                    "event": letter.event,
                    "raw_value": letter.raw_value.decode(errors="replace") if letter.raw_value else None})
                self._producer.produce(b"", value, [("splitter.sqlstate", (letter.sqlstate or "").encode())])
            self._producer.flush(10.0)
        except Exception as exc:  # the rows are safe in splitter.dead_letters; the topic is a copy
            log.warning("service %s: could not copy %d dead letter(s) to topic %s: %s", self._service,
                        len(letters), self.topic, exc)
