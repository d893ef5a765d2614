"""A backfill chunk's key range: how its high watermark names it, and which routes can be compared with it."""

from __future__ import annotations

import orjson
import pytest

from connectors.pg.backfill_deletes import KeyRange, key_sources
from splitter.core import messages
from splitter.core.envelope import ColumnSchema, ControlMessage, RelationSchema
from splitter.core.errors import MalformedMessageError
from splitter.pipeline.worker.window import read_watermark
from splitter.topology.model import Route, Service, Table

MARK = {"service": "post", "table": "public.posts", "job": 3, "chunk": 2, "mark": "high", "final": False}
RELATION = RelationSchema("public", "follows", (ColumnSchema("a", "integer", True), ColumnSchema("b", "text", True),
                                                 ColumnSchema("v", "text", False)))


def _mark(**extra: object) -> ControlMessage:
    return ControlMessage(1, messages.BACKFILL, orjson.dumps({**MARK, **extra}).decode(), False, 0)


def _route(key: tuple[str, ...], columns: dict[str, str]) -> Route:
    table = Table("follows", source="follows", key=key, columns=columns)
    return Route(Service("s", database="d", tables=(table,)), table, "public", "follows")


def test_a_high_watermark_names_its_key_range_or_none() -> None:
    assert read_watermark(7, _mark()).key_range is None  # an older backfill, or --no-delete
    assert read_watermark(7, _mark(range=[None, ["5", "x"]])).key_range == KeyRange(None, ("5", "x"))
    assert read_watermark(7, _mark(range=[["5", "x"], None])).key_range == KeyRange(("5", "x"), None)
    for bad in ([None], "5", [None, "5"], [None, [5]]):
        with pytest.raises(MalformedMessageError, match="offset 7"):
            read_watermark(7, _mark(range=bad))


def test_a_key_maps_back_only_when_it_copies_the_source_key_column_for_column() -> None:
    assert key_sources(_route(("y", "x"), {"x": "a", "y": "b", "w": "v"}), RELATION) == {"a": "x", "b": "y"}
    assert "computed ('a + 1')" in str(key_sources(_route(("x", "y"), {"x": "a + 1", "y": "b"}), RELATION))
    assert "computed" in str(key_sources(_route(("x", "y"), {"x": "coalesce(a, 0)", "y": "b"}), RELATION))
    assert "column for column" in str(key_sources(_route(("x",), {"x": "a", "y": "b"}), RELATION))
    assert "column for column" in str(key_sources(_route(("x", "y"), {"x": "a", "y": "a"}), RELATION))
