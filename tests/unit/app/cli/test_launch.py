"""The process launchers: the one gunicorn and Celery command lines, and `up`, `web` and
`worker` starting them with their options (the exec is caught; `modelpull up` as a real
process is tests/integration/app/test_up.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from app.cli import launch, main
from app.cli.localstack import Stack
from app.settings import Settings


class FakeExecError(Exception):
    """Raised instead of replacing the test process."""

    def __init__(self, path: str, argv: list[str]) -> None:
        super().__init__(path)
        self.path = path
        self.argv = argv


@pytest.fixture
def execv(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(path: str, argv: list[str]) -> None:
        raise FakeExecError(path, list(argv))

    monkeypatch.setattr(os, "execv", fake)


def test_gunicorn_argv_is_the_threaded_web_tier() -> None:
    assert launch.gunicorn_argv("0.0.0.0", 8123) == [
        sys.executable, "-m", "gunicorn",
        "--bind", "0.0.0.0:8123",
        "--worker-class", "gthread",
        "--workers", "1",
        "--threads", "128",
        "--no-control-socket",
        "app:create_app()",
    ]  # fmt: skip
    argv = launch.gunicorn_argv("::1", 9, threads=4, workers=2, options=["--timeout", "5"])
    assert argv[argv.index("--threads") + 1] == "4"
    assert argv[argv.index("--workers") + 1] == "2"
    assert argv[-3:] == ["--timeout", "5", "app:create_app()"]  # options before the app


def test_worker_argv_is_one_worker_on_the_downloads_queue() -> None:
    assert launch.worker_argv(3, "w1@host") == [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "-Q", "downloads",
        "--concurrency", "3",
        "--loglevel", "INFO",
        "-n", "w1@host",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    first, second = (launch.worker_argv(1) for _ in range(2))
    names = [argv[argv.index("-n") + 1] for argv in (first, second)]
    # Two workers on one host never share a node name.
    assert names[0] != names[1] and all(n.endswith("@%h") for n in names)


@pytest.mark.usefixtures("environ", "execv")
def test_web_becomes_gunicorn_with_its_options() -> None:
    with pytest.raises(FakeExecError) as exec_info:
        main(["web", "--host", "0.0.0.0", "--port", "8123", "--threads", "16"])
    assert exec_info.value.path == sys.executable
    assert exec_info.value.argv == launch.gunicorn_argv("0.0.0.0", 8123, threads=16)
    with pytest.raises(FakeExecError) as exec_info:
        main(["web"])
    assert exec_info.value.argv == launch.gunicorn_argv("127.0.0.1", 8000)


@pytest.mark.usefixtures("execv")
def test_worker_becomes_celery_with_its_options(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("WORKER_CONCURRENCY", "5")
    with pytest.raises(FakeExecError) as exec_info:
        main(["worker", "--name", "w9@%h"])
    assert exec_info.value.path == sys.executable
    assert exec_info.value.argv == launch.worker_argv(5, "w9@%h")
    with pytest.raises(FakeExecError) as exec_info:
        main(["worker", "--concurrency", "2", "--name", "w9@%h"])
    assert exec_info.value.argv == launch.worker_argv(2, "w9@%h")


@pytest.mark.usefixtures("execv")
def test_a_bad_setting_stops_web_and_worker_before_exec(
    environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environ.setenv("WORKER_CONCURRENCY", "0")
    assert main(["web"]) == 2  # no FakeExecError: nothing was started
    assert main(["worker"]) == 2
    assert "WORKER_CONCURRENCY must be between 1 and 64" in capsys.readouterr().err


def test_up_runs_the_stack_with_its_options(
    environ: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[Stack] = []

    def run(stack: Stack) -> int:
        started.append(stack)
        return 0

    monkeypatch.setattr(Stack, "run", run)
    environ.setenv("HOME", str(tmp_path / "home"))
    argv = ["up", "--host", "0.0.0.0", "--port", "8123", "--concurrency", "4"]
    assert main([*argv, "--models-dir", "~/m", "--data-dir", "rel/d"]) == 0
    (stack,) = started
    assert (stack.host, stack.port) == ("0.0.0.0", 8123)
    assert stack.settings.models_dir == tmp_path / "home" / "m"
    assert stack.settings.data_dir == tmp_path / "rel" / "d"  # relative to where it ran
    assert stack.settings.worker_concurrency == 4
    assert stack.web_argv == launch.gunicorn_argv("0.0.0.0", 8123, options=launch.UP_WEB_OPTIONS)
    worker = list(stack.worker_argv)
    assert worker == launch.worker_argv(4, worker[worker.index("-n") + 1])


@pytest.mark.timeout(10)
def test_a_stop_signal_landing_inside_the_wait_still_stops_up(tmp_path: Path) -> None:
    # `modelpull up` waits in `_stop.wait(0.2)`, which holds the event's lock for a moment on
    # every pass; a SIGINT or SIGTERM landing then runs its handler right there, in the same
    # thread. The handler must not need that lock (it once did, and Ctrl-C hung for good).
    settings = Settings(models_dir=tmp_path / "models", data_dir=tmp_path / "data")
    stack = Stack(settings=settings, web_argv=[], worker_argv=[])
    with stack._stop._cond:
        stack.request_stop()  # what the signal runs, in this thread
    assert stack._stop.wait(5)
