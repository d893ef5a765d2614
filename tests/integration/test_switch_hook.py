"""The switch hook as `splitter cutover` and `rollback` call it, through the command line, at a real switch.

`splitter run` streams a one-service stack (topic, from test_replay's `make_stack`); the operator's shell
holds the source DSN with a password, PGPASSWORD, the hook's bearer token and a variable the hook needs.
`splitter cutover --service topic` and then `rollback` run with both hooks: a command that dumps its
environment (it must see neither DSN nor password nor token, and must see what --switch-env named) and
a URL on a local http.server that records the requests (each carries the bearer token).  The pure
process/HTTP cases (refusals, failing hooks, redirects) are tests/unit/test_switch_hook.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from splitter.core.exit_codes import OK as EXIT_OK
from tests.conftest import KafkaServer
from tests.integration.test_bad_input import Child
from tests.integration.test_replay import make_stack
from tests.integration.test_supervisor import _caught_up, _env, _topology_file, _wait
from tests.unit.test_switch_hook import Recorder

PASSWORD = "pw-hook-5e1"
TOKEN = "tok-hook.8d/e+f"
SERVICES = ["topic"]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def _dumped(path: Path) -> dict[str, str]:
    entries = [e for e in path.read_bytes().decode().split("\0") if e]
    return dict(e.split("=", 1) for e in entries)


def test_cutover_and_rollback_call_both_hooks_with_no_secret_in_the_commands_environment(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path, recorder: Recorder) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, SERVICES, scale=5)
    env = _env(stack.settings, _topology_file(tmp_path, SERVICES))
    # The server trusts local connections, so the password is never checked, only carried.
    env["SPLITTER_SOURCE_DSN"] = make_conninfo(env["SPLITTER_SOURCE_DSN"], password=PASSWORD)
    env.update({"PGPASSWORD": PASSWORD, "HOOK_TOKEN": TOKEN, "HOOK_REGION": "eu-west"})
    run = Child(["run"], env)
    try:
        _wait("the initial copy", _caught_up(stack, SERVICES), 120, run)
        dumps = []
        for action in ("cutover", "rollback"):
            dump = tmp_path / f"env-{action}"
            command = Child([action, "--service", "topic", "--yes", "--max-lag", "10s", "--timeout", "60s",
                             "--switch-command", f"sh -c 'env -0 > {dump}'", "--switch-env", "HOOK_REGION",
                             "--switch-url", recorder.url, "--switch-token-env", "HOOK_TOKEN"], env)
            assert command.finish(180) == EXIT_OK, command.text() + "\n" + run.text()[-6000:]
            assert TOKEN not in command.text() and PASSWORD not in command.text()
            dumps.append(_dumped(dump))
    finally:
        run.terminate()

    topology = stack.settings.topology
    homes = [("service", topology.service("topic").database), ("source", topology.source_database)]
    for hook_env, (home, database) in zip(dumps, homes, strict=True):
        shown = "\n".join(f"{k}={v}" for k, v in hook_env.items())
        assert PASSWORD not in shown and TOKEN not in shown, shown
        assert not [k for k in hook_env if "DSN" in k or k.startswith("PG") or k == "HOOK_TOKEN"], shown
        assert (hook_env["SPLITTER_SERVICE"], hook_env["SPLITTER_HOME"]) == ("topic", home)
        assert hook_env["SPLITTER_HOME_DATABASE"] == database
        assert hook_env["HOOK_REGION"] == "eu-west" and hook_env["PATH"] == os.environ["PATH"]
    bodies = [json.loads(body) for _headers, body in recorder.requests]
    assert [(b["service"], b["home"]) for b in bodies] == [("topic", "service"), ("topic", "source")]
    assert all(headers["authorization"] == f"Bearer {TOKEN}" for headers, _body in recorder.requests)
