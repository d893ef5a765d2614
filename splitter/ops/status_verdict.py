"""What a `splitter status` picture means for a probe or a cron job: its exit code and the reasons for it.

Owns: `judge(status, max_lag)`, the rule behind status' exit codes (README "Exit codes of splitter status"):

* 0 OK: the source and every selected service database answer, every service streams with its lag
  (splitter.observe.lag) at most `max_lag` seconds, and nothing stopped for good.
* 1 LAGGING: everything answers and runs, but some service is behind by more than `max_lag`, stalled, has
  not caught up yet (no checkpoint: the initial copy has not finished), or its lag is unknown; or
  capture runs degraded (heartbeats failing, broker unreachable) or its slot does not exist yet.  A
  held service (verify, cutover) counts by its lag alone.
* 3 UNREACHABLE: the source or a service database cannot be read (down, refused, wrong password,
  missing database or privilege), the slot was lost, or a component (capture, reverse, a worker)
  stopped for good on a fatal or configuration error.
* 2 (usage: options, topology, unknown --service) is the command line's, decided before any read.

The worst reason wins.  A service whose cutover made its own database home (switched, reverse
streaming, complete, or rolling back) is not judged by its forward lag: no forward stream feeds it.
Must not: read anything or print (the command prints the picture and returns the code).
"""

from __future__ import annotations

from connectors.pg.state import cutover as cutover_states
from splitter.core import exit_codes
from splitter.ops.status_model import ServiceStatus, SourceStatus, Status, Verdict

#: The default of `--max-lag`: well above the lag's resolution (splitter.observe.lag's grace, ~2.5 s).
DEFAULT_MAX_LAG = 30.0
_MEANING = {exit_codes.OK: "ok", exit_codes.LAGGING: "lagging", exit_codes.UNREACHABLE: "unreachable"}
# Cutover states in which the service database is home: no forward stream to be behind on.
_HOME_IS_SERVICE = cutover_states.REVERSE_RUNS | {cutover_states.COMPLETE}


def judge(status: Status, max_lag: float) -> Verdict:
    reasons: list[tuple[int, str]] = list(_source(status.source))
    reasons += [(exit_codes.UNREACHABLE, f"{c.component}{'[' + c.service + ']' if c.service else ''} {c.summary()}")
                for c in status.stopped if c.component != "worker"]  # a stopped worker: its service's line
    reasons += [(exit_codes.LAGGING, f"{c.component} {c.summary()}") for c in status.degraded]
    for st in status.services:
        found = _service(st, max_lag)
        if found is not None:
            reasons.append(found)
    code = max((c for c, _ in reasons), default=exit_codes.OK)
    return Verdict(code, _MEANING[code], max_lag, [text for c, text in reasons if c == code])


def _source(src: SourceStatus) -> list[tuple[int, str]]:
    if not src.reachable:
        return [(exit_codes.UNREACHABLE, f"source {src.database}: {src.error or 'unreachable'}")]
    if src.error_class is not None:  # e.g. the role lacks REPLICATION: capture cannot run
        return [(exit_codes.UNREACHABLE, f"source {src.database}: {src.error}")]
    if src.slot_state == "lost":
        return [(exit_codes.UNREACHABLE, f"source {src.database}: {src.error}")]
    if src.slot_state == "missing":
        return [(exit_codes.LAGGING, f"source {src.database}: {src.error}")]
    return []


def _service(st: ServiceStatus, max_lag: float) -> tuple[int, str] | None:
    where = f"service {st.service}"
    if st.state in ("unreachable", "misconfigured"):
        return exit_codes.UNREACHABLE, f"{where} {st.state}: {st.last_error}"
    if "stopped" in st.state:
        return exit_codes.UNREACHABLE, f"{where} {st.state}: {st.last_error}"
    if st.cutover_state in _HOME_IS_SERVICE:
        return None
    if st.state == "not started":
        return exit_codes.LAGGING, f"{where} not started: {st.last_error}"
    if "stalled" in st.state:
        return exit_codes.LAGGING, f"{where} {st.state}: {st.last_error}"
    if st.lag_seconds is None:
        return exit_codes.LAGGING, f"{where}: lag unknown"
    if st.lag_seconds > max_lag:
        return exit_codes.LAGGING, f"{where} {st.lag_seconds:.1f}s behind (more than --max-lag {max_lag:g}s)"
    return None


__all__ = ["DEFAULT_MAX_LAG", "judge"]
