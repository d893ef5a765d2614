"""The cutover command object: one of `cutover`, `rollback` or `complete` for one service or a group.

Owns: `Cutover`, what the command line opens (a `Group` of `Session`s on the source and each service
database, holding the services' advisory locks) and calls one flow on.  Must not: hold the steps
(`forward`, `rollback` and `complete` do) or state anywhere but `connectors.pg.state.cutover`.
"""

from __future__ import annotations

from collections.abc import Callable

from splitter.ops.cutover import complete as final
from splitter.ops.cutover import forward
from splitter.ops.cutover import rollback as back
from splitter.ops.cutover.group import Group


class Cutover(Group):
    """One command (cutover, rollback or complete) for the services named, holding their advisory locks."""

    def __enter__(self) -> Cutover:
        return self

    def cutover(self, confirm: Callable[[str], bool]) -> int:
        """Move the writes of what the services own to their own databases (see `splitter.ops.cutover.forward`)."""
        return self._run("cutover", forward.cutover, confirm)

    def rollback(self, confirm: Callable[[str], bool]) -> int:
        """Move a cut-over service's (or group's) writes back to the source database."""
        return self._run("rollback", back.rollback, confirm)

    def complete(self, confirm: Callable[[str], bool]) -> int:
        """Make the cutover final; retire the tables whose every owner is complete."""
        return self._run("complete", final.complete, confirm)

    def _run(self, action: str, flow: Callable[[Group, Callable[[str], bool]], int],
             confirm: Callable[[str], bool]) -> int:
        self.report.begin(action)
        try:
            return flow(self, confirm)
        finally:
            self.report.finish()


__all__ = ["Cutover"]
