"""`splitter status`'s exit codes (issue 16, defect 3) as splitter.ops.status_verdict decides them from a
picture: 0 every service streams within --max-lag, 1 lagging or not caught up, 3 unreachable or stopped.

The pictures are built here by hand; tests/integration/test_status_cli.py runs the command against real
servers (every service unreachable, a wrong password, a held service, a healthy one).
"""

from __future__ import annotations

import json

from splitter.core import exit_codes
from splitter.ops.status_components import ComponentStatus, DegradedStatus
from splitter.ops.status_model import ServiceStatus, SourceStatus, Status
from splitter.ops.status_verdict import DEFAULT_MAX_LAG, judge


def _source(**kw: object) -> SourceStatus:
    base: dict[str, object] = {"reachable": True, "current_lsn": "0/5000", "slot": "splitter",
                               "slot_state": "streaming"}
    base.update(kw)
    return SourceStatus("bento_social", **base)  # type: ignore[arg-type]


def _service(name: str = "auth", **kw: object) -> ServiceStatus:
    base: dict[str, object] = {"state": "streaming", "lag_seconds": 0.0, "lag_bytes": 0,
                               "cutover_state": "streaming"}
    base.update(kw)
    return ServiceStatus(name, f"{name}_db", **base)  # type: ignore[arg-type]


def _status(*services: ServiceStatus, source: SourceStatus | None = None) -> Status:
    return Status("2026-12-02T00:00:00+00:00", source or _source(), list(services))


def test_every_service_streaming_within_max_lag_is_ok() -> None:
    verdict = judge(_status(_service("auth"), _service("user", lag_seconds=4.0, lag_bytes=100)), 5.0)
    assert (verdict.exit_code, verdict.meaning, verdict.reasons) == (exit_codes.OK, "ok", [])


def test_a_service_past_max_lag_is_lagging_and_named() -> None:
    verdict = judge(_status(_service("auth"), _service("user", lag_seconds=12.5, lag_bytes=100)), 10.0)
    assert (verdict.exit_code, verdict.meaning) == (exit_codes.LAGGING, "lagging") and verdict.exit_code == 1
    assert len(verdict.reasons) == 1 and "service user" in verdict.reasons[0] and "12.5s" in verdict.reasons[0]


def test_not_caught_up_stalled_held_and_unknown_lag() -> None:
    assert judge(_status(_service(state="not started", lag_seconds=None, lag_bytes=None)), 30).exit_code == 1
    assert judge(_status(_service(state="stalled", lag_seconds=90.0, lag_bytes=5)), 300).exit_code == 1
    assert judge(_status(_service(state="held", lag_seconds=2.0, lag_bytes=5)), 30).exit_code == 0
    assert judge(_status(_service(state="held", lag_seconds=40.0, lag_bytes=5)), 30).exit_code == 1
    assert judge(_status(_service(lag_seconds=None, lag_bytes=None)), 30).exit_code == 1


def test_every_service_unreachable_or_refused_is_3() -> None:
    down = [_service(n, state="unreachable", lag_seconds=None, lag_bytes=None, error_class="retryable",
                     last_error="cannot connect") for n in ("auth", "user")]
    assert judge(_status(*down), 30).exit_code == exit_codes.UNREACHABLE == 3
    refused = _service(state="misconfigured", lag_seconds=None, lag_bytes=None, error_class="configuration",
                       sqlstate="28P01", last_error="password authentication failed")
    verdict = judge(_status(refused, _service("user", lag_seconds=100.0, lag_bytes=5)), 30)
    assert verdict.exit_code == 3 and verdict.reasons == ["service auth misconfigured: password authentication failed"]


def test_an_unreachable_source_a_lost_slot_and_a_stopped_component_are_3() -> None:
    assert judge(_status(_service(), source=_source(reachable=False, error="refused")), 30).exit_code == 3
    assert judge(_status(_service(), source=_source(slot_state="lost", error="lost")), 30).exit_code == 3
    assert judge(_status(_service(state="stopped", last_error="worker stopped")), 30).exit_code == 3
    status = _status(_service())
    status.stopped.append(ComponentStatus("capture", "", "stopped", "fatal", 3, "boom", "2026-12-02T00:00:00"))
    assert judge(status, 30).exit_code == 3


def test_a_degraded_capture_and_a_missing_slot_are_1() -> None:
    status = _status(_service())
    status.degraded.append(DegradedStatus("capture", "", "degraded", ["heartbeat"], "failing", "2026-12-02"))
    assert judge(status, 30).exit_code == 1
    assert judge(_status(_service(), source=_source(slot_state="missing", error="no slot")), 30).exit_code == 1


def test_a_service_whose_database_is_home_is_not_judged_by_forward_lag() -> None:
    verdict = judge(_status(_service(state="complete", cutover_state="complete", lag_seconds=9999.0,
                                     lag_bytes=10)), 30)
    assert verdict.exit_code == 0


def test_the_verdict_is_in_the_json() -> None:
    status = _status(_service(lag_seconds=50.0, lag_bytes=9))
    status.verdict = judge(status, DEFAULT_MAX_LAG)
    data = json.loads(status.as_json())
    assert data["verdict"]["exit_code"] == 1 and data["verdict"]["max_lag_seconds"] == DEFAULT_MAX_LAG
    assert data["services"][0]["dead_letters"] is None and "cutover_text" not in data
