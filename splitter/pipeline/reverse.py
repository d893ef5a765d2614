"""The reverse stream: after a cutover, changes a service makes in its own database flow back to the source.

Owns: the names of the reverse slot, publication, topic and checkpoint row, the reverse topology of a
service under those names (the inversion itself is `splitter.topology.inversion`'s), the Settings that
point a Capture at the service database and a Worker at the source, the reversibility preflight (the
topology's verdicts on the source catalog's facts, for what the service owns), and the `splitter reverse`
daemon that runs a reverse Capture and Worker for every service whose cutover state needs one (a
service's stream that stops on an error is recorded in the source's splitter.components, for `splitter
status`, and started again after RESTART_AFTER seconds; the other services' streams go on).
Must not: decide or persist cutover states (`splitter.ops.cutover` does, through
`connectors.pg.state.cutover`, which this module only reads), run SQL of its own, write SQL for applying
rows (the same sink as the forward stream does that), or start a copy: the cutover writes the reverse
checkpoint just before the reverse slot's consistent point before the reverse capture ever runs.

Why the same machinery: the reverse direction is the forward pipeline with the roles swapped.  The
reverse Capture streams with `origin 'none'`, so the forward worker's writes into the service database
(made under origin `splitter_<service>`) are never sent back; the reverse Worker applies with
session_replication_role = replica (the source's fence triggers do not fire for it) and under origin
`splitter_<service>.reverse`: the forward capture carries that origin on the records, the service's own
forward worker skips them and the other services' workers apply them (read copies of shared tables).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connectors.pg.client import Connection
from connectors.pg.cutover_sql import writeback_columns
from connectors.pg.state.cutover import completed_services, services_needing_reverse
from splitter.core.dsn import SOURCE_DATABASE
from splitter.core.errors import ConfigurationError
from splitter.pipeline.config import Settings
from splitter.topology.inversion import column_problems, invert_service
from splitter.topology.model import Topology
from splitter.topology.ownership import reverse_still_needed

log = logging.getLogger(__name__)

STATE_POLL_INTERVAL = 0.5
RESTART_AFTER = 30.0  # seconds before a reverse stream that stopped on an error is started again
_SLOT_CHARS = re.compile(r"[^a-z0-9_]")


@dataclass(frozen=True)
class ReverseNames:
    """Where one service's reverse stream lives."""

    service: str  # the reverse Worker's service name: its checkpoint row in the source, its origin suffix
    slot: str  # in the service database
    publication: str  # in the service database
    topic: str


def _derived(base: str, suffix: str) -> str:
    """`base_suffix` as a slot/publication name (at most 63 bytes; a hash keeps long bases unique)."""
    name = f"{base}_{suffix}"
    if len(name) <= 63:
        return name
    digest = f"{zlib.crc32(base.encode()):08x}"
    return f"{base[:63 - len(suffix) - len(digest) - 2]}_{digest}_{suffix}"


def reverse_names(settings: Settings, service: str) -> ReverseNames:
    settings.topology.service(service)  # raises naming the known services
    safe = _SLOT_CHARS.sub("_", service.lower())
    return ReverseNames(
        service=f"{service}.reverse",
        slot=_derived(settings.slot, f"rev_{safe}"),
        publication=_derived(settings.publication, f"rev_{safe}"),
        # Derived from the forward topic, so two pipelines sharing a broker never share a reverse topic.
        topic=f"{settings.topic}.reverse.{service}",
    )


def reverse_topology(settings: Settings, service: str) -> Topology:
    """A topology whose one service writes `service`'s source tables, reading the service database."""
    return invert_service(settings.topology, service, reverse_names(settings, service).service)


def reverse_settings(settings: Settings, service: str) -> Settings:
    """Settings for a Capture on the service database and a Worker applying into the source."""
    names = reverse_names(settings, service)
    return Settings(
        topology=reverse_topology(settings, service),
        source_dsn=settings.target_dsn(service),
        kafka_bootstrap=settings.kafka_bootstrap,
        target_dsns={names.service: settings.source_dsn},
        topic=names.topic,
        slot=names.slot,
        publication=names.publication,
        heartbeat_interval=settings.heartbeat_interval,
        batch_max_rows=settings.batch_max_rows,
        batch_max_wait=settings.batch_max_wait,
        catch_up_batch_wait=settings.catch_up_batch_wait,
        status_interval=settings.status_interval,
        kafka_config=settings.kafka_config,
        capture_origin="none",
    )


