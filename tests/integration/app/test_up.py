"""`modelpull up` starts the embedded stack and stops it cleanly, leaving no process behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from app.cli.localstack import free_port
from app.digest import sha256_file

MODELPULL = [sys.executable, "-m", "app.cli"]


def _children(pid: int) -> set[int]:
    """Every live descendant of pid, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces and parens: the fields after the last ')'.
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _assert_all_gone(pids: set[int], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)], "processes left behind"


def _start(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.Popen(
        [*MODELPULL, "up", "--port", str(port), "--data-dir", "state", "--models-dir", "models"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], marker: str) -> str:
    """The first line of stdout holding `marker`: the children share the supervisor's stdout,
    so the worker's Celery banner may come before or between its lines."""
    assert proc.stdout is not None
    seen = []
    for line in iter(proc.stdout.readline, ""):
        if marker in line:
            return line
        seen.append(line)
    raise AssertionError(f"no {marker!r} in the output {seen!r}")


def _wait_for_banner(proc: subprocess.Popen[str]) -> str:
    line = _read_until(proc, "modelpull is up:")
    return line.split("modelpull is up:", 1)[1].split()[0]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_up_serves_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        url = _wait_for_banner(proc)
        assert url == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
            assert resp.status == 200
        token_line = _read_until(proc, "/login with the token:")
        token = token_line.rsplit(" ", 1)[1].strip()
        assert f"{url}/login" in token_line and token.startswith("mp_")
        # The printed token signs in: the API answers it.
        request = urllib.request.Request(
            f"{url}/api/models", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
        assert (tmp_path / "state" / "login_token").read_text().strip() == token
        # The SQLite job store was created and migrated in the data dir it was given.
        db = tmp_path / "state" / "modelpull.db"
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"download_job", "download_file", "alembic_version"} <= tables
        assert (tmp_path / "models").is_dir()
        children = _children(proc.pid)
        assert len(children) >= 2  # redis and gunicorn (with its worker)

        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "modelpull stopped" in out
        _assert_all_gone(children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.timeout(60)
def test_up_stops_everything_when_a_part_dies(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        _wait_for_banner(proc)
        children = _children(proc.pid)
        redis = next(
            p for p in children if b"redis-server" in Path(f"/proc/{p}/cmdline").read_bytes()
        )
        os.kill(redis, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        assert "redis exited" in err
        assert not [p for p in children if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_bad_setting_stops_up_before_anything_starts(tmp_path: Path) -> None:
    env = dict(os.environ, DOWNLOAD_CONNECTIONS="many")
    result = subprocess.run(
        [*MODELPULL, "up", "--data-dir", str(tmp_path / "d"), "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "DOWNLOAD_CONNECTIONS must be an integer" in result.stderr
    assert not (tmp_path / "d").exists()


def test_db_upgrade_migrates_the_configured_database(tmp_path: Path) -> None:
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"))
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [*MODELPULL, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "database is at revision head" in result.stdout
    with sqlite3.connect(tmp_path / "data" / "modelpull.db") as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == "0004"


@pytest.mark.timeout(150)
def test_up_then_pull_z_image_turbo_through_the_cli(tmp_path: Path, hub: Any) -> None:
    from tests.hub import GeneratedFile

    sizes = {
        ("leejet/Z-Image-Turbo-GGUF", "z_image_turbo-Q8_0.gguf"): 12 << 20,
        ("black-forest-labs/FLUX.1-schnell", "ae.safetensors"): 3 << 20,
        ("unsloth/Qwen3-4B-Instruct-2507-GGUF", "Qwen3-4B-Instruct-2507-Q8_0.gguf"): 6 << 20,
    }
    for seed, ((repo, name), size) in enumerate(sizes.items()):
        hub.add_repo(repo, {name: GeneratedFile(size=size, seed=200 + seed)})
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DATABASE_URL", "REDIS"))
    }
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1")
    proc = subprocess.Popen(
        [*MODELPULL, "up", "--port", str(port), "--data-dir", "state", "--models-dir", "models",
         "--concurrency", "3"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = _wait_for_banner(proc)
        token = _read_until(proc, "/login with the token:").rsplit(" ", 1)[1].strip()
        children = _children(proc.pid)
        client_env = dict(env, MODELPULL_URL=url, MODELPULL_TOKEN=token)

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*MODELPULL, *args], env=client_env, capture_output=True, text=True, timeout=120
            )

        before = cli("models")
        assert (
            before.returncode == 0
            and "z-image-turbo" in before.stdout
            and "missing" in before.stdout
        )
        pulled = cli("pull", "z-image-turbo")
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        assert "done" in pulled.stdout
        for (repo, name), _ in sizes.items():
            path = tmp_path / "models" / name
            assert sha256_file(path) == hub.file_info(repo, name).sha256
        again = cli("pull", "z-image-turbo")
        assert again.returncode == 0 and "already present" in again.stdout
        job_id = pulled.stdout.split()[1].rstrip(":")
        assert "completed" in cli("status", job_id).stdout
        assert job_id in cli("jobs").stdout
        missing = cli("pull", "org/none", "x.gguf")
        assert missing.returncode == 1 and "was not found" in missing.stdout
        refused = subprocess.run(
            [*MODELPULL, "models", "--token", "wrong-token-value"],
            env=client_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 1 and "refused the token" in refused.stdout

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        _assert_all_gone(children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
