"""Runtime settings: where the source, the broker and each service database are, and how to batch.

Owns: building one immutable `Settings` from command-line options and environment variables
(`SPLITTER_SOURCE_DSN`, `SPLITTER_KAFKA`, `SPLITTER_TOPOLOGY`, `SPLITTER_TARGET_DSN_<SERVICE>`,
`SPLITTER_TOPIC`, `SPLITTER_SLOT`, `SPLITTER_PUBLICATION`, and the Kafka client configuration that
`splitter.core.kafka_config` reads), with checks that name the setting that is wrong.  Settings are read
when a command starts, never at import time.  Must not: connect
anywhere or print DSNs unmasked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitter.core.dsn import dsn_database, mask_dsn, with_database
from splitter.core.errors import ConfigurationError
from splitter.core.kafka_config import ClientKind, KafkaClientConfig, build_kafka_config
from splitter.topology.loading import load_topology
from splitter.topology.model import Topology

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Settings:
    topology: Topology
    source_dsn: str
    kafka_bootstrap: str
    target_dsns: Mapping[str, str]
    topic: str
    slot: str = "splitter"
    publication: str = "splitter"
    heartbeat_interval: float = 1.0
    # A worker at the head of the log commits within batch_max_wait; one that is behind fills its batch up
    # to batch_max_rows or catch_up_batch_wait (splitter.pipeline.worker.pacing).
    batch_max_rows: int = 20_000
    batch_max_wait: float = 0.05
    catch_up_batch_wait: float = 1.0
    # A source transaction with more changes than this is applied in parts inside one target transaction
    # (committed with its commit record), so a worker's memory does not grow with transaction size.
    max_txn_changes: int = 10_000
    status_interval: float = 1.0
    metrics_port: int | None = None
    kafka_config: KafkaClientConfig = field(default_factory=KafkaClientConfig)
    topology_path: str | None = None  # where `topology` came from, for reloads (a table added while running)
    # Which transactions capture streams: "any" (the source: a reverse stream's writes go on to the other
    # services, marked with their origin) or "none" (a service database: the forward worker's writes stay).
    capture_origin: str = "any"

    def __post_init__(self) -> None:
        if self.capture_origin not in ("any", "none"):
            raise ConfigurationError(f"capture_origin must be 'any' or 'none', not {self.capture_origin!r}")

    def target_dsn(self, service: str) -> str:
        self.topology.service(service)  # raises naming the known services
        return self.target_dsns[service]

    def kafka_client(self, kind: ClientKind) -> dict[str, str]:
        """The operator's properties for a `kind` Kafka client (security, tuning), on top of splitter's own."""
        return self.kafka_config.for_client(kind)

    def group_id(self, service: str) -> str:
        return f"splitter.{self.topology.source_database}.{service}"


def _require(value: str | None, option: str, env: str) -> str:
    if not value:
        raise ConfigurationError(f"{option} is not set (pass {option} or set {env})")
    return value


def _check_dsn(dsn: str, what: str) -> None:
    try:
        dsn_database(dsn)
    except Exception as exc:
        raise ConfigurationError(f"{what} is not a valid PostgreSQL connection string: {mask_dsn(dsn)}") from exc


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ConfigurationError(f"{what} {value!r} must be lower-case letters, digits and underscores")
    return value


# Tuning read from the environment: (Settings field, variable, type, smallest value allowed).
_TUNING_ENV: tuple[tuple[str, str, type, float], ...] = (
    ("batch_max_rows", "SPLITTER_BATCH_MAX_ROWS", int, 1),
    ("batch_max_wait", "SPLITTER_BATCH_MAX_WAIT", float, 0.001),
    ("catch_up_batch_wait", "SPLITTER_CATCH_UP_BATCH_WAIT", float, 0.001),
    ("max_txn_changes", "SPLITTER_MAX_TXN_CHANGES", int, 1),
    ("heartbeat_interval", "SPLITTER_HEARTBEAT_INTERVAL", float, 0.05),
)


def _tuning_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    tuning: dict[str, Any] = {}
    for name, variable, kind, minimum in _TUNING_ENV:
        raw = env.get(variable)
        if raw is None or raw == "":
            continue
        try:
            value = kind(raw)
        except ValueError:
            wanted = "an integer" if kind is int else "a number"
            raise ConfigurationError(f"{variable}={raw!r} is not {wanted}") from None
        if value < minimum:
            raise ConfigurationError(f"{variable}={raw!r} must be at least {kind(minimum)}")
        tuning[name] = value
    return tuning


def build_settings(
    *,
    topology_path: str | None = None,
    source_dsn: str | None = None,
    kafka: str | None = None,
    target_dsns: Mapping[str, str] | None = None,
    topic: str | None = None,
    slot: str | None = None,
    publication: str | None = None,
    kafka_config: str | None = None,
    env: Mapping[str, str] | None = None,
    **tuning: Any,
) -> Settings:
    env = os.environ if env is None else env
    path = Path(topology_path or env.get("SPLITTER_TOPOLOGY") or "topology.py")
    topology = load_topology(path)
    source = _require(source_dsn or env.get("SPLITTER_SOURCE_DSN"), "--source-dsn", "SPLITTER_SOURCE_DSN")
    _check_dsn(source, "--source-dsn")
    if not dsn_database(source):
        source = with_database(source, topology.source_database)
    bootstrap = _require(kafka or env.get("SPLITTER_KAFKA"), "--kafka", "SPLITTER_KAFKA")
    targets: dict[str, str] = {}
    given = dict(target_dsns or {})
    for service in topology.services:
        dsn = given.pop(service.name, None) or env.get(f"SPLITTER_TARGET_DSN_{service.name.upper()}")
        if dsn is None:
            dsn = with_database(source, service.database)
        _check_dsn(dsn, f"the DSN of service {service.name}")
        targets[service.name] = dsn
    if given:
        raise ConfigurationError(f"--target-dsn names unknown service(s): {', '.join(sorted(given))}")
    return Settings(
        topology=topology,
        topology_path=str(path.resolve()),
        source_dsn=source,
        kafka_bootstrap=bootstrap,
        kafka_config=build_kafka_config(env, kafka_config),
        target_dsns=targets,
        topic=topic or env.get("SPLITTER_TOPIC") or f"{topology.source_database}.changes",
        slot=_check_name(slot or env.get("SPLITTER_SLOT") or "splitter", "--slot"),
        publication=_check_name(publication or env.get("SPLITTER_PUBLICATION") or "splitter", "--publication"),
        **{**_tuning_from_env(env), **tuning},
    )
