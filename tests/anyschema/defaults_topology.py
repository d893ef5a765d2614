"""The any-schema split of target defaults, for tests only: `coalesce(<source column>, DEFAULT)`.

`note` is mapped plainly (a source NULL stays NULL over the target's default: plan warns); `plain` takes
`DEFAULT` where the target column has none (it stands for NULL, as in an INSERT).
"""

from __future__ import annotations

from splitter.topology.model import Service, Table, Topology

TOPOLOGY = Topology(
    source_database="anyschema",
    services=(
        Service("accounts", database="accounts_db", tables=(
            Table("accounts", source="accounts", key=("id",), columns={
                "id": "id",
                "status": "coalesce(status, DEFAULT)",
                "score": "coalesce(score, DEFAULT) + 0",
                "tags": "coalesce(tags, DEFAULT)",
                "note": "note",
                "plain": "coalesce(note, DEFAULT)",
            }),
        )),
    ),
)
