"""The initial copy reports progress while one large table is piped, not only when it ends.

A table of 25,000 rows is copied from a slot's snapshot, as capture does; the reports name the service, count
rows during the table's COPY (every `ROWS_PER_REPORT`), and end with the committed count, against the
catalog's estimate as the total.  Expected counts come from the test's own SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from connectors.pg.copy import ROWS_PER_REPORT
from connectors.pg.source import ReplicationConnection
from splitter.core.progress import Progress
from splitter.pipeline.config import build_settings
from splitter.pipeline.initial_copy import copy_services, service_state
from tests import roles

ROWS = 25_000


def _topology(path: Path) -> Path:
    path.write_text(
        "from splitter.topology import Service, Table, Topology\n"
        "TOPOLOGY = Topology(source_database='src', services=(Service('ticks', database='dst', tables=(\n"
        "    Table('ticks', source='ticks', key=('id',), columns={'id': 'id', 'note': 'note'}),\n"
        ")),))\n")
    return path


@pytest.mark.timeout(180)
def test_a_large_table_reports_rows_while_it_is_copied(
        make_databases: Callable[..., dict[str, str]], unique_name: Callable[[str], str], tmp_path: Path) -> None:
    dbs = make_databases(names=("src", "dst"))
    for dsn in (dbs["src"], dbs["dst"]):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE ticks (id bigint PRIMARY KEY, note text NOT NULL)")
    with psycopg.connect(dbs["src"], autocommit=True) as conn:
        conn.execute("INSERT INTO ticks SELECT g, 'note ' || g FROM generate_series(1, %s) g", (ROWS,))
        conn.execute("ANALYZE ticks")
        estimate = conn.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'ticks'::regclass").fetchone()
    settings = roles.as_role(build_settings(
        topology_path=str(_topology(tmp_path / "topology.py")), source_dsn=dbs["src"], kafka="unused:9092",
        target_dsns={"ticks": dbs["dst"]}, env={}))
    [service] = settings.topology.services
    assert service_state(settings, service) is None  # creates splitter's state schema, as capture's start does
    reports: list[Progress] = []
    slot = unique_name("copy_progress")[:63]
    repl = ReplicationConnection(settings.source_dsn)
    try:
        consistent, snapshot = repl.create_slot(slot)
        outcome = copy_services(settings, snapshot, consistent, [service], progress=reports.append)
    finally:
        repl.close()
        with psycopg.connect(dbs["src"], autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    assert outcome.failed == [], [str(e) for _s, e in outcome.failed]
    with psycopg.connect(dbs["dst"]) as conn:
        copied = conn.execute("SELECT count(*) FROM ticks").fetchone()
    assert copied == (ROWS,)
    assert {r.task for r in reports} == {"initial copy ticks"}
    during = [r.done for r in reports if not r.finished]
    assert during[:2] == [ROWS_PER_REPORT, 2 * ROWS_PER_REPORT], during
    last = reports[-1]
    assert last.finished and last.done == ROWS
    assert estimate is not None and last.total == estimate[0]
