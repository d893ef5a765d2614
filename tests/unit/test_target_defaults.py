"""`DEFAULT` in a topology expression, on values alone: what it stands for, how it is put in, and plan's rules.

The pipeline through real servers is tests/e2e/test_any_schema_defaults.py; here the edges: which catalog
defaults count as constants, the casts around a literal, a DEFAULT left unresolved, and the plan's two rules
(a DEFAULT no constant stands for, a nullable column written plainly over a defaulted one).
"""

from __future__ import annotations

import dataclasses

import pytest

from connectors.pg.inspect import ColumnFacts
from splitter.core.errors import ConfigurationError
from splitter.ops.plan import ERROR, WARNING, collect_findings
from splitter.topology.expressions import default_value, only_default, uses_default, with_default
from splitter.topology.model import Service, Table, Topology
from splitter.topology.sqlrender import TargetColumn, column_expression
from tests.unit.test_plan_rules import INT4, TEXT, keyed, source_facts, target_facts


@pytest.mark.parametrize(("catalog", "meaning"), [
    ("'active'::users.user_status", "'active'"),  # the service's own type: the apply casts to it
    ("'-1'::integer", "'-1'"),
    ("'{}'::text[]", "'{}'"),
    ("ARRAY[1, 2]", "ARRAY[1, 2]"),
    ("true", "TRUE"),
    ("'it''s'::text", "'it''s'"),
    ("'now'::text", "'now'"),  # the word, in a text column
    ("'epoch'::timestamp without time zone", "'epoch'"),  # a fixed instant
    (None, "NULL"),  # no default: DEFAULT is NULL, as in an INSERT
])
def test_a_constant_default_stands_for_its_literal(catalog: str | None, meaning: str) -> None:
    assert default_value(catalog) == meaning


@pytest.mark.parametrize(("catalog", "because"), [
    ("now()", "calls a function"),
    ("nextval('t_id_seq'::regclass)", "calls a function"),
    ("CURRENT_TIMESTAMP", "reads the clock or the session"),
    ("(random() * 10)::integer", "calls a function"),
    # Literals and casts alone, but date and time input reads these words as the clock.
    ("('now'::text)::date", "reads the clock"),
    ("'today'::timestamp without time zone", "reads the clock"),
])
def test_a_computed_default_is_refused_naming_it(catalog: str, because: str) -> None:
    with pytest.raises(ConfigurationError, match="not a constant") as raised:
        default_value(catalog)
    assert catalog in str(raised.value) and because in str(raised.value)


def test_identity_and_generated_columns_have_no_constant() -> None:
    with pytest.raises(ConfigurationError, match="identity"):
        default_value(None, filled_by="identity")
    with pytest.raises(ConfigurationError, match="generated"):
        default_value("a + 1", filled_by="generated")


def test_default_is_put_in_wherever_the_expression_says_it() -> None:
    assert uses_default("coalesce(status, DEFAULT)") and not uses_default("coalesce(status, 'active')")
    assert with_default("coalesce(status, DEFAULT)", "'active'") == "COALESCE(status, 'active')"
    assert with_default("coalesce(a, DEFAULT) + coalesce(b, DEFAULT)", "'-1'") == \
        "COALESCE(a, '-1') + COALESCE(b, '-1')"
    assert with_default('"Odd ""Col"""', "'x'") == '"Odd ""Col"""'  # no DEFAULT: the expression as written
    assert only_default("DEFAULT") and not only_default("coalesce(x, DEFAULT)")


TABLE = Table("people", source="users", key=("id",), columns={"id": "id", "status": "coalesce(status, DEFAULT)"})
SERVICE = Service("svc", database="svc_db", schema="app", tables=(TABLE,))


def test_an_unresolved_default_is_refused_not_rendered() -> None:
    route = next(Topology("src", (SERVICE,)).routes())
    with pytest.raises(ConfigurationError, match="default was not read"):
        column_expression(route, TargetColumn("status"))
    assert column_expression(route, TargetColumn("status", default="'active'")) == "COALESCE(status, 'active')"


def _findings(columns: dict[str, str], target: dict[str, ColumnFacts]) -> set[tuple[str, str, str | None, str | None]]:
    table = Table("people", source="users", key=("id",), columns=columns)
    topology = Topology("src", (dataclasses.replace(SERVICE, tables=(table,)),), unrouted=("audit_log", "sessions"))
    base = target_facts().tables[("app", "people")].columns
    return keyed(collect_findings(topology, source_facts(), {"svc": target_facts(columns={**base, **target})}))


def test_plan_refuses_a_default_no_constant_stands_for() -> None:
    now = ColumnFacts("score", INT4, True, True, default="now()")
    found = _findings({"id": "id", "score": "coalesce(score, DEFAULT)"}, {"score": now})
    assert (ERROR, "default-not-constant", "app.people", "score") in found
    ident = ColumnFacts("score", INT4, True, True, filled_by="identity")
    assert (ERROR, "default-not-constant", "app.people", "score") in _findings(
        {"id": "id", "score": "coalesce(score, DEFAULT)"}, {"score": ident})


def test_plan_reads_default_as_the_target_default() -> None:
    # NOT NULL score, nullable source: coalesce(score, DEFAULT) never yields NULL once the default is put in.
    zero = ColumnFacts("score", INT4, True, True, default="0")
    assert not {f for f in _findings({"id": "id", "score": "coalesce(score, DEFAULT)"}, {"score": zero})
                if f[3] == "score" and f[0] in (ERROR, WARNING)}
    # Without a default, DEFAULT is NULL: the NOT NULL column would refuse it.
    assert (ERROR, "not-null-from-nullable", "app.people", "score") in _findings(
        {"id": "id", "score": "coalesce(score, DEFAULT)"}, {"score": ColumnFacts("score", INT4, True, False)})


def test_plan_warns_when_a_source_null_overwrites_a_nullable_defaulted_column() -> None:
    defaulted = ColumnFacts("handle", TEXT, False, True, default="'anonymous'::text")
    assert (WARNING, "null-over-default", "app.people", "handle") in _findings(
        {"id": "id", "handle": "nick"}, {"handle": defaulted})
    assert not {f for f in _findings({"id": "id", "handle": "coalesce(nick, DEFAULT)"}, {"handle": defaulted})
                if f[3] == "handle" and f[0] in (ERROR, WARNING)}
