"""Every command's --help stands alone: a description, examples, help on every option, nothing irrelevant.

Walks the parser `splitter.cli.app.build_parser()` builds, so a command added later is covered without
editing this file; and runs `splitter <command> --help` as the operator does, in a process of its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitter.cli.app import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1, "splitter has one level of subcommands"
    return dict(actions[0].choices)


COMMANDS = _subcommands(build_parser())


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Each argument (option or positional) by its longest name, without -h/--help."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = max(action.option_strings, key=len) if action.option_strings else action.dest
        out[name] = action
    return out


def test_every_command_is_walked() -> None:
    # The commands of the README; a new one is walked too, this only guards against walking nothing.
    assert {"demo", "plan", "run", "capture", "worker", "verify", "replay", "dlq", "status", "cutover",
            "rollback", "complete", "reverse", "backfill", "grants"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help(name: str) -> None:
    missing = [option for option, action in _options(COMMANDS[name]).items()
               if action.help is None or action.help == argparse.SUPPRESS or not action.help.strip()]
    assert not missing, f"splitter {name}: no help text for {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_a_description_and_examples(name: str) -> None:
    parser = COMMANDS[name]
    assert parser.description and len(parser.description.split()) >= 8, f"splitter {name}: no description"
    assert parser.epilog and parser.epilog.startswith("examples:"), f"splitter {name}: no examples epilog"
    examples = [line.strip() for line in parser.epilog.splitlines()[1:] if line.strip()]
    assert 1 <= len(examples) <= 3, f"splitter {name}: {len(examples)} examples"
    assert any(e.startswith(f"splitter {name}") for e in examples), f"splitter {name}: no example runs it"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_a_summary_in_the_top_level_help(name: str) -> None:
    top = build_parser().format_help()
    lines = [line.strip() for line in top.splitlines()]
    entry = next((line for line in lines if line.split(" ", 1)[0] == name), None)
    assert entry is not None and len(entry.split()) > 2, f"splitter {name}: no summary in `splitter --help`"


@pytest.mark.parametrize("name", ["plan", "status"])
def test_commands_that_serve_nothing_take_no_metrics_port(name: str) -> None:
    options = _options(COMMANDS[name])
    assert "--metrics-port" not in options and "--metrics-host" not in options


def test_the_demo_takes_no_connection_options() -> None:
    options = _options(COMMANDS["demo"])
    assert not {"--source-dsn", "--kafka", "--target-dsn", "--kafka-config"} & set(options)


def test_commands_with_json_say_what_it_is() -> None:
    with_json = {name for name, parser in COMMANDS.items() if "--json" in _options(parser)}
    assert {"plan", "verify", "dlq", "status", "cutover", "rollback", "complete", "backfill"} <= with_json


def _splitter(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITTER_")}
    return subprocess.run([sys.executable, "-m", "splitter", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env, check=False)


def test_version() -> None:
    done = _splitter("--version")
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    assert words[0] == "splitter" and len(words) >= 2 and words[1][0].isdigit(), done.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_in_a_process_of_its_own(name: str) -> None:
    # As the operator runs it: the imports, the formatter and the exit code of a real process.
    done = _splitter(name, "--help")
    assert done.returncode == 0, f"splitter {name} --help: exit {done.returncode}\n{done.stderr}"
    assert "examples:" in done.stdout and f"splitter {name}" in done.stdout, done.stdout
    assert not done.stderr.strip(), done.stderr
