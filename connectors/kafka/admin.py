"""The change-log topic: creating it, refusing one whose shape breaks the log's order, and telling it apart.

Owns: `ensure_topic` (the topic is created with one partition by default, so an offset is one point in
the source's history; the worker's dead-letter topics are created the same way), `TopicProbe` (the
topic's id, which Kafka gives a topic when it is created: a topic deleted and created again, or created
again by a broker that restarted empty, has a new one) and the admin clients they use.  Must not: produce
or read records (`producer`, `consumer`), interpret them, or decide what a changed id means.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from splitter.core.errors import ConfigurationError, FatalError, RetryableError

#: Kafka's id of a topic, base64 as clients print it; "" from a broker that gives topics no id.
TopicId = str


def _admin(bootstrap: str, extra: dict[str, Any] | None = None) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000, **(extra or {})})


def ensure_topic(bootstrap: str, topic: str, *, partitions: int = 1, replication: int = 1,
                 timeout: float = 30.0, on_unreachable: Callable[[str], None] | None = None) -> None:
    """Create `topic` if it does not exist; refuse one whose partition count breaks the log's order.

    `on_unreachable(message)` is told each time the broker does not answer (before the retry).
    """
    admin = _admin(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = admin.list_topics(timeout=min(10.0, timeout))
            break
        except KafkaException as exc:
            if on_unreachable is not None:
                on_unreachable(f"Kafka at {bootstrap} does not answer: {exc}")
            if time.monotonic() > deadline:
                raise RetryableError(f"Kafka at {bootstrap} is unreachable: {exc}") from exc
            time.sleep(1)
    existing = metadata.topics.get(topic)
    if existing is not None and existing.error is None:
        if len(existing.partitions) != partitions:
            raise ConfigurationError(
                f"topic {topic!r} has {len(existing.partitions)} partitions; splitter's change log needs exactly "
                f"{partitions} (one ordered history of the source)")
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=replication)])
    try:
        futures[topic].result(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return
        raise RetryableError(f"cannot create topic {topic!r} on {bootstrap}: {exc}") from exc
    # Metadata propagates asynchronously; wait until the partition has a leader.
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
        if md is not None and md.error is None and md.partitions and all(p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.2)
    raise RetryableError(f"topic {topic!r} was created but has no leader after {timeout:.0f}s")


class TopicProbe:
    """Asks the broker for one topic's id, on one admin client kept for repeated asks."""

    def __init__(self, bootstrap: str, topic: str, extra: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._admin = _admin(bootstrap, extra)

    def topic_id(self, timeout: float = 5.0) -> TopicId | None:
        """The topic's id; None if the broker says there is no such topic; "" if it gives topics no id.

        Raises RetryableError when the broker does not answer, FatalError when it refuses to describe it.
        """
        try:
            described = self._admin.describe_topics(TopicCollection([self.topic]), request_timeout=timeout)
            description = described[self.topic].result(timeout=timeout + 1)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_ID, KafkaError._UNKNOWN_TOPIC):
                return None
            if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
                raise FatalError(f"not allowed to describe topic {self.topic!r}: {exc}") from exc
            raise RetryableError(f"Kafka at {self.bootstrap} does not answer for topic {self.topic!r}: {exc}") from exc
        except TimeoutError as exc:  # the future's own timeout
            raise RetryableError(f"Kafka at {self.bootstrap} does not answer for topic {self.topic!r}") from exc
        uuid = description.topic_id
        if uuid is None or (uuid.get_most_significant_bits() == 0 and uuid.get_least_significant_bits() == 0):
            return ""
        return str(uuid)
