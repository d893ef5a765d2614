"""Reading the topology's SQL: table names and column expressions, parsed and analysed without a database.

Owns: `split_qualified` (`schema.table` names), `parse_expression` (one scalar expression, through
pglast), `expression_columns` (the source columns an expression reads, rejecting forms that cannot
run per row), the keyword `DEFAULT` in an expression (`uses_default`; `default_value`, what it stands
for given the target column's default as its catalog prints it; `with_default`, the expression with it
put in), and the small, conservative readings `splitter plan` makes of a parse tree
(`plain_column`, `may_be_null`, `possible_values`, `truncated_precision`): each answers only
when it is sure, and says None otherwise.
Must not: connect to a database, render SQL (`splitter.topology.sqlrender` does) or know the
topology's classes (`splitter.topology.model` builds on this module, not the other way round).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Protocol

import pglast
from pglast import ast
from pglast.stream import RawStream
from pglast.visitors import Visitor

from splitter.core.errors import ConfigurationError


def split_qualified(name: str, default_schema: str) -> tuple[str, str]:
    """Split `schema.table` (or bare `table`, taken in `default_schema`) into its two parts."""
    parts = name.split(".")
    if len(parts) == 1:
        return default_schema, parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise ConfigurationError(f"{name!r} is not a table name (expected 'table' or 'schema.table')")


class _ColumnRefCollector(Visitor):
    """Collects the column names an expression reads, and rejects forms that cannot run per row."""

    def __init__(self) -> None:
        super().__init__()
        self.columns: set[str] = set()
        self.problems: list[str] = []

    def visit_ColumnRef(self, ancestors: object, node: ast.ColumnRef) -> None:
        fields = node.fields or ()
        if len(fields) != 1 or not isinstance(fields[0], ast.String) or fields[0].sval is None:
            self.problems.append("refers to a column by a qualified name or '*'; use the plain source column name")
            return
        self.columns.add(fields[0].sval)

    def visit_SubLink(self, ancestors: object, node: ast.SubLink) -> None:
        self.problems.append("contains a subquery; expressions must be computed from the source row alone")

    def visit_FuncCall(self, ancestors: object, node: ast.FuncCall) -> None:
        if node.agg_star or node.over is not None or node.agg_order or node.agg_filter is not None:
            self.problems.append("uses an aggregate or window function; expressions are computed per row")


def parse_expression(expr: str) -> ast.Node:
    """Parse one SQL scalar expression; raise ConfigurationError naming the expression if it does not parse."""
    if not expr.strip():
        raise ConfigurationError("empty expression")
    try:
        statements = pglast.parse_sql(f"SELECT {expr}")
    except pglast.parser.ParseError as exc:
        raise ConfigurationError(f"expression {expr!r} does not parse: {exc}") from exc
    stmt = statements[0].stmt
    if len(statements) != 1 or not isinstance(stmt, ast.SelectStmt) or len(stmt.targetList or ()) != 1:
        raise ConfigurationError(f"expression {expr!r} must be exactly one scalar SQL expression")
    if stmt.fromClause or stmt.whereClause or stmt.groupClause or stmt.limitCount or stmt.sortClause:
        raise ConfigurationError(f"expression {expr!r} must be a scalar expression, not a query")
    target = stmt.targetList[0]  # type: ignore[index]
    if target.name:
        raise ConfigurationError(f"expression {expr!r} must not carry its own alias")
    return target.val  # type: ignore[no-any-return]


def expression_columns(expr: str) -> frozenset[str]:
    """The source column names `expr` reads (raises ConfigurationError on unsupported forms)."""
    collector = _ColumnRefCollector()
    collector(parse_expression(expr))
    if collector.problems:
        raise ConfigurationError(f"expression {expr!r} {collector.problems[0]}")
    return frozenset(collector.columns)


# ------------------------------------------------------------------------------ DEFAULT: the target's default

class _DefaultFinder(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found = False

    def visit_SetToDefault(self, ancestors: object, node: ast.SetToDefault) -> None:
        self.found = True


@functools.lru_cache(maxsize=4096)
def uses_default(expr: str) -> bool:
    """Whether `expr` says `DEFAULT`: the target column's own default (`coalesce(status, DEFAULT)`)."""
    finder = _DefaultFinder()
    finder(parse_expression(expr))
    return finder.found


