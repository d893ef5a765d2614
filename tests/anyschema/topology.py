"""The any-schema split, for tests only: one service per concern over `schema.sql`.

Every column maps to itself, so a target value must have exactly the source value's text form.
"""

from __future__ import annotations

from splitter.topology.model import Service, Table, Topology
from tests.anyschema.values import VALUES, XML_VALUES

TOPOLOGY = Topology(
    source_database="anyschema",
    services=(
        Service("types", database="types_db", tables=(
            Table("all_types", source="all_types", key=("id",),
                  columns={"id": "id", **{c: c for c in (*VALUES, *XML_VALUES)}}),
        )),
    ),
)
