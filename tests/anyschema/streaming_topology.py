"""The any-schema split of `streaming.sql`, for tests only: truncates, replica identities, a subscriber of its own
shape.  Every mapped column maps to itself; `subscribed`'s service columns of its own are not in it."""

from __future__ import annotations

from splitter.topology.model import Service, Table, Topology


def _same(name: str, *columns: str, key: tuple[str, ...] = ("id",)) -> Table:
    return Table(name, source=name, key=key, columns={c: c for c in columns})


TOPOLOGY = Topology(
    source_database="anyschema",
    services=(
        Service("truncated", database="truncated_db", tables=(
            _same("trunc_a", "id", "v"),
            _same("trunc_b", "id", "a_id", "v"),
            _same("events", "region", "id", "payload", key=("id", "region")),
        )),
        Service("other", database="other_db", tables=(_same("trunc_c", "id", "v"),)),
        Service("identity", database="identity_db", tables=(
            _same("ri_default", "id", "v", "n", "big"),
            _same("ri_full", "id", "v", "n", "big"),
        )),
        Service("subscriber", database="subscriber_db", tables=(_same("subscribed", "id", "name", "qty", "big"),)),
    ),
)
