"""The plan's rules on facts written by hand: no server, each rule on its edge cases.

The integration tests (tests/integration/test_plan.py) check that gathering reads real catalogs
into these same facts; here every rule is pinned down where it is easy to get wrong: typmods,
expressions that already truncate or coalesce, enum value sets, uniqueness the source enforces.
"""

from __future__ import annotations

from connectors.pg.inspect import ColumnFacts, IndexFacts, SourceRole, TableFacts, TargetRole, TypeInfo
from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.ops.plan import (
    ERROR,
    INFO,
    WARNING,
    ExprCheck,
    Finding,
    SlotFacts,
    SourceFacts,
    TargetFacts,
    Unreachable,
    collect_findings,
    conversion_findings,
)
from splitter.topology.expressions import may_be_null, possible_values, truncated_precision
from splitter.topology.model import Service, Table, Topology

INT2 = TypeInfo(21, -1, "smallint", "int2", "N")
INT4 = TypeInfo(23, -1, "integer", "int4", "N")
INT8 = TypeInfo(20, -1, "bigint", "int8", "N")
TEXT = TypeInfo(25, -1, "text", "text", "S")
BOOL = TypeInfo(16, -1, "boolean", "bool", "B")


def varchar(n: int) -> TypeInfo:
    return TypeInfo(1043, n + 4, f"character varying({n})", "varchar", "S")


def timestamp(p: int | None) -> TypeInfo:
    shown = "timestamp without time zone" if p is None else f"timestamp({p}) without time zone"
    return TypeInfo(1114, -1 if p is None else p, shown, "timestamp", "D")


def numeric(p: int | None = None, s: int = 0) -> TypeInfo:
    mod = -1 if p is None else ((p << 16) | s) + 4
    return TypeInfo(1700, mod, "numeric" if p is None else f"numeric({p},{s})", "numeric", "N")


def enum(name: str, *labels: str) -> TypeInfo:
    return TypeInfo(90000 + len(name), -1, name, name, "E", labels)


SRC_STATUS = enum('"UserStatus"', "active", "pending", "banned")
SOURCE = TableFacts("public", "users", {
    "id": ColumnFacts("id", varchar(36), True, False),
    "name": ColumnFacts("name", varchar(100), True, False),
    "nick": ColumnFacts("nick", TEXT, False, False),
    "status": ColumnFacts("status", SRC_STATUS, False, True),
    "score": ColumnFacts("score", INT4, False, True),
}, (IndexFacts("users_pkey", ("id",), True, True, False),))


