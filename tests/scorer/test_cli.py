"""Unit tests of the command lines' help and setting errors (no broker).

The top-level `--help` and one setting error run the real entry points as
subprocesses; the subcommands' help runs in-process through the same `main`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from scorer.cli import main as scorer_main
from scorer.settings import ScorerSettings
from trainer.cli import main as trainer_main
from txrisk.errors import UserError

REPO = Path(__file__).resolve().parents[2]

SETTING_FLAGS = [
    "--bootstrap-servers",
    "--model-dir",
    "--model-version",
    "--input-topic",
    "--output-topic",
    "--dead-letter-topic",
    "--control-topic",
    "--group-id",
    "--batch-size",
    "--batch-wait-ms",
    "--top-features",
    "--scoring-threads",
]
SCORER_FLAGS: dict[str, list[str]] = {
    "run": SETTING_FLAGS,
    "create-topics": [
        "--bootstrap-servers",
        "--input-topic",
        "--output-topic",
        "--dead-letter-topic",
        "--control-topic",
        "--partitions",
    ],
    "schema": ["--spec", "--out"],
    "replay": [
        "--bootstrap-servers",
        "--input-topic",
        "--data",
        "--spec",
        "--count",
        "--rate",
        "--bad-share",
        "--seed",
    ],
    "demo": ["--source", "--events", "--rate", "--bad-share", "--workdir"],
}
TRAINER_FLAGS: dict[str, list[str]] = {
    "generate": ["--rows", "--seed", "--out"],
    "train": [
        "--data",
        "--spec",
        "--model-dir",
        "--version",
        "--seed",
        "--target-recall",
        "--test-size",
    ],
}
MAINS: dict[str, Callable[[Sequence[str] | None], int]] = {
    "scorer": scorer_main,
    "trainer": trainer_main,
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TXRISK_", "KAFKA_"))
    }
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), env.get("PYTHONPATH")])
    )
    env["COLUMNS"] = "200"  # help lines wrapped the same way everywhere
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def entry_points() -> dict[str, subprocess.CompletedProcess[str]]:
    """`--help` of both programs and a bad setting, run at the same time."""
    commands = {
        "scorer-help": ["scorer", "--help"],
        "trainer-help": ["trainer", "--help"],
        "bad-batch-size": ["scorer", "run", "--model-dir", "/nonexistent/models"],
    }
    env = clean_env()
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=REPO,
            env=env
            | ({"TXRISK_BATCH_SIZE": "abc"} if name == "bad-batch-size" else {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in commands.items()
    }
    done = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(
            commands[name], process.returncode, out, err
        )
    return done


def in_process_help(
    program: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        MAINS[program]([*argv, "--help"])
    assert caught.value.code == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    return {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--")
    }


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(group.choices)


@pytest.mark.parametrize(
    ("name", "commands"),
    [("scorer", SCORER_FLAGS), ("trainer", TRAINER_FLAGS)],
)
def test_top_level_help_lists_every_command(
    entry_points: dict[str, subprocess.CompletedProcess[str]],
    name: str,
    commands: dict[str, list[str]],
) -> None:
    done = entry_points[f"{name}-help"]
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith(f"usage: python -m {name} ")
    assert "--log-level" in done.stdout
    assert "--help" in done.stdout
    for command in commands:
        assert f"\n    {command} " in done.stdout, command


@pytest.mark.parametrize(
    ("program", "command", "flags"),
    [("scorer", c, f) for c, f in SCORER_FLAGS.items()]
    + [("trainer", c, f) for c, f in TRAINER_FLAGS.items()],
)
def test_subcommand_help_mentions_every_flag(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    program: str,
    command: str,
    flags: list[str],
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    text = in_process_help(program, [command], capsys)
    assert text.startswith(f"usage: python -m {program} {command} ")
    for flag in [*flags, "--help"]:
        assert flag in text, flag


def _all_subcommands() -> list[tuple[str, str]]:
    from scorer.cli import build_parser as scorer_parser
    from trainer.cli import build_parser as trainer_parser

    return [
        (program, command)
        for program, build in [("scorer", scorer_parser), ("trainer", trainer_parser)]
        for command in subparsers(build())
    ]


@pytest.mark.parametrize(("program", "command"), _all_subcommands())
def test_every_subcommand_help_mentions_all_its_real_flags(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    program: str,
    command: str,
) -> None:
    """Also covers subcommands added after this file was written."""
    from scorer.cli import build_parser as scorer_parser
    from trainer.cli import build_parser as trainer_parser

    monkeypatch.setenv("COLUMNS", "200")
    text = in_process_help(program, [command], capsys)
    parser = {"scorer": scorer_parser, "trainer": trainer_parser}[program]()
    real = flags_of(subparsers(parser)[command])
    assert "--help" in real
    for flag in real:
        assert flag in text, flag


def test_setting_flags_name_their_environment_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    text = in_process_help("scorer", ["run"], capsys)
    assert "env KAFKA_BOOTSTRAP_SERVERS, default localhost:9092" in text
    for flag in SETTING_FLAGS[1:]:
        env = "TXRISK_" + flag.removeprefix("--").replace("-", "_").upper()
        assert f"env {env}," in text, env
    assert "env TXRISK_BATCH_SIZE, default 500" in text


def test_bad_setting_from_environment_is_one_line_and_exit_2(
    entry_points: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    done = entry_points["bad-batch-size"]
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m scorer: error: setting batch_size")
    assert "TXRISK_BATCH_SIZE" in lines[0]
    assert "--batch-size" in lines[0]
    assert "'abc'" in lines[0]


@pytest.mark.parametrize(
    ("env", "value", "words"),
    [
        ("TXRISK_BATCH_SIZE", "0", ["greater than or equal to 1"]),
        ("TXRISK_BATCH_SIZE", "100001", ["less than or equal to 100000"]),
        ("TXRISK_BATCH_WAIT_MS", "soon", ["valid integer"]),
        ("TXRISK_TOP_FEATURES", "-1", ["greater than or equal to 0"]),
        ("TXRISK_SCORING_THREADS", "0", ["greater than or equal to 1"]),
        ("TXRISK_INPUT_TOPIC", "", ["at least 1 character"]),
        ("TXRISK_ALLOW_SKLEARN_MISMATCH", "perhaps", ["valid boolean"]),
    ],
)
def test_bad_setting_names_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, words: list[str]
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(UserError) as caught:
        ScorerSettings.load()
    message = str(caught.value)
    assert env in message
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_flag_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TXRISK_BATCH_SIZE", "abc")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    settings = ScorerSettings.load(batch_size="64", top_features=None)
    assert settings.batch_size == 64
    assert settings.top_features == 3
    assert settings.bootstrap_servers == "kafka:9092"


def test_bad_flag_value_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith(("TXRISK_", "KAFKA_"))]:
        monkeypatch.delenv(name)
    assert scorer_main(["run", "--batch-size", "0", "--model-dir", "/nonexistent"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(
        "python -m scorer: error: setting batch_size (flag --batch-size"
    )
    assert "got '0'" in err
