"""What splitter's Kafka clients are told, and how the change-log topic is created, as the operator set it.

Owns: reading librdkafka client properties from a properties file (`--kafka-config`, `SPLITTER_KAFKA_CONFIG`)
and from `SPLITTER_KAFKA_<PROPERTY>` environment variables (the environment wins), sorting them into the
properties every client gets and those one client kind gets (`producer.`, `consumer.`, `admin.` prefixes),
the change log's topic settings (`topic.` prefix: replication factor, `min.insync.replicas`,
`retention.ms`, `max.message.bytes`), refusing properties splitter's correctness rests on, and masking
secret values (`sasl.password`, ...) in any text.  Must not: talk to Kafka, import a driver, or let a
secret value into an error message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from splitter.core.errors import ConfigurationError

ClientKind = Literal["producer", "consumer", "admin"]
CLIENT_KINDS: tuple[ClientKind, ...] = ("producer", "consumer", "admin")

#: Where the operator sets the bootstrap servers, for an error that cannot reach them to name.
KAFKA_ORIGIN = "--kafka or SPLITTER_KAFKA"

#: Environment variables under the prefix that are not client properties.
ENV_PREFIX = "SPLITTER_KAFKA_"
FILE_ENV = "SPLITTER_KAFKA_CONFIG"
_NOT_PROPERTIES = frozenset({FILE_ENV})

#: librdkafka property names: lower-case words joined by dots (a few use underscores).
_PROPERTY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")

#: Properties splitter sets itself, with why: changing one would break ordering, durability or resumption.
OWNED: Mapping[str, str] = {
    "bootstrap.servers": "pass --kafka or SPLITTER_KAFKA",
    "group.id": "each worker's group is derived from the source database and the service",
    "acks": "capture releases the slot only for records every in-sync replica has (acks=all)",
    "enable.idempotence": "the idempotent producer keeps the change log's order across retries",
    "message.timeout.ms": "capture never gives up on a record: it waits for the broker",
    "delivery.timeout.ms": "capture never gives up on a record: it waits for the broker",
    "transactional.id": "capture's producer is idempotent, not transactional",
    "enable.auto.commit": "workers resume from the checkpoint in the service database",
    "enable.auto.offset.store": "workers resume from the checkpoint in the service database",
    "auto.offset.reset": "a position the log no longer holds must stop a worker, not move it",
    "allow.auto.create.topics": "capture creates the change log itself, with its settings",
    "enable.partition.eof": "splitter's readers choose this per reader",
}

#: A property whose value is a secret: masked wherever text might carry it.
_SECRET = re.compile(r"password|secret|\.pem$|jaas|oauthbearer\.config|sasl\.oauthbearer\.client\.", re.IGNORECASE)

#: Settings of the change-log topic (`topic.<name>`), and the smallest value each may take.
TOPIC_SETTINGS: Mapping[str, int] = {
    "replication.factor": 1,
    "min.insync.replicas": 1,
    "retention.ms": -1,
    "max.message.bytes": 1,
}
#: What releasing the slot assumes of the log when the operator does not say otherwise.
PREFERRED_REPLICATION = 3
DEFAULT_RETENTION_MS = -1  # keep every record: `splitter replay --from-offset` reads old history
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the producer's own limit (connectors.kafka.producer)


def is_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def mask_secret_values(text: str, properties: Mapping[str, object]) -> str:
    """`text` with the value of every secret property in `properties` replaced by ***."""
    secrets = [v for name, v in properties.items() if is_secret(name) and isinstance(v, str) and v]
    for secret in sorted(secrets, key=len, reverse=True):  # a secret inside a longer one: the longer first
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class TopicSettings:
    """How capture creates the change-log topic; None means "as the cluster allows" (see `resolve`)."""

    replication_factor: int | None = None
    min_insync_replicas: int | None = None
    retention_ms: int = DEFAULT_RETENTION_MS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    def resolve(self, brokers: int) -> tuple[int, dict[str, str]]:
        """(replication factor, topic configs) for a cluster of `brokers` brokers.

        Unset, the replication factor is 3 where the cluster has three brokers, else every broker, and
        `min.insync.replicas` one less than that (at least 1, at most 2), so one broker may fail without
        writes stopping and no acknowledged record lives on one broker only.
        """
        replication = self.replication_factor or max(1, min(PREFERRED_REPLICATION, brokers))
        if brokers and replication > brokers:
            raise ConfigurationError(
                f"topic.replication.factor={replication} but the cluster has {brokers} broker(s): "
                f"lower SPLITTER_KAFKA_TOPIC_REPLICATION_FACTOR or add brokers")
        insync = self.min_insync_replicas or max(1, min(2, replication - 1))
        if insync > replication:
            raise ConfigurationError(
                f"topic.min.insync.replicas={insync} is more than the replication factor {replication}: no "
                f"write could ever succeed")
        return replication, {"min.insync.replicas": str(insync), "retention.ms": str(self.retention_ms),
                             "max.message.bytes": str(self.max_message_bytes)}


@dataclass(frozen=True)
class TopicDurability:
    """What an existing topic's replication and retention are, as the cluster reports them."""

    brokers: int
    replication_factor: int
    min_insync_replicas: int | None  # None: the cluster did not say (its default applies)
    retention_ms: int | None
    max_message_bytes: int | None

    def problems(self) -> list[str]:
        """Why this log is weaker than what releasing the replication slot assumes, one line each.

        Capture lets the source forget a change once Kafka acknowledged it with acks=all; with one
        replica, or one in-sync replica allowed, that acknowledgement can rest on a single disk.
        """
        out = []
        if self.replication_factor < 2:
            out.append(f"replication factor {self.replication_factor}: a change the source has released lives "
                       f"on one broker only (create the topic with replication factor 3 on a cluster of 3+)")
        elif self.min_insync_replicas is not None and self.min_insync_replicas < 2:
            out.append(f"min.insync.replicas {self.min_insync_replicas} with acks=all: a change the source has "
                       f"released may be acknowledged by one replica only (set it to 2)")
        if self.retention_ms is not None and self.retention_ms >= 0:
            out.append(f"retention.ms {self.retention_ms}: records a worker has not read yet, or a replay needs, "
                       f"are deleted after {self.retention_ms / 3_600_000:.1f} h (-1 keeps them)")
        return out


