"""`modelpull` itself: every command reaches a function, a bad setting is exit status 2, and
both ways of starting it work."""

from __future__ import annotations

import argparse
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from app.cli import admin, build_parser, launch, main, remote

BIN = Path(sys.executable).parent

# One command line per command, and the function it must run.
COMMANDS = [
    (["pull", "z-image-turbo"], remote.pull_model),
    (["models"], remote.show_models),
    (["jobs"], remote.show_jobs),
    (["status", "0" * 32], remote.show_job),
    *[([action, "0" * 32], remote.control_job) for action in remote.ACTIONS],
    (["up"], launch.run_up),
    (["web"], launch.run_web),
    (["worker"], launch.run_worker),
    (["token", "create", "ci"], admin.token_command),
    (["token", "list"], admin.token_command),
    (["token", "revoke", "x"], admin.token_command),
    (["db", "upgrade"], admin.upgrade_db),
]


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(actions[0].choices)


def test_every_command_runs_its_function() -> None:
    parser = build_parser()
    assert {argv[0] for argv, _ in COMMANDS} == _subcommands(parser)
    for argv, expected in COMMANDS:
        func = parser.parse_args(argv).func
        if isinstance(func, partial):  # a remote command, run with a client
            assert (func.func, func.args) == (remote.run_remote, (expected,)), argv
        else:
            assert func is expected, argv


def test_remote_commands_share_the_url_and_token_options() -> None:
    parser = build_parser()
    for name in ("pull", "models", "jobs", "status", *remote.ACTIONS):
        argv = [name, *(["x"] if name not in ("models", "jobs") else [])]
        args = parser.parse_args([*argv, "--url", "http://h:1", "--token", "t"])
        assert (args.url, args.token) == ("http://h:1", "t")


def test_url_and_token_go_before_or_after_the_command() -> None:
    parser = build_parser()
    for argv in (
        ["--url", "http://h:1", "--token", "t", "jobs"],
        ["jobs", "--url", "http://h:1", "--token", "t"],
        ["--url", "http://h:1", "status", "abcd", "--token", "t"],
    ):
        args = parser.parse_args(argv)
        assert (args.url, args.token) == ("http://h:1", "t"), argv
    # Both: the one after the command wins, and neither is reset to the other's default.
    args = parser.parse_args(["--url", "http://before:1", "models", "--url", "http://after:2"])
    assert args.url == "http://after:2"
    assert parser.parse_args(["models"]).url is None  # MODELPULL_URL then decides


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage: modelpull" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["models"], ["pull", "x"], ["up"], ["web"], ["worker"], ["token", "list"], ["db", "upgrade"]],
    ids=lambda argv: " ".join(argv),
)
def test_a_bad_setting_is_exit_status_2_with_its_message(
    environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    environ.setenv("DOWNLOAD_CONNECTIONS", "many")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        "modelpull: configuration error: DOWNLOAD_CONNECTIONS must be an integer, got 'many'\n"
    )


def test_the_entry_point_and_python_m_print_the_same_help() -> None:
    runs = [
        subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"COLUMNS": "100"})
        for argv in (
            [str(BIN / "modelpull"), "--help"],
            [sys.executable, "-m", "app.cli", "--help"],
        )
    ]
    assert [r.returncode for r in runs] == [0, 0]
    assert runs[0].stdout == runs[1].stdout
    for name in ("pull", "models", "up", "web", "worker", "token", "db"):
        assert f"    {name} " in runs[0].stdout
