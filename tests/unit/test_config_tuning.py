"""Tuning from the environment: values reach Settings; a bad value is refused naming its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitter.core.errors import ConfigurationError
from splitter.pipeline.config import build_settings

ROOT = Path(__file__).resolve().parents[2]


def _settings(env: dict[str, str]) -> object:
    return build_settings(topology_path=str(ROOT / "topology.py"), source_dsn="dbname=bento_social",
                          kafka="broker:9092", env=env)


def test_tuning_variables_reach_the_settings() -> None:
    s = build_settings(topology_path=str(ROOT / "topology.py"), source_dsn="dbname=bento_social", kafka="k:9092",
                       env={"SPLITTER_MAX_TXN_CHANGES": "2500", "SPLITTER_BATCH_MAX_ROWS": "100",
                            "SPLITTER_BATCH_MAX_WAIT": "0.2", "SPLITTER_HEARTBEAT_INTERVAL": "5",
                            "SPLITTER_CATCH_UP_BATCH_WAIT": "3"})
    assert (s.max_txn_changes, s.batch_max_rows, s.batch_max_wait, s.heartbeat_interval,
            s.catch_up_batch_wait) == (2500, 100, 0.2, 5.0, 3.0)
    default = build_settings(topology_path=str(ROOT / "topology.py"), source_dsn="dbname=bento_social",
                             kafka="k:9092", env={"SPLITTER_MAX_TXN_CHANGES": ""})
    assert default.max_txn_changes == 10_000


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("SPLITTER_MAX_TXN_CHANGES", "ten", "SPLITTER_MAX_TXN_CHANGES='ten' is not an integer"),
    ("SPLITTER_MAX_TXN_CHANGES", "0", "SPLITTER_MAX_TXN_CHANGES='0' must be at least 1"),
    ("SPLITTER_BATCH_MAX_WAIT", "soon", "SPLITTER_BATCH_MAX_WAIT='soon' is not a number"),
    ("SPLITTER_BATCH_MAX_ROWS", "1.5", "SPLITTER_BATCH_MAX_ROWS='1.5' is not an integer"),
])
def test_a_bad_tuning_value_is_refused_by_name(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _settings({variable: value})
    assert str(caught.value) == message
