"""The switch hook as a cutover runs it: what a command hook's environment holds, what a URL hook sends.

Pure process and HTTP, so no database: a real `sh` dumps its environment, a real http.server in a
thread records what reached it.  The parent's environment is what an operator's shell would hold while
running `splitter cutover` (DSNs with passwords, PGPASSWORD, an API token); the hook must see none of it
but the variables it was given by name.  The CLI tests run `python -m splitter cutover` and check that a
wrong hook option is refused before anything connects (the DSNs point at a port nothing listens on).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from splitter.core.errors import ConfigurationError, FatalError
from splitter.ops.cutover.hook import SwitchHook

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-4c1d"
TOKEN = "tok-9f2e.b7/a+c~"
SOURCE_DSN = f"postgresql://splitter:{PASSWORD}@127.0.0.1:1/bento_social"


class Recorder:
    """A local HTTP endpoint: answers every POST with `status` (and `location`), keeps what it received."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                recorder.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # a followed 302 turns the POST into a GET

            def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/switch"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent's environment as an operator's shell holds it when running a cutover."""
    monkeypatch.setenv("SPLITTER_SOURCE_DSN", SOURCE_DSN)
    monkeypatch.setenv("SPLITTER_TARGET_DSN_AUTH", f"host=db dbname=auth_db user=splitter password={PASSWORD}")
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    monkeypatch.setenv("DATABASE_URL", f"postgres://app:{PASSWORD}@db/app")
    monkeypatch.setenv("SPLITTER_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("LC_TOKEN", PASSWORD)
    monkeypatch.setenv("HOOK_REGION", "eu-west")
    monkeypatch.setenv("LANG", "C.UTF-8")


def _dump_env(tmp_path: Path, **kwargs: Any) -> dict[str, str]:
    out = tmp_path / "hook-env"
    hook = SwitchHook(f"sh -c 'env -0 > {out}'", None, **kwargs)
    hook.call("auth", "service", "auth_db", deadline=0.0)
    entries = [e for e in out.read_bytes().decode().split("\0") if e]
    return dict(e.split("=", 1) for e in entries)


@pytest.mark.usefixtures("secrets_in_env")
def test_a_command_hook_sees_no_dsn_or_secret_only_the_safe_base_and_what_it_was_given(tmp_path: Path) -> None:
    env = _dump_env(tmp_path, pass_env=["HOOK_REGION"])
    assert PASSWORD not in "\n".join(f"{k}={v}" for k, v in env.items()), env
    assert TOKEN not in "\n".join(env.values()), env
    for name in ("SPLITTER_SOURCE_DSN", "SPLITTER_TARGET_DSN_AUTH", "PGPASSWORD", "DATABASE_URL",
                 "SPLITTER_KAFKA_SASL_PASSWORD", "HOOK_TOKEN", "LC_TOKEN"):
        assert name not in env, env
    assert env["SPLITTER_SERVICE"] == "auth" and env["SPLITTER_HOME"] == "service"
    assert env["SPLITTER_HOME_DATABASE"] == "auth_db"
    assert env["HOOK_REGION"] == "eu-west"  # passed by name
    assert env["LANG"] == "C.UTF-8" and env["PATH"] == os.environ["PATH"]  # the safe base


@pytest.mark.usefixtures("secrets_in_env")
def test_a_variable_passed_by_name_must_be_set() -> None:
    with pytest.raises(ConfigurationError, match=r"--switch-env.*NOT_SET_ANYWHERE"):
        SwitchHook("true", None, pass_env=["NOT_SET_ANYWHERE"])


@pytest.mark.usefixtures("secrets_in_env")
def test_a_url_hook_sends_the_bearer_token_read_from_the_named_variable(recorder: Recorder) -> None:
    SwitchHook(None, recorder.url, token_env="HOOK_TOKEN").call("auth", "service", "auth_db", deadline=0.0)
    [(headers, body)] = recorder.requests
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert json.loads(body) == {"service": "auth", "home": "service", "database": "auth_db"}


def test_without_a_token_variable_no_authorization_is_sent(recorder: Recorder) -> None:
    SwitchHook(None, recorder.url).call("auth", "source", "bento_social", deadline=0.0)
    [(headers, _body)] = recorder.requests
    assert "authorization" not in headers


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/switch", "data:,x", "localhost:8080/x",
                                 "http:///no-host"])
