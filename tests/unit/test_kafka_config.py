"""The operator's Kafka configuration: file and environment, client kinds, refused properties, topic settings,
secrets masked, and the durability judgement `splitter plan` prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitter.core.errors import ConfigurationError
from splitter.core.kafka_config import TopicDurability, TopicSettings, build_kafka_config

SECRET = "pw-7f3a-secret"


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "client.properties"
    path.write_text(text)
    return str(path)


def test_file_and_environment_reach_every_client_and_the_environment_wins(tmp_path: Path) -> None:
    path = _file(tmp_path, "# a comment\n! another\nsecurity.protocol = SASL_SSL\nsasl.mechanism=PLAIN\n"
                           "sasl.username=splitter\nsasl.password=from-file\nssl.ca.location=/etc/ca.pem\n"
                           "producer.linger.ms=20\nconsumer.fetch.wait.max.ms=100\n")
    config = build_kafka_config({"SPLITTER_KAFKA_SASL_PASSWORD": SECRET, "SPLITTER_KAFKA_CONFIG": path,
                                 "SPLITTER_KAFKA_ADMIN_REQUEST_TIMEOUT_MS": "5000"})
    common = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "splitter",
              "sasl.password": SECRET, "ssl.ca.location": "/etc/ca.pem"}
    assert config.for_client("producer") == {**common, "linger.ms": "20"}
    assert config.for_client("consumer") == {**common, "fetch.wait.max.ms": "100"}
    assert config.for_client("admin") == {**common, "request.timeout.ms": "5000"}
    assert config.path == path


def test_an_explicit_path_beats_the_variable_and_a_missing_file_is_named(tmp_path: Path) -> None:
    path = _file(tmp_path, "client.id=mine\n")
    config = build_kafka_config({"SPLITTER_KAFKA_CONFIG": "/nonexistent"}, path)
    assert config.for_client("admin") == {"client.id": "mine"}
    with pytest.raises(ConfigurationError, match="/nonexistent"):
        build_kafka_config({"SPLITTER_KAFKA_CONFIG": "/nonexistent"})


@pytest.mark.parametrize("name", ["acks", "enable.idempotence", "producer.acks", "consumer.auto.offset.reset",
                                  "bootstrap.servers", "group.id", "consumer.enable.auto.commit",
                                  "message.timeout.ms", "allow.auto.create.topics"])
def test_properties_splitter_relies_on_are_refused_naming_them_and_where_they_came_from(name: str) -> None:
    variable = "SPLITTER_KAFKA_" + name.upper().replace(".", "_")
    with pytest.raises(ConfigurationError) as caught:
        build_kafka_config({variable: "x"})
    assert variable in str(caught.value) and name.split(".", 1)[-1] in str(caught.value)


def test_a_malformed_line_or_name_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="line 2: expected name=value"):
        build_kafka_config({}, _file(tmp_path, "client.id=a\nsasl.password\n"))
    with pytest.raises(ConfigurationError, match="'Sasl Password' is not a Kafka property name"):
        build_kafka_config({}, _file(tmp_path, "Sasl Password=x\n"))


def test_secret_values_are_masked_and_never_in_an_error(tmp_path: Path) -> None:
    config = build_kafka_config({"SPLITTER_KAFKA_SASL_PASSWORD": SECRET,
                                 "SPLITTER_KAFKA_SSL_KEY_PASSWORD": "k3y-pass", "SPLITTER_KAFKA_SASL_USERNAME": "bob"})
    masked = config.mask(f"refused: sasl.password={SECRET} ssl.key.password=k3y-pass user bob")
    assert SECRET not in masked and "k3y-pass" not in masked and "bob" in masked
    with pytest.raises(ConfigurationError) as caught:
        build_kafka_config({}, _file(tmp_path, f"sasl.password={SECRET}\nacks=1\n"))
    assert SECRET not in str(caught.value)


def test_topic_settings_are_integers_with_floors_and_unknown_ones_are_named() -> None:
    config = build_kafka_config({"SPLITTER_KAFKA_TOPIC_REPLICATION_FACTOR": "3",
                                 "SPLITTER_KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "2",
                                 "SPLITTER_KAFKA_TOPIC_RETENTION_MS": "604800000"})
    assert config.topic == TopicSettings(replication_factor=3, min_insync_replicas=2, retention_ms=604800000)
    assert config.for_client("admin") == {}
    with pytest.raises(ConfigurationError, match=r"topic\.replication\.factor='three' is not an integer"):
        build_kafka_config({"SPLITTER_KAFKA_TOPIC_REPLICATION_FACTOR": "three"})
    with pytest.raises(ConfigurationError, match=r"topic\.min\.insync\.replicas=0 must be at least 1"):
        build_kafka_config({"SPLITTER_KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "0"})
    with pytest.raises(ConfigurationError, match=r"topic\.cleanup\.policy is not a change-log topic setting"):
        build_kafka_config({"SPLITTER_KAFKA_TOPIC_CLEANUP_POLICY": "compact"})


@pytest.mark.parametrize(("brokers", "replication", "insync"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_unset_durability_is_as_much_as_the_cluster_allows(brokers: int, replication: int, insync: int) -> None:
    got_replication, configs = TopicSettings().resolve(brokers)
    assert (got_replication, configs["min.insync.replicas"]) == (replication, str(insync))
    assert configs["retention.ms"] == "-1" and configs["max.message.bytes"] == str(64 * 1024 * 1024)


def test_durability_the_cluster_cannot_give_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="cluster has 1 broker"):
        TopicSettings(replication_factor=3).resolve(1)
    with pytest.raises(ConfigurationError, match="more than the replication factor 2"):
        TopicSettings(replication_factor=2, min_insync_replicas=3).resolve(3)


def test_a_log_weaker_than_releasing_the_slot_assumes_is_named() -> None:
    def problems(replication: int, insync: int | None, retention: int | None = -1) -> list[str]:
        return TopicDurability(3, replication, insync, retention, None).problems()

    assert problems(3, 2) == []
    assert [p[:20] for p in problems(1, 1)] == ["replication factor 1"]
    assert problems(3, 1)[0].startswith("min.insync.replicas 1 with acks=all")
    assert problems(3, None) == []  # the cluster's default applies; nothing to say about it
    assert problems(3, 2, 86_400_000)[0].startswith("retention.ms 86400000")
