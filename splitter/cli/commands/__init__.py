"""One module per `splitter` command; each has `register(subparsers, common)` and the function it runs.

`COMMANDS` is the order `splitter --help` lists them in.  A command module parses and prints; the work is
done by the floor below (ops/, pipeline/, or devtools/ for the demo, which is imported only when run).
"""

from __future__ import annotations

from splitter.cli.commands import (
    backfill,
    capture,
    cutover,
    demo,
    dlq,
    grants,
    plan,
    replay,
    reverse,
    run,
    status,
    verify,
    worker,
)

COMMANDS = (demo, plan, run, capture, worker, verify, replay, dlq, status, cutover, reverse, backfill, grants)

__all__ = ["COMMANDS"]
