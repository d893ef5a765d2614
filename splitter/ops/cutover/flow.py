"""The cutover command object: one of `cutover`, `rollback` or `complete` for one service.

Owns: `Cutover`, what the command line opens (a `Session` on both databases, holding the service's
advisory locks) and calls one flow on.  Must not: hold the steps (`forward` and `rollback` do) or
state anywhere but `connectors.pg.state.cutover`.
"""

from __future__ import annotations

from collections.abc import Callable

from splitter.ops.cutover import forward
from splitter.ops.cutover import rollback as back
from splitter.ops.cutover.session import Session


class Cutover(Session):
    """One command (cutover, rollback or complete) for one service, holding its advisory locks."""

    def __enter__(self) -> Cutover:
        return self

    def cutover(self, confirm: Callable[[str], bool]) -> int:
        """Move the service's writes to its own database (see `splitter.ops.cutover.forward`)."""
        return forward.cutover(self, confirm)

    def rollback(self, confirm: Callable[[str], bool]) -> int:
        """Move a cut-over service's writes back to the source database."""
        return back.rollback(self, confirm)

    def complete(self, confirm: Callable[[str], bool]) -> int:
        """Make the cutover final: retire the forward worker, drop the reverse stream and the fences."""
        return back.complete(self, confirm)


__all__ = ["Cutover"]
