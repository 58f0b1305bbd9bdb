"""`modelpull up` starts the embedded stack and stops it cleanly, leaving no process behind."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from app import migrate
from app.cli.localstack import free_port
from app.digest import sha256_file
from tests.support import wait_for

MODELPULL = [sys.executable, "-m", "app.cli"]
ROOT = Path(__file__).resolve().parents[3]


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


def _env(**extra: str) -> dict[str, str]:
    """The runner's environment without a job store or Redis of its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "DATA_DIR", "MODELS_DIR")
    }
    env.update(extra)
    return env


def _start(tmp_path: Path, port: int, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MODELPULL, "up", "--port", str(port), "--data-dir", "state", "--models-dir", "models",
         *options],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


# What `up` prints once everything answers; the URL and the token are the last two lines.
BANNER = """\
modelpull is up (Ctrl-C to stop)
  models: {models}
  data:   {data}
  logs:   {logs}

Open {url} and sign in with this token:
"""


def _read_banner(proc: subprocess.Popen[str]) -> tuple[str, str, str]:
    """Everything `up` printed up to and including the token line, the URL and the token."""
    assert proc.stdout is not None
    lines: list[str] = []
    for line in iter(proc.stdout.readline, ""):
        lines.append(line)
        if len(lines) >= 2 and lines[-2].endswith(" and sign in with this token:\n"):
            url = lines[-2].split()[1]
            return "".join(lines), url, line.strip()
    raise AssertionError(f"no banner in the output {lines!r}")