def reversibility_problems(settings: Settings, service: str, source: Connection) -> list[str]:
    """Why `service` cannot be cut over with a reverse stream (empty: it can).  `source`: the source DB.

    The reverse topology writes back only what `service` owns (`splitter.topology.inversion`), so the
    checks are on that: a key matching the source's, nothing generated written, and for the tables whose
    rows it owns every NOT NULL source column filled on insert."""
    try:
        reverse = reverse_topology(settings, service)
    except ConfigurationError as exc:
        return [str(exc)]
    tables = reverse.services[0].tables
    if not tables:
        return [f"service {service} owns no part of any source table (see the topology's `shared`): its cutover "
                f"would move no writes"]
    problems: list[str] = []
    for rtable in tables:
        schema, name = rtable.name.split(".", 1)
        problems += column_problems(rtable, writeback_columns(source, schema, name))
    return problems


# --- the daemon ----------------------------------------------------------------------------------------


class _Running:
    def __init__(self, service: str, stop: threading.Event, threads: list[threading.Thread],
                 codes: dict[str, int]) -> None:
        self.service = service
        self.stop = stop
        self.threads = threads
        self.codes = codes


class ReverseDaemon:
    """Runs a reverse Capture and Worker (as threads) for each service whose cutover state needs one."""

    def __init__(self, settings: Settings, services: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.services = list(services) if services else [s.name for s in settings.topology.services]
        for name in self.services:
            settings.topology.service(name)
        self._running: dict[str, _Running] = {}
        self._failed_at: dict[str, float] = {}  # service -> when its stream last stopped on an error

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                wanted = self._wanted()
                for service in self.services:
                    running = self._running.get(service)
                    if service in wanted and running is None:
                        if time.monotonic() - self._failed_at.get(service, -RESTART_AFTER) >= RESTART_AFTER:
                            self._start(service)
                    elif service not in wanted and running is not None:
                        log.info("service %s: its cutover no longer needs the reverse stream: stopping it", service)
                        self._stop(running)
                    elif running is not None:
                        failed = {n: c for n, c in running.codes.items() if c != 0}
                        if failed:
                            # One service's stream stopping (a row the source refuses) must not stop the
                            # others': it is recorded for `splitter status` and started again later.
                            self._stop(running)
                            self._failed_at[service] = time.monotonic()
                            log.error("reverse stream of service %s stopped %s; starting it again in %gs",
                                      service, failed, RESTART_AFTER)
                stop.wait(STATE_POLL_INTERVAL)
        finally:
            for running in list(self._running.values()):
                self._stop(running)

    def _wanted(self) -> set[str]:
        """The services whose reverse stream must run: by their state, and the complete ones that still own
        part of a table other services read copies of through the source (not retired yet)."""
        topology = self.settings.topology
        wanted = services_needing_reverse(self.settings.source_dsn, self.services)
        complete = completed_services(self.settings.source_dsn)
        return wanted | {s for s in complete & set(self.services) if reverse_still_needed(topology, s, complete)}

    def _start(self, service: str) -> None:
        from splitter.pipeline.capture import Capture
        from splitter.pipeline.daemon import ComponentRecord, run_with_retries
        from splitter.pipeline.worker import Worker

        rs = reverse_settings(self.settings, service)
        names = reverse_names(self.settings, service)
        ev = threading.Event()
        codes: dict[str, int] = {}

        record = ComponentRecord(self.settings.source_dsn, SOURCE_DATABASE, "reverse", service)

        def thread(name: str, component: Callable[[threading.Event], None]) -> threading.Thread:
            def main() -> None:
                codes[name] = run_with_retries(name, component, ev, record)
            return threading.Thread(target=main, name=name, daemon=True)

        threads = [
            thread(f"reverse-capture[{service}]", lambda e: Capture(rs).run(e)),
            thread(f"reverse-worker[{service}]", lambda e: Worker(rs, names.service).run(e)),
        ]
        log.info("service %s: starting the reverse stream (slot %s, topic %s)", service, names.slot, names.topic)
        for t in threads:
            t.start()
        self._running[service] = _Running(service, ev, threads, codes)

    def _stop(self, running: _Running) -> None:
        running.stop.set()
        for t in running.threads:
            t.join(30)
        self._running.pop(running.service, None)


__all__ = [
    "ReverseDaemon",
    "ReverseNames",
    "reverse_names",
    "reverse_settings",
    "reverse_topology",
    "reversibility_problems",
]