def test_only_http_and_https_urls_are_accepted(url: str) -> None:
    with pytest.raises(ConfigurationError, match="--switch-url"):
        SwitchHook(None, url)


def test_credentials_in_the_url_are_refused_without_showing_them() -> None:
    with pytest.raises(ConfigurationError, match="--switch-url") as err:
        SwitchHook(None, f"https://hook:{PASSWORD}@example.com/switch")
    assert PASSWORD not in str(err.value) and "example.com" in str(err.value)


@pytest.mark.usefixtures("secrets_in_env")
@pytest.mark.parametrize("problem", ["unset", "not a token"])
def test_a_token_variable_that_is_unset_or_not_a_token_is_refused_without_showing_it(
        monkeypatch: pytest.MonkeyPatch, problem: str) -> None:
    if problem == "unset":
        monkeypatch.delenv("HOOK_TOKEN")
    else:
        monkeypatch.setenv("HOOK_TOKEN", f"{TOKEN}\r\nX-Injected: 1")
    with pytest.raises(ConfigurationError, match=r"--switch-token-env.*HOOK_TOKEN") as err:
        SwitchHook(None, "http://127.0.0.1:1/switch", token_env="HOOK_TOKEN")
    assert TOKEN not in str(err.value)


@pytest.mark.usefixtures("secrets_in_env")
@pytest.mark.parametrize("answer", [500, 401, "refused"])
def test_a_failing_url_hook_never_shows_the_token(caplog: pytest.LogCaptureFixture, answer: int | str) -> None:
    failing = Recorder(answer if isinstance(answer, int) else 200)
    url = failing.url
    if answer == "refused":
        failing.close()  # nothing listens there any more
    caplog.set_level(logging.DEBUG)
    try:
        hook = SwitchHook(None, url, token_env="HOOK_TOKEN")
        with pytest.raises(FatalError) as err:
            hook.call("auth", "service", "auth_db", deadline=time.monotonic() + 1.2)
    finally:
        if answer != "refused":
            failing.close()
    shown = str(err.value) + "\n" + caplog.text
    assert "retrying" in caplog.text  # it was retried, and the warnings are checked too
    assert TOKEN not in shown and "Bearer" not in shown, shown
    if answer != "refused":
        assert str(answer) in str(err.value)
        assert failing.requests and all(h["authorization"] == f"Bearer {TOKEN}" for h, _ in failing.requests)


@pytest.mark.usefixtures("secrets_in_env")
def test_a_redirect_is_not_followed_so_the_token_never_goes_elsewhere(recorder: Recorder) -> None:
    redirecting = Recorder(302, location=recorder.url)
    try:
        hook = SwitchHook(None, redirecting.url, token_env="HOOK_TOKEN")
        with pytest.raises(FatalError, match="302"):
            hook.call("auth", "service", "auth_db", deadline=time.monotonic() + 0.5)
    finally:
        redirecting.close()
    assert redirecting.requests and not recorder.requests


# --- the command line: refused before anything connects --------------------------------------------------


def _cutover(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPLITTER_")}
    base.update({"SPLITTER_TOPOLOGY": str(ROOT / "topology.py"), "SPLITTER_SOURCE_DSN": SOURCE_DSN,
                 "SPLITTER_KAFKA": "127.0.0.1:1", **env})
    return subprocess.run([sys.executable, "-m", "splitter", "cutover", "--service", "auth", "--yes", *args],
                          env=base, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("args, env, named", [
    (["--switch-url", "file:///etc/passwd"], {}, "--switch-url"),
    (["--switch-url", "http://127.0.0.1:1/x", "--switch-token-env", "HOOK_TOKEN_UNSET"], {}, "--switch-token-env"),
    (["--switch-token-env", "HOOK_TOKEN"], {"HOOK_TOKEN": TOKEN}, "--switch-token-env"),
    (["--switch-command", "true"], {"SPLITTER_SWITCH_ENV": "HOOK_REGION,NOT_SET_ANYWHERE", "HOOK_REGION": "eu"},
     "--switch-env"),
])
def test_the_cli_refuses_a_wrong_hook_option_before_connecting(args: list[str], env: dict[str, str],
                                                               named: str) -> None:
    done = _cutover(*args, **env)
    assert done.returncode == 2, done.stderr
    assert "configuration error" in done.stderr and named in done.stderr, done.stderr
    assert PASSWORD not in done.stderr and TOKEN not in done.stderr
