"""Which source column a target column's expression can be written back into: the reverse stream's one reading.

Owns: `inverse_source_column`, the analysis both the ownership checks (`splitter.topology.ownership`: an
owner must be able to write its columns back) and the inversion (`splitter.topology.inversion`, which
re-exports it) build on; it lives below both so neither imports the other's sibling in a circle.
Must not: know the topology's classes, ownership or cutover states, or connect to a database.

A plain source column `c` is written back exactly; `coalesce(c, <anything>)` is written back into `c`
(a source NULL comes back as the value the target holds, which the coalesce projects onto itself when
it is not NULL: `coalesce(updated_at, created_at)` writes updated_at); `date_trunc('<unit>', c)` is written back
into `c` (the source then holds the truncated value, which projects onto itself, so verify still
matches; the source's finer digits of that row are given up, as the service never had them); anything
else (other functions, casts, arithmetic, constants) is not carried back.
"""

from __future__ import annotations

from pglast import ast

from splitter.topology.expressions import parse_expression


def inverse_source_column(expr: str) -> tuple[str, bool] | None:
    """The source column a target column's expression can be written back into, and whether exactly.

    `c` → (c, True); `coalesce(c, ...)` and `date_trunc('unit', c)` → (c, False); else None.
    """
    node = parse_expression(expr)
    exact = True
    if isinstance(node, ast.FuncCall) and _is_date_trunc(node):
        node, exact = (node.args or ())[1], False
    if isinstance(node, ast.CoalesceExpr):
        args = node.args or ()
        if len(args) < 2:
            return None
        node, exact = args[0], False
    if isinstance(node, ast.ColumnRef):
        fields = node.fields or ()
        if len(fields) == 1 and isinstance(fields[0], ast.String) and fields[0].sval:
            return fields[0].sval, exact
    return None


def _is_date_trunc(node: ast.FuncCall) -> bool:
    """`date_trunc('<unit>', <one argument>)`, plain or as pg_catalog.date_trunc."""
    names = [n.sval for n in node.funcname or () if isinstance(n, ast.String)]
    args = node.args or ()
    return (names in (["date_trunc"], ["pg_catalog", "date_trunc"]) and len(args) == 2
            and isinstance(args[0], ast.A_Const) and isinstance(args[0].val, ast.String))


__all__ = ["inverse_source_column"]
