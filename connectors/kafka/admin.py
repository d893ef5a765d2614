"""The change-log topic: creating it durable, refusing one whose shape breaks the log's order, telling it apart.

Owns: `ensure_topic` (the topic is created with one partition by default, so an offset is one point in
the source's history, and with the replication factor and topic configs of `TopicSettings`; the worker's
dead-letter topics are created the same way), `topic_durability` (what an existing topic's replication and
configs are, for `splitter plan` and capture's start-up warning), `TopicProbe` (the topic's id, which Kafka
gives a topic when it is created: a topic deleted and created again, or created again by a broker that
restarted empty, has a new one) and the admin clients they use.  Must not: produce or read records
(`producer`, `consumer`), interpret them, or decide what a changed id or a weak durability means.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType  # type: ignore[attr-defined]

from connectors.kafka.clients import client_config, new_client
from splitter.core.errors import ConfigurationError, FatalError, RetryableError
from splitter.core.kafka_config import KAFKA_ORIGIN, TopicDurability, TopicSettings, mask_secret_values

#: Kafka's id of a topic, base64 as clients print it; "" from a broker that gives topics no id.
TopicId = str

_AUTHORIZATION = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED)


def _admin(bootstrap: str, config: Mapping[str, Any] | None = None) -> AdminClient:
    return new_client(AdminClient, client_config(bootstrap, {"socket.timeout.ms": 10000}, config), "admin client",
                      config)


def _list_topics(admin: AdminClient, bootstrap: str, config: Mapping[str, Any] | None, deadline: float,
                 on_unreachable: Callable[[str], None] | None) -> Any:
    while True:
        admin.poll(0)  # serves librdkafka's log lines, queued for Python logging (`new_client`)
        try:
            return admin.list_topics(timeout=max(1.0, min(10.0, deadline - time.monotonic())))
        except KafkaException as exc:
            text = mask_secret_values(str(exc), config or {})
            if on_unreachable is not None:
                on_unreachable(f"Kafka at {bootstrap} ({KAFKA_ORIGIN}) does not answer: {text}")
            if time.monotonic() > deadline:
                raise RetryableError(f"Kafka at {bootstrap} ({KAFKA_ORIGIN}) is unreachable: {text}") from exc
            time.sleep(1)


def ensure_topic(bootstrap: str, topic: str, *, partitions: int = 1, settings: TopicSettings | None = None,
                 config: Mapping[str, Any] | None = None, timeout: float = 30.0,
                 on_unreachable: Callable[[str], None] | None = None) -> None:
    """Create `topic` if it does not exist; refuse one whose partition count breaks the log's order.

    `config` is the operator's admin-client properties; `on_unreachable(message)` is told each time the
    broker does not answer (before the retry).
    """
    admin = _admin(bootstrap, config)
    deadline = time.monotonic() + timeout
    metadata = _list_topics(admin, bootstrap, config, deadline, on_unreachable)
    existing = metadata.topics.get(topic)
    if existing is not None and existing.error is None:
        if len(existing.partitions) != partitions:
            raise ConfigurationError(
                f"topic {topic!r} has {len(existing.partitions)} partitions; splitter's change log needs exactly "
                f"{partitions} (one ordered history of the source)")
        return
    replication, configs = (settings or TopicSettings()).resolve(len(metadata.brokers))
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=replication,
                                            config=configs)])
    try:
        futures[topic].result(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        code = err.code() if isinstance(err, KafkaError) else None
        if code == KafkaError.TOPIC_ALREADY_EXISTS:
            return
        if code in (*_AUTHORIZATION, KafkaError.POLICY_VIOLATION, KafkaError.INVALID_CONFIG,
                    KafkaError.INVALID_REPLICATION_FACTOR):
            raise ConfigurationError(
                f"Kafka at {bootstrap} refused to create topic {topic!r} (replication factor {replication}, "
                f"{', '.join(f'{k}={v}' for k, v in configs.items())}): {exc}; change SPLITTER_KAFKA_TOPIC_* or "
                f"let the principal create topics (CREATE on the cluster or the topic)") from exc
        raise RetryableError(f"cannot create topic {topic!r} on {bootstrap}: {exc}") from exc
    # Metadata propagates asynchronously; wait until the partition has a leader.
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
        if md is not None and md.error is None and md.partitions and all(p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.2)
    raise RetryableError(f"topic {topic!r} was created but has no leader after {timeout:.0f}s")


def topic_durability(bootstrap: str, topic: str, config: Mapping[str, Any] | None = None,
                     timeout: float = 10.0) -> tuple[int, TopicDurability | None]:
    """(brokers in the cluster, how `topic` is replicated and kept, or None if it does not exist).  Raises
    RetryableError if Kafka does not answer."""
    admin = _admin(bootstrap, config)
    metadata = _list_topics(admin, bootstrap, config, time.monotonic() + timeout, None)
    brokers = len(metadata.brokers)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return brokers, None
    # Distinct brokers: a broker that lists one replica several times keeps one copy.
    replication = min(len(set(p.replicas)) for p in found.partitions.values())
    wanted = ("min.insync.replicas", "retention.ms", "max.message.bytes")
    try:
        described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
        entries = next(iter(described.values())).result(timeout=timeout)
        values = {name: entries[name].value for name in wanted if name in entries}
    except KafkaException as exc:
        raise RetryableError(f"cannot describe the configs of topic {topic!r}: {exc}") from exc

    def number(name: str) -> int | None:
        raw = values.get(name)
        return int(raw) if raw not in (None, "") else None

    return brokers, TopicDurability(brokers=brokers, replication_factor=replication,
                                    min_insync_replicas=number("min.insync.replicas"),
                                    retention_ms=number("retention.ms"), max_message_bytes=number("max.message.bytes"))


class TopicProbe:
    """Asks the broker for one topic's id, on one admin client kept for repeated asks."""

    def __init__(self, bootstrap: str, topic: str, config: Mapping[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._admin = _admin(bootstrap, config)
        self._unanswered = f"Kafka at {bootstrap} ({KAFKA_ORIGIN}) does not answer for topic {topic!r}"

    def topic_id(self, timeout: float = 5.0) -> TopicId | None:
        """The topic's id; None if the broker says there is no such topic; "" if it gives topics no id.

        Raises RetryableError when the broker does not answer, FatalError when it refuses to describe it.
        """
        self._admin.poll(0)  # serves librdkafka's log lines, queued for Python logging (`new_client`)
        try:
            described = self._admin.describe_topics(TopicCollection([self.topic]), request_timeout=timeout)
            description = described[self.topic].result(timeout=timeout + 1)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_ID, KafkaError._UNKNOWN_TOPIC):
                return None
            if code in _AUTHORIZATION:
                raise FatalError(f"not allowed to describe topic {self.topic!r}: {exc}") from exc
            raise RetryableError(f"{self._unanswered}: {exc}") from exc
        except TimeoutError as exc:  # the future's own timeout
            raise RetryableError(self._unanswered) from exc
        uuid = description.topic_id
        if uuid is None or (uuid.get_most_significant_bits() == 0 and uuid.get_least_significant_bits() == 0):
            return ""
        return str(uuid)
