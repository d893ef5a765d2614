"""The options every command shares, and how they become `Settings` (for this process and its children).

Owns: the option groups commands share (`shared_options`), `settings_from(args)` (options and environment →
Settings, with the operator's Kafka client properties tried on each client kind), `settings_env` (the
environment that gives a child process the same settings: passwords go through the environment, never
argv, where `ps` would show them), and argument types shared by commands.
Must not: run anything.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from connectors.kafka.clients import check_client_configs
from splitter.core.dsn import mask_secrets
from splitter.core.errors import ConfigurationError
from splitter.core.kafka_config import CLIENT_KINDS
from splitter.observe.http import DEFAULT_METRICS_HOST
from splitter.pipeline.config import Settings, build_settings


@dataclass(frozen=True)
class SharedOptions:
    """The option groups commands share; a command takes the groups it uses, so `--help` lists no option
    the command would ignore.  `client` for commands that talk to the servers, `daemon` for the processes
    that also serve /metrics, `local` for the demo (it starts its own servers)."""

    connections: argparse.ArgumentParser
    metrics: argparse.ArgumentParser
    logging: argparse.ArgumentParser

    @property
    def client(self) -> list[argparse.ArgumentParser]:
        return [self.connections, self.logging]

    @property
    def daemon(self) -> list[argparse.ArgumentParser]:
        return [self.connections, self.metrics, self.logging]

    @property
    def local(self) -> list[argparse.ArgumentParser]:
        return [self.metrics, self.logging]


def add_command(sub: Any, name: str, *, parents: list[argparse.ArgumentParser], summary: str, description: str,
                examples: list[str]) -> argparse.ArgumentParser:
    """A command's parser: `summary` is its line in `splitter --help`, `description` heads its own `--help`,
    and `examples` (whole command lines) end it, so every command's help stands alone."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    parser: argparse.ArgumentParser = sub.add_parser(name, parents=parents, help=summary, description=description,
                                                     epilog=epilog, formatter_class=_HelpFormatter)
    return parser


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' lines as written; wraps the description to the terminal as usual."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def shared_options() -> SharedOptions:
    connections = argparse.ArgumentParser(add_help=False)
    g = connections.add_argument_group("connections (also from the environment)")
    g.add_argument("--topology", help="topology file (SPLITTER_TOPOLOGY, default ./topology.py)")
    g.add_argument("--source-dsn", help="source database DSN (SPLITTER_SOURCE_DSN)")
    g.add_argument("--kafka", help="Kafka bootstrap servers (SPLITTER_KAFKA)")
    g.add_argument("--kafka-config", metavar="FILE",
                   help="librdkafka client properties, name=value per line: security.protocol, sasl.*, ssl.*, "
                        "producer./consumer./admin. prefixes for one client kind, topic.* for the change log "
                        "(SPLITTER_KAFKA_CONFIG; SPLITTER_KAFKA_<PROPERTY> variables win over the file)")
    g.add_argument("--target-dsn", action="append", default=[], metavar="SERVICE=DSN",
                   help="a service database DSN (SPLITTER_TARGET_DSN_<SERVICE>; default: the source DSN with the "
                        "service's database name)")
    g.add_argument("--topic", help="change-log topic (SPLITTER_TOPIC, default <source database>.changes)")
    g.add_argument("--slot", help="replication slot name (SPLITTER_SLOT, default splitter)")
    g.add_argument("--publication", help="publication name (SPLITTER_PUBLICATION, default splitter)")
    metrics = argparse.ArgumentParser(add_help=False)
    g = metrics.add_argument_group("metrics")
    # argparse converts a string default with `type`, so a bad SPLITTER_METRICS_PORT is a usage error.
    g.add_argument("--metrics-port", type=int, default=os.environ.get("SPLITTER_METRICS_PORT") or None,
                   help="serve /metrics and /healthz on this port (SPLITTER_METRICS_PORT; `run` gives capture this "
                        "port and worker i port+i)")
    g.add_argument("--metrics-host", default=os.environ.get("SPLITTER_METRICS_HOST") or DEFAULT_METRICS_HOST,
                   help="the address /metrics and /healthz listen on (SPLITTER_METRICS_HOST, default "
                        f"{DEFAULT_METRICS_HOST}: this machine only; 0.0.0.0 for every interface, as a container "
                        "scraped over its network needs)")
    logging = argparse.ArgumentParser(add_help=False)
    g = logging.add_argument_group("logging")
    g.add_argument("--log-level", default=os.environ.get("SPLITTER_LOG_LEVEL", "INFO"),
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                   help="how much to log on stderr (SPLITTER_LOG_LEVEL, default INFO)")
    return SharedOptions(connections, metrics, logging)


