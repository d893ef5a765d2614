"""Which other components stopped for good, as capture's endpoint reports them.

Owns: `StoppedWatcher`, a background thread of capture's metrics that reads `splitter.components`
(connectors.pg.state.components, the rows `splitter status` reads too) in the source (the reverse
daemon) and in every service database (its worker) every `interval` seconds, and what it hands on:
the components it watches (`watched`), the ones stopped (`stopped`), the ones whose database it cannot
read, with the class and SQLSTATE of the refusal (`unreachable`: a worker whose service database refuses
a wrong password or does not exist cannot run, and cannot record its stop there either), and one line per
stopped or unreachable one for capture's /healthz (`describe`).  Why capture: a component that stopped
for good has exited, so its own endpoint is gone (Prometheus sees the target down, not why); capture is
the one process `splitter run` cannot do without, and it knows every service database.  Capture itself
is not watched: its endpoint answering is its state.
Must not: write anything, block capture's own poller (it has its own thread and connections: a service
database that does not answer delays only this), or put a message in a label (the kind only; the
message is in `splitter status` and the component's log).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from connectors.pg.client import sqlstate_of
from connectors.pg.positions import ReadSession
from connectors.pg.state.components import StoppedComponent, read_stopped
from splitter.core.dsn import SOURCE_DATABASE, service_database
from splitter.core.errors import ConfigurationError, SplitterError
from splitter.pipeline.config import Settings

log = logging.getLogger(__name__)

_APPLICATION_NAME = "splitter-metrics"
#: (component, service): how a watched component is named in the metric's labels.
Key = tuple[str, str]


@dataclass(frozen=True)
class Unreachable:
    """Why the watcher cannot read a component's database: configuration | retryable, and the SQLSTATE."""

    kind: str
    sqlstate: str | None


class StoppedWatcher(threading.Thread):
    """Reads the stop records of the reverse daemon and every worker; `close()` stops it."""

    def __init__(self, settings: Settings, interval: float) -> None:
        super().__init__(name="metrics-stopped-components", daemon=True)
        self.interval = interval
        services = [s.name for s in settings.topology.services]
        #: Every component watched, in a fixed order (the reverse daemon, then each service's worker).
        self.watched: tuple[Key, ...] = (("reverse", ""), *(("worker", s) for s in services))
        self._sessions: dict[str, tuple[ReadSession, tuple[Key, ...]]] = {
            SOURCE_DATABASE: (ReadSession(settings.source_dsn, "the source database (metrics)",
                                                _APPLICATION_NAME), (("reverse", ""),))}
        for s in services:
            self._sessions[service_database(s)] = (
                ReadSession(settings.target_dsn(s), f"database of service {s} (metrics)", _APPLICATION_NAME),
                (("worker", s),))
        self._stopped: dict[Key, StoppedComponent] = {}
        self._unreachable: dict[Key, Unreachable] = {}
        self._lock = threading.Lock()
        self._failing: set[str] = set()
        self._stopping = threading.Event()

    def stopped(self) -> dict[Key, StoppedComponent]:
        with self._lock:
            return dict(self._stopped)

    def unreachable(self) -> dict[Key, Unreachable]:
        with self._lock:
            return dict(self._unreachable)

    def describe(self) -> list[str]:
        """One line per stopped or unreachable component, for /healthz (no message: `splitter status` shows it)."""
        lines = [f"{c.name} stopped ({c.exit_class}, exit {c.exit_code}) at {c.since.isoformat(timespec='seconds')}; "
                 "`splitter status` shows why" for _key, c in sorted(self.stopped().items())]
        for (component, service), why in sorted(self.unreachable().items()):
            name = f"{component}[{service}]" if service else component
            code = f", SQLSTATE {why.sqlstate}" if why.sqlstate else ""
            lines.append(f"{name}: its database refuses connections ({why.kind}{code})"
                         + ("; it cannot run with these settings" if why.kind == "configuration" else ""))
        return lines

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                for what, (session, keys) in self._sessions.items():
                    if self._stopping.is_set():
                        break
                    self._read(what, session, keys)
                self._stopping.wait(self.interval)
        finally:
            for session, _keys in self._sessions.values():
                session.close()

    def _read(self, what: str, session: ReadSession, keys: tuple[Key, ...]) -> None:
        try:
            rows = session.read(f"metrics: reading the stopped components in {what}", read_stopped)
        except SplitterError as exc:
            session.close()
            kind = "configuration" if isinstance(exc, ConfigurationError) else "retryable"
            with self._lock:
                for key in keys:
                    self._unreachable[key] = Unreachable(kind, sqlstate_of(exc))
            if what not in self._failing:  # once per outage; the last reading stays
                log.warning("%s; trying again every %.0fs", str(exc).splitlines()[0], self.interval)
                self._failing.add(what)
            return
        if what in self._failing:
            log.info("metrics: reading the stopped components in %s works again", what)
            self._failing.discard(what)
        found = {(c.component, c.service): c for c in rows}
        with self._lock:
            for key in keys:
                self._unreachable.pop(key, None)
                if key in found:
                    self._stopped[key] = found[key]
                else:
                    self._stopped.pop(key, None)

    def close(self, timeout: float) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)


__all__ = ["Key", "StoppedWatcher", "Unreachable"]
