"""Where /metrics and /healthz listen: loopback unless `--metrics-host` says otherwise, passed on by `run`.

Real `python -m splitter` processes (`Child` from test_bad_input) on a one-service stack (`make_stack`
from test_replay): a worker started with only `--metrics-port` must answer on 127.0.0.1 and refuse
connections on the machine's other address (found by connecting a UDP socket, which sends nothing);
`splitter run --metrics-host 0.0.0.0` must give capture and its worker endpoints on that address.  A
host that does not resolve, or is not this machine's, is a configuration error naming the option.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.embedded.process import free_port, free_port_block
from splitter.core.exit_codes import CONFIG as EXIT_CONFIG
from tests.conftest import KafkaServer
from tests.integration.test_bad_input import Child
from tests.integration.test_replay import Stack, make_stack
from tests.integration.test_supervisor import _env, _topology_file

SERVICES = ["topic"]


def _other_address() -> str:
    """A non-loopback IPv4 address of this machine, or skip."""
    candidates = [socket.gethostbyname(socket.gethostname())]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: picks the outgoing interface, sends nothing
            candidates.append(probe.getsockname()[0])
        except OSError:
            pass
    for address in candidates:
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    pytest.skip("this machine has no non-loopback IPv4 address to test against")


def _answers(host: str, port: int) -> bool:
    """Whether an HTTP server answers /healthz on host:port (any status: 503 while catching up is an answer)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=3):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _wait_answering(host: str, port: int, child: Child, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(host, port):
        if child.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"nothing answers on {host}:{port}:\n{child.text()[-6000:]}")
        time.sleep(0.2)


@pytest.fixture
def stack_env(make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
              unique_name: Callable[[str], str], tmp_path: Path) -> dict[str, str]:
    stack: Stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, SERVICES, scale=5)
    return _env(stack.settings, _topology_file(tmp_path, SERVICES))


def test_the_endpoint_listens_on_loopback_only_by_default(stack_env: dict[str, str]) -> None:
    other = _other_address()
    port = free_port("0.0.0.0")
    worker = Child(["worker", "--service", "topic", "--metrics-port", str(port)], stack_env)
    try:
        _wait_answering("127.0.0.1", port, worker)
        assert not _answers(other, port), f"the worker's endpoint answers on {other}"
    finally:
        worker.terminate()


def test_run_passes_metrics_host_on_to_capture_and_the_workers(stack_env: dict[str, str]) -> None:
    other = _other_address()
    port = free_port_block(2, "0.0.0.0")  # `run` gives capture base+0 and worker i base+i
    run = Child(["run", "--metrics-port", str(port), "--metrics-host", "0.0.0.0"], stack_env)
    try:
        _wait_answering(other, port, run)  # capture
        _wait_answering(other, port + 1, run)  # the worker of topic
        assert _answers("127.0.0.1", port)
    finally:
        run.terminate()


@pytest.mark.parametrize("host, reason", [("no-such-host.invalid", "not known"),
                                          ("203.0.113.9", "Cannot assign requested address")])
def test_a_host_that_cannot_be_served_is_a_configuration_error_naming_the_option(
        stack_env: dict[str, str], host: str, reason: str) -> None:
    port = free_port("0.0.0.0")
    worker = Child(["worker", "--service", "topic", "--metrics-port", str(port), "--metrics-host", host],
                   {**stack_env, "SPLITTER_METRICS_HOST": "0.0.0.0"})  # the option wins over the environment
    assert worker.finish(60) == EXIT_CONFIG, worker.text()
    message = "\n".join(worker.err)
    assert f"cannot serve metrics on {host}:{port} (--metrics-host/--metrics-port)" in message, message
    assert reason in message, message