def only_default(expr: str) -> bool:
    """Whether `expr` is `DEFAULT` and nothing else (leaving the column out says that: the database fills it)."""
    return isinstance(parse_expression(expr), ast.SetToDefault)


# What a default may be built of to count as a constant: the same value in the copy (computed in the source),
# the stream (in the target) and verify (in both), at any time.
_CONSTANT_NODES = (ast.A_Const, ast.TypeCast, ast.TypeName, ast.String, ast.Integer, ast.Float, ast.Boolean,
                   ast.BitString, ast.A_ArrayExpr)


_NOT_CONSTANT_BECAUSE = {"FuncCall": "it calls a function", "SQLValueFunction": "it reads the clock or the session",
                         "ColumnRef": "it reads a column", "SubLink": "it runs a query"}


class _NotConstant(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.culprits: list[str] = []

    def visit(self, ancestors: object, node: ast.Node) -> None:
        if not isinstance(node, _CONSTANT_NODES):
            self.culprits.append(type(node).__name__)

    @property
    def culprit(self) -> str | None:
        """Why the tree is no constant, the most telling reason first (a call inside arithmetic: the call)."""
        if not self.culprits:
            return None
        return next((_NOT_CONSTANT_BECAUSE[c] for c in self.culprits if c in _NOT_CONSTANT_BECAUSE),
                    "it is computed")


def default_value(default: str | None, *, filled_by: str = "") -> str:
    """The SQL `DEFAULT` stands for in an expression of a target column whose catalog default is `default`
    (pg_get_expr's text; None: no default, so NULL, as in an INSERT).

    The default's literal, without the casts around it: the same value a topology would write by hand
    (`coalesce(status, 'active')`), whose type comes from its context, since the copy computes it in the
    source, which lacks the service's own types (the apply casts to them).  `filled_by`: "identity" or
    "generated" when the database computes the column itself.  Raises ConfigurationError unless the
    default is a constant, which the copy, the stream and verify all compute the same: not a function
    call (now(), nextval()), not an identity.
    """
    if filled_by:
        raise ConfigurationError(f"the column is {'an identity' if filled_by == 'identity' else 'a generated'} "
                                 "column, which no constant stands for")
    if default is None:
        return "NULL"
    node = parse_expression(default)
    checker = _NotConstant()
    checker(node)
    literal = _unwrap_casts(node)
    culprit = checker.culprit or (_CLOCK_WORD if _clock_word(node, literal) else None)
    if culprit is not None:
        raise ConfigurationError(f"its default {default!r} is not a constant ({culprit}): the copy, the "
                                 "stream and verify could each compute another value; write the value in the "
                                 "expression instead")
    return RawStream()(literal)


# Date and time input reads these words as the clock ('now'::timestamptz is the time of the cast): a default
# written `('now'::text)::date`, as older schemas have it, is built of a literal and casts alone.
_CLOCK_WORDS = frozenset({"now", "today", "tomorrow", "yesterday"})
_CLOCK_TYPES = frozenset({"date", "time", "timetz", "timestamp", "timestamptz"})
_CLOCK_WORD = "a date or time cast of 'now', 'today', 'tomorrow' or 'yesterday' reads the clock"


def _clock_word(default: ast.Node, literal: ast.Node) -> bool:
    """Whether `default` casts a clock word (`literal`, its casts unwrapped) to a date or time type."""
    value = literal.val if isinstance(literal, ast.A_Const) else None
    if not (isinstance(value, ast.String) and (value.sval or "").strip().lower() in _CLOCK_WORDS):
        return False
    if not isinstance(default, ast.TypeCast) or default.typeName is None:
        return False
    names = default.typeName.names or ()
    return bool(names) and isinstance(names[-1], ast.String) and names[-1].sval in _CLOCK_TYPES


class _DefaultReplacer(Visitor):
    def __init__(self, value: ast.Node) -> None:
        super().__init__()
        self.value = value

    def visit_SetToDefault(self, ancestors: object, node: ast.SetToDefault) -> ast.Node:
        return self.value


@functools.lru_cache(maxsize=4096)
def with_default(expr: str, value: str) -> str:
    """`expr` with each `DEFAULT` replaced by `value` (from `default_value`); `expr` itself when it has none."""
    if not uses_default(expr):
        return expr
    node = parse_expression(expr)
    _DefaultReplacer(parse_expression(value))(node)
    return RawStream()(node)


# ------------------------------------------------------------------------------ readings for the plan
# What they need to know of the source table: each column's nullability and, for enums, its labels.

class _TypeLabels(Protocol):
    @property
    def enum_labels(self) -> tuple[str, ...] | None: ...


class _SourceColumn(Protocol):
    @property
    def not_null(self) -> bool: ...

    @property
    def type(self) -> _TypeLabels: ...


class SourceColumns(Protocol):
    """A source table as far as these readings look at it (the plan's `TableFacts` is one)."""

    @property
    def columns(self) -> Mapping[str, _SourceColumn]: ...


def _unwrap_casts(node: ast.Node) -> ast.Node:
    while isinstance(node, ast.TypeCast) and node.arg is not None:
        node = node.arg
    return node


def _column_name(node: ast.ColumnRef) -> str | None:
    return node.fields[0].sval if node.fields and isinstance(node.fields[0], ast.String) else None


def plain_column(expr: str) -> str | None:
    """The source column `expr` is, if it is a bare column reference (`status`), else None."""
    node = parse_expression(expr)
    if isinstance(node, ast.ColumnRef) and node.fields and isinstance(node.fields[0], ast.String):
        return node.fields[0].sval
    return None


def _node_may_be_null(node: ast.Node, source: SourceColumns) -> bool | None:
    node = _unwrap_casts(node)
    if isinstance(node, ast.ColumnRef):
        col = source.columns.get(_column_name(node) or "")
        return None if col is None else not col.not_null
    if isinstance(node, ast.A_Const):
        return bool(node.isnull)
    if isinstance(node, ast.CoalesceExpr):
        verdicts = [_node_may_be_null(a, source) for a in node.args or ()]
        if any(v is False for v in verdicts):
            return False
        return True if verdicts and all(v is True for v in verdicts) else None
    return None


def may_be_null(expr: str, source: SourceColumns) -> bool | None:
    """True if `expr` yields NULL for some source row, False if never, None if it cannot tell."""
    return _node_may_be_null(parse_expression(expr), source)


def _node_values(node: ast.Node, source: SourceColumns) -> frozenset[str] | None:
    node = _unwrap_casts(node)
    if isinstance(node, ast.ColumnRef):
        col = source.columns.get(_column_name(node) or "")
        labels = col.type.enum_labels if col is not None else None
        return frozenset(labels) if labels is not None else None
    if isinstance(node, ast.A_Const):
        if node.isnull:
            return frozenset()
        return frozenset({node.val.sval}) if isinstance(node.val, ast.String) and node.val.sval is not None else None
    if isinstance(node, ast.CoalesceExpr):
        out: set[str] = set()
        for arg in node.args or ():
            values = _node_values(arg, source)
            if values is None:
                return None
            out |= values
        return frozenset(out)
    return None


def possible_values(expr: str, source: SourceColumns) -> frozenset[str] | None:
    """Every text value `expr` can yield, when it is built only of enum columns and string constants."""
    return _node_values(parse_expression(expr), source)


_TRUNC_PRECISION = {"microseconds": 6, "microsecond": 6, "milliseconds": 3, "millisecond": 3}


def truncated_precision(expr: str) -> int | None:
    """Fractional-second digits `expr` keeps when it is `date_trunc('<unit>', ...)`, else None.

    date_trunc returns an unconstrained timestamp (typmod -1), so the result type alone would
    claim six digits even though `date_trunc('second', x)` keeps none.
    """
    node = parse_expression(expr)
    if not isinstance(node, ast.FuncCall) or not node.funcname or not node.args:
        return None
    name = node.funcname[-1]
    unit = node.args[0]
    if not isinstance(name, ast.String) or name.sval != "date_trunc" or not isinstance(unit, ast.A_Const):
        return None
    if not isinstance(unit.val, ast.String) or unit.val.sval is None:
        return None
    return _TRUNC_PRECISION.get(unit.val.sval.lower(), 0)


__all__ = [
    "SourceColumns",
    "default_value",
    "expression_columns",
    "may_be_null",
    "only_default",
    "parse_expression",
    "plain_column",
    "possible_values",
    "split_qualified",
    "truncated_precision",
    "uses_default",
    "with_default",
]
