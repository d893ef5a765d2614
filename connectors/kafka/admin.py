"""The change-log topic: creating it, and refusing one whose shape breaks the log's order.

Owns: `ensure_topic` (the topic is created with one partition by default, so an offset is one point in
the source's history; the worker's dead-letter topics are created the same way) and the admin client it
uses.  Must not: produce or read records (`producer`, `consumer`), or interpret them.
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from splitter.core.errors import ConfigurationError, RetryableError


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def ensure_topic(bootstrap: str, topic: str, *, partitions: int = 1, replication: int = 1,
                 timeout: float = 30.0) -> None:
    """Create `topic` if it does not exist; refuse one whose partition count breaks the log's order."""
    admin = _admin(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = admin.list_topics(timeout=10)
            break
        except KafkaException as exc:
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
