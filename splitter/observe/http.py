"""The HTTP endpoint of a capture or worker process: `/metrics` (Prometheus text format) and `/healthz`.

Owns: the server thread, the two paths (anything else is 404) and their answers: the registry's text
exposition, and 200 or 503 with `Health.check()`'s reason (then any `notes`, one a line: capture's
names the other components that stopped for good; they do not change its own status code); the address
it listens on (loopback unless told otherwise; an IPv6 host such as `::` works too).
Must not: compute a metric (collectors do, when this asks the registry), log per request (one line per
scrape is noise; errors surface as failed scrapes in Prometheus), or put anything secret in an answer.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from splitter.core.errors import ConfigurationError
from splitter.observe.health import Health

#: Loopback: the endpoint shows the pipeline's state, so it reaches further only when asked to (--metrics-host).
DEFAULT_METRICS_HOST = "127.0.0.1"


def _cannot_serve(host: str, port: int, exc: OSError | OverflowError) -> ConfigurationError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConfigurationError(f"cannot serve metrics on {host}:{port} (--metrics-host/--metrics-port): {reason}")


def _address_family(host: str, port: int) -> socket.AddressFamily:
    """The family `host` binds in (an IPv6 host needs AF_INET6); ConfigurationError naming the options if none."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except (OSError, OverflowError) as exc:
        raise _cannot_serve(host, port, exc) from exc


class MetricsServer:
    """Serves `registry` and `health` on host:port in a daemon thread until `close()`."""

    def __init__(self, registry: CollectorRegistry, health: Health, host: str, port: int, name: str,
                 notes: Callable[[], list[str]] | None = None) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif path == "/healthz":
                    ok, reason, _age = health.check()
                    lines = [reason, *(notes() if notes is not None else [])]
                    body = "".join(f"{line}\n" for line in lines).encode()
                    self._reply(200 if ok else 503, "text/plain; charset=utf-8", body)
                else:
                    self._reply(404, "text/plain; charset=utf-8", b"see /metrics and /healthz\n")

            def _reply(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
                pass  # one line per scrape is noise; errors surface as failed scrapes in Prometheus

        class Server(ThreadingHTTPServer):
            address_family = _address_family(host, port)

        try:
            server = Server((host, port), Handler)
        except (OSError, OverflowError) as exc:
            raise _cannot_serve(host, port, exc) from exc
        server.daemon_threads = True
        self._server = server
        #: The port it listens on (the one picked when `port` was 0).
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=name,
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["DEFAULT_METRICS_HOST", "MetricsServer"]
