"""`splitter plan`: the routing table and every problem found before any data moves.

The package has its halves on purpose, one module each:
  * `gather` talks to the databases (through connectors.pg.inspect) and returns plain `facts`;
    it decides nothing;
  * `rules` (with `conversions`, and `data`, which also picks the constraints gathering checks against
    the source's rows) is pure: facts in, findings out, so every rule is unit-tested on
    facts written by hand, and the integration tests check that gathering reads real servers right;
  * `log` asks Kafka how the change-log topic is replicated and judges it;
  * `report` builds the plan from both and prints it for people or as JSON.
The plan only reads: no publication, slot, schema, row or topic is created (Kafka is only described), and
no DSN or Kafka secret is printed unmasked.  Its rules describe what `run` will do; they do not change it.

Must not: hold code itself; this module only names what callers import.
"""

from splitter.ops.plan.conversions import conversion_findings
from splitter.ops.plan.facts import (
    ERROR,
    INFO,
    WARNING,
    ExprCheck,
    Finding,
    SlotFacts,
    SourceFacts,
    TargetFacts,
    Unreachable,
)
from splitter.ops.plan.gather import gather_source, gather_target
from splitter.ops.plan.report import PlanResult, build_plan, describe_routes, run_plan
from splitter.ops.plan.rules import collect_findings

__all__ = [
    "ERROR",
    "INFO",
    "WARNING",
    "ExprCheck",
    "Finding",
    "PlanResult",
    "SlotFacts",
    "SourceFacts",
    "TargetFacts",
    "Unreachable",
    "build_plan",
    "collect_findings",
    "conversion_findings",
    "describe_routes",
    "gather_source",
    "gather_target",
    "run_plan",
]
