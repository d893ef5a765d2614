"""`splitter plan`'s findings about a column point at the line of that column's expression, not at `Table(`.

The rules build findings from facts and read no file, so they carry the `Table(` line; `build_plan` moves each
one about a route's column to its expression's line (`at_expression_lines`).  No server needed: the findings
are written by hand here, as the rules would write them.
"""

from __future__ import annotations

from pathlib import Path

from splitter.ops.plan.facts import ERROR, Finding
from splitter.ops.plan.report import at_expression_lines
from splitter.topology.loading import load_topology

TOPOLOGY = """from splitter.topology import Service, Table, Topology

TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("user", database="user_db", tables=(
            Table("users", source="users", key=("id",), columns={
                "id": "id",
                "name": "coalesce(nickname, '')",
            }),
        )),
    ),
)
"""


def test_a_column_finding_moves_to_its_expression_line_and_others_stay(tmp_path: Path) -> None:
    path = tmp_path / "topology.py"
    path.write_text(TOPOLOGY)
    lines = TOPOLOGY.splitlines()
    table_line = next(i for i, text in enumerate(lines, 1) if "Table(" in text)
    name_line = next(i for i, text in enumerate(lines, 1) if '"name":' in text)
    topology = load_topology(path)
    [route] = list(topology.routes())
    origin = str(route.table.origin)
    assert origin.endswith(f":{table_line}")
    findings = [
        Finding(ERROR, "source-column-missing", "reads nickname, which users lacks", "user", "public.users",
                "name", origin),
        Finding(ERROR, "key-outside-primary-key", "key (id) ...", "user", "public.users", None, origin),
        Finding(ERROR, "connection-failed", "cannot connect", "user", None, None, "elsewhere:1"),
    ]
    # The route's target table is `public.users` (the service database's default schema).
    moved = at_expression_lines(topology, findings)
    assert moved[0].origin == f"{path}:{name_line}"
    assert [f.origin for f in moved[1:]] == [origin, "elsewhere:1"]
