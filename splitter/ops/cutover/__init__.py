"""Cutover, rollback and complete: move the writes of what services own to their databases, back, or for good.

The package, read in this order: `flow` (the `Cutover` command object the CLI opens), `group` (the
services one command moves together, and the steps done for all of them at once), `forward` (the
cutover's steps, with the sequence of a cutover in its docstring), `rollback`, `complete` (and the
retirement of tables whose every owner is complete), `session` (one service's two database sessions, its
locks and the steps the flows share), `sequences` (moving
sequences at a switch), `hook` (the switch hook), `report` (what the command said and did: its plan, its
steps as progress, `--json`'s object), `view` (the section of `splitter status`).  The
persisted state machine (state names, which of them mean what, the `splitter.cutover` and
`splitter.routing` tables) is `connectors.pg.state.cutover`, below this floor, because the reverse
daemon and metrics read it too.  Must not: apply rows (workers do, forward and reverse) or run SQL
outside `connectors/`.
"""

from splitter.ops.cutover.flow import Cutover
from splitter.ops.cutover.sequences import advance_sequences
from splitter.ops.cutover.session import DEFAULT_MAX_LAG, DEFAULT_TIMEOUT, CutoverAborted, CutoverRefused, Options

__all__ = [
    "DEFAULT_MAX_LAG",
    "DEFAULT_TIMEOUT",
    "Cutover",
    "CutoverAborted",
    "CutoverRefused",
    "Options",
    "advance_sequences",
]
