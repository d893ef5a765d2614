"""What one cutover command (cutover, rollback, complete) says and did, as a value: `--json`'s object.

Owns: `Report`, which the command's `Group` and `Session`s write to: the messages for the operator (echoed
as they come in text mode, only kept with `--json`), the plan (its text and its fields), each step as it
starts (a `Progress` report of the task named after the command, the step as its stage) and how long each
took, and `to_dict`, the JSON object (README "JSON output").  Must not: decide anything, touch a database,
or print other than through the `echo` it is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from splitter.core import exit_codes
from splitter.core.progress import Progress, ProgressSink, ignore

#: Each command's steps in order, as their progress reports name them.
STEPS: dict[str, tuple[str, ...]] = {
    "cutover": ("preflight", "reverse slots", "fence", "catch up", "verify", "sequences", "switch", "hand over",
                "reverse stream"),
    "rollback": ("preflight", "fence", "catch up", "verify", "sequences", "switch", "switch back",
                 "reverse streams dropped"),
    "complete": ("plan", "reverse streams caught up", "complete", "tidy"),
}

_RESULTS = {exit_codes.OK: "done", exit_codes.REFUSED: "refused", exit_codes.ABORTED: "aborted",
            exit_codes.INCOMPLETE: "incomplete"}


class Report:
    """The record of one command, filled in by the flows as they go."""

    def __init__(self, echo: Callable[[str], None] | None = print, progress: ProgressSink = ignore) -> None:
        self.echo = echo
        self.progress = progress
        self.action = ""
        self.messages: list[str] = []
        self.plan: dict[str, Any] | None = None
        self.plan_text: str | None = None
        self.timings: list[dict[str, Any]] = []
        self.details: dict[str, Any] = {}  # what a command found besides the states (complete: what it retired)
        self._started = time.monotonic()
        self._step: tuple[str, float] | None = None

    def say(self, text: str) -> None:
        """A message for the operator (the `out` of the group and its sessions)."""
        self.messages.append(text)
        if self.echo is not None:
            self.echo(text)

    def show_plan(self, text: str) -> None:
        """--dry-run's plan: shown in text mode; in JSON it is `plan_text` (and `plan`), not a message."""
        self.plan_text = text
        if self.echo is not None:
            self.echo(text)

    def begin(self, action: str) -> None:
        """The command `action` starts (again, for the flow, once the command line has begun it: kept)."""
        if self.action != action:
            self.action = action
            self._started = time.monotonic()

    def step(self, name: str) -> None:
        """Step `name` starts (the previous one, if any, ends)."""
        self._end_step()
        steps = STEPS.get(self.action, ())
        done = steps.index(name) if name in steps else len(self.timings)
        self._step = (name, time.monotonic())
        self.progress(Progress(self.action, done, len(steps) or None, "steps", time.monotonic() - self._started,
                               stage=name, estimated=False))

    def finish(self) -> None:
        """The command ended (whichever way): the last step's time, and the last progress report."""
        ended = self._step
        self._end_step()
        steps = STEPS.get(self.action, ())
        last = ended[0] if ended else ""
        done = steps.index(last) + 1 if last in steps else len(self.timings)
        self.progress(Progress(self.action or "cutover", done, len(steps) or None, "steps",
                               time.monotonic() - self._started, stage=last, finished=True, estimated=False))

    def _end_step(self) -> None:
        if self._step is not None:
            name, started = self._step
            self.timings.append({"step": name, "seconds": round(time.monotonic() - started, 3)})
            self._step = None

    def to_dict(self, *, services: list[str], dry_run: bool, code: int, error: str | None,
                states: dict[str, dict[str, str]] | None) -> dict[str, Any]:
        """The JSON object of `splitter cutover|rollback|complete --json`."""
        result = _RESULTS.get(code, "failed")
        if result == "done" and dry_run:
            result = "planned"
        return {"command": self.action, "services": services, "dry_run": dry_run, "result": result,
                "exit_code": code, "error": error, "plan": self.plan, "plan_text": self.plan_text,
                "steps": self.timings, "states": states, "details": self.details, "messages": self.messages,
                "seconds": round(time.monotonic() - self._started, 3)}


__all__ = ["STEPS", "Report"]
