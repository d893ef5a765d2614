"""What a worker tells the operator when its position is gone from the log (pure: no servers)."""

from __future__ import annotations

from pathlib import Path

from connectors.kafka.consumer import OffsetGoneError
from splitter.pipeline.config import build_settings
from splitter.pipeline.worker import Worker
from splitter.pipeline.worker.tally import log_gone

ROOT = Path(__file__).resolve().parents[2]


def test_a_gone_position_names_the_loss_and_the_recovery_commands() -> None:
    settings = build_settings(topology_path=str(ROOT / "topology.py"), source_dsn="dbname=bento_social",
                              kafka="k:9092", env={})
    worker = Worker(settings, "interaction")
    gone = OffsetGoneError("bento_social.changes", 42, "Broker: Offset out of range")
    message = str(log_gone("interaction", str(gone), 41, 0x16B3748, worker._names))
    assert message.startswith("service interaction: offset 42 of topic 'bento_social.changes' is not in the log "
                              "any more (Broker: Offset out of range)")
    assert "It applied the log up to offset 41 (commit LSN 0/16B3748)" in message
    assert "`splitter replay --service interaction --from-offset <the earliest offset the log holds> " \
           "--accept-gap --yes`" in message
    assert "`splitter backfill --service interaction --table T` for T in follows, post_likes, post_saves" in message
