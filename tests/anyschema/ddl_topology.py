"""The any-schema split of `ddl.sql`, for tests only: one service per table whose source schema changes."""

from __future__ import annotations

from splitter.topology.model import Service, Table, Topology

TOPOLOGY = Topology(
    source_database="anyschema",
    services=(
        Service("widened_int", database="widened_int_db", tables=(
            Table("widened_int", source="widened_int", key=("id",), columns={"id": "id", "n": "n", "note": "note"}),
        )),
        Service("widened_text", database="widened_text_db", tables=(
            Table("widened_text", source="widened_text", key=("id",),
                  columns={"id": "id", "label": "label", "note": "note"}),
        )),
        Service("grown", database="grown_db", tables=(
            Table("grown", source="grown", key=("id",), columns={"id": "id", "v": "v"}),
        )),
        Service("shrunk", database="shrunk_db", tables=(
            Table("shrunk", source="shrunk", key=("id",), columns={"id": "id", "kept": "kept", "gone": "gone"}),
        )),
    ),
)
