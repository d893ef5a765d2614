"""The live table of `splitter status --watch` (splitter.cli.status_view), rendered on values: a rich Console
writing into a StringIO, and the cells read back from its text."""

from __future__ import annotations

import io
import re

from rich.console import Console

from splitter.cli.status_view import SPARK, StatusView, sparkline
from splitter.ops.status_model import ServiceStatus, SourceStatus, Status
from splitter.ops.status_verdict import judge


def _picture(user_lag: float, user_bytes: int) -> Status:
    source = SourceStatus("bento_social", True, "0/5000", "splitter", "streaming", 0, 0)
    auth = ServiceStatus("auth", "auth_db", "streaming", 0.0, 0, 12.5, "0/4F00", 7, cutover_state="streaming",
                         dead_letters=0)
    user = ServiceStatus("user", "user_db", "held", user_lag, user_bytes, 0.0, "0/4000", 3, cutover_state="fenced",
                         dead_letters=2, last_error="held at 0/4000 by cutover")
    status = Status("2026-12-02T17:00:00+00:00", source, [auth, user])
    status.verdict = judge(status, 30.0)
    return status


def _render(view: StatusView, status: Status, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(view.render(status))
    return out.getvalue()


def _row(text: str, service: str) -> list[str]:
    line = next(line for line in text.splitlines() if f" {service} " in line)
    return re.split(r"\s{2,}", line.strip())  # cells are 2+ spaces apart; a cell holds single spaces at most


def test_the_live_table_shows_each_services_cells() -> None:
    view = StatusView()
    for lag in (0.0, 10.0, 20.0, 40.0):
        status = _picture(lag, 0 if lag == 0 else 4096)
        view.add(status)
    text = _render(view, status)  # an 80-column terminal: nothing cut
    assert "…" not in text, text
    header = _row(text, "SERVICE")
    assert header == ["SERVICE", "STATE", "LAG", "BYTES", "ROWS/S", "LAG TREND", "CUTOVER", "DLQ"]
    auth, user = _row(text, "auth"), _row(text, "user")
    assert auth[:5] == ["auth", "streaming", "0s", "0 B", "12.5"] and auth[6:8] == ["streaming", "0"]
    assert user[:5] == ["user", "held", "40s", "4.0 kB", "0"] and user[6:8] == ["fenced", "2"]
    assert "user: held at 0/4000 by cutover" in text.splitlines()
    assert user[5] == sparkline([0.0, 10.0, 20.0, 40.0]) and user[5][-1] == SPARK[-1] and user[5][0] == SPARK[0]
    assert auth[5] == SPARK[0] * 4
    assert "exit 1 (lagging, --max-lag 30s)" in text and "service user 40.0s behind" in text
    assert "source bento_social: WAL 0/5000, slot splitter streaming" in text


def test_sparkline_scales_to_the_window_with_a_floor() -> None:
    assert sparkline([0.0, 5.0]) == SPARK[0] + SPARK[-1]
    assert sparkline([0.0, 1.0]) == SPARK[0] + SPARK[1]  # 1 s of 5 s: the floor keeps small lags low
    assert sparkline([None, 100.0, 50.0]) == " " + SPARK[-1] + SPARK[4]
    assert sparkline([]) == ""
