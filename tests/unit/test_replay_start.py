"""`splitter replay`'s arguments, checked with no server at all: every mistake named at once, at once."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import pytest

from splitter.cli.app import build_parser, main
from splitter.cli.commands.replay import offset_argument
from splitter.core.errors import ConfigurationError
from splitter.ops.replay_start import StartPoint, check_arguments, parse_time
from splitter.topology.loading import load_topology

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = load_topology(ROOT / "topology.py")
NOW_MS = 1_796_000_000_000  # 2026-11-30T00:53:20Z: the "now" of these checks
# Servers nothing listens on: a check that tried to connect would fail on them, not pass.
UNREACHABLE = ["--topology", str(ROOT / "topology.py"), "--source-dsn", "postgresql://nobody@127.0.0.1:9/bento_social",
               "--kafka", "127.0.0.1:9"]


def check(**kwargs: object) -> StartPoint:
    args: dict[str, object] = {"from_offset": None, "from_time": None, "from_lsn": None, **kwargs}
    service = str(args.pop("service", "post"))
    return check_arguments(TOPOLOGY, service, now_ms=NOW_MS, **args)  # type: ignore[arg-type]


def test_each_start_point_is_parsed() -> None:
    assert check(from_offset=0) == StartPoint(offset=0)
    assert check(from_lsn="16/B374D848") == StartPoint(lsn=0x16_B374D848)
    assert check(from_time="2026-11-28T09:30:00Z") == StartPoint(time_ms=parse_time("2026-11-28T09:30:00+00:00"))
    # No zone: UTC.
    assert check(from_time="2026-11-28T09:30:00").time_ms == check(from_time="2026-11-28T09:30:00Z").time_ms


def test_every_mistake_is_named_in_one_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        check(service="nope", from_time="last tuesday", from_lsn="zz")
    message = str(info.value)
    for text in ("--service: unknown service 'nope' (the topology has: auth, user, post",
                 "give only one of --from-offset, --from-time, --from-lsn, not --from-time and --from-lsn",
                 "--from-time 'last tuesday' is not an ISO 8601 time", "--from-lsn: not a PostgreSQL LSN"):
        assert text in message, message
    assert "\n" not in message


@pytest.mark.parametrize(("kwargs", "text"), [
    ({}, "give one of --from-offset, --from-time, --from-lsn"),
    ({"from_offset": 3, "from_lsn": "0/1"}, "not --from-offset and --from-lsn"),
    ({"from_time": "2099-01-01"}, "--from-time '2099-01-01' (2099-01-01T00:00:00+00:00) is in the future"),
    ({"from_offset": -1}, "--from-offset must be 0 or more, got -1"),
])
def test_a_single_mistake_names_its_option(kwargs: dict[str, object], text: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(text)):
        check(**kwargs)


def test_the_offset_type_refuses_what_is_no_offset() -> None:
    assert offset_argument("0") == 0 and offset_argument("120455") == 120455
    for text, why in (("-5", "-5 is negative"), ("five", "'five' is not an offset"), ("1.5", "is not an offset")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            offset_argument(text)


def test_a_start_point_is_exactly_one_of_three() -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        StartPoint()
    with pytest.raises(ConfigurationError, match="exactly one"):
        StartPoint(offset=1, lsn=2)
    with pytest.raises(ConfigurationError, match="0 or more"):
        StartPoint(offset=-1)
    assert StartPoint(lsn=0x16_B374D848).to_dict() == {"lsn": "16/B374D848"}
    assert StartPoint(offset=7).describe() == "--from-offset 7"
    assert StartPoint(time_ms=0).to_dict() == {"time": "1970-01-01T00:00:00.000+00:00"}


def test_the_command_refuses_bad_arguments_before_it_connects(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        main(["replay", *UNREACHABLE, "--service", "post", "--from-offset", "-5"])
    assert exited.value.code == 2
    assert "argument --from-offset: -5 is negative" in capsys.readouterr().err
    code = main(["replay", *UNREACHABLE, "--service", "nope", "--from-time", "2099-01-01", "--from-lsn", "1/0"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown service 'nope'" in err and "is in the future" in err, err
    assert "not --from-time and --from-lsn" in err and len(err.strip().splitlines()) == 1, err
    assert time.monotonic() - started < 5  # nothing waited on the unreachable servers


def test_every_replay_option_has_help_and_the_help_has_examples() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    replay = sub.choices["replay"]
    for action in replay._actions:
        assert action.help, f"replay {action.option_strings} has no help"
    text = replay.format_help()
    assert "examples:\n  splitter replay --service post" in text
    assert replay.description and "--accept-gap" in replay.description
