"""One module per `splitter` command; each has `register(subparsers, common)` and the function it runs.

`COMMANDS` names the modules in the order `splitter --help` lists them; `load` imports them.  A command
module parses and prints; the work is done by the floor below (ops/, pipeline/, or devtools/ for the demo,
which is imported only when run).  `modules_for` lets a process import only the command it runs: a worker
does not import the backfill, plan or cutover floors (a worker's start-up was mostly imports).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

COMMANDS = ("demo", "plan", "run", "capture", "worker", "verify", "replay", "dlq", "status", "cutover", "reverse",
            "backfill", "grants")

# Commands registered by a module of another name.
_REGISTERED_BY = {"rollback": "cutover", "complete": "cutover"}


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def modules_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The command modules a command line needs: the one its first word names, or all of them (help, a
    mistyped command: the parser lists or suggests every command)."""
    first = argv[0] if argv else ""
    module = _REGISTERED_BY.get(first, first)
    return (module,) if module in COMMANDS else COMMANDS


__all__ = ["COMMANDS", "load", "modules_for"]
