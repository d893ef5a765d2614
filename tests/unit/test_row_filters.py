"""A route's row filter (`Table(..., where=...)`) on values alone: how it is rendered, which partial updates it
can judge, what a topology that names a missing column gets, plan's rules, and the `%` every expression may
carry.  The pipeline through real servers is tests/e2e/test_any_schema_filters.py.
"""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
from psycopg import sql

from connectors.pg.client import wrap_db_error
from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.core.errors import FatalError, RetryableError
from splitter.ops.plan import ERROR, WARNING, collect_findings
from splitter.ops.plan.facts import ExprCheck
from splitter.topology import partial_sql, sqlrender
from splitter.topology.model import Service, Table, Topology
from splitter.topology.sqlrender import ROWS_ALL, ROWS_DROPPED, ROWS_KEPT, TargetColumn
from tests.unit.test_plan_rules import BOOL, INT4, SOURCE, keyed, source_facts, target_facts

RELATION = RelationSchema("public", "posts", (
    ColumnSchema("id", "integer", True), ColumnSchema("status", "text", False), ColumnSchema("body", "text", False)))
COLUMNS = [TargetColumn("id"), TargetColumn("status"), TargetColumn("body")]


def _route(where: str | None) -> sqlrender.Route:
    table = Table("posts", source="posts", key=("id",), columns={"id": "id", "status": "status", "body": "body"},
                  where=where)
    return next(Topology("src", (Service("svc", database="svc_db", tables=(table,)),)).routes())


def _text(statement: sql.Composable | None) -> str:
    assert statement is not None
    return statement.as_string(None)


def test_the_filter_keeps_rows_it_says_true_for_and_counts_null_as_false() -> None:
    route = _route("status <> 'deleted'")
    assert _text(sqlrender.row_filter(route, ROWS_KEPT)) == "coalesce((status <> 'deleted'), false)"
    assert _text(sqlrender.row_filter(route, ROWS_DROPPED)) == "NOT coalesce((status <> 'deleted'), false)"
    assert sqlrender.row_filter(route, ROWS_ALL) is None  # deletes and old keys match by key alone
    unfiltered = _route(None)
    assert sqlrender.row_filter(unfiltered, ROWS_KEPT) is None
    assert _text(sqlrender.row_filter(unfiltered, ROWS_DROPPED)) == "false"
    relation = sql.SQL("SELECT 1")
    assert _text(sqlrender.projection(route, COLUMNS[:1], relation)).endswith(
        "WHERE coalesce((status <> 'deleted'), false)")
    assert "WHERE" not in _text(sqlrender.projection(route, COLUMNS[:1], relation, rows=ROWS_ALL))


def test_only_a_filtered_route_deletes_the_rows_its_filter_drops() -> None:
    assert sqlrender.apply_filtered_out(_route(None), RELATION, COLUMNS) is None
    delete = _text(sqlrender.apply_filtered_out(_route("status <> 'deleted'"), RELATION, COLUMNS))
    assert delete.startswith("DELETE FROM") and "NOT coalesce((status <> 'deleted'), false)" in delete
    # Deletes match by key whatever the filter says: a row deleted after it left the filter is gone anyway.
    assert "coalesce" not in _text(sqlrender.apply_delete(_route("status <> 'deleted'"), RELATION, COLUMNS))


def test_percent_signs_reach_the_server_as_written() -> None:
    """`%` is psycopg's placeholder sign in a statement with parameters, and neither identifiers nor literals
    double it: statements carrying topology SQL or names take no parameters, so the text is sent as written."""
    route = _route("status NOT LIKE 'del%' AND id % 2 = 0")
    relation = RelationSchema("public", "disc%", (ColumnSchema("id", "integer", True),
                                                  ColumnSchema("status", "text", False),
                                                  ColumnSchema("body%", "text", False)))
    unchanged = frozenset({"body%"})
    columns = [TargetColumn("id"), TargetColumn("status")]
    statements = [
        sqlrender.projection(route, COLUMNS[:1], sql.SQL("SELECT 1")),
        sqlrender.apply_delete(route, relation, columns), sqlrender.apply_upsert(route, relation, columns),
        sqlrender.apply_filtered_out(route, relation, columns),
        partial_sql.apply_partial(route, relation, columns, unchanged),
        partial_sql.delete_partial_filtered_out(route, relation, columns, unchanged),
        partial_sql.delete_partial_move_targets(route, relation, columns, unchanged),
        partial_sql.partial_rows_kept(route, relation, columns, unchanged),
    ]
    for n, statement in enumerate(statements):
        text = _text(statement)
        assert "%s" not in text and "%%" not in text, text  # no placeholder: executed without parameters
        assert ("LIKE 'del%' AND id % 2 = 0" in text) == (n != 1), text  # a delete matches by key alone
    assert "'{body%}'::text[]" in _text(statements[4])


