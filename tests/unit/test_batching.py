"""The collapsed batch must end in the same state as applying each change in order."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitter.core.batching import Batch, Key, Segment, Step, Truncate, by_transaction, replacing
from splitter.core.envelope import ColumnSchema, RelationSchema, Row, RowChange

REL = RelationSchema(
    "public", "posts",
    (ColumnSchema("id", "text", True), ColumnSchema("content", "text", False), ColumnSchema("n", "int", False)),
)
KEYS = [f"k{i}" for i in range(5)]


def change(op: str, before: Row | None, after: Row | None, unchanged: tuple[str, ...] = ()) -> RowChange:
    return RowChange(op, "public.posts", before, after, unchanged, 1, 1, 0, 0)  # type: ignore[arg-type]


def apply_collapsed(db: dict[Key, Row], batch: Batch) -> None:
    apply_steps(db, batch.steps())


def apply_steps(db: dict[Key, Row], steps: Sequence[Step], unique: str | None = None) -> None:
    """Apply steps the way the SQL apply does: deletes, then partial updates, then upserts.

    With `unique`, each row written is checked at once against a unique index on that column, as
    PostgreSQL checks a non-deferrable one (row by row, within a statement).
    """
    def check(key: Key) -> None:
        if unique is not None:
            taken = [k for k, r in db.items() if k != key and r.get(unique) == db[key].get(unique)]
            assert not taken, f"unique violation: {key} takes {db[key].get(unique)!r} from {taken}"

    for step in steps:
        if isinstance(step, Truncate):
            db.clear()
            continue
        assert isinstance(step, Segment)
        for table in step.tables.values():
            for key in table.deletes:
                db.pop(key, None)
            moved: dict[Key, Row] = {}
            for new_key, partial in table.partial.items():
                existing = db.pop(partial.db_key)  # KeyError here = the UPDATE would miss its row
                merged = {**existing, **partial.values}
                moved[new_key] = merged
            for new_key, row in moved.items():
                assert new_key not in db, "partial update would violate the key"
                db[new_key] = row
                check(new_key)
            for key, row in table.full.items():
                db[key] = dict(row)
                check(key)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[dict[Key, Row], list[RowChange]]:
    source: dict[str, Row] = {}
    for k in draw(st.sets(st.sampled_from(KEYS), max_size=3)):
        source[k] = {"id": k, "content": draw(st.sampled_from(["a", "b", "BIG"])), "n": "0"}
    initial = {(k,): dict(v) for k, v in source.items()}
    changes: list[RowChange] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["insert", "update", "delete", "truncate"]))
        free = [k for k in KEYS if k not in source]
        if kind == "insert" and free:
            k = draw(st.sampled_from(free))
            row = {"id": k, "content": draw(st.sampled_from(["x", "BIG2"])), "n": "1"}
            source[k] = row
            changes.append(change("c", None, dict(row)))
        elif kind == "update" and source:
            k = draw(st.sampled_from(sorted(source)))
            old = source.pop(k)
            new_k = draw(st.sampled_from([k, *free])) if draw(st.booleans()) else k
            toast_unchanged = draw(st.booleans())
            new = dict(old, id=new_k, n=str(int(old["n"] or 0) + 1))
            if not toast_unchanged:
                new["content"] = draw(st.sampled_from(["y", "z"]))
            source[new_k] = new
            full_identity = draw(st.booleans())
            before = dict(old) if full_identity else ({"id": k} if new_k != k else None)
            if toast_unchanged:
                after = {c: v for c, v in new.items() if c != "content"}
                changes.append(change("u", before, after, ("content",)))
            else:
                changes.append(change("u", before, dict(new)))
        elif kind == "delete" and source:
            k = draw(st.sampled_from(sorted(source)))
            del source[k]
            changes.append(change("d", {"id": k}, None))
        elif kind == "truncate":
            source.clear()
            changes.append(change("t", None, None))
    return initial, changes


@settings(max_examples=600, deadline=None)
@given(scenario())
def test_collapsed_batch_equals_sequential_apply(case: tuple[dict[Key, Row], list[RowChange]]) -> None:
    initial, changes = case
    expected = {k: dict(v) for k, v in initial.items()}
    for c in changes:  # the reference: one change at a time
        if c.op == "t":
            expected.clear()
        elif c.op == "c":
            assert c.after is not None
            expected[(c.after["id"],)] = dict(c.after)
        elif c.op == "d":
            assert c.before is not None
            del expected[(c.before["id"],)]
        else:
            assert c.after is not None
            old_key = (c.before["id"],) if c.before is not None else (c.after["id"],)
            row = expected.pop(old_key)
            row.update(c.after)
            expected[(c.after["id"],)] = row
    batch = Batch()
    for c in changes:
        batch.add(c, REL)
    actual = {k: dict(v) for k, v in initial.items()}
    apply_collapsed(actual, batch)
    assert actual == expected


def test_truncate_cuts_the_batch_into_ordered_steps() -> None:
    batch = Batch()
    batch.add(change("c", None, {"id": "a", "content": "1", "n": "1"}), REL)
    batch.add(change("t", None, None), REL)
    batch.add(change("c", None, {"id": "b", "content": "1", "n": "1"}), REL)
    kinds = [type(s).__name__ for s in batch.steps()]
    assert kinds == ["Segment", "Truncate", "Segment"]


def test_unchanged_toast_without_prior_image_becomes_a_partial_update() -> None:
    batch = Batch()
    batch.add(change("u", None, {"id": "a", "n": "2"}, ("content",)), REL)
    (segment,) = batch.steps()
    assert isinstance(segment, Segment)
    table = segment.tables["public.posts"]
    assert table.partial[("a",)].unchanged == frozenset({"content"})
    assert not table.full


def _rename(key: str, content: str, lsn: int) -> RowChange:
    return RowChange("u", "public.posts", None, {"id": key, "content": content, "n": "1"}, (), lsn, lsn, 0, 0)


def _posts(*rows: tuple[str, str]) -> dict[Key, Row]:
    return {(k,): {"id": k, "content": c, "n": "1"} for k, c in rows}


def test_a_value_moved_over_transactions_applies_transaction_by_transaction_but_not_collapsed() -> None:
    # Valid at every commit: u5 gives its value up, u6 takes it, u5 changes again.
    history = [_rename("u5", "old", 10), _rename("u6", "five", 11), _rename("u5", "old", 12)]
    collapsed = Batch()
    for c in history:
        collapsed.add(c, REL)
    db = _posts(("u5", "five"), ("u6", "six"))
    with pytest.raises(AssertionError, match="unique violation"):  # u6 takes 'five' before u5 gives it up
        apply_steps(db, collapsed.steps(), unique="content")
    runs = by_transaction((c, REL) for c in history)
    assert [lsn for lsn, _ in runs] == [10, 11, 12]
    db = _posts(("u5", "five"), ("u6", "six"))
    for _, steps in runs:
        apply_steps(db, steps, unique="content")
    assert db == _posts(("u5", "old"), ("u6", "five"))


def test_a_swap_applies_only_when_its_rows_are_replaced() -> None:
    swap = [_rename("a", "two", 7), _rename("b", "one", 7)]
    ((lsn, steps),) = by_transaction((c, REL) for c in swap)
    assert lsn == 7
    db = _posts(("a", "one"), ("b", "two"), ("c", "three"))
    with pytest.raises(AssertionError, match="unique violation"):  # no order of single-row updates does a swap
        apply_steps(db, steps, unique="content")
    replaced = replacing(steps, {"public.posts"})
    assert replaced is not None
    (segment,) = replaced
    assert isinstance(segment, Segment)
    assert set(segment.tables["public.posts"].deletes) == {("a",), ("b",)}
    db = _posts(("a", "one"), ("b", "two"), ("c", "three"))
    apply_steps(db, replaced, unique="content")
    assert db == _posts(("a", "two"), ("b", "one"), ("c", "three"))
    assert replacing(steps, {"public.other"}) == steps  # tables not named are left as they are


def test_rows_only_partly_known_cannot_be_replaced() -> None:
    partial = RowChange("u", "public.posts", None, {"id": "a", "n": "2"}, ("content",), 5, 5, 0, 0)
    ((_, steps),) = by_transaction([(partial, REL), (_rename("b", "x", 5), REL)])
    assert replacing(steps, {"public.posts"}) is None


@settings(max_examples=300, deadline=None)
@given(scenario(), st.lists(st.integers(0, 3), min_size=12, max_size=12))
def test_transaction_by_transaction_equals_the_collapsed_batch(case: tuple[dict[Key, Row], list[RowChange]],
                                                               cuts: list[int]) -> None:
    initial, changes = case
    lsn, numbered = 1, []
    for c, cut in zip(changes, cuts, strict=False):
        lsn += cut == 0  # about one change in four starts a new transaction
        numbered.append(RowChange(c.op, c.table, c.before, c.after, c.unchanged_toast, lsn, lsn, 0, 0))
    collapsed = Batch()
    for c in numbered:
        collapsed.add(c, REL)
    want = {k: dict(v) for k, v in initial.items()}
    apply_collapsed(want, collapsed)
    runs = by_transaction((c, REL) for c in numbered)
    assert [n for n, _ in runs] == sorted({c.commit_lsn for c in numbered})
    got = {k: dict(v) for k, v in initial.items()}
    for _, steps in runs:
        apply_steps(got, steps)
    assert got == want
