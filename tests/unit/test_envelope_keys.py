"""Row keys name their table first, and commit records count rows per table (the change-log layout workers
skim by).  Pure: encoders and decoders on bytes."""

from __future__ import annotations

import orjson
import pytest

from splitter.core import envelope
from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.core.errors import MalformedMessageError


def _key(schema: str, table: str, after: dict[str, str | None], key_columns: tuple[str, ...] = ("id",)) -> bytes:
    columns = tuple(ColumnSchema(c, "text", c in key_columns) for c in after)
    key, _ = envelope.encode_row(database="db", relation=RelationSchema(schema, table, columns), op="c",
                                 before=None, after=after, unchanged_toast=(), commit_lsn=1, xid=1, sequence=0,
                                 ts_ms=1, now_ms=1)
    return key


def test_a_row_key_holds_its_table_then_its_primary_key() -> None:
    key = _key("public", "posts", {"id": "7", "content": "x"})
    assert orjson.loads(key) == ["public.posts", {"id": "7"}]
    assert key.startswith(envelope.ROW_KEY_PREFIX)
    assert key.startswith(envelope.row_key_prefixes([b"public.posts"]))
    # A table whose name another's begins with is not taken for it.
    assert not key.startswith(envelope.row_key_prefixes([b"public.post", b"public.posts_archive"]))
    # A table without a primary key still says which table it is.
    assert orjson.loads(_key("public", "log", {"a": "1"}, key_columns=())) == ["public.log", None]


@pytest.mark.parametrize("columns", [("id",), ("table",), ("table", "key"), ("[",)])
def test_a_key_the_previous_release_wrote_is_never_taken_for_one_that_names_its_table(
        columns: tuple[str, ...]) -> None:
    # It was the primary key's object alone, whatever its columns are called.
    legacy = orjson.dumps({c: "public.posts" for c in columns})
    assert not legacy.startswith(envelope.ROW_KEY_PREFIX)


@pytest.mark.parametrize("table", ['we"ird', "back\\slash", "ünï", "with,comma"])
def test_a_table_name_that_json_escapes_still_matches_its_own_prefix_only(table: str) -> None:
    key = _key("public", table, {"id": "1"})
    assert key.startswith(envelope.row_key_prefixes([f"public.{table}".encode()]))
    assert not key.startswith(envelope.row_key_prefixes([b"public.posts", b"public.we"]))


def test_a_commit_record_counts_rows_per_table() -> None:
    raw = envelope.encode_commit(commit_lsn=10, end_lsn=11, xid=3, events=4, ts_ms=1,
                                 tables={"public.posts": 2, "public.topics": 1})
    marker = envelope.decode_commit(raw)
    assert marker.events == 4 and marker.tables == {"public.posts": 2, "public.topics": 1}
    earlier = orjson.dumps({"op": "commit", "txId": 3, "lsn": 10, "end_lsn": 11, "events": 4, "ts_ms": 1})
    assert envelope.decode_commit(earlier).tables is None  # a log written before commits counted per table


@pytest.mark.parametrize("tables", [[1], {"public.posts": -1}, {"public.posts": "2"}, {"public.posts": True},
                                    {"public.posts": 3, "public.topics": 2}])
def test_a_commit_record_with_unreadable_table_counts_is_malformed(tables: object) -> None:
    raw = orjson.dumps({"op": "commit", "txId": 3, "lsn": 10, "end_lsn": 11, "events": 4, "ts_ms": 1,
                        "tables": tables})
    with pytest.raises(MalformedMessageError):
        envelope.decode_commit(raw)
