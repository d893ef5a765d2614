"""The any-schema split of table shapes, for tests only: one service per shape of `shapes.sql`."""

from __future__ import annotations

from splitter.topology.model import Service, Table, Topology

WIDE_COLUMNS = [f"c{i}" for i in range(1, 1000)]

TOPOLOGY = Topology(
    source_database="anyschema",
    services=(
        Service("quoted", database="quoted_db", schema='Target "Schema"', tables=(
            Table('Mixed Case "T"', source='Odd "Schema".Mixed Case "T"', key=("select",), columns={
                "select": '"select"', "Col With Space": '"Col With Space"', 'quo"te': '"quo""te"',
                "UPPER": '"UPPER"'}),
        )),
        Service("partition", database="partition_db", tables=(
            Table("events", source="events", key=("id", "region"),
                  columns={"region": "region", "id": "id", "payload": "payload"}),
        )),
        Service("generated", database="generated_db", tables=(
            Table("items", source="items", key=("id",), columns={"id": "id", "price": "price", "qty": "qty"}),
        )),
        Service("coded", database="coded_db", tables=(
            Table("coded", source="coded", key=("code",), columns={"id": "id", "code": "code", "note": "note"}),
        )),
        Service("wide", database="wide_db", tables=(
            Table("wide", source="wide", key=("id",), columns={"id": "id", **{c: c for c in WIDE_COLUMNS}}),
        )),
    ),
)