def _stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> tuple[str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return out, err


@pytest.mark.timeout(90)
def test_up_serves_prints_url_and_token_last_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        shown, url, token = _read_banner(proc)
        state, logs = tmp_path / "state", tmp_path / "state" / "logs"
        # Nothing but the banner reached the terminal: the worker's Celery banner, gunicorn's
        # and Redis's lines are in DATA_DIR/logs, which the banner names.
        assert (
            shown
            == BANNER.format(
                models=tmp_path / "models",
                data=state,
                logs=f"{logs} (web, worker, redis; -v shows them here)",
                url=f"http://127.0.0.1:{port}",
            )
            + f"  {token}\n"
        )
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as resp:
            assert resp.status == 200
        assert token.startswith("mp_")
        # The printed token signs in: the API answers it.
        request = urllib.request.Request(
            f"{url}/api/models", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
        assert (state / "login_token").read_text().strip() == token
        # The SQLite job store was created and migrated in the data dir it was given.
        with sqlite3.connect(state / "modelpull.db") as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"download_job", "download_file", "alembic_version"} <= tables
        assert (tmp_path / "models").is_dir()
        assert f"Listening at: http://127.0.0.1:{port}" in (logs / "web.log").read_text()
        wait_for(lambda: " ready." in (logs / "worker.log").read_text(), 30, "the worker")
        children = _children(proc.pid)
        assert len(children) >= 2  # redis and gunicorn (with its worker)

        out, err = _stop(proc)
        assert proc.returncode == 0, err
        assert (out, err) == ("modelpull stopped\n", "")
        _assert_all_gone(children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.timeout(90)
def test_up_verbose_shows_the_logs_in_the_terminal_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = _start(tmp_path, free_port(), "-v")
    try:
        shown, _, _ = _read_banner(proc)
        assert "  logs:   shown here (-v)\n" in shown
        children = _children(proc.pid)
        out, err = _stop(proc, signal.SIGINT)
        assert proc.returncode == 0, err
        assert out.endswith("modelpull stopped\n")
        assert "Listening at:" in err  # gunicorn's log, on the terminal
        assert "worker.log" not in os.listdir(tmp_path / "state" / "logs")
        _assert_all_gone(children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.timeout(60)
def test_up_stops_everything_when_a_part_dies(tmp_path: Path) -> None:
    proc = _start(tmp_path, free_port())
    try:
        _read_banner(proc)
        children = _children(proc.pid)
        redis = next(
            p for p in children if b"redis-server" in Path(f"/proc/{p}/cmdline").read_bytes()
        )
        os.kill(redis, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        log = tmp_path / "state" / "logs" / "redis.log"
        assert err.startswith(
            f"modelpull: redis exited with status -9; the end of its log ({log}):\n"
        )
        assert err.endswith("modelpull: stopping\n")
        assert not [p for p in children if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _up_fails(tmp_path: Path, *options: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODELPULL, "up", *options],
        cwd=tmp_path,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_port_in_use_stops_up_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _up_fails(tmp_path, "--port", str(port))
    assert result.returncode == 1
    assert (
        result.stderr == f"modelpull: port {port} is already in use; choose another with --port\n"
    )
    assert result.stdout == ""  # never "modelpull is up"
    assert not (tmp_path / "data").exists()  # nothing was started or created


@pytest.mark.parametrize("variable", ["MODELS_DIR", "DATA_DIR"])
def test_a_folder_that_cannot_be_created_stops_up(tmp_path: Path, variable: str) -> None:
    # Even root cannot make a folder under a regular file.
    (tmp_path / "afile").write_text("")
    folder = tmp_path / "afile" / "sub"
    result = _up_fails(tmp_path, "--port", str(free_port()), **{variable: str(folder)})
    assert result.returncode == 1
    assert (result.stdout, result.stderr) == (
        "",
        f"modelpull: {variable} {folder} cannot be created: Not a directory\n",
    )
    result = _up_fails(tmp_path, "--port", str(free_port()), **{variable: str(tmp_path / "afile")})
    assert result.stderr == f"modelpull: {variable} {tmp_path / 'afile'} is not a folder\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_a_folder_that_cannot_be_written_stops_up(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir(mode=0o555)
    result = _up_fails(tmp_path, "--port", str(free_port()), MODELS_DIR=str(models))
    assert result.returncode == 1
    assert result.stderr == f"modelpull: MODELS_DIR {models} is not writable: Permission denied\n"


@pytest.mark.timeout(90)
def test_make_up_takes_the_port(tmp_path: Path) -> None:
    port = free_port()
    args = f"ARGS=--data-dir {tmp_path / 'state'} --models-dir {tmp_path / 'models'}"
    # -o: never reinstall here, whatever the stamp's age.
    proc = subprocess.Popen(
        ["make", "-s", "-o", ".venv/.installed", "up", f"PORT={port}", args],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _, url, _ = _read_banner(proc)
        assert url == f"http://127.0.0.1:{port}"
        out, err = _stop(proc)
        # make hands SIGTERM to modelpull, waits for it, then dies of the signal itself.
        assert proc.returncode == -signal.SIGTERM, err
        assert (out, err) == ("modelpull stopped\n", "")
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


def test_a_catalog_that_cannot_be_read_stops_up_before_anything_starts(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = _up_fails(tmp_path, "--port", str(free_port()), MODELS_CATALOG=str(missing))
    assert result.returncode == 2
    assert result.stderr == (
        f"modelpull: configuration error: {missing}: cannot read the models catalog: "
        "No such file or directory\n"
    )
    assert not (tmp_path / "data").exists()


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
    assert [version] == migrate.heads()


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
        _, url, token = _read_banner(proc)
        children = _children(proc.pid)
        client_env = dict(env, MODELPULL_URL=url, MODELPULL_TOKEN=token)

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*MODELPULL, *args], env=client_env, capture_output=True, text=True, timeout=120
            )

        def sizes_known() -> subprocess.CompletedProcess[str] | None:
            shown = cli("models")
            assert shown.returncode == 0, shown.stderr
            return None if "still being learnt" in shown.stdout else shown

        # The sizes are learnt from the Hub in the background as the service starts.
        before = wait_for(sizes_known, 30, "the catalog's sizes")
        row = next(line for line in before.stdout.splitlines() if "│ z-image-turbo" in line)
        assert "│ missing │ 21.0 MiB │" in row
        pulled = cli("pull", "z-image-turbo")
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        job_id = pulled.stdout.split()[1].rstrip(":")
        lines = pulled.stdout.splitlines()
        assert lines[0] == f"job {job_id}: 3 files, 21.0 MiB"
        assert lines[-1] == f"done: job {job_id}, 21.0 MiB"
        for (repo, name), _ in sizes.items():
            path = tmp_path / "models" / name
            assert sha256_file(path) == hub.file_info(repo, name).sha256
        again = cli("pull", "z-image-turbo")
        assert again.returncode == 0 and "already present" in again.stdout
        assert "completed" in cli("status", job_id).stdout
        assert job_id[:12] in cli("jobs").stdout
        missing = cli("pull", "org/none", "x.gguf")
        assert missing.returncode == 1
        failed_id = missing.stdout.split()[1].rstrip(":")
        report = missing.stdout.split(f"failed: job {failed_id}\n", 1)[1]
        assert report.startswith("  org/none/x.gguf: repository org/none was not found")
        # The error names the file once, in the report and in `status`.
        assert missing.stdout.count("org/none/x.gguf") == 1
        assert cli("status", failed_id[:8]).stdout.count("org/none/x.gguf") == 1
        refused = subprocess.run(
            [*MODELPULL, "models", "--token", "wrong-token-value"],
            env=client_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 1
        assert refused.stderr == "modelpull: the service refused the token from --token\n"

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        _assert_all_gone(children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