@dataclass(frozen=True)
class KafkaClientConfig:
    """The operator's client properties and topic settings."""

    common: Mapping[str, str] = field(default_factory=dict)
    per_client: Mapping[ClientKind, Mapping[str, str]] = field(default_factory=dict)
    topic: TopicSettings = field(default_factory=TopicSettings)
    path: str | None = None  # the properties file, handed on to child processes

    def for_client(self, kind: ClientKind) -> dict[str, str]:
        """What a `kind` client is given on top of splitter's own settings."""
        return {**self.common, **self.per_client.get(kind, {})}

    def mask(self, text: str) -> str:
        """`text` with every secret value of this configuration replaced by ***."""
        for properties in (self.common, *self.per_client.values()):
            text = mask_secret_values(text, properties)
        return text


def read_properties(text: str, where: str) -> list[tuple[str, str, str]]:
    """(name, value, origin) of each `name=value` line; `#` and `!` start comments, as in Java's files."""
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ConfigurationError(f"{where} line {number}: expected name=value")
        out.append((name.strip(), value.strip(), f"{where} line {number}"))
    return out


def properties_from_env(env: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """`SPLITTER_KAFKA_SASL_PASSWORD=x` → ("sasl.password", "x", ...): underscores become dots."""
    out = []
    for variable in sorted(env):
        if not variable.startswith(ENV_PREFIX) or variable in _NOT_PROPERTIES:
            continue
        name = variable[len(ENV_PREFIX):].lower().replace("_", ".")
        out.append((name, env[variable], variable))
    return out


def build_kafka_config(env: Mapping[str, str], path: str | None = None) -> KafkaClientConfig:
    """The configuration from the file at `path` (or `SPLITTER_KAFKA_CONFIG`) and then the environment."""
    path = path or env.get(FILE_ENV) or None
    entries: list[tuple[str, str, str]] = []
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read the Kafka configuration file {path}: {exc.strerror}") from exc
        entries += read_properties(text, path)
    entries += properties_from_env(env)
    return _sort(entries, path)


def _sort(entries: Iterable[tuple[str, str, str]], path: str | None) -> KafkaClientConfig:
    common: dict[str, str] = {}
    per_client: dict[ClientKind, dict[str, str]] = {kind: {} for kind in CLIENT_KINDS}
    topic: dict[str, int] = {}
    for name, value, origin in entries:
        if not _PROPERTY.match(name):
            raise ConfigurationError(f"{origin}: {name!r} is not a Kafka property name")
        prefix, _, rest = name.partition(".")
        if prefix == "topic":
            topic[rest] = _topic_value(rest, value, origin)
        elif prefix in CLIENT_KINDS and rest:
            _check_owned(rest, origin)
            per_client[prefix][rest] = value
        else:
            _check_owned(name, origin)
            common[name] = value
    return KafkaClientConfig(
        common=common, per_client={k: v for k, v in per_client.items() if v}, path=path,
        topic=TopicSettings(
            replication_factor=topic.get("replication.factor"), min_insync_replicas=topic.get("min.insync.replicas"),
            retention_ms=topic.get("retention.ms", DEFAULT_RETENTION_MS),
            max_message_bytes=topic.get("max.message.bytes", DEFAULT_MAX_MESSAGE_BYTES)))


def _check_owned(name: str, origin: str) -> None:
    if name in OWNED:
        raise ConfigurationError(f"{origin}: {name} is set by splitter and cannot be changed ({OWNED[name]})")


def _topic_value(name: str, value: str, origin: str) -> int:
    if name not in TOPIC_SETTINGS:
        raise ConfigurationError(f"{origin}: topic.{name} is not a change-log topic setting (known: "
                                 f"{', '.join('topic.' + n for n in TOPIC_SETTINGS)})")
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{origin}: topic.{name}={value!r} is not an integer") from None
    if number < TOPIC_SETTINGS[name]:
        raise ConfigurationError(f"{origin}: topic.{name}={number} must be at least {TOPIC_SETTINGS[name]}")
    return number


__all__ = ["CLIENT_KINDS", "OWNED", "ClientKind", "KafkaClientConfig", "TopicDurability", "TopicSettings",
           "build_kafka_config", "is_secret", "mask_secret_values"]
