"""The any-schema split of transaction shapes, for tests only: the ledger, and 100 tables in one service."""

from __future__ import annotations

from splitter.topology.model import Service, Table, Topology

PARTS = [f"part_{i:03d}" for i in range(1, 101)]

TOPOLOGY = Topology(
    source_database="anyschema",
    services=(
        Service("ledger", database="ledger_db", tables=(
            Table("ledger", source="ledger", key=("id",), columns={"id": "id", "what": "what", "amount": "amount"}),
        )),
        Service("parts", database="parts_db", tables=tuple(
            Table(name, source=name, key=("id",), columns={"id": "id", "v": "v"}) for name in PARTS)),
    ),
)
