"""The worker's schema-change policy on values alone: what stops it, what it goes on through, and how a restart
after a type-change stop takes that change (the pipeline through real servers: tests/e2e/test_any_schema_ddl.py).
"""

from __future__ import annotations

import pytest

from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.pipeline.worker.schema_policy import SchemaChangeError, SchemaPolicy
from splitter.topology.model import Service, Table, Topology

ROUTES = tuple(Topology("src", (Service("svc", database="svc_db", tables=(
    Table("items", source="items", key=("id",), columns={"id": "id", "n": "n * 2"}),)),)).routes())


def _header(n_type: str, *extra: str) -> bytes:
    columns = (ColumnSchema("id", "integer", True), ColumnSchema("n", n_type, False),
               *(ColumnSchema(name, "text", False) for name in extra))
    return RelationSchema("public", "items", columns).header_bytes()


def test_a_change_the_topology_does_not_read_goes_on() -> None:
    policy = SchemaPolicy("svc", ROUTES)
    policy.relation(b"public.items", _header("integer"), 1)
    assert policy.relation(b"public.items", _header("integer", "added"), 2).qualified == "public.items"


def test_a_changed_type_stops_with_the_shape_a_restart_may_take() -> None:
    policy = SchemaPolicy("svc", ROUTES)
    policy.relation(b"public.items", _header("integer"), 1)
    with pytest.raises(SchemaChangeError, match="changed the type of n integer -> bigint") as info:
        policy.relation(b"public.items", _header("bigint"), 7)
    assert (info.value.table, info.value.offset, info.value.shape) == ("public.items", 7, _header("bigint"))


def test_a_dropped_column_stops_and_only_topology_py_can_change_that() -> None:
    policy = SchemaPolicy("svc", ROUTES)
    dropped = RelationSchema("public", "items", (ColumnSchema("id", "integer", True),)).header_bytes()
    with pytest.raises(SchemaChangeError, match="no longer has column") as info:
        policy.relation(b"public.items", dropped, 3)
    assert info.value.shape is None  # nothing to acknowledge: a restart would stop again


def test_the_restart_takes_the_acknowledged_shape_and_no_other() -> None:
    restarted = SchemaPolicy("svc", ROUTES)
    restarted.start({}, {("public.items", _header("bigint"))})
    restarted.relation(b"public.items", _header("integer"), 5)  # the changing transaction, read again
    restarted.relation(b"public.items", _header("bigint"), 7)  # went on
    with pytest.raises(SchemaChangeError, match="bigint -> numeric"):
        restarted.relation(b"public.items", _header("numeric"), 9)


def test_the_shape_stored_with_the_checkpoint_is_the_next_starts_baseline() -> None:
    """A worker restarted between a type change and the first row of the new shape still sees the change."""
    first = SchemaPolicy("svc", ROUTES)
    first.relation(b"public.items", _header("integer"), 3)
    first.relation(b"public.items", _header("integer", "added"), 6)
    assert first.shapes_through(4) == {"public.items": (3, _header("integer"))}
    assert first.shapes_through(6) == {"public.items": (6, _header("integer", "added"))}
    first.committed(6)
    assert first.shapes_through(100) == {}  # stored: nothing new
    stored = {"public.items": _header("integer", "added")}

    second = SchemaPolicy("svc", ROUTES)
    second.start(stored, set())
    with pytest.raises(SchemaChangeError, match="integer -> bigint"):
        second.relation(b"public.items", _header("bigint", "added"), 8)


def test_reading_again_from_the_checkpoint_judges_nothing_it_read_before() -> None:
    """A replay goes back through older shapes of the log: no change to stop at, and the stored shape follows."""
    policy = SchemaPolicy("svc", ROUTES)
    policy.start({"public.items": _header("bigint")}, set())
    policy.relation(b"public.items", _header("bigint"), 50)
    policy.committed(50)
    policy.rewound(50)  # a replay from offset 10: the history there had n integer
    policy.relation(b"public.items", _header("integer"), 11)
    assert policy.shapes_through(11) == {"public.items": (11, _header("integer"))}
    policy.relation(b"public.items", _header("bigint"), 30)  # the change, gone through before
    with pytest.raises(SchemaChangeError, match="bigint -> numeric"):  # a new one past what was read
        policy.relation(b"public.items", _header("numeric"), 51)


def test_a_column_only_the_row_filter_reads_is_read_too() -> None:
    filtered = tuple(Topology("src", (Service("svc", database="svc_db", tables=(
        Table("items", source="items", key=("id",), columns={"id": "id"}, where="n > 0"),)),)).routes())
    policy = SchemaPolicy("svc", filtered)
    policy.relation(b"public.items", _header("integer"), 1)
    with pytest.raises(SchemaChangeError, match="changed the type of n integer -> bigint"):
        policy.relation(b"public.items", _header("bigint"), 2)


def test_two_changes_stopped_at_before_the_checkpoint_passed_the_first_are_both_taken() -> None:
    restarted = SchemaPolicy("svc", ROUTES)
    restarted.start({"public.items": _header("integer")},
                    {("public.items", _header("bigint")), ("public.items", _header("numeric"))})
    restarted.relation(b"public.items", _header("bigint"), 5)
    restarted.relation(b"public.items", _header("numeric"), 6)
