"""The count that tells a whole source transaction from one the change log lost records of (pure: values in,
verdicts out).  Offsets, sequences and counts are the test's own: a transaction written as capture numbers it.

Two layouts of the log: commits that count rows per table (a worker reads only its own tables' rows, the
consumer drops the rest by their key) and commits that count only records (every record reached the worker).
"""

from __future__ import annotations

from splitter.core.envelope import CommitMarker
from splitter.pipeline.worker.tally import MESSAGE, Tally

POSTS, TOPICS, USERS = b"public.posts", b"public.topics", b"public.users"
LSN = 5000


def _marker(events: int, tables: dict[bytes, int] | None) -> CommitMarker:
    counts = None if tables is None else {t.decode(): n for t, n in tables.items()}
    return CommitMarker(commit_lsn=LSN, end_lsn=LSN + 1, xid=7, events=events, ts_ms=1, tables=counts)


def _read(tally: Tally, records: list[tuple[int, int | None, bytes | None]]) -> list[bool]:
    """Count (offset, sequence, kind) records of transaction LSN; the restarts they showed."""
    return [tally.count(offset, LSN, sequence, kind) for offset, sequence, kind in records]


# -- per-table counts: other tables' rows never arrive ------------------------------------------------------


def test_own_rows_all_there_is_whole_though_other_tables_rows_never_arrived() -> None:
    tally = Tally()
    # Transaction: topics 0, posts 1..3, topics 4; the post worker sees only posts.
    assert _read(tally, [(11, 1, POSTS), (12, 2, POSTS), (13, 3, POSTS)]) == [False, False, False]
    assert tally.close(_marker(5, {TOPICS: 2, POSTS: 3}), 15, {POSTS}) is None


def test_a_missing_own_row_is_refused_with_what_is_missing() -> None:
    tally = Tally()
    _read(tally, [(11, 1, POSTS), (13, 3, POSTS)])  # posts number 2 is not in the log
    read = tally.close(_marker(5, {TOPICS: 2, POSTS: 3}), 15, {POSTS})
    assert read is not None and read.first_offset == 11
    assert read.fault == "its commit record counts 3 row(s) of public.posts, the log holds 2"


def test_a_transaction_without_own_rows_is_whole_at_its_commit_alone() -> None:
    tally = Tally()
    assert tally.close(_marker(2, {TOPICS: 2}), 15, {POSTS}) is None
    # ... but not when one of the worker's tables had rows in it.
    read = tally.close(_marker(3, {TOPICS: 2, USERS: 1}), 15, {POSTS, USERS})
    assert read is not None and "1 row(s) of public.users, the log holds 0" in (read.fault or "")


def test_a_missing_transactional_message_is_refused() -> None:
    tally = Tally()
    _read(tally, [(11, 1, POSTS)])
    read = tally.close(_marker(3, {POSTS: 1, TOPICS: 1}), 13, {POSTS})  # 3 records: 2 rows and a message
    assert read is not None and "1 transactional message(s), the log holds 0" in (read.fault or "")
    _read(tally, [(10, None, MESSAGE), (11, 1, POSTS)])
    assert tally.close(_marker(3, {POSTS: 1, TOPICS: 1}), 13, {POSTS}) is None


def test_a_copy_sent_again_begins_at_its_first_own_row_and_counts_once() -> None:
    tally = Tally()
    # First copy: topics 0 (dropped), posts 1 and 2, then capture stopped.  Second copy, whole: posts 1..3.
    restarts = _read(tally, [(11, 1, POSTS), (12, 2, POSTS), (21, 1, POSTS), (22, 2, POSTS), (23, 3, POSTS)])
    assert restarts == [False, False, True, False, False]
    assert tally.resume_offset(LSN, 23) == 21
    assert tally.close(_marker(4, {TOPICS: 1, POSTS: 3}), 24, {POSTS}) is None


def test_a_copy_sent_again_whose_first_own_row_repeats_the_last_one_read() -> None:
    tally = Tally()
    # The first copy ended on posts 5, the only post row; the second copy has it again.
    assert _read(tally, [(11, 5, POSTS), (31, 5, POSTS)]) == [False, True]
    assert tally.close(_marker(6, {TOPICS: 5, POSTS: 1}), 40, {POSTS}) is None


def test_a_repeated_row_drops_the_rows_before_it_and_so_is_refused() -> None:
    tally = Tally()
    # posts 1, 2, then posts 2 again (not a new copy: posts 1 is not read again), then posts 3.
    assert _read(tally, [(11, 1, POSTS), (12, 2, POSTS), (13, 2, POSTS), (14, 3, POSTS)]) == \
        [False, False, True, False]
    read = tally.close(_marker(4, {TOPICS: 1, POSTS: 3}), 15, {POSTS})
    assert read is not None and "3 row(s) of public.posts, the log holds 2" in (read.fault or "")


