"""The grammar of type names that reach SQL from the change log (`splitter.topology.type_names`).

What every type PostgreSQL's `format_type` prints is accepted is checked against a real server in
tests/integration/test_log_injection.py; here: hand-picked names either side of the line, injection strings,
and properties over generated text (whatever is accepted stays one cast when rendered where apply puts it).
"""

from __future__ import annotations

import orjson
import pglast
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import ast

from splitter.core.errors import MalformedMessageError
from splitter.pipeline.worker.schema_policy import read_relation
from splitter.topology import type_names
from splitter.topology.sqlrender import checked_type
from splitter.topology.type_names import column_name_problem, type_name_problem

ACCEPTED = [
    "integer", "bigint", "text", "int", "varchar", "bpchar", '"char"', '"bit"', '"any"', "json", "jsonb",
    "character varying(150)", "character varying", "character(3)", "bit(4)", "bit varying(7)", "bit varying",
    "numeric", "numeric(10,2)", "numeric(5,-2)", "double precision", "real", "smallint", "boolean",
    "time(3) without time zone", "time with time zone", "timestamp without time zone",
    "timestamp(6) with time zone", "interval", "interval(2)", "interval year to month", "interval hour",
    "interval day to second(3)", "interval second(0)", "interval minute to second",
    "integer[]", "text[][]", "int[3]", "character varying(10)[]", "timestamp(3) without time zone[]",
    "interval year to month[]", '"char"[]', "pg_catalog.int4", "public.mood", '"UserRole"', '"UserRole"[]',
    '"Odd Schema"."Mixed ""Quoted"" Name"[]', '"a.b"', '"größe"', '"line\nbreak"', '"semi;colon -- /*x*/"',
    '"' + "q" * 63 + '"', '"select"', '"integer"',
]

INJECTIONS = [
    "int, (SELECT pg_sleep(10))", "text FROM pg_authid", "int; DROP TABLE x", "int -- x", "int/*x*/",
    "text) , (select 1", '"a"."b"."c"."d"', '"a"."b"."c"', "int\n", "int\n, 1", "\nint", " int", "int ",
    "int\x00", '"a\x00b"', "int[1:2]", "int[-1]", "int[", "int]", "x" * 10_000, '"' + "q" * 64 + '"',
    "select", "from", "between", "values", "row", "setof int", "int COLLATE \"C\"", "int::text", "NULL::int",
    "int)", "(int)", "int()", "numeric(p,s)", "numeric(1 ,2)", "numeric( 1)", "varchar(n)", "varchar('1')",
    "double  precision", "double\tprecision", "interval year(3)", "interval second to minute", "INT", "Int",
    '""', '"unclosed', 'a"b', "int4 AS x", "int AT TIME ZONE 'UTC'", "int IS NULL", "int OR true", "text || 'x'",
    "int%TYPE", "public.", ".int", "a..b", "pg_catalog.int4.extra", "int ARRAY", "int ARRAY[3]", "$1", "int$",
    "int, nextval('canary')::text", "int UNION SELECT 1", "'text'", "E'\\x27'", "int\r", "int\u2028",
    "(SELECT 1)", "int[]; SELECT 1", "-int", "int--", "\u00a0int",
]


@pytest.mark.parametrize("type_name", ACCEPTED)
def test_type_names_format_type_prints_are_accepted(type_name: str) -> None:
    assert type_name_problem(type_name) is None
    assert checked_type(type_name).as_string() == type_name


@pytest.mark.parametrize("type_name", INJECTIONS)
def test_injections_and_malformed_names_are_refused(type_name: str) -> None:
    assert type_name_problem(type_name) is not None
    with pytest.raises(MalformedMessageError, match="is not a SQL type name"):
        checked_type(type_name)


def test_the_parse_check_looks_at_every_clause_a_select_has() -> None:
    flags = {"targetList", "op", "all", "groupDistinct", "limitOption"}
    assert set(type_names._SELECT_CLAUSES) == set(ast.SelectStmt.__slots__) - flags


def test_a_refused_name_is_shown_short_in_the_error() -> None:
    with pytest.raises(MalformedMessageError) as info:
        checked_type("int, " + "x" * 10_000)
    assert len(str(info.value)) < 400 and "10005 characters" in str(info.value)


def _stays_one_cast(type_name: str) -> bool:
    """Rendered as apply renders a staged column, the statement is one cast of that column and nothing else."""
    try:
        (raw,) = pglast.parse_sql(f'SELECT s."c"::{type_name} AS "c" FROM pg_temp.stage AS s')
    except (pglast.parser.ParseError, ValueError):
        return False
    select = raw.stmt
    return (isinstance(select, ast.SelectStmt) and len(select.targetList) == 1 and len(select.fromClause) == 1
            and select.whereClause is None and isinstance(select.targetList[0].val, ast.TypeCast)
            and isinstance(select.targetList[0].val.arg, ast.ColumnRef))


SQL_BITS = st.sampled_from([
    "int", "text", "numeric", "character varying", "double precision", "interval", "time", "timestamp",
    " with time zone", " year to month", '"', '""', '"x"', ".", ",", "(", ")", "[", "]", "[]", "1", "-2", " ",
    "\n", ";", "--", "/*", "*/", "::", "'", "select", " from ", "pg_sleep(1)", "nextval('c')", "a", "_", "$",
    "\x00", "ü", "||", "=", "as",
])


@settings(max_examples=1500, deadline=None)
@given(st.lists(SQL_BITS, min_size=1, max_size=10).map("".join))
def test_whatever_is_accepted_stays_one_cast_where_apply_puts_it(text: str) -> None:
    if type_name_problem(text) is None:
        assert _stays_one_cast(text), text


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(ACCEPTED), st.sampled_from([
    ", (SELECT 1)", " FROM pg_authid", "; DROP TABLE x", " -- x", "/*x*/", ")", ", 1", "\n", "::text",
    " COLLATE \"C\"", " OR true", "[1:2]", ".x.y", " AS x", "\x00",
]))
def test_any_accepted_name_followed_by_sql_is_refused(type_name: str, tail: str) -> None:
    assert type_name_problem(type_name + tail) is not None


@pytest.mark.parametrize(("name", "refused"), [
    ("id", False), ("Mixed Case", False), ('with "quotes"', False), ("größe", False), ("c" * 63, False),
    ("", True), ("a\x00b", True), ("c" * 64, True), ("ü" * 32, True),
])
def test_column_names(name: str, refused: bool) -> None:
    assert (column_name_problem(name) is not None) == refused


def test_a_schema_header_with_a_bad_type_or_name_is_refused_naming_it() -> None:
    good = [["id", "text", True], ["n", "numeric(10,2)", False]]
    assert [c.sql_type for c in read_relation("public.t", orjson.dumps(good)).columns] == ["text", "numeric(10,2)"]
    for columns, named in [
        ([*good, ["x", "int, (SELECT pg_sleep(10))", False]], "'int, (SELECT pg_sleep(10))'"),
        ([*good, ["", "text", False]], "''"),
        ([*good, ["id", "text", False]], "used twice"),
        ([*good, ["__row", "text", False]], "used twice"),
        ([*good, ["x\x00", "text", False]], "NUL"),
    ]:
        with pytest.raises(MalformedMessageError, match=r"schema header of 'public\.t'") as info:
            read_relation("public.t", orjson.dumps(columns))
        assert named in str(info.value)
