"""The switch hook: tells the world where a service's writes go now (a command, an HTTP endpoint, or nothing).

Owns: calling the hook with the service, its new home and database, and retrying it until a deadline;
what the hook may see: a command runs with an allowlisted environment (`hook_environment`: the safe base,
the variables named by --switch-env, and SPLITTER_SERVICE / SPLITTER_HOME / SPLITTER_HOME_DATABASE), a
URL must be http(s) without credentials in it and gets the token of --switch-token-env as a bearer
header; checking those options (ConfigurationError naming the option, before anything connects).
Must not: decide when to switch (the cutover and rollback flows do), touch any database, follow a
redirect (it would take the token elsewhere), or put the token or a DSN into a log line or an error.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from splitter.core.dsn import mask_dsn
from splitter.core.errors import ConfigurationError, FatalError

log = logging.getLogger(__name__)

#: What a switch command inherits without being asked: enough to find programs, speak the locale and
#: verify TLS; nothing that names a database or a broker.  Everything else must be passed by name.
SAFE_BASE = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
                       "SSL_CERT_FILE", "SSL_CERT_DIR"})
#: LC_* are locale settings, kept unless the name looks like a secret (the allowlist's only pattern).
SAFE_PREFIX = "LC_"
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|DSN|KEY|CREDENTIAL|AUTH", re.IGNORECASE)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# RFC 6750's b64token: also keeps CR/LF (header injection) and spaces out of the Authorization header.
_BEARER = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
URL_SCHEMES = ("http", "https")


def shown_url(url: str) -> str:
    """`url` fit for a message: any userinfo (user:password@) replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def check_url(url: str) -> str:
    """`url` if it can be a switch hook: http(s), a host, a valid port, no credentials in it."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as exc:
        raise ConfigurationError(f"--switch-url {shown_url(url)!r} is not a valid URL") from exc
    if parts.scheme.lower() not in URL_SCHEMES or not parts.hostname:
        raise ConfigurationError(f"--switch-url must be an http:// or https:// URL with a host, not "
                                 f"{shown_url(url)!r}")
    if "@" in parts.netloc:
        raise ConfigurationError(f"--switch-url {shown_url(url)!r} carries credentials, which end up in logs and "
                                 f"process listings: send a token with --switch-token-env instead")
    return url


def hook_environment(environ: Mapping[str, str], passed: Sequence[str]) -> dict[str, str]:
    """The environment a switch command starts with: the safe base and the `passed` names (which must be set)."""
    env = {name: value for name, value in environ.items()
           if name in SAFE_BASE or (name.startswith(SAFE_PREFIX) and not _SECRET_NAME.search(name))}
    for name in passed:
        if not _ENV_NAME.fullmatch(name):
            raise ConfigurationError(f"--switch-env expects variable names, got {name!r}")
        if name not in environ:
            raise ConfigurationError(f"--switch-env {name}: the variable is not set in splitter's environment")
        env[name] = environ[name]
    return env


def _bearer_token(environ: Mapping[str, str], name: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise ConfigurationError(f"--switch-token-env expects a variable name, got {name!r}")
    token = environ.get(name, "")
    if not token:
        raise ConfigurationError(f"--switch-token-env {name}: the variable is not set or empty")
    if not _BEARER.fullmatch(token):
        raise ConfigurationError(f"--switch-token-env {name}: the value is not a bearer token (letters, digits and "
                                 f"-._~+/ only, then any '=')")
    return token


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect becomes the error it is: following it would send the token (and the switch) elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class SwitchHook:
    """Tells the world where a service's writes go now: a command, an HTTP endpoint, or nothing.

    Both must be idempotent: after a crash in `switching` the call is repeated.  The options are checked
    here, so a wrong one is refused when the command starts, not at the switch.
    """

    def __init__(self, command: str | None, url: str | None, *, pass_env: Sequence[str] = (),
                 token_env: str | None = None, environ: Mapping[str, str] | None = None) -> None:
        source = os.environ if environ is None else environ
        self.command = command
        self.url = check_url(url) if url else None
        if token_env and not self.url:
            raise ConfigurationError("--switch-token-env needs --switch-url (the token goes in its request)")
        self._token = _bearer_token(source, token_env) if token_env else None
        self._env = hook_environment(source, pass_env) if command else {}
        self._opener = urllib.request.build_opener(_NoRedirects)

    def _scrub(self, text: str) -> str:
        text = mask_dsn(text)
        return text.replace(self._token, "***") if self._token else text

    def _run_command(self, service: str, home: str, database: str, timeout: float) -> None:
        assert self.command is not None
        env = {**self._env, "SPLITTER_SERVICE": service, "SPLITTER_HOME": home, "SPLITTER_HOME_DATABASE": database}
        done = subprocess.run(shlex.split(self.command), env=env, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise OSError(f"--switch-command exited with {done.returncode}: {tail[0]}")

    def _post(self, service: str, home: str, database: str, timeout: float) -> None:
        assert self.url is not None
        body = json.dumps({"service": service, "home": home, "database": database}).encode()
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        try:
            with self._opener.open(request, timeout=timeout) as response:
                if not 200 <= response.status < 300:
                    raise OSError(f"--switch-url answered {response.status}")
        except urllib.error.HTTPError as exc:
            exc.close()
            raise OSError(f"--switch-url answered {exc.code} {exc.reason}"
                          f"{' (redirects are not followed)' if 300 <= exc.code < 400 else ''}") from None

    def call(self, service: str, home: str, database: str, deadline: float) -> None:
        if not self.command and not self.url:
            return
        last = ""
        while True:
            remaining = max(1.0, deadline - time.monotonic())
            try:
                if self.command:
                    self._run_command(service, home, database, remaining)
                if self.url:
                    self._post(service, home, database, remaining)
                return
            except (OSError, ValueError, subprocess.TimeoutExpired, http.client.HTTPException) as exc:
                last = self._scrub(str(exc))
            if time.monotonic() >= deadline:
                raise FatalError(f"the switch hook for service {service} (home {home}) keeps failing: {last}")
            log.warning("switch hook failed (%s); retrying", last)
            time.sleep(0.5)


__all__ = ["SwitchHook", "check_url", "hook_environment", "shown_url"]
