"""The plan's data rules on facts written by hand: which constraints are worth a query, and what a count means.

Only a constraint the schemas do not prove safe is checked against the source's rows (a plan on the shipped
schemas runs one data query); a violation is an ERROR when the service stops on a refused row and a WARNING
when its copy sets such rows aside.  tests/integration/test_plan.py runs the queries on a real server.
"""

from __future__ import annotations

import dataclasses

from connectors.pg.inspect import ColumnFacts, IndexFacts, TableFacts, TypeInfo
from connectors.pg.plan_data import ENUM, LENGTH, NOT_NULL, UNIQUE, DataViolations
from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.ops.plan import ERROR, WARNING, ExprCheck, Finding, SlotFacts, SourceFacts, TargetFacts
from splitter.ops.plan.data import data_checks, data_findings
from splitter.topology.model import Service, Table, Topology

TEXT = TypeInfo(25, -1, "text", "text", "S")


def varchar(n: int) -> TypeInfo:
    return TypeInfo(1043, n + 4, f"character varying({n})", "varchar", "S")


STATUS = TypeInfo(90001, -1, "users.status", "users.status", "E", ("active", "gone"))
SOURCE = TableFacts("public", "users", {
    "id": ColumnFacts("id", varchar(36), True, False),
    "name": ColumnFacts("name", varchar(100), True, False),
    "nick": ColumnFacts("nick", TEXT, False, False),
    "state": ColumnFacts("state", TEXT, False, False),
}, (IndexFacts("users_pkey", ("id",), True, True, False),))
TARGET = TableFacts("users", "users", {
    "id": ColumnFacts("id", varchar(36), True, False),
    "name": ColumnFacts("name", varchar(100), True, False),
    "nick": ColumnFacts("nick", varchar(20), True, False),
    "lowered": ColumnFacts("lowered", TEXT, True, False),
    "state": ColumnFacts("state", STATUS, True, True),
}, (IndexFacts("users_pkey", ("id",), True, True, False), IndexFacts("users_name", ("name",), False, True, False),
    IndexFacts("users_lowered", ("lowered",), False, True, False)))
COLUMNS = {"id": "id", "name": "name", "nick": "nick", "lowered": "lower(name)", "state": "coalesce(state, 'active')"}
RELATION = RelationSchema("public", "users", (
    ColumnSchema("id", "varchar", True), ColumnSchema("name", "varchar", False), ColumnSchema("nick", "text", False),
    ColumnSchema("state", "text", False)))
RESULTS = {"id": varchar(36), "name": varchar(100), "nick": TEXT, "lowered": TEXT, "state": TEXT}


def _facts(service: Service) -> tuple[Topology, SourceFacts, TargetFacts]:
    topology = Topology(source_database="src", services=(service,))
    idents = {name: (service.name, "users", "users", name) for name in COLUMNS}
    source = SourceFacts("logical", 10, 0, 10, 0, SlotFacts(), None, None,  # type: ignore[arg-type]
                         {("public", "users"): SOURCE}, {("public", "users"): RELATION},
                         {idents[n]: ExprCheck(result=t) for n, t in RESULTS.items()})
    target = TargetFacts(None, {("users", "users"): TARGET}, {})  # type: ignore[arg-type]
    return topology, source, target


def _service(on_error: str = "stop") -> Service:
    return Service("user", database="user_db", schema="users", on_error=on_error,
                   tables=(Table("users", source="users", key=("id",), columns=COLUMNS),))


def test_only_constraints_the_schemas_do_not_prove_safe_are_checked() -> None:
    topology, source, target = _facts(_service())
    checks = {(c.kind, c.columns, c.constraint) for c in data_checks(topology, source, {"user": target})}
    assert checks == {
        (UNIQUE, ("name",), "users_name"),  # the source has no unique index on name
        (UNIQUE, ("lowered",), "users_lowered"),  # an expression may map distinct names to one value
        (NOT_NULL, ("nick",), "NOT NULL"),
        (NOT_NULL, ("lowered",), "NOT NULL"),  # whether lower(name) yields NULL the analysis cannot tell
        (LENGTH, ("nick",), "character varying(20)"),
        (ENUM, ("state",), "users.status"),  # free text into an enum
    }  # not: users_pkey (the source's primary key), name's NOT NULL and length, state's NOT NULL (coalesce)


def test_a_violation_is_an_error_under_stop_and_a_warning_under_dead_letter() -> None:
    for on_error, severity in (("stop", ERROR), ("dead_letter", WARNING)):
        topology, source, target = _facts(_service(on_error))
        check = next(c for c in data_checks(topology, source, {"user": target}) if c.constraint == "users_name")
        found = DataViolations(check, ("id",), rows=3, groups=2, first=((("u1",), ("u4",)), (("u2",), ("u3",))),
                               values=(("ann",), ("bob",)))
        (finding,) = data_findings([found, dataclasses.replace(found, rows=0, groups=0, first=(), values=())])
        assert (finding.severity, finding.code, finding.service, finding.table) == (
            severity, "data-duplicates", "user", "users.users")
        assert "by 3 source row(s): 2 value(s)" in finding.message
        assert "(name)=(ann) in (id)=(u1) and (id)=(u4); (name)=(bob) in (id)=(u2) and (id)=(u3)" in finding.message
        assert f"on_error='{on_error}'" in finding.message


def _duplicates_finding(service: Service) -> Finding:
    topology, source, target = _facts(service)
    check = next(c for c in data_checks(topology, source, {"user": target}) if c.constraint == "users_name")
    (finding,) = data_findings([DataViolations(check, ("id",), rows=2, groups=1, first=((("u1",), ("u4",)),),
                                               values=(("ann",),))])
    return finding


def test_a_violation_is_judged_by_the_table_s_own_on_error_when_it_sets_one() -> None:
    """A table's on_error overrides its service's, both ways; the message says which one decides and where to
    change it (the table alone, when it sets its own)."""
    for service_policy, table_policy, severity in (("stop", "dead_letter", WARNING), ("dead_letter", "stop", ERROR)):
        service = _service(service_policy)
        finding = _duplicates_finding(dataclasses.replace(service, tables=(
            dataclasses.replace(service.tables[0], on_error=table_policy),)))
        assert (finding.severity, finding.code, finding.table) == (severity, "data-duplicates", "users.users")
        assert f"table users of service user has on_error='{table_policy}'" in finding.message, finding.message
        if severity == ERROR:
            assert "or set on_error='dead_letter' on table users to set them aside" in finding.message, finding.message
    # Without one of its own, the table takes the service's, and either place changes it.
    finding = _duplicates_finding(_service("stop"))
    assert finding.severity == ERROR
    assert "service user has on_error='stop' and table users sets none of its own" in finding.message
    assert "on table users (Table(..., on_error='dead_letter')) or on service user" in finding.message
