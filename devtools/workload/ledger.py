"""The routed workload's ledger: the last value it got a success for, per row and column, and how a
target column's expression maps it.

Owns: ``Ledger`` (per source table and key, the last value acknowledged for every column written, or
"deleted"), the row keys it is indexed by, and ``evaluate``: the topology's column expressions computed
in Python for the forms topology.py uses (a column, ``coalesce(column, constants)``,
``date_trunc('second'|'milliseconds', column)``, constants and casts), so a check can say what every
database must hold without asking the code under test.
Must not: connect to a database, or guess: an expression it cannot compute raises ``Unknown`` and that
column is not compared.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pglast import ast

from splitter.topology.expressions import parse_expression

Key = tuple[tuple[str, Any], ...]  # (source key column, value) pairs, sorted by column
Row = dict[str, Any]  # source column -> last value acknowledged

_TRUNC_DIGITS = {"second": 0, "seconds": 0, "milliseconds": 3, "millisecond": 3, "microseconds": 6,
                 "microsecond": 6}


class Unknown(Exception):
    """An expression `evaluate` cannot compute (or one reading a column the ledger does not know)."""


def row_key(key: Mapping[str, Any]) -> Key:
    return tuple(sorted(key.items()))


def truncate(value: Any, digits: int | None) -> Any:
    """A timestamp cut to `digits` fractional-second digits (as the column stores it); other values as they are."""
    if not isinstance(value, datetime) or digits is None or digits >= 6:
        return value
    step = 10 ** (6 - digits)
    return value.replace(microsecond=value.microsecond // step * step)


def _constant(node: ast.A_Const) -> Any:
    if node.isnull:
        return None
    val = node.val
    if isinstance(val, ast.String):
        return val.sval
    if isinstance(val, ast.Integer):
        return val.ival
    if isinstance(val, ast.Boolean):
        return bool(val.boolval)
    raise Unknown(f"constant {val!r}")


def _evaluate(node: ast.Node, row: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.TypeCast) and node.arg is not None:
        return _evaluate(node.arg, row)
    if isinstance(node, ast.A_Const):
        return _constant(node)
    if isinstance(node, ast.ColumnRef):
        fields = node.fields or ()
        name = fields[0].sval if len(fields) == 1 and isinstance(fields[0], ast.String) else None
        if name is None or name not in row:
            raise Unknown(f"column {name!r}")
        return row[name]
    if isinstance(node, ast.CoalesceExpr):
        for arg in node.args or ():
            value = _evaluate(arg, row)
            if value is not None:
                return value
        return None
    args: tuple[ast.Node, ...] = tuple(getattr(node, "args", None) or ())
    if isinstance(node, ast.FuncCall) and node.funcname and len(args) == 2:
        name = node.funcname[-1]
        unit = _evaluate(args[0], row)
        if isinstance(name, ast.String) and name.sval == "date_trunc" and str(unit).lower() in _TRUNC_DIGITS:
            value = _evaluate(args[1], row)
            return None if value is None else truncate(value, _TRUNC_DIGITS[str(unit).lower()])
    raise Unknown(type(node).__name__)


def evaluate(expr: str, row: Mapping[str, Any]) -> Any:
    """The value of topology expression `expr` over source `row`; raises Unknown when it cannot tell."""
    return _evaluate(parse_expression(expr), row)


class Ledger:
    """Every acknowledged write, as the rows it leaves: thread-safe, updated only after a commit returned."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, dict[Key, Row | None]] = {}

    def inserted(self, table: str, key: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        with self._lock:
            self._rows.setdefault(table, {})[row_key(key)] = {**values, **key}

    def updated(self, table: str, key: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        with self._lock:
            rows = self._rows.setdefault(table, {})
            rows[row_key(key)] = {**(rows.get(row_key(key)) or {}), **values, **key}

    def deleted(self, table: str, key: Mapping[str, Any]) -> None:
        with self._lock:
            self._rows.setdefault(table, {})[row_key(key)] = None

    def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        with self._lock:
            row = self._rows.get(table, {}).get(row_key(key))
            return None if row is None else dict(row)

    def snapshot(self) -> dict[str, dict[Key, Row | None]]:
        """A copy: source table -> key -> the row's known columns (None: deleted)."""
        with self._lock:
            return {t: {k: (None if r is None else dict(r)) for k, r in rows.items()} for t, rows in self._rows.items()}

    def __len__(self) -> int:
        with self._lock:
            return sum(len(rows) for rows in self._rows.values())
