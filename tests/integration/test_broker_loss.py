"""A broker that goes away and comes back with the same log: capture says so, waits, and loses nothing.

Capture and two workers run in-process (threads under `run_with_retries`, as the CLI runs them) against a
private tansu broker, while a workload writes to the source.  The broker is frozen (SIGSTOP: it keeps its
log and its connections, and answers nothing, like a broker behind a partition) for several seconds.
While it is away capture's stats say the broker is unreachable, with the reason; capture does not exit
(before, a producer error could end it with an uncaught KafkaException, exit 1) and does not restart.
Once the broker answers again the flag clears, and every service database ends up with the source's
rows (tests/expected.py's SQL on both sides).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from devtools.embedded.kafka import EmbeddedKafka
from devtools.workload.driver import Workload
from splitter.pipeline import broker_watch
from splitter.pipeline.capture import Capture
from tests.integration.test_replay import Pipeline, make_stack, pipelines

__all__ = ["pipelines"]  # the fixture, imported so pytest finds it here


@pytest.fixture
def broker(own_kafka: EmbeddedKafka) -> EmbeddedKafka:
    return own_kafka


def _wait(what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_capture_reports_an_unreachable_broker_waits_and_resumes_without_loss(
        make_databases: Callable[..., dict[str, str]], broker: EmbeddedKafka, unique_name: Callable[[str], str],
        pipelines: list[Pipeline], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_watch, "SILENT_AFTER", 1.5)
    stack = make_stack(make_databases, broker.bootstrap, unique_name, ["post", "user"], scale=20)
    captures: list[Capture] = []
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)

    def run_capture(ev: threading.Event) -> None:
        capture = Capture(stack.settings)
        captures.append(capture)
        capture.run(ev)

    pipeline._start("capture", run_capture)
    for name in ("post", "user"):
        pipeline.start_worker(name)
    stack.wait_caught_up(pipeline=pipeline)
    assert len(captures) == 1 and not captures[0].stats.broker_unreachable

    writer = threading.Thread(target=Workload(stack.source, seed=41, threads=2).run_for, args=(9,), daemon=True)
    writer.start()
    time.sleep(1.5)
    broker.pause()
    try:
        _wait("capture to report the broker unreachable", lambda: captures[-1].stats.broker_unreachable, 20)
        error = captures[-1].stats.last_broker_error
        assert error and "unacknowledged" in error, error
        time.sleep(3)  # away for a while longer: capture keeps waiting, in the same attempt
        assert pipeline.running("capture") and len(captures) == 1, pipeline.errors
    finally:
        broker.resume()
    _wait("the broker to count as reachable again", lambda: not captures[-1].stats.broker_unreachable, 60)
    writer.join(60)
    assert not writer.is_alive()
    stack.wait_caught_up(pipeline=pipeline, timeout=90)
    assert pipeline.running("capture") and len(captures) == 1, pipeline.errors
    assert pipeline.errors["capture"] == [], pipeline.errors["capture"]
    for name in ("post", "user"):
        stack.matches(name)
