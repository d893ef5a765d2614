"""Pure parts of verify: the row merge, the report's JSON and text, route selection, progress.

No servers: rows are given as the databases would stream them, (chunk, *column texts) in key order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitter.core.errors import ConfigurationError, FatalError
from splitter.core.progress import Progress
from splitter.ops.verify.merge import merge_rows
from splitter.ops.verify.progress import Tracker
from splitter.ops.verify.report import TableReport, VerifyReport
from splitter.ops.verify.run import select_routes
from splitter.pipeline.config import build_settings

COLUMNS = ("id", "name", "n")
ROOT = Path(__file__).resolve().parents[2]


def _report(key: tuple[str, ...] = ("id",)) -> TableReport:
    return TableReport("post", "post.posts", "public.posts", key)


def test_merge_counts_missing_extra_and_different_with_the_columns() -> None:
    source = [(0, "a", "x", "1"), (0, "b", "y", "2"), (0, "c", None, "3"), (1, "e", "z", "5")]
    target = [(0, "a", "x", "1"), (0, "bb", "y", "2"), (0, "c", "", "3"), (1, "d", "q", "4"), (1, "e", "Z", "6")]
    report = _report()
    merge_rows(report, COLUMNS, (0,), source, target, sample=10)
    assert (report.missing, report.extra, report.different) == (1, 2, 2)
    assert report.missing_keys == [{"id": "b"}]
    assert report.extra_keys == [{"id": "bb"}, {"id": "d"}]
    assert [(d.key, d.columns) for d in report.different_rows] == [({"id": "c"}, ("name",)),
                                                                    ({"id": "e"}, ("name", "n"))]
    # NULL and '' are different values, and each side's value is kept for the report.
    assert report.different_rows[0].source == {"name": None} and report.different_rows[0].target == {"name": ""}
    assert report.column_differences == {"name": 2, "n": 1}
    assert not report.ok


def test_merge_of_equal_streams_reports_nothing_and_samples_are_capped() -> None:
    rows = [(c, f"{i:04d}", "v", None) for c in range(3) for i in range(c * 10, c * 10 + 10)]
    report = _report()
    merge_rows(report, COLUMNS, (0,), rows, rows, sample=5)
    assert report.ok and report.missing == report.extra == report.different == 0

    report = _report()
    merge_rows(report, COLUMNS, (0,), rows, [], sample=3)
    assert report.missing == 30 and len(report.missing_keys) == 3


def test_merge_with_a_two_column_key_in_target_key_order() -> None:
    columns = ("user_id", "post_id", "created_at")
    source = [(0, "u1", "p1", "t"), (0, "u1", "p2", "t"), (0, "u2", "p1", "t")]
    target = [(0, "u1", "p2", "t"), (0, "u2", "p1", "T")]
    report = TableReport("interaction", "interaction.post_saves", "public.post_saves", ("user_id", "post_id"))
    merge_rows(report, columns, (0, 1), source, target, sample=10)
    assert report.missing_keys == [{"user_id": "u1", "post_id": "p1"}]
    assert [(d.key, d.columns) for d in report.different_rows] == [({"user_id": "u2", "post_id": "p1"},
                                                                     ("created_at",))]


def test_merge_orders_like_postgres_c_collation() -> None:
    # Code point order (= UTF-8 byte order): 'B' < 'a' < 'é'; "10" < "9"; NULL keys sort last.
    rows = [(0, "10", "", ""), (0, "9", "", ""), (0, "B", "", ""), (0, "a", "", ""), (0, "é", "", ""),
            (0, None, "", "")]
    report = _report()
    merge_rows(report, COLUMNS, (0,), rows, rows, sample=1)
    assert report.ok


def test_merge_refuses_rows_out_of_order() -> None:
    with pytest.raises(FatalError, match="out of key order"):
        merge_rows(_report(), COLUMNS, (0,), [(0, "b", "", ""), (0, "a", "", "")], [], sample=1)
    with pytest.raises(FatalError, match="target returned rows out of key order"):
        merge_rows(_report(), COLUMNS, (0,), [], [(1, "a", "", ""), (0, "b", "", "")], sample=1)


def test_report_json_and_text() -> None:
    bad = _report()
    merge_rows(bad, COLUMNS, (0,), [(0, "a", "x", "1"), (0, "b", "y", "2")], [(0, "b", "Y", "2"), (0, "c", "", "")],
               sample=10)
    bad.source_rows, bad.target_rows = 2, 2
    good = TableReport("topic", "topic.topics", "public.topics", ("id",), source_rows=5, target_rows=5)
    report = VerifyReport([good, bad], consistent=True, source_lsn=0x1_0000_00A0, held_lsns={"post": 0x16})
    assert not report.ok
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["source_lsn"] == "1/A0" and data["held_lsns"] == {"post": "0/16"}
    assert [t["ok"] for t in data["tables"]] == [True, False]
    posts = data["tables"][1]
    assert (posts["missing"], posts["extra"], posts["different"]) == (1, 1, 1)
    assert posts["missing_keys"] == [{"id": "a"}] and posts["extra_keys"] == [{"id": "c"}]
    assert posts["different_rows"] == [{"key": {"id": "b"}, "columns": ["name"], "source": {"name": "y"},
                                        "target": {"name": "Y"}}]
    text = report.render()
    assert "1/A0" in text and "DIFFERS" in text and "1 differ." in text
    assert "id=a" in text and "id=c" in text and "name: source 'y' target 'Y'" in text
    assert VerifyReport([good], consistent=False).ok
    assert "all match." in VerifyReport([good], consistent=False).render()


def test_select_routes_by_service_and_table_names() -> None:
    settings = build_settings(topology_path=str(ROOT / "topology.py"), source_dsn="dbname=bento_social",
                              kafka="localhost:9092", env={})
    assert len(select_routes(settings, None, None)) == 10
    assert [r.table.name for r in select_routes(settings, ["interaction"], None)] == [
        "post_likes", "post_saves", "follows"]
    both = select_routes(settings, None, ["users"])
    assert sorted(r.service.name for r in both) == ["auth", "user"]
    assert [r.service.name for r in select_routes(settings, None, ["auth.users"])] == ["auth"]
    assert [r.table.name for r in select_routes(settings, ["user"], ["users.followers"])] == ["followers"]
    with pytest.raises(ConfigurationError, match="matches no table"):
        select_routes(settings, ["post"], ["comments"])
    with pytest.raises(ConfigurationError, match="unknown service"):
        select_routes(settings, ["nope"], None)


def test_verify_reports_rows_against_the_estimates_with_the_table_as_stage() -> None:
    seen: list[Progress] = []
    tracker = Tracker(seen.append, [1000, 500], chunk_rows=100)
    tracker.start(0, "post.posts")
    tracker.hashed(3)  # 3 chunk lines of 100 rows
    tracker.finish()
    tracker.start(1, "topic.topics")
    tracker.hashed(10)  # more lines than the estimate: counted up to the estimate only
    tracker.finish()
    assert [(p.done, p.total, p.stage, p.finished) for p in seen] == [
        (0, 1500, "post.posts, 0/2 tables", False),
        (300, 1500, "post.posts, 0/2 tables", False),
        (1000, 1500, "post.posts, 1/2 tables", False),
        (1000, 1500, "topic.topics, 1/2 tables", False),
        (1500, 1500, "topic.topics, 1/2 tables", False),
        (1500, 1500, "topic.topics, 2/2 tables", True),
    ]
    assert {(p.task, p.unit) for p in seen} == {("verify", "rows")}
