"""An initial copy that fails part way finishes on its own: no reset, every service ends equal to the source.

The interaction database goes away while its copy commits (a deferred trigger, enabled for replica-mode
sessions, terminates its own backend the first time it runs), after the other services may already have
committed theirs.  Capture retries; the next attempt must copy what is missing (keeping what was copied)
and stream, while a workload writes to the source the whole time: changes committed between the first
snapshot and the second must reach every service exactly once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from devtools.workload.driver import Workload
from tests.conftest import KafkaServer
from tests.harness import prepare

SERVICES = ("auth", "user", "post", "topic", "comment", "notification", "interaction")

# Fires at COMMIT (deferred) for each row the copy wrote into post_saves; the first call ends the session.
# The sequence is not transactional: later copies and the worker's writes pass.
DIE_AT_FIRST_COMMIT = """
CREATE SEQUENCE public.copy_dies_once;
CREATE FUNCTION public.copy_dies_once() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF nextval('public.copy_dies_once') = 1 THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
        PERFORM pg_sleep(10);
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER copy_dies_once AFTER INSERT ON interaction.post_saves
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.copy_dies_once();
ALTER TABLE interaction.post_saves ENABLE ALWAYS TRIGGER copy_dies_once;
"""


def _checkpointed(dsns: dict[str, str], databases: dict[str, str]) -> set[str]:
    done = set()
    for service, database in databases.items():
        with psycopg.connect(dsns[database], autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('splitter.checkpoints') IS NOT NULL").fetchone() == (True,) and \
                    conn.execute("SELECT 1 FROM splitter.checkpoints WHERE service = %s", (service,)).fetchone():
                done.add(service)
    return done


@pytest.mark.timeout(300)
def test_a_copy_that_failed_part_way_finishes_without_a_reset(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=100)
    with psycopg.connect(env.dsns["interaction_db"], autocommit=True) as conn:
        conn.execute(DIE_AT_FIRST_COMMIT)
    databases = {s: f"{s}_db" for s in SERVICES}
    workload = Workload(env.source, seed=21, threads=2)
    stop = threading.Event()
    runner = threading.Thread(target=workload.run, args=(stop,))
    runner.start()
    try:
        time.sleep(0.5)
        capture = env.start_capture()
        for service in SERVICES:
            env.start_worker(service)
        deadline = time.monotonic() + 90
        while _checkpointed(env.dsns, databases) != set(SERVICES):
            assert capture.poll() is None, f"capture exited with {capture.returncode}\n{env.logs()}"
            assert time.monotonic() < deadline, f"the initial copy never finished\n{env.logs()}"
            time.sleep(0.2)
        time.sleep(3)  # the stream under the workload
        stop.set()
        runner.join(60)
        assert sum(workload.counts().values()) > 50
        env.wait_caught_up(timeout=120)
        env.assert_all_match()
        assert capture.poll() is None, f"capture exited with {capture.returncode}\n{env.logs()}"
        with psycopg.connect(env.dsns["interaction_db"], autocommit=True) as conn:
            calls = conn.execute("SELECT last_value FROM public.copy_dies_once").fetchone()
        assert calls is not None and calls[0] >= 2, "the trigger never let a copy through"
        assert "terminating connection due to administrator command" in env.logs(), "the first copy did not die"
    finally:
        stop.set()
        runner.join(60)
        env.stop_all()
