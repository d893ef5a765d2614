"""Child-process plumbing shared by the embedded servers: ports, privilege drop, killing, cleanup at exit.

Owns: ``free_port``, the ``Server`` base class (a Popen child in its own session, logged to a file, stopped by
``atexit`` through ``REGISTRY``), the ``setpriv`` launcher, and finding and killing a server's descendants.
Must not: know anything about PostgreSQL or Kafka (``postgres.py`` and ``kafka.py`` do), or be imported by
production code (nothing under ``splitter/`` or ``connectors/`` imports ``devtools``).

Process handling, and why:

- Each server is started in its own session (``start_new_session``) so a Ctrl-C in the demo terminal
  reaches only Python, which then stops the servers cleanly (context manager / ``atexit``).
- The servers are started through util-linux ``setpriv --pdeathsig`` (when installed) so that they die
  if the Python process dies without cleaning up (SIGKILL, pytest-timeout in thread mode, OOM). The
  parent-death signal fires when the *thread* that started the server exits, so start servers from the
  main thread or a thread that outlives them, or pass ``die_with_parent=False``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

__all__ = [
    "REGISTRY",
    "EmbeddedServerError",
    "Server",
    "descendants",
    "free_port",
    "free_port_block",
    "is_gone",
    "launcher",
    "popen_user_kwargs",
    "port_in_use_error",
]


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


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive TCP ports that were all free a moment ago (`splitter run` gives its
    i-th child base+i).

    Taken below the kernel's ephemeral range: `free_port` hands out an ephemeral port, and the ones just above
    it are the likeliest to be the next outgoing connections' (a worker's metrics port was seen taken so).
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _attempt in range(200):
        base = random.randrange(10000, low - count)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind((host, port))
            return base
        except OSError:
            continue
    raise EmbeddedServerError(f"no {count} consecutive free ports found on {host}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def port_in_use_error(log_text: str) -> bool:
    return bool(re.search(r"could not bind|Address already in use|AddrInUse", log_text, re.IGNORECASE))


def launcher(user: str | None, pdeathsig: str | None) -> list[str]:
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


def popen_user_kwargs(user: str | None) -> dict[str, Any]:
    """Privilege drop by subprocess itself, only where ``setpriv`` is missing (then no parent-death signal)."""
    if user is None or shutil.which("setpriv") is not None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def is_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie counts as gone: it holds no resources)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Field 3 is the state; the command name in field 2 may contain spaces, so split after ')'.
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def descendants(pid: int) -> list[int]:
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
        if all(is_gone(p) for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


class _Registry:
    """Servers still running, stopped by ``atexit`` so none outlives the test process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: list[Server] = []

    def add(self, server: Server) -> None:
        with self._lock:
            if server not in self._servers:
                self._servers.append(server)

    def discard(self, server: Server) -> None:
        with self._lock:
            if server in self._servers:
                self._servers.remove(server)

    def stop_all(self) -> None:
        with self._lock:
            servers = list(reversed(self._servers))
        for server in servers:
            with contextlib.suppress(Exception):
                server.cleanup()


REGISTRY = _Registry()
atexit.register(REGISTRY.stop_all)


class Server:
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
                **popen_user_kwargs(run_as),
            )
        REGISTRY.add(self)

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
        victims = descendants(proc.pid) if proc.poll() is None else []
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
