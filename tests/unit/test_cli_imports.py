"""A daemon process imports only the command it runs: a worker's start-up was mostly imports (issue 15).

Seven workers start at once after an outage or a deploy, on the same cores that must then catch up; every
module a worker does not need is CPU taken from the catch-up.  Run in a process of its own, as an operator
starts one, so what the test process imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from splitter.cli.commands import COMMANDS, modules_for

ROOT = Path(__file__).resolve().parents[2]

# The floors other commands run: a worker or a capture has no use for them.
NOT_FOR_DAEMONS = ("splitter.ops.backfill", "splitter.ops.cutover", "splitter.ops.plan", "splitter.ops.verify",
                   "splitter.cli.commands.backfill", "splitter.cli.commands.cutover", "splitter.cli.commands.plan")


def _imported_by(argv: list[str]) -> set[str]:
    probe = ("import json, sys\nfrom splitter.cli.app import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("command", ["worker", "capture"])
def test_a_daemon_imports_no_other_commands_floor(command: str) -> None:
    imported = _imported_by([command, "--help"])
    assert f"splitter.cli.commands.{command}" in imported
    assert not imported & set(NOT_FOR_DAEMONS)


def test_help_and_an_unknown_command_still_see_every_command() -> None:
    assert modules_for([]) == COMMANDS
    assert modules_for(["--help"]) == COMMANDS
    assert modules_for(["wroker"]) == COMMANDS  # argparse's error lists the commands there are
    assert modules_for(["rollback", "--service", "post"]) == ("cutover",)
    assert set(NOT_FOR_DAEMONS[:4]) <= _imported_by(["--help"])
