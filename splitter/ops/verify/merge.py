"""Merging the rows of a table's differing chunks, from both sides, into its report.

Owns: the one-pass merge of two row streams ordered by (chunk, key), the check that each stream comes
in the order Python compares keys in, and counting and sampling missing, extra and different rows.
Must not: do I/O (the streams come from `connectors.pg.verify_source` / `verify_target`) or keep
more than the samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from splitter.core.errors import FatalError
from splitter.ops.verify.report import Key, RowDifference, TableReport


def _order_function(key_index: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """Sort key of a fetched row (chunk, *column texts): its chunk, then its key texts.

    PostgreSQL sorts NULL after every value in ascending order; "C" order of UTF-8 text is code point
    order, which is Python's `str` order.  Unrolled for one- and two-column keys: this runs per row.
    """
    cols = [i + 1 for i in key_index]  # +1: the chunk number comes first
    if len(cols) == 1:
        (a,) = cols
        return lambda r: (r[0], r[a] is None, r[a] or "")
    if len(cols) == 2:
        a, b = cols
        return lambda r: (r[0], r[a] is None, r[a] or "", r[b] is None, r[b] or "")
    return lambda r: (r[0], *(x for j in cols for x in (r[j] is None, r[j] or "")))


def merge_rows(report: TableReport, columns: Sequence[str], key_index: Sequence[int],
               source: Iterable[Sequence[Any]], target: Iterable[Sequence[Any]], sample: int) -> None:
    """Merge two row streams, each (chunk, *column texts) ordered by (chunk, key), into `report`.

    Keeps nothing but the samples: memory does not grow with the number of rows.  Each stream's
    order is checked as it goes, because the merge is only right if Python orders keys as the
    databases did.
    """
    order = _order_function(key_index)
    src, tgt = iter(source), iter(target)
    s, t = next(src, None), next(tgt, None)
    ks = order(s) if s is not None else None
    kt = order(t) if t is not None else None

    def key_of(row: Sequence[Any]) -> Key:
        return {columns[i]: row[i + 1] for i in key_index}

    def advance(it: Iterator[Sequence[Any]], previous: tuple[Any, ...], side: str) -> tuple[Any, Any]:
        row = next(it, None)
        if row is None:
            return None, None
        k = order(row)
        if k < previous:
            raise FatalError(
                f"the {side} returned rows out of key order (a key compares differently in PostgreSQL's \"C\" "
                f"collation than as UTF-8 text; are both databases UTF8-encoded?)")
        return row, k

    while s is not None or t is not None:
        if t is None or (ks is not None and kt is not None and ks < kt):
            assert s is not None and ks is not None
            report.missing += 1
            if len(report.missing_keys) < sample:
                report.missing_keys.append(key_of(s))
            s, ks = advance(src, ks, "source")
        elif s is None or (ks is not None and kt is not None and kt < ks):
            assert kt is not None
            report.extra += 1
            if len(report.extra_keys) < sample:
                report.extra_keys.append(key_of(t))
            t, kt = advance(tgt, kt, "target")
        else:
            assert ks is not None and kt is not None
            if tuple(s) != tuple(t):
                differ = tuple(c for c, a, b in zip(columns, s[1:], t[1:], strict=True) if a != b)
                report.different += 1
                for c in differ:
                    report.column_differences[c] = report.column_differences.get(c, 0) + 1
                if len(report.different_rows) < sample:
                    report.different_rows.append(RowDifference(
                        key_of(s), differ,
                        {c: v for c, v in zip(columns, s[1:], strict=True) if c in differ},
                        {c: v for c, v in zip(columns, t[1:], strict=True) if c in differ}))
            s, ks = advance(src, ks, "source")
            t, kt = advance(tgt, kt, "target")
