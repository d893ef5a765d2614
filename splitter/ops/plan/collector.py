"""Where the plan's rules put their findings.

Owns: `Collector`, which turns a rule's finding about a route into a `Finding` naming service, target table
and topology line.  Must not: judge anything (the rules do).
"""

from __future__ import annotations

from splitter.ops.plan.facts import Finding, target_name
from splitter.topology.model import Route


class Collector:
    """The findings of one plan, in the order the rules made them."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, severity: str, code: str, message: str, *, route: Route | None = None,
            service: str | None = None, table: str | None = None, column: str | None = None,
            origin: str | None = None) -> None:
        if route is not None:
            service = service or route.service.name
            table = table or target_name(route)
            origin = origin or str(route.table.origin)
        self.findings.append(Finding(severity, code, message, service, table, column, origin))