def test_a_copy_sent_again_with_messages_before_its_first_own_row() -> None:
    tally = Tally()
    # Transaction: message 0, topics 1 (dropped), posts 2, message 3, posts 4.  First copy: message 0, posts
    # 2, then capture stopped; the whole copy follows.
    records = [(10, None, MESSAGE), (12, 2, POSTS),
               (20, None, MESSAGE), (22, 2, POSTS), (23, None, MESSAGE), (24, 4, POSTS)]
    assert _read(tally, records) == [False, False, False, True, False, False]
    # The copy begins at the message before its first own row, which is read again from there.
    assert tally.resume_offset(LSN, 24) == 20
    assert tally.close(_marker(5, {TOPICS: 1, POSTS: 2}), 25, {POSTS}) is None


def test_a_copy_sent_again_that_lost_an_own_row_is_refused() -> None:
    tally = Tally()
    # First copy: posts 1, posts 2 (stopped).  The whole copy lacks posts 2: what the first copy read of it
    # is dropped with the first copy, so the count is short.
    _read(tally, [(11, 1, POSTS), (12, 2, POSTS), (21, 1, POSTS), (23, 3, POSTS)])
    read = tally.close(_marker(4, {TOPICS: 1, POSTS: 3}), 24, {POSTS})
    assert read is not None and "3 row(s) of public.posts, the log holds 2" in (read.fault or "")


def test_a_partial_copy_in_the_earlier_layout_then_the_whole_copy_in_today_s() -> None:
    tally = Tally()
    # Written before an upgrade: topics 0 skimmed (counted with its sequence), posts 1; capture stopped.  The
    # new capture sends the transaction again, other tables' rows left out, with per-table counts.
    records = [(10, 0, None), (11, 1, POSTS), (21, 1, POSTS), (22, 2, POSTS)]
    assert _read(tally, records) == [False, False, True, False]
    assert tally.close(_marker(3, {TOPICS: 1, POSTS: 2}), 23, {POSTS}) is None


def test_rows_of_other_tables_read_whole_do_not_count_for_the_worker() -> None:
    tally = Tally()
    # Read whole (a backfill window was open): every row arrives; only the worker's tables are checked.
    _read(tally, [(10, 0, TOPICS), (11, 1, POSTS)])
    assert tally.close(_marker(3, {TOPICS: 2, POSTS: 1}), 12, {POSTS}) is None


# -- a log whose commits count only records: every record arrives ----------------------------------------


def test_whole_count_of_every_record_is_checked() -> None:
    tally = Tally()
    _read(tally, [(10, 0, None), (11, 1, POSTS), (12, None, MESSAGE)])
    assert tally.close(_marker(3, None), 13, {POSTS}) is None
    _read(tally, [(10, 0, None), (12, 2, POSTS)])  # number 1 is missing
    read = tally.close(_marker(3, None), 13, {POSTS})
    assert read is not None and read.fault is not None and "number 2" in read.fault and "number 1 was due" in read.fault


def test_whole_count_a_copy_sent_again_after_its_messages() -> None:
    tally = Tally()
    # First copy: message 0, row 1, message 2 (stopped).  Second copy: message 0, row 1, message 2, row 3.
    records = [(10, None, MESSAGE), (11, 1, None), (12, None, MESSAGE),
               (20, None, MESSAGE), (21, 1, None), (22, None, MESSAGE), (23, 3, POSTS)]
    assert _read(tally, records) == [False, False, False, False, True, False, False]
    assert tally.resume_offset(LSN, 23) == 20
    assert tally.close(_marker(4, None), 24, {POSTS}) is None


def test_whole_count_a_copy_of_messages_only_then_its_first_row() -> None:
    tally = Tally()
    # First copy: message 0 only.  Second copy: message 0, row 1.
    assert _read(tally, [(10, None, MESSAGE), (20, None, MESSAGE), (21, 1, None)]) == [False, False, True]
    assert tally.resume_offset(LSN, 21) == 20
    assert tally.close(_marker(2, None), 22, set()) is None


def test_whole_count_a_repeated_record_is_refused() -> None:
    tally = Tally()
    _read(tally, [(10, 0, None), (11, 1, POSTS), (12, 1, POSTS), (13, 2, None)])
    read = tally.close(_marker(3, None), 14, {POSTS})
    assert read is not None and read.fault is not None


def test_whole_count_a_commit_with_nothing_before_it_is_refused() -> None:
    read = Tally().close(_marker(1, None), 14, {POSTS})
    assert read is not None and read.fault == "none of its records precede its commit record"