def test_which_partial_updates_the_filter_can_judge() -> None:
    route = _route("status <> 'deleted'")
    # The filter reads none of the unchanged columns: it judges the new row.
    assert partial_sql.partial_rows(route, frozenset({"body"})) == ROWS_KEPT
    assert partial_sql.delete_partial_filtered_out(route, RELATION, COLUMNS, frozenset({"body"})) is not None
    # It reads only unchanged ones: the row is in the target exactly when it was; nothing to delete.
    on_body = _route("body <> ''")
    assert partial_sql.partial_rows(on_body, frozenset({"body"})) == ROWS_ALL
    assert partial_sql.delete_partial_filtered_out(on_body, RELATION, COLUMNS, frozenset({"body"})) is None
    # A partial update that finds no row was out of such a filter: no row is missing.
    assert partial_sql.outside_filter_when_missing(on_body, frozenset({"body"}))
    assert not partial_sql.outside_filter_when_missing(route, frozenset({"body"}))
    assert not partial_sql.outside_filter_when_missing(_route(None), frozenset({"body"}))
    # Both: whether the row is in cannot be known from the change.
    both = _route("status <> 'deleted' AND body <> ''")
    with pytest.raises(FatalError, match=r"reads both.*REPLICA IDENTITY FULL on public\.posts"):
        partial_sql.partial_rows(both, frozenset({"body"}))


def test_a_filter_reading_a_missing_column_is_named() -> None:
    route = _route("state <> 'deleted'")
    assert route.table.filter_columns() == {"state"}
    assert "state" in route.table.source_columns_read()
    problems = sqlrender.check_route_against(route, {c.name: c for c in RELATION.columns})
    assert len(problems) == 1 and "row filter \"state <> 'deleted'\" reads column(s) state" in problems[0]


def test_a_driver_programming_error_is_fatal_and_a_lost_connection_retryable() -> None:
    assert isinstance(wrap_db_error(psycopg.ProgrammingError("incomplete placeholder: '%'"), "applying"),
                      FatalError)
    assert isinstance(wrap_db_error(psycopg.OperationalError("server closed the connection"), "applying"),
                      RetryableError)


PEOPLE = Table("people", source="users", key=("id",), columns={"id": "id", "handle": "nick"})


def _filter_findings(where: str, check: ExprCheck, **source_table: object) -> set[tuple[str, str, str | None,
                                                                                       str | None]]:
    topology = Topology("src", (Service("svc", database="svc_db", schema="app",
                                        tables=(dataclasses.replace(PEOPLE, where=where),)),), unrouted=("audit_log",
                                                                                                       "sessions"))
    table = dataclasses.replace(SOURCE, **source_table)  # type: ignore[arg-type]
    facts = source_facts(tables={**source_facts().tables, ("public", "users"): table},
                         filters={("svc", "app", "people"): check})
    base = target_facts().tables[("app", "people")].columns
    targets = {"svc": target_facts(columns={n: c for n, c in base.items() if n in ("id", "handle")})}
    return {f for f in keyed(collect_findings(topology, facts, targets)) if "filter" in f[1]}


def test_plan_refuses_a_filter_that_fails_or_is_not_boolean() -> None:
    assert _filter_findings("score + 1", ExprCheck(result=INT4)) == {(ERROR, "filter-not-boolean", "app.people",
                                                                      None)}
    assert _filter_findings("nosuch()", ExprCheck(error="function nosuch() does not exist", sqlstate="42883")) == {
        (ERROR, "filter-fails", "app.people", None)}


def test_plan_warns_when_an_unsent_toasted_value_could_move_a_row_in() -> None:
    toasted = {**SOURCE.columns, "nick": dataclasses.replace(SOURCE.columns["nick"], storage="x")}
    assert _filter_findings("score > 0", ExprCheck(result=BOOL), columns=toasted) == {
        (WARNING, "filter-needs-full-identity", "app.people", None)}
    assert _filter_findings("score > 0", ExprCheck(result=BOOL), columns=toasted, replica_identity="f") == set()
    assert _filter_findings("score > 0", ExprCheck(result=BOOL)) == set()  # nothing TOASTable is read
