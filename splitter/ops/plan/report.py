"""`splitter plan`'s result and how it is shown: the routing table, the findings, text for people or JSON.

Owns: `build_plan` (gather the facts, judge them, describe the routes and the ownership), `PlanResult`,
`describe_routes` (per route its key and each column's expression, source result type and target
type), `render_text` (routes, ownership and cutover order, findings), `render_json` and `run_plan`,
whose exit status is 1 when any ERROR was found.
Must not: read a database other than through `gather`, print a DSN unmasked (gathering masks
them), or change what `run` will do: the plan describes it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from splitter.ops.plan.facts import ERROR, SEVERITY_RANK, WARNING, Finding, SourceFacts, TargetFacts, Unreachable
from splitter.ops.plan.gather import gather, gather_data
from splitter.ops.plan.log import gather_log, log_findings
from splitter.ops.plan.ownership import describe_ownership, render_ownership
from splitter.ops.plan.rules import collect_findings, target_name
from splitter.pipeline.config import Settings
from splitter.topology.loading import expression_origin
from splitter.topology.model import Topology


def describe_routes(topology: Topology, source: SourceFacts | Unreachable,
                    targets: Mapping[str, TargetFacts | Unreachable]) -> list[dict[str, Any]]:
    """The routing table: per route its key and each column's expression, source result type and target type."""
    routes = []
    for route in topology.routes():
        target = targets.get(route.service.name)
        tgt_table = target.tables.get((route.target_schema, route.target_table)) \
            if isinstance(target, TargetFacts) else None
        columns = []
        for name, expr in route.table.columns.items():
            ident = (route.service.name, route.target_schema, route.target_table, name)
            check = source.results.get(ident) if isinstance(source, SourceFacts) else None
            tcol = tgt_table.columns.get(name) if tgt_table else None
            columns.append({
                "column": name, "expression": expr,
                "source_type": check.result.display if check and check.result else None,
                "target_type": tcol.type.display if tcol else None,
            })
        if tgt_table is not None:
            for name, tcol in tgt_table.columns.items():
                if name not in route.table.columns:
                    columns.append({"column": name, "expression": None, "source_type": None,
                                    "target_type": tcol.type.display,
                                    "filled_by": "default" if tcol.has_default else "null"})
        status = "unreachable" if isinstance(target, Unreachable) else "ok" if tgt_table else "missing"
        routes.append({
            "source": f"{route.source_schema}.{route.source_table}",
            "target_status": status,
            "service": route.service.name,
            "database": route.service.database,
            "target": target_name(route),
            "key": list(route.table.key),
            "origin": str(route.table.origin),
            "columns": columns,
        })
    return routes


@dataclass(frozen=True)
class PlanResult:
    routes: list[dict[str, Any]]
    findings: list[Finding]
    # splitter.ops.plan.ownership.describe_ownership: per source table who owns what; the cutover order.
    ownership: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == WARNING)


def at_expression_lines(topology: Topology, findings: list[Finding]) -> list[Finding]:
    """`findings` with each one about a route's column moved from the `Table(` line to the line of that
    column's expression (`topology.loading.expression_origin`; the rules read no file, so it is done here)."""
    tables = {(r.service.name, target_name(r)): r.table for r in topology.routes()}
    out = []
    for f in findings:
        table = tables.get((f.service or "", f.table or ""))
        if table is not None and f.column is not None and f.column in table.columns \
                and f.origin == str(table.origin):
            f = replace(f, origin=str(expression_origin(table, f.column)))
        out.append(f)
    return out


def build_plan(settings: Settings) -> PlanResult:
    """Connect to the source and every service database, gather their facts, check the source's rows against
    the targets' constraints, and judge them."""
    topology = settings.topology
    source, targets = gather(settings)
    findings = collect_findings(topology, source, targets, slot=settings.slot, publication=settings.publication,
                                data=gather_data(settings, source, targets))
    findings = at_expression_lines(topology, findings)
    findings = sorted([*findings, *log_findings(gather_log(settings))], key=lambda f: SEVERITY_RANK[f.severity])
    return PlanResult(describe_routes(topology, source, targets), findings, describe_ownership(topology))


def render_text(plan: PlanResult, out: TextIO) -> None:
    """The routing table and the findings, for people."""
    print("ROUTES", file=out)
    for route in plan.routes:
        print(f"\n{route['source']} → {route['service']}: {route['database']}.{route['target']}  "
              f"key ({', '.join(route['key'])})  [{route['origin']}]", file=out)
        rows = []
        for col in route["columns"]:
            expr = col["expression"] if col["expression"] is not None else f"({col.get('filled_by')})"
            unknown = "<unknown>" if route["target_status"] == "unreachable" else "<missing>"
            rows.append((col["column"], expr, col["source_type"] or "", col["target_type"] or unknown))
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
        for name, expr, src_type, tgt_type in rows:
            print(f"    {name:<{widths[0]}}  ← {expr:<{widths[1]}}  {src_type:<{widths[2]}} → {tgt_type}", file=out)
    if plan.ownership:
        render_ownership(plan.ownership, out)
    print("\nFINDINGS", file=out)
    if not plan.findings:
        print("    none", file=out)
    for f in plan.findings:
        origin = f"  ({f.origin})" if f.origin else ""
        where = f" [{f.where}]" if f.where else ""
        print(f"{f.severity:<8}{f.code}{where} {f.message}{origin}", file=out)
    infos = len(plan.findings) - plan.errors - plan.warnings
    verdict = "FAILED: fix the errors before running" if plan.errors else "OK"
    print(f"\n{plan.errors} error(s), {plan.warnings} warning(s), {infos} info: plan {verdict}", file=out)


def render_json(plan: PlanResult, out: TextIO) -> None:
    json.dump({"command": "plan", "routes": plan.routes, "ownership": plan.ownership.get("tables", []),
               "cutover_order": plan.ownership.get("order", []), "findings": [f.as_dict() for f in plan.findings],
               "errors": plan.errors, "warnings": plan.warnings}, out, indent=2, ensure_ascii=False)
    out.write("\n")


def run_plan(settings: Settings, json_output: bool = False, out: TextIO | None = None) -> int:
    """`splitter plan`: print the plan; 1 if it found any ERROR, else 0."""
    plan = build_plan(settings)
    stream = out if out is not None else sys.stdout
    (render_json if json_output else render_text)(plan, stream)
    return 1 if plan.errors else 0


__all__ = ["PlanResult", "build_plan", "describe_routes", "render_json", "render_text", "run_plan"]
