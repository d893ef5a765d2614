"""Capture's view of the broker: whether it answers, and whether the topic is still the log capture started in.

librdkafka retries for ever (`message.timeout.ms` 0: capture never drops a record), so a broker that is
gone shows only as records that stay unacknowledged; the client's error callback adds why (all brokers
down, transport failures).  Owns: `BrokerWatch.observe`, called once per pass of capture's loop: it sets
`stats.broker_unreachable` / `stats.last_broker_error` while records wait longer than `SILENT_AFTER`
for an acknowledgement (or the client says every broker is down) and clears them once acknowledgements
move again; and it asks for the topic's id every `PROBE_EVERY` seconds (`PROBE_EVERY_DOWN` while the
broker does not answer): a topic that is gone, or has another id than when capture started, is a log
lost under capture, and capture restarts (RetryableError) so that its start-up check
(splitter.pipeline.log_identity) stops it with the lost-log error.  `reporter(stats)` is the same
reporting for the topic check at capture's start.  Must not: drop, re-send or confirm records, or wait:
capture's loop keeps ticking, serving the slot and heartbeats, while the broker is away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from connectors.kafka.admin import TopicProbe
from connectors.kafka.producer import ChangeLogProducer
from splitter.core.dsn import mask_secrets
from splitter.core.errors import RetryableError
from splitter.pipeline.config import Settings

log = logging.getLogger(__name__)

#: Records unacknowledged this long (with none acknowledged meanwhile): the broker counts as unreachable.
SILENT_AFTER = 10.0
#: How often the topic's id is asked for while the broker answers, and while it does not.
PROBE_EVERY = 5.0
PROBE_EVERY_DOWN = 2.0
PROBE_TIMEOUT = 1.0
#: While unreachable, the log line is repeated this often (the stats say it all the time).
LOG_EVERY = 60.0


class _Stats(Protocol):
    broker_unreachable: bool
    last_broker_error: str | None


def reporter(stats: _Stats) -> Callable[[str], None]:
    """`on_unreachable` for `ensure_topic`: the broker did not answer capture's start-up check."""

    def report(message: str) -> None:
        stats.broker_unreachable = True
        stats.last_broker_error = mask_secrets(message)

    return report


class BrokerWatch:
    def __init__(self, settings: Settings, stats: _Stats) -> None:
        self._settings = settings
        self._stats = stats
        self._probe = TopicProbe(settings.kafka_bootstrap, settings.topic, settings.kafka_client("admin"))
        self._topic_id: str | None = None  # the id at the first answer: the log capture streams into
        self._acked = -1
        self._acked_at = time.monotonic()  # when the acknowledged count last moved
        self._waiting_since: float | None = None  # when records began to wait, none acknowledged since
        self._next_probe = 0.0
        self._logged = 0.0

    def observe(self, producer: ChangeLogProducer) -> None:
        now = time.monotonic()
        acked = producer.acked
        if acked != self._acked:
            self._acked, self._acked_at = acked, now
            self._waiting_since = now if producer.in_flight else None
        elif producer.in_flight == 0:
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = now
        # Until an acknowledgement comes after it, the client's "all brokers down" stands.
        down = producer.all_brokers_down_at is not None and producer.all_brokers_down_at > self._acked_at
        silent = self._waiting_since is not None and now - self._waiting_since >= SILENT_AFTER
        if down or silent:
            self._unreachable(producer, now)
        elif self._stats.broker_unreachable:
            log.info("the broker acknowledges records again (topic %s)", self._settings.topic)
            self._stats.broker_unreachable, self._stats.last_broker_error = False, None
        if now >= self._next_probe:
            self._next_probe = now + (PROBE_EVERY_DOWN if self._stats.broker_unreachable else PROBE_EVERY)
            self._check_topic()

    def _unreachable(self, producer: ChangeLogProducer, now: float) -> None:
        client = producer.client_error[0] if producer.client_error is not None else "no error from the client"
        waiting = (f"{producer.in_flight} record(s) unacknowledged for {now - self._waiting_since:.0f}s"
                   if self._waiting_since is not None else "no broker reachable")
        message = mask_secrets(f"{waiting} at {self._settings.kafka_bootstrap} ({client})")
        st = self._stats
        if not st.broker_unreachable or now - self._logged >= LOG_EVERY:
            log.error("the broker does not answer: %s; capture keeps the records and retries, the slot does not "
                      "advance and retained WAL grows meanwhile", message)
            self._logged = now
        st.broker_unreachable, st.last_broker_error = True, message

    def _check_topic(self) -> None:
        try:
            found = self._probe.topic_id(timeout=PROBE_TIMEOUT)
        except RetryableError:
            return  # no answer: the acknowledgements tell whether the broker is away
        if found is None:
            raise RetryableError(f"topic {self._settings.topic!r} does not exist any more: the broker lost the "
                                 f"change log under capture; restarting to check it")
        if self._topic_id is None:
            self._topic_id = found
        elif found and found != self._topic_id:
            raise RetryableError(f"topic {self._settings.topic!r} was created again under capture (id {found}, was "
                                 f"{self._topic_id}); restarting to check the change log")
