"""`splitter replay --json`: one object, the plan's fields as the README documents them (no server needed)."""

from __future__ import annotations

import json

from connectors.kafka.log_reader import LogBounds, LogPoint
from splitter.cli.commands.replay import to_json
from splitter.ops.replay import ReplayPlan, ReplayResult, describe
from splitter.ops.replay_start import StartPoint

FIRST = LogPoint(0, 0x1_0000_0000, 1_796_000_000_000, b"commit", None)
LAST = LogPoint(99_999, 0x1_0050_0000, 1_796_000_200_000, b"commit", None)
PLAN = ReplayPlan("post", 99_990, 0x1_004F_FEFF, 1_796_000_199_000, 100_000, 10, 6, 2, 0x1_0050_0000,
                  skipped=(1, 99_989), requested=StartPoint(offset=99_992), log=LogBounds(FIRST, LAST), seconds=0.1234)


def test_a_dry_run_is_the_plan_and_no_result() -> None:
    report = json.loads(to_json(PLAN, None, dry_run=True, code=0))
    assert report["command"] == "replay" and report["dry_run"] is True and report["result"] is None
    assert report["exit_code"] == 0 and report["plan_text"] == describe(PLAN)
    assert report["plan"] == {
        "service": "post", "requested": {"offset": 99_992}, "start_offset": 99_990,
        "start_time": "2026-11-30T00:56:39+00:00", "after_lsn": "1/4FFEFF", "last_offset": 99_999,
        "last_lsn": "1/500000", "records": 10, "service_records": 6, "transactions": 2,
        "skipped": {"first_offset": 1, "last_offset": 99_989},
        "log": {"first": {"offset": 0, "time": "2026-11-30T00:53:20+00:00", "lsn": "1/0"},
                "last": {"offset": 99_999, "time": "2026-11-30T00:56:40+00:00", "lsn": "1/500000"}},
        "seconds": 0.123}


def test_after_a_submit_the_result_is_the_workers_answer() -> None:
    report = json.loads(to_json(PLAN, ReplayResult(7, True, "rewound to offset 99990"), dry_run=False, code=0))
    assert report["result"] == {"request_id": 7, "done": True, "message": "rewound to offset 99990"}
    queued = json.loads(to_json(PLAN, ReplayResult(8, False, "request 8 is queued"), dry_run=False, code=1))
    assert queued["result"]["done"] is False and queued["exit_code"] == 1