def metrics_argv(port: int | None, host: str, offset: int) -> list[str]:
    """The options that give a child process its metrics endpoint: port + `offset` (if any port), on `host`.

    In argv, not the environment: children of one parent need different ports (a port is no secret)."""
    if port is None:
        return []
    return ["--metrics-port", str(port + offset), "--metrics-host", host]


def settings_from(args: argparse.Namespace, **tuning: Any) -> Settings:
    targets = {}
    for item in args.target_dsn:
        service, sep, dsn = item.partition("=")
        if not sep or not service or not dsn:
            raise ConfigurationError(f"--target-dsn expects SERVICE=DSN, got {mask_secrets(item)!r}")
        targets[service] = dsn
    settings = build_settings(topology_path=args.topology, source_dsn=args.source_dsn, kafka=args.kafka,
                              target_dsns=targets, topic=args.topic, slot=args.slot, publication=args.publication,
                              kafka_config=args.kafka_config, **tuning)
    # A property librdkafka refuses stops the command now, not when it first needs that client.
    check_client_configs(settings.kafka_bootstrap, {kind: settings.kafka_client(kind) for kind in CLIENT_KINDS})
    return settings


def settings_env(settings: Settings, topology_path: str | None) -> dict[str, str]:
    """The environment that gives a child process the same settings."""
    env = dict(os.environ)
    env["SPLITTER_SOURCE_DSN"] = settings.source_dsn
    env["SPLITTER_KAFKA"] = settings.kafka_bootstrap
    if settings.kafka_config.path:
        env["SPLITTER_KAFKA_CONFIG"] = os.path.abspath(settings.kafka_config.path)
    env["SPLITTER_TOPIC"] = settings.topic
    env["SPLITTER_SLOT"] = settings.slot
    env["SPLITTER_PUBLICATION"] = settings.publication
    if topology_path:
        env["SPLITTER_TOPOLOGY"] = os.path.abspath(topology_path)
    for service, dsn in settings.target_dsns.items():
        env[f"SPLITTER_TARGET_DSN_{service.upper()}"] = dsn
    return env


def parse_duration(text: str) -> float:
    """'1s', '500ms', '2m', '1.5' (seconds) → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 500ms, 1s, 2m)")
    value = float(m.group(1))
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "s"]


def ask_yes(question: str, stream: TextIO | None = None) -> bool:
    """`question` on `stream` (default stdout; stderr when stdout holds a JSON report), yes from the terminal."""
    out = stream if stream is not None else sys.stdout
    out.write(question)
    out.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def confirmer(assume_yes: bool, question: str = "Proceed? [y/N] ",
              stream: TextIO | None = None) -> Callable[[str], bool]:
    """Show a plan and ask before acting: yes with --yes, no when nobody can answer (not a terminal).
    `stream`: where the plan and the question go (default stdout)."""
    def ask(plan: str) -> bool:
        print(plan, file=stream if stream is not None else sys.stdout)
        if assume_yes:
            return True
        if not sys.stdin.isatty():
            return False
        return ask_yes(question, stream)
    return ask


__all__ = ["SharedOptions", "add_command", "ask_yes", "confirmer", "metrics_argv", "parse_duration", "settings_env",
           "settings_from", "shared_options"]
