"""`splitter dlq list|show|retry|drop --service S`: the dead letters of one service.

Owns: showing dead-lettered changes (event, SQLSTATE, message, log position) and asking the service's
running worker to retry them in order (after the cause is fixed) or drop them; the worker performs both
in its own session, so retried rows land in order with the stream.  Must not: write service tables.
"""

from __future__ import annotations

import json
from typing import Any

from connectors.pg.client import Connection, connect
from connectors.pg.state import dead_letters
from connectors.pg.state.schema import ensure_state_schema
from splitter.core.dsn import service_database
from splitter.core.errors import ConfigurationError
from splitter.pipeline.config import Settings


def _conn(settings: Settings, service: str) -> Connection:
    settings.topology.service(service)
    conn = connect(settings.target_dsn(service), service_database(service), autocommit=True)
    ensure_state_schema(conn)
    return conn


def _letter(d: dead_letters.StoredDeadLetter, *, whole: bool = False) -> dict[str, Any]:
    """One dead letter as `--json` shows it; `whole`: with the change event and the record's raw bytes."""
    out: dict[str, Any] = {
        "id": d.id, "status": d.status, "table": d.source_table, "op": d.op, "key": d.source_key,
        "sqlstate": d.sqlstate, "error": d.error, "offset": d.kafka_offset, "lsn": d.commit_lsn,
        "created_at": d.created_at.isoformat()}
    if whole:
        out["event"] = d.event
        out["raw_value"] = d.raw_value.decode(errors="replace") if d.raw_value else None
    return out


def _report(action: str, service: str, **fields: Any) -> str:
    return json.dumps({"command": "dlq", "action": action, "service": service, **fields}, indent=2)


def list_letters(settings: Settings, service: str, everything: bool, as_json: bool) -> int:
    with _conn(settings, service) as conn:
        letters = dead_letters.fetch(conn, service, status=None if everything else "open")
    if as_json:
        print(_report("list", service, dead_letters=[_letter(d) for d in letters]))
        return 0
    if not letters:
        print(f"service {service}: no {'' if everything else 'open '}dead letters")
        return 0
    print(f"{'id':>6}  {'status':<8}{'table':<22}{'op':<3}{'sqlstate':<9}{'offset':>9}  key / error")
    for d in letters:
        first_line = (d.error.splitlines() or [""])[0][:70]
        print(f"{d.id:>6}  {d.status:<8}{(d.source_table or '(unreadable)'):<22}{(d.op or '-'):<3}"
              f"{(d.sqlstate or '-'):<9}{d.kafka_offset if d.kafka_offset is not None else '-':>9}  "
              f"{d.source_key}  {first_line}")
    return 0


def show_letters(settings: Settings, service: str, ids: list[int]) -> int:
    """The whole of each dead letter asked for (the event and raw record too), as one JSON object."""
    with _conn(settings, service) as conn:
        letters = dead_letters.fetch(conn, service, status=None, ids=ids)
    if not letters:
        raise ConfigurationError(f"service {service} has no dead letter with id {', '.join(map(str, ids))}")
    print(_report("show", service, dead_letters=[_letter(d, whole=True) for d in letters]))
    return 0


def request_action(settings: Settings, service: str, action: str, ids: list[int] | None, wait: float,
                   as_json: bool = False) -> int:
    """Ask the worker to retry or drop (`dlq_retry`, `dlq_drop`) and wait up to `wait` s for its answer."""
    with _conn(settings, service) as conn:
        request_id = dead_letters.submit_request(conn, service, action, ids=ids)
        answered, result = dead_letters.wait_for_result(conn, request_id, wait)
    message = (result or "done") if answered else (
        f"request {request_id} queued; its worker performs it when it runs (is it running?)")
    if as_json:
        print(_report(action.removeprefix("dlq_"), service, request_id=request_id, done=answered, message=message,
                      ids=ids))
    else:
        print(f"service {service}: {message}")
    return 0 if answered else 1