def codes(findings: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    return [(severity, code) for severity, code, _ in findings]


# ------------------------------------------------------------------------------ expression analysis

def test_null_analysis_follows_columns_constants_and_coalesce() -> None:
    assert may_be_null("nick", SOURCE) is True
    assert may_be_null("nick::varchar(10)", SOURCE) is True
    assert may_be_null("name", SOURCE) is False
    assert may_be_null("coalesce(nick, 'x')", SOURCE) is False
    assert may_be_null("coalesce(nick, status)", SOURCE) is True
    assert may_be_null("NULL", SOURCE) is True
    assert may_be_null("upper(nick)", SOURCE) is None  # cannot tell: no finding either way


def test_value_sets_and_truncation() -> None:
    assert possible_values("status", SOURCE) == frozenset({"active", "pending", "banned"})
    assert possible_values("coalesce(status, 'gone')", SOURCE) == frozenset({"active", "pending", "banned", "gone"})
    assert possible_values("nick", SOURCE) is None
    assert possible_values("upper(status::text)", SOURCE) is None
    assert truncated_precision("date_trunc('second', created_at)") == 0
    assert truncated_precision("date_trunc('milliseconds', created_at)") == 3
    assert truncated_precision("pg_catalog.date_trunc('minute', created_at)") == 0
    assert truncated_precision("created_at") is None


# ----------------------------------------------------------------------------------- conversions

def test_timestamp_narrowing_warns_unless_the_expression_truncates() -> None:
    assert codes(conversion_findings("created_at", timestamp(3), timestamp(0), SOURCE)) == [
        (WARNING, "precision-narrowed")]
    # date_trunc yields an unconstrained timestamp, yet keeps no fraction: explicit, so INFO.
    assert codes(conversion_findings("date_trunc('second', created_at)", timestamp(None), timestamp(0), SOURCE)) == [
        (INFO, "precision-truncated")]
    assert codes(conversion_findings("date_trunc('milliseconds', created_at)", timestamp(None), timestamp(0),
                                     SOURCE)) == [(WARNING, "precision-narrowed")]
    # An explicit cast already yields timestamp(0): nothing is lost at the assignment.
    assert conversion_findings("created_at::timestamp(0)", timestamp(0), timestamp(0), SOURCE) == []
    assert conversion_findings("created_at", timestamp(0), timestamp(3), SOURCE) == []


def test_numeric_and_integer_narrowing() -> None:
    assert codes(conversion_findings("n", numeric(12, 4), numeric(12, 2), SOURCE)) == [(WARNING, "numeric-narrowed")]
    assert codes(conversion_findings("n", numeric(12, 2), numeric(8, 2), SOURCE)) == [(WARNING, "numeric-narrowed")]
    assert conversion_findings("n", numeric(10, 2), numeric(12, 2), SOURCE) == []
    assert codes(conversion_findings("n", numeric(), numeric(10, 2), SOURCE)) == [(WARNING, "numeric-narrowed")]
    assert conversion_findings("n", numeric(10, 2), numeric(), SOURCE) == []
    assert codes(conversion_findings("n", INT8, INT4, SOURCE)) == [(WARNING, "integer-narrowed")]
    assert codes(conversion_findings("n", INT4, INT2, SOURCE)) == [(WARNING, "integer-narrowed")]
    assert conversion_findings("n", INT4, INT8, SOURCE) == []
    assert codes(conversion_findings("n", INT8, numeric(12, 2), SOURCE)) == [(WARNING, "numeric-narrowed")]
    assert codes(conversion_findings("n", numeric(10, 2), INT4, SOURCE)) == [(WARNING, "fraction-rounded")]


def test_string_length_narrowing() -> None:
    assert codes(conversion_findings("nick", TEXT, varchar(20), SOURCE)) == [(WARNING, "varchar-narrowed")]
    assert codes(conversion_findings("name", varchar(100), varchar(50), SOURCE)) == [(WARNING, "varchar-narrowed")]
    assert conversion_findings("name", varchar(100), varchar(150), SOURCE) == []
    assert conversion_findings("name", varchar(100), TEXT, SOURCE) == []
    # An enum read as text is unbounded text, but its labels are known and short.
    assert conversion_findings("status", TEXT, varchar(10), SOURCE) == []
    assert codes(conversion_findings("status", TEXT, varchar(6), SOURCE)) == [(WARNING, "varchar-narrowed")]


def test_enum_labels_the_target_lacks_are_errors_naming_them() -> None:
    target = enum("users.user_status", "active", "pending")
    (finding,) = conversion_findings("status", TEXT, target, SOURCE)
    assert finding[:2] == (ERROR, "enum-label-missing")
    assert "'banned'" in finding[2] and "active, pending" in finding[2]
    wide = enum("users.user_status", "active", "pending", "banned", "suspended")
    assert conversion_findings("status", TEXT, wide, SOURCE) == []
    assert conversion_findings("coalesce(status, 'active')", TEXT, wide, SOURCE) == []
    assert codes(conversion_findings("coalesce(status, 'gone')", TEXT, wide, SOURCE)) == [
        (ERROR, "enum-label-missing")]
    assert codes(conversion_findings("'nope'", TEXT, wide, SOURCE)) == [(ERROR, "enum-label-missing")]
    assert codes(conversion_findings("nick", TEXT, wide, SOURCE)) == [(WARNING, "enum-from-text")]


# ------------------------------------------------------------------------------------- whole plan

TOPOLOGY = Topology(
    source_database="src",
    services=(Service("svc", database="svc_db", schema="app", tables=(
        Table("people", source="users", key=("id",),
              columns={"id": "id", "handle": "nick", "status": "status", "score": "coalesce(score, 0)"}),
    )),),
    unrouted=("audit_log",),
)
RELATION = RelationSchema("public", "users", (
    ColumnSchema("id", "character varying(36)", True), ColumnSchema("name", "character varying(100)", False),
    ColumnSchema("nick", "text", False), ColumnSchema("status", "text", False), ColumnSchema("score", "integer", False),
))
ROLE = SourceRole("splitter", superuser=False, replication=True, can_create=True)


def source_facts(**changes: object) -> SourceFacts:
    results = {("svc", "app", "people", c): ExprCheck(result=t)
               for c, t in (("id", varchar(36)), ("handle", TEXT), ("status", TEXT), ("score", INT4))}
    base: dict[str, object] = dict(
        wal_level="logical", max_replication_slots=10, replication_slots_used=1, max_wal_senders=10,
        wal_senders_used=0, slot=SlotFacts(), role=ROLE, publication=None,
        tables={
            ("public", "users"): TableFacts("public", "users", SOURCE.columns, SOURCE.indexes,
                                            privileges=frozenset({"SELECT"})),
            ("public", "audit_log"): TableFacts("public", "audit_log"),
            ("public", "sessions"): TableFacts("public", "sessions"),
        },
        relations={("public", "users"): RELATION}, results=results)
    base.update(changes)
    return SourceFacts(**base)  # type: ignore[arg-type]


TARGET_ROLE = TargetRole("splitter", superuser=False, can_create=True, can_temp=True, state_schema_exists=False,
                         can_use_state_schema=False, can_set_replication_role=True, can_use_origin=True)


def target_facts(columns: dict[str, ColumnFacts] | None = None, indexes: tuple[IndexFacts, ...] | None = None,
                 **results: ExprCheck) -> TargetFacts:
    cols = columns if columns is not None else {
        "id": ColumnFacts("id", varchar(36), True, False),
        "handle": ColumnFacts("handle", TEXT, False, False),
        "status": ColumnFacts("status", enum("app.status", "active", "pending", "banned"), True, True),
        "score": ColumnFacts("score", INT4, True, True),
        "created_at": ColumnFacts("created_at", timestamp(0), True, True),
    }
    idx = indexes if indexes is not None else (IndexFacts("people_pkey", ("id",), True, True, False),)
    table = TableFacts("app", "people", cols, idx, privileges=frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"}))
    return TargetFacts(TARGET_ROLE, {("app", "people"): table},
                       {("svc", "app", "people", c): r for c, r in results.items()})


def keyed(findings: list[Finding]) -> set[tuple[str, str, str | None, str | None]]:
    return {(f.severity, f.code, f.table, f.column) for f in findings}


def test_clean_plan_reports_unrouted_tables_and_defaults_only() -> None:
    found = keyed(collect_findings(TOPOLOGY, source_facts(), {"svc": target_facts()}))
    assert {f for f in found if f[0] != INFO} == {
        # status is NOT NULL in the target, nullable in the source, taken without coalesce.
        (ERROR, "not-null-from-nullable", "app.people", "status"),
        # audit_log is listed in unrouted; sessions is not.
        (WARNING, "not-migrated", "public.sessions", None),
    }
    assert (INFO, "filled-by-default", "app.people", "created_at") in found
    assert (INFO, "publication-created", None, None) in found


def test_key_and_uniqueness_rules() -> None:
    indexes = (
        IndexFacts("people_handle_key", ("handle",), False, True, False),  # the source never enforced it
        IndexFacts("people_id_partial", ("id",), False, True, True),  # partial: ON CONFLICT cannot use it
    )
    found = keyed(collect_findings(TOPOLOGY, source_facts(), {"svc": target_facts(indexes=indexes)}))
    assert (ERROR, "key-not-unique", "app.people", None) in found
    assert (WARNING, "unique-not-enforced-in-source", "app.people", "handle") in found
    # The partial unique index on id is covered by the source primary key: no warning for it.
    assert not any(f[1] == "unique-not-enforced-in-source" and f[3] == "id" for f in found)


def test_missing_target_columns_and_unfilled_not_null() -> None:
    cols = {
        "id": ColumnFacts("id", varchar(36), True, False),
        "status": ColumnFacts("status", TEXT, False, False),
        "score": ColumnFacts("score", INT4, True, True),
        "region": ColumnFacts("region", TEXT, True, False),
        "note": ColumnFacts("note", TEXT, False, False),
    }
    found = keyed(collect_findings(TOPOLOGY, source_facts(), {"svc": target_facts(columns=cols)}))
    assert (ERROR, "target-column-missing", "app.people", "handle") in found
    assert (ERROR, "target-column-unfilled", "app.people", "region") in found
    assert (INFO, "left-null", "app.people", "note") in found


def test_expression_failures_are_attributed_but_privilege_failures_are_not() -> None:
    results = dict(source_facts().results)
    results[("svc", "app", "people", "score")] = ExprCheck(error="function lower(integer) does not exist",
                                                          sqlstate="42883")
    results[("svc", "app", "people", "handle")] = ExprCheck(error="permission denied", sqlstate="42501")
    target = target_facts(id=ExprCheck(error='column "id" is of type integer but expression is of type text',
                                       sqlstate="42804"))
    found = collect_findings(TOPOLOGY, source_facts(results=results), {"svc": target})
    assert (ERROR, "expression-fails", "app.people", "score") in keyed(found)
    assert (ERROR, "incompatible-type", "app.people", "id") in keyed(found)
    assert not any(f.column == "handle" and f.code.startswith("expression") for f in found)
    failing = next(f for f in found if f.code == "expression-fails")
    assert "lower(integer)" in failing.message and failing.origin == str(TOPOLOGY.services[0].tables[0].origin)


def test_source_preflight() -> None:
    bad = source_facts(
        wal_level="replica", max_replication_slots=2, replication_slots_used=2, max_wal_senders=1, wal_senders_used=1,
        role=SourceRole("app", superuser=False, replication=False, can_create=False))
    found = keyed(collect_findings(TOPOLOGY, bad, {"svc": target_facts()}))
    for code in ("wal-level", "no-free-slot", "no-free-wal-sender", "no-replication-role", "no-create-publication"):
        assert (ERROR, code, None, None) in found
    # An existing, active slot needs neither a free slot nor a free walsender.
    ok = source_facts(max_replication_slots=1, replication_slots_used=1, max_wal_senders=1, wal_senders_used=1,
                      slot=SlotFacts(exists=True, active=True))
    found = keyed(collect_findings(TOPOLOGY, ok, {"svc": target_facts()}))
    assert not {f for f in found if f[1] in ("no-free-slot", "no-free-wal-sender")}


def test_unreachable_databases_are_one_error_each() -> None:
    found = collect_findings(TOPOLOGY, Unreachable("source database src", "postgresql://u:***@h/src", "refused"),
                             {"svc": Unreachable("database svc_db of service svc", "postgresql://h/svc_db", "down")})
    assert [(f.severity, f.code, f.service) for f in found] == [
        (ERROR, "connection-failed", None), (ERROR, "connection-failed", "svc")]
    assert "svc_db" in found[1].message and "\n" not in found[1].message


def test_booleans_are_not_judged_statically() -> None:
    # No static rule for bool -> int: the target database's planning of the apply decides (incompatible-type).
    assert conversion_findings("flag", BOOL, INT4, SOURCE) == []
