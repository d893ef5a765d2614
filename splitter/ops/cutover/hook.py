"""The switch hook: tells the world where a service's writes go now (a command, an HTTP endpoint, or nothing).

Owns: calling the hook with the service, its new home and database, and retrying it until a deadline.
Must not: decide when to switch (the cutover and rollback flows do) or touch any database.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import time
import urllib.error
import urllib.request

from splitter.core.dsn import mask_dsn
from splitter.core.errors import FatalError

log = logging.getLogger(__name__)


class SwitchHook:
    """Tells the world where a service's writes go now: a command, an HTTP endpoint, or nothing.

    Both must be idempotent: after a crash in `switching` the call is repeated.
    """

    def __init__(self, command: str | None, url: str | None) -> None:
        self.command = command
        self.url = url

    def call(self, service: str, home: str, database: str, deadline: float) -> None:
        if not self.command and not self.url:
            return
        last = ""
        while True:
            remaining = max(1.0, deadline - time.monotonic())
            try:
                if self.command:
                    env = {**os.environ, "SPLITTER_SERVICE": service, "SPLITTER_HOME": home,
                           "SPLITTER_HOME_DATABASE": database}
                    done = subprocess.run(shlex.split(self.command), env=env, capture_output=True,
                                          timeout=remaining, check=False)
                    if done.returncode != 0:
                        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                        raise OSError(f"--switch-command exited with {done.returncode}: {tail[0]}")
                if self.url:
                    body = json.dumps({"service": service, "home": home, "database": database}).encode()
                    request = urllib.request.Request(self.url, data=body, method="POST",
                                                     headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(request, timeout=remaining) as response:
                        if not 200 <= response.status < 300:
                            raise OSError(f"--switch-url answered {response.status}")
                return
            except (OSError, subprocess.TimeoutExpired, urllib.error.URLError) as exc:
                last = mask_dsn(str(exc))
            if time.monotonic() >= deadline:
                raise FatalError(f"the switch hook for service {service} (home {home}) keeps failing: {last}")
            log.warning("switch hook failed (%s); retrying", last)
            time.sleep(0.5)


__all__ = ["SwitchHook"]
