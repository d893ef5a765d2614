"""The plan's look at the change log: is the topic as durable as releasing the slot assumes?

Owns: asking Kafka how the change-log topic is replicated and kept (`gather_log`: the topic if it exists,
else what capture would create on this cluster) and judging it (`log_findings`, pure: one WARNING per
weakness, or one when Kafka cannot be asked).  Capture releases a change from the source once Kafka has
acknowledged it with acks=all, so the log is then its only copy.  Must not: create or change the topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.kafka.admin import topic_durability
from splitter.core.errors import RetryableError
from splitter.core.kafka_config import TopicDurability
from splitter.ops.plan.facts import WARNING, Finding
from splitter.pipeline.config import Settings

#: How long the plan waits for Kafka: it reads databases too, and an unreachable broker is only a warning.
PROBE_SECONDS = 3.0


@dataclass(frozen=True)
class LogFacts:
    topic: str
    durability: TopicDurability | None  # None: Kafka could not be asked (see `problem`)
    exists: bool = True
    problem: str = ""


def gather_log(settings: Settings) -> LogFacts:
    config = settings.kafka_client("admin")
    try:
        brokers, found = topic_durability(settings.kafka_bootstrap, settings.topic, config, timeout=PROBE_SECONDS)
    except RetryableError as exc:
        return LogFacts(settings.topic, None, problem=settings.kafka_config.mask(str(exc)))
    if found is not None:
        return LogFacts(settings.topic, found)
    topic = settings.kafka_config.topic
    replication, configs = topic.resolve(brokers)
    planned = TopicDurability(brokers=brokers, replication_factor=replication,
                              min_insync_replicas=int(configs["min.insync.replicas"]),
                              retention_ms=topic.retention_ms, max_message_bytes=topic.max_message_bytes)
    return LogFacts(settings.topic, planned, exists=False)


def log_findings(facts: LogFacts) -> list[Finding]:
    if facts.durability is None:
        return [Finding(WARNING, "kafka-unreachable",
                        f"cannot read how topic {facts.topic!r} is replicated: {facts.problem}")]
    d = facts.durability
    where = (f"topic {facts.topic!r}" if facts.exists
             else f"topic {facts.topic!r} (not created yet: capture would create it so on this cluster of "
                  f"{d.brokers} broker(s))")
    return [Finding(WARNING, "log-not-durable", f"{where}: {problem}") for problem in d.problems()]


__all__ = ["LogFacts", "gather_log", "log_findings"]
