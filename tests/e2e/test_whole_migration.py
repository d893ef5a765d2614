"""The whole migration under the routed workload: every service cut over one after another in the order
`splitter plan` recommends, auth rolled back and cut over again, every service completed.

This is `splitter demo --migrate`'s script (`devtools.migrate.Migration`) on the test's servers: after
each switch the ledger check compares every database with what the workload committed wherever the
routing sent it (its own SQL, `devtools.workload.ledger_check`, not splitter's), and `splitter verify` runs
before the completes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from devtools.migrate import Migration
from splitter.topology.ownership import recommended_order
from tests.conftest import KafkaServer
from tests.harness import prepare


def test_every_service_is_cut_over_and_completed_under_the_routed_workload_and_nothing_is_lost(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=60)
    settings = env.settings()
    migration = Migration(settings, env.env(), tmp_path, phase=2.0, rate=40.0, log_level="info",
                          stop=threading.Event())
    try:
        code = migration.run()
    finally:
        if migration.workload is not None:
            migration.workload.stop()
        migration.stop_daemon()
    order = recommended_order(settings.topology)
    done = [(s.action, s.service, s.code) for s in migration.steps]
    expected = ([("cutover", s, 0) for s in order] + [("rollback", "auth", 0), ("cutover", "auth", 0)]
                + [("complete", s, 0) for s in order])
    log = (tmp_path / "commands.log").read_text()
    assert done == expected, log[-6000:]
    assert code == 0, log[-6000:]
    assert migration.workload is not None
    assert not migration.workload.errors and not migration.workload.anomalies
    homes = {a.home for a in migration.workload.attempts}
    # Writes went to bento_social first and then to every service database as its service moved.
    assert homes == {"source", *(s.name for s in settings.topology.services)}, homes
    assert "bento_social has no writer left" in log
    pauses = sorted(s.fenced for s in migration.steps if s.action == "cutover" and s.fenced is not None)
    print(f"\nwrite pause per cutover (fenced, s): median {pauses[len(pauses) // 2]:.3f}, worst {pauses[-1]:.3f}; "
          f"longest write wait seen by the workload: {max(s.longest_wait for s in migration.steps):.3f}s")
