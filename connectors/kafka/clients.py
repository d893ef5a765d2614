"""Building a Kafka client from splitter's settings and the operator's: one place that merges and refuses.

Owns: `client_config` (splitter's settings for a client, then the operator's properties on top, then the
callbacks) and `new_client` (constructing a librdkafka client and turning a property it refuses — unknown
name, bad value — into a ConfigurationError that names the property and never shows a secret value).
Must not: read files or the environment (splitter.core.kafka_config does), or produce, read or administer.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from splitter.core.errors import ConfigurationError
from splitter.core.kafka_config import mask_secret_values

Client = TypeVar("Client")

#: How often one librdkafka message (its numbers aside) is let through: a broker that is down makes every
#: client log "Connect to ... failed" twenty times a second, on stderr by default, over the command's answer.
REPEAT_INTERVAL = 60.0
_DIGITS = re.compile(r"\d+")


class _RepeatFilter(logging.Filter):
    """Lets a librdkafka message through once per `REPEAT_INTERVAL`, counting the ones it held back."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = _DIGITS.sub("#", record.getMessage())
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(key, (float("-inf"), 0))
            if now - last < REPEAT_INTERVAL:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {REPEAT_INTERVAL:.0f} s)"
        return True


#: librdkafka's own log lines, through Python logging (the level and format the command set) instead of stderr.
_LIBRDKAFKA_LOG = logging.getLogger("splitter.kafka.librdkafka")
_LIBRDKAFKA_LOG.addFilter(_RepeatFilter())


def client_config(bootstrap: str, own: Mapping[str, Any], operator: Mapping[str, Any] | None) -> dict[str, Any]:
    """`own` settings with `operator`'s on top, for the cluster at `bootstrap`."""
    return {"bootstrap.servers": bootstrap, **own, **(operator or {})}


def new_client(factory: Callable[[dict[str, Any]], Client], config: dict[str, Any], what: str,
               operator: Mapping[str, Any] | None = None) -> Client:
    """`factory(config)`, or a ConfigurationError naming what librdkafka refused in the configuration.

    `operator`: the properties the operator set (in `config` already), named in the error because
    librdkafka names a property by its canonical name (`linger.ms` is refused as `queue.buffering.max.ms`).
    """
    try:
        return factory({**config, "logger": _LIBRDKAFKA_LOG})
    except (KafkaException, ValueError, TypeError) as exc:
        given = f"; the operator set {', '.join(sorted(operator))}" if operator else ""
        raise ConfigurationError(
            f"the {what}'s Kafka configuration is refused: {mask_secret_values(str(exc), config)}{given} (check "
            f"--kafka-config / SPLITTER_KAFKA_* against librdkafka's CONFIGURATION.md)") from exc


def check_client_configs(bootstrap: str, operator: Mapping[str, Mapping[str, Any]]) -> None:
    """Build and drop one client of each kind the operator configured (`producer`, `consumer`, `admin`), so
    a property librdkafka refuses stops a command when it starts, not when it first needs that client."""
    factories: dict[str, Callable[[dict[str, Any]], Any]] = {
        "producer": Producer, "consumer": Consumer, "admin": AdminClient}
    for kind, properties in operator.items():
        if not properties:
            continue
        own = {"group.id": "splitter-config-check"} if kind == "consumer" else {}
        client = new_client(factories[kind], client_config(bootstrap, own, properties), f"{kind} client",
                            properties)
        if isinstance(client, Consumer):
            client.close()
        del client


__all__ = ["check_client_configs", "client_config", "new_client"]
