"""Loading `topology.py`: run it, take its TOPOLOGY, and check everything that needs no database.

Owns: `load_topology` (the one way a topology file becomes a `Topology`), `validate` (the checks of
the declarations themselves, `Topology.validate`, then the ownership checks of shared tables,
`splitter.topology.ownership.ownership_problems`, which build on the model and so cannot live in it),
and `expression_origin` (the line of one column's expression, read from the file's Python syntax tree,
so a problem of an expression is reported where the expression is, not where its `Table(` starts).
Must not: connect to a database (`splitter plan` checks against the catalogs) or render SQL.
"""

from __future__ import annotations

import ast
import dataclasses
import runpy
from pathlib import Path

from splitter.core.errors import ConfigurationError
from splitter.topology.model import Origin, Table, Topology
from splitter.topology.ownership import ownership_problems

# Where `columns` sits among Table's positional arguments (Table("t", "src", ("id",), {...})).
_COLUMNS_POSITION = [f.name for f in dataclasses.fields(Table)].index("columns")


def _column_lines(file: str) -> dict[int, dict[str, int]]:
    """For each call on a line of `file` whose `columns` argument is a dict literal: column name → the line
    of its expression.  A line with two such calls is left out (which one declared the table is unknown)."""
    try:
        tree = ast.parse(Path(file).read_text(), filename=file)
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[int, dict[str, int]] = {}
    ambiguous: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        columns = next((k.value for k in node.keywords if k.arg == "columns"), None)
        if columns is None and len(node.args) > _COLUMNS_POSITION:
            columns = node.args[_COLUMNS_POSITION]
        if not isinstance(columns, ast.Dict):
            continue
        lines = {key.value: value.lineno for key, value in zip(columns.keys, columns.values, strict=True)
                 if isinstance(key, ast.Constant) and isinstance(key.value, str)}
        # The frame that declared a Table reports the line its call starts on.
        if node.lineno in found:
            ambiguous.add(node.lineno)
        found[node.lineno] = lines
    return {line: lines for line, lines in found.items() if line not in ambiguous}


def expression_origin(table: Table, column: str, lines: dict[int, dict[str, int]] | None = None) -> Origin:
    """Where the expression of `table`'s `column` is written: its own line when the table's columns are a dict
    literal in the `Table(...)` call, else the line of the `Table(`.  `lines`: `_column_lines` of the
    table's file, when the caller has read it already (the file is read now, not cached: it may change)."""
    if lines is None:
        lines = _column_lines(table.origin.file)
    line = lines.get(table.origin.line, {}).get(column)
    return Origin(table.origin.file, line) if line is not None else table.origin


def _at_expressions(topology: Topology, problems: list[str]) -> list[str]:
    """`problems` with each one about a column's expression moved to the expression's line.

    `Topology.validate` names a column's problem as "<table origin>: <service>.<table>.<column>: ..."; the
    prefix is rebuilt here from the same objects (no pattern over the text), and only its origin changes."""
    moved: dict[str, str] = {}
    files: dict[str, dict[int, dict[str, int]]] = {}
    for service in topology.services:
        for table in service.tables:
            if table.origin.file not in files:
                files[table.origin.file] = _column_lines(table.origin.file)
            for column in table.columns:
                origin = expression_origin(table, column, files[table.origin.file])
                if origin != table.origin:
                    where = f"{service.name}.{table.name}.{column}: "
                    moved[f"{table.origin}: {where}"] = f"{origin}: {where}"
    out = []
    for problem in problems:
        prefix = next((p for p in moved if problem.startswith(p)), None)
        out.append(moved[prefix] + problem[len(prefix):] if prefix is not None else problem)
    return out


def validate(topology: Topology) -> None:
    """Every check that needs no database; raises ConfigurationError naming file and line of each problem."""
    heading = "topology is invalid:\n  "
    try:
        topology.validate()
    except ConfigurationError as exc:
        text = str(exc)
        if not text.startswith(heading):
            raise
        problems = _at_expressions(topology, text[len(heading):].split("\n  "))
        raise ConfigurationError(heading + "\n  ".join(problems)) from None
    problems = ownership_problems(topology)
    if problems:
        raise ConfigurationError(heading + "\n  ".join(problems))


def load_topology(path: str | Path) -> Topology:
    """Run `path` (a topology.py) and return its `TOPOLOGY`, validated."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"topology file {path} does not exist")
    try:
        namespace = runpy.run_path(str(path))
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"{path}: cannot load topology: {type(exc).__name__}: {exc}") from exc
    topology = namespace.get("TOPOLOGY")
    if not isinstance(topology, Topology):
        raise ConfigurationError(f"{path}: must define TOPOLOGY = Topology(...)")
    validate(topology)
    return topology


__all__ = ["expression_origin", "load_topology", "validate"]
