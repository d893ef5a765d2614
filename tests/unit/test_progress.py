"""Progress values (rate, ETA, the plain line), the periodic sink, and the command line's view without a TTY."""

from __future__ import annotations

import io
import threading

import pytest

from splitter.cli.progress import ProgressView, plain_line
from splitter.core.progress import Periodic, Progress, duration, line


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_eta_from_done_total_and_elapsed() -> None:
    p = Progress("backfill", 1200, 5000, "rows", 3.0)
    assert p.rate == pytest.approx(400.0)
    assert p.fraction == pytest.approx(0.24)
    assert p.eta == pytest.approx((5000 - 1200) / 400.0)  # 9.5 s
    assert Progress("backfill", 10, 100, "rows", 0.5).rate is None  # the first second means nothing yet
    assert Progress("backfill", 10, None, "rows", 5.0).eta is None  # no total, no ETA
    assert Progress("backfill", 0, 100, "rows", 5.0).eta is None  # nothing done: no rate to go by
    assert Progress("backfill", 150, 100, "rows", 5.0).fraction == 1.0  # past the estimate: full, not 150%
    assert Progress("backfill", 150, 100, "rows", 5.0).eta == 0.0
    # A resumed backfill: 3,000 rows were copied by an earlier run; this run did 1,000 in 10 s.
    resumed = Progress("backfill", 4000, 10_000, "rows", 10.0, before=3000)
    assert resumed.rate == pytest.approx(100.0)
    assert resumed.eta == pytest.approx(60.0)
    assert Progress("backfill", 3000, 10_000, "rows", 10.0, before=3000).eta is None  # no rate yet this run


def test_the_plain_line() -> None:
    assert line(Progress("verify", 1200, 5000, "rows", 3.0, stage="post.posts")) == \
        "verify: 1,200/~5,000 rows (24.0%), 400 rows/s, ETA 0:09 [post.posts]"
    assert line(Progress("backfill", 42, None, "rows", 0.2)) == "backfill: 42 rows"
    assert line(Progress("backfill", 5000, 5000, "rows", 3725.0, finished=True)) == \
        "backfill: 5,000/~5,000 rows (100.0%), 1 rows/s, done in 1:02:05"
    # A count of steps: exact total, no rate or ETA.
    assert line(Progress("cutover", 2, 9, "steps", 4.0, stage="fence", estimated=False)) == \
        "cutover: 2/9 steps (22.2%) [fence]"
    assert Progress("verify", 1, 2, "rows", 0.0).line() == line(Progress("verify", 1, 2, "rows", 0.0))
    assert plain_line is line  # the command line's name for it is the same function
    assert (duration(9), duration(605), duration(3725)) == ("0:09", "10:05", "1:02:05")


def test_periodic_writes_the_first_then_every_interval_per_task_and_always_the_last() -> None:
    clock, lines = FakeClock(), list[str]()
    sink = Periodic(lines.append, interval=10.0, clock=clock)
    sink(Progress("a", 1, 10, "rows", 0.0))  # the first of a task: at once
    clock.now += 4
    sink(Progress("a", 2, 10, "rows", 4.0))  # 4 s later: not yet
    sink(Progress("b", 1, 10, "rows", 0.0))  # another task has its own clock
    clock.now += 6
    sink(Progress("a", 3, 10, "rows", 10.0))  # 10 s after a's last line
    clock.now += 1
    sink(Progress("a", 10, 10, "rows", 11.0, finished=True))  # the last: always
    assert [x.split(" ", 2)[:2] for x in lines] == [["a:", "1/~10"], ["b:", "1/~10"], ["a:", "3/~10"],
                                                   ["a:", "10/~10"]]
    assert lines[-1].endswith("done in 0:11")


def test_periodic_is_safe_from_several_threads() -> None:
    lines: list[str] = []
    sink = Periodic(lines.append, interval=3600.0)

    def report(task: str) -> None:
        for n in range(200):
            sink(Progress(task, n, 200, "rows", 0.5))
        sink(Progress(task, 200, 200, "rows", 2.0, finished=True))

    threads = [threading.Thread(target=report, args=(f"copy {i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(lines) == sorted([f"copy {i}: 0/~200 rows (0.0%)" for i in range(4)]
                                   + [f"copy {i}: 200/~200 rows (100.0%), 100 rows/s, done in 0:02"
                                      for i in range(4)])


def test_the_view_without_a_terminal_writes_periodic_lines_and_the_last() -> None:
    stream, clock = io.StringIO(), FakeClock()  # StringIO is no TTY
    with ProgressView(stream, interval=10.0, clock=clock) as view:
        assert not view.live
        for n in range(0, 1001, 100):
            view(Progress("backfill", n, 1000, "rows", n / 100))
            clock.now += 1  # a report a second: a line every 10
        view(Progress("backfill", 1000, 1000, "rows", 11.0, finished=True))
    assert stream.getvalue().splitlines() == [
        "backfill: 0/~1,000 rows (0.0%)",
        "backfill: 1,000/~1,000 rows (100.0%), 100 rows/s, ETA 0:00",
        "backfill: 1,000/~1,000 rows (100.0%), 91 rows/s, done in 0:11",
    ]


def test_the_view_on_a_terminal_draws_bars_and_ends_full() -> None:
    stream = io.StringIO()
    with ProgressView(stream, live=True) as view:
        view(Progress("verify", 250, 1000, "rows", 2.0, stage="post.posts"))
        view(Progress("verify", 1200, 1000, "rows", 4.0, stage="post.posts", finished=True))
    out = stream.getvalue()
    assert "verify" in out and "post.posts" in out
    assert "1200/1200" in out  # the estimate was short: the bar ends at what was done


def test_the_view_closed_before_a_prompt_draws_again_after_it() -> None:
    stream = io.StringIO()
    with ProgressView(stream, live=True) as view:
        view(Progress("cutover", 0, 9, "steps", 0.0, stage="preflight", estimated=False))
        view.close()  # as before the cutover's question
        before = stream.getvalue()
        view(Progress("cutover", 2, 9, "steps", 1.0, stage="fence", estimated=False))
    assert "preflight" in before and "fence" in stream.getvalue()[len(before):]
