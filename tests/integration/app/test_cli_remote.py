"""The remote commands as a user runs them: the installed `modelpull` in a terminal 80 (or 60)
columns wide, against a real web tier (gunicorn) on a real job store, Redis and the imitation
Hub. One service for the module; no worker unless a test starts one, so jobs stay where the
test puts them. Each test asserts the lines a user reads and the exit status."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from app import migrate
from app.cli.launch import gunicorn_argv
from app.cli.localstack import free_port
from tests.hub import GeneratedFile, ImitationHub
from tests.hub.samples import add_sample_repos
from tests.stack import ROOT, Stack
from tests.support import MiB, RedisServer, wait_for

MODELPULL = str(Path(sys.executable).parent / "modelpull")
TOKEN = "cli-test-token-0123456789"
CATALOG = """\
models:
  pair:
    name: A pair of files from two repos
    files:
      - {repo: cli/one, file: a.gguf}
      - {repo: cli/two, file: b.safetensors}
  solo:
    name: One file
    files:
      - {repo: cli/three, file: c.gguf}
  locked:
    name: Behind the Hub's terms
    files:
      - {repo: org/gated, file: model.safetensors}
"""
NO_TOKEN = "modelpull: no API token: set --token or MODELPULL_TOKEN (modelpull up prints one)\n"


@dataclass
class Service:
    url: str
    stack: Stack
    hub: ImitationHub

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        resp = requests.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)
        resp.raise_for_status()
        return resp.json()

    def new_job(self, repo: str, name: str) -> str:
        return str(
            self.api("POST", "/api/downloads", json={"repo": repo, "files": [name]})["jobId"]
        )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, hub_cache_dir: Path) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "catalog.yaml").write_text(CATALOG)
    with ImitationHub(data_dir=tmp / "hub", cache_dir=hub_cache_dir) as hub:
        add_sample_repos(hub)
        hub.add_repo("cli/one", {"a.gguf": GeneratedFile(size=3 * MiB, seed=31)})
        hub.add_repo("cli/two", {"b.safetensors": GeneratedFile(size=1 * MiB, seed=32)})
        hub.add_repo("cli/three", {"c.gguf": GeneratedFile(size=2 * MiB, seed=33)})
        redis = RedisServer(tmp / "redis")
        redis.start()
        db_url = f"sqlite:///{tmp / 'jobs.db'}"
        migrate.upgrade(db_url)
        env = {"MODELS_CATALOG": str(tmp / "catalog.yaml"), "API_TOKEN": TOKEN}
        stack = Stack(tmp=tmp, hub=hub, db_url=db_url, redis=redis, extra_env=env)
        stack.collector.start()  # Stack.close stops it
        try:
            yield Service(stack.start_web(), stack, hub)
        finally:
            stack.close()
            redis.stop()


def cli(
    *argv: str, url: str | None = None, token: str | None = TOKEN, columns: int = 80
) -> subprocess.CompletedProcess[str]:
    """`modelpull ARGV` in a terminal `columns` wide, with MODELPULL_URL/_TOKEN if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPULL_")}
    env["COLUMNS"] = str(columns)
    if url:
        env["MODELPULL_URL"] = url
    if token:
        env["MODELPULL_TOKEN"] = token
    return subprocess.run(
        [MODELPULL, *argv], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_url_and_token_work_before_or_after_the_command(service: Service) -> None:
    for argv in (
        ["--url", service.url, "--token", TOKEN, "jobs"],
        ["jobs", "--url", service.url, "--token", TOKEN],
        ["--url", service.url, "jobs", "--token", TOKEN],
        # After the command wins over before it: neither is dropped for the other's default.
        ["--url", "http://127.0.0.1:9", "jobs", "--url", service.url, "--token", TOKEN],
    ):
        result = cli(*argv, token=None)
        assert (result.returncode, result.stderr) == (0, ""), argv
        assert "Jobs (newest first)" in result.stdout


def test_no_token_says_so_and_a_wrong_one_is_refused(service: Service) -> None:
    result = cli("jobs", url=service.url, token=None)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", NO_TOKEN)
    result = cli("jobs", url=service.url, token="wrong-token-value")
    assert result.returncode == 1
    assert result.stderr == "modelpull: the service refused the token from MODELPULL_TOKEN\n"
    result = cli("jobs", "--token", "wrong-token-value", url=service.url)
    assert result.stderr == "modelpull: the service refused the token from --token\n"


def test_a_job_is_named_by_a_prefix_of_its_id(service: Service) -> None:
    job_id = service.new_job("cli/prefix", "p.gguf")  # on no Hub, and no worker: it waits
    status = cli("status", job_id[:6], url=service.url)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0] == f"Job {job_id}: queued, 0 B / ?"
    for action, state in (("pause", "paused"), ("resume", "queued"), ("cancel", "cancelled")):
        result = cli(action, job_id[:8], url=service.url)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == f"Job {job_id}: {state}, 0 B / ?"


@pytest.mark.parametrize("named", ["abcd", "0123456789abcdef", "zz", "ab/cd", "../models"])
def test_an_unknown_job_says_no_job(service: Service, named: str) -> None:
    result = cli("status", named, url=service.url)
    assert (result.returncode, result.stdout) == (1, "")
    # The API's own words, never Flask's "The requested URL was not found on the server".
    assert result.stderr == f"modelpull: no job {named!r}\n"
    assert cli("cancel", named, url=service.url).stderr == f"modelpull: no job {named!r}\n"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"[│┃]", line)[1:-1]]


@pytest.mark.parametrize("columns", [80, 60])
def test_tables_fit_the_terminal_and_never_cut_an_id(service: Service, columns: int) -> None:
    repo = "unsloth/Qwen3-4B-Instruct-2507-GGUF"
    job_id = service.new_job(repo, f"Qwen3-4B-Instruct-2507-Q4_K_M-{columns}.gguf")
    outputs = {
        argv[0]: cli(*argv, url=service.url, columns=columns)
        for argv in (["models"], ["jobs"], ["status", job_id[:12]])
    }
    for name, result in outputs.items():
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= columns, (name, result.stdout)
        assert "…" not in result.stdout, (name, result.stdout)
    jobs = outputs["jobs"].stdout
    header = _cells(next(line for line in jobs.splitlines() if line.startswith("┃ job")))
    # A repo id is one long word: the least useful columns make room for it, or go.
    assert header == (
        ["job", "what", "state", "done"] if columns == 80 else ["job", "state", "done"]
    )
    # Each job by the first 12 characters of its id, whole, in the first column.
    listed = [_cells(line)[0] for line in jobs.splitlines() if line.startswith("│")]
    assert job_id[:12] in listed and job_id not in jobs
    assert all(re.fullmatch(r"[0-9a-f]{12}", cell) for cell in listed), jobs
    status = outputs["status"].stdout
    assert status.startswith(f"Job {job_id}: queued, 0 B / ?\n")
    assert _cells(next(line for line in status.splitlines() if line.startswith("┃ file"))) == [
        "file", "state", "done", "error"
    ]  # fmt: skip
    models = outputs["models"].stdout
    rows = [_cells(line) for line in models.splitlines() if line.startswith("│")]
    # The names wrap between words; the model ids stay whole.
    assert [r[0] for r in rows if r[0]] == ["pair", "solo", "locked"]
    name = " ".join(r[1] for r in rows[: next(i for i, r in enumerate(rows) if r[0] == "solo")])
    assert name == "A pair of files from two repos"


def _sizes_learnt(service: Service) -> bool:
    answer = service.api("GET", "/api/models")
    return not answer["metadataPending"] and all(
        m["totalBytes"] is not None for m in answer["models"]
    )


def test_models_shows_sizes_before_downloading_and_gated_repos(service: Service) -> None:
    wait_for(lambda: _sizes_learnt(service), 30, "the catalog's sizes from the Hub")
    result = cli("models", url=service.url)
    assert result.returncode == 0, result.stderr
    rows = {
        cells[0]: cells
        for cells in map(_cells, result.stdout.splitlines())
        if cells and cells[0] in ("pair", "solo", "locked")
    }
    assert rows["pair"][2:] == ["missing", "4.0 MiB", "2", ""]
    assert rows["locked"][2:] == ["missing", "4.0 KiB", "1", "gated"]
    assert result.stdout.endswith(
        "gated: accept the terms on the Hub and give the service HF_TOKEN\n"
    )
    # Part of a model present: its total, and what is left to download.
    (service.stack.models / "a.gguf").write_bytes(b"\0" * (3 * MiB))
    try:
        again = cli("models", url=service.url)
        pair = next(c for c in map(_cells, again.stdout.splitlines()) if c and c[0] == "pair")
        assert pair[3] == "4.0 MiB (1.0 MiB to download)"
    finally:
        (service.stack.models / "a.gguf").unlink()


def test_pull_of_a_paused_job_says_how_to_resume_it(service: Service) -> None:
    job = service.api("POST", "/api/models/solo/download")
    job_id = job["jobId"]
    service.api("POST", f"/api/models/download/{job_id}/pause")
    try:
        result = cli("pull", "solo", url=service.url)
        assert result.returncode == 1
        assert result.stdout == (
            f"already downloading: job {job_id} (paused); "
            f"resume it with 'modelpull resume {job_id}'\n"
        )
        assert len([j for j in _jobs(service) if j["modelId"] == "solo"]) == 1
    finally:
        service.api("POST", f"/api/models/download/{job_id}/cancel")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _jobs(service: Service) -> list[dict[str, Any]]:
    return list(service.api("GET", "/api/models/download/jobs?limit=200")["jobs"])


@pytest.mark.timeout(90)
def test_pull_shows_binary_units_and_a_second_pull_follows_the_same_job(service: Service) -> None:
    # Slow enough to be caught downloading, and joined, and left: 256 KiB/s per connection
    # (the 4 MiB job takes several seconds even when the machine is idle).
    service.hub.faults.add(repo="cli/*", bandwidth=MiB // 4, times=None)
    service.stack.start_worker("w1")
    first = subprocess.Popen(
        [MODELPULL, "pull", "pair"],
        env={**os.environ, "COLUMNS": "80", "MODELPULL_URL": service.url,
             "MODELPULL_TOKEN": TOKEN},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        running = wait_for(
            lambda: [j for j in _jobs(service) if j["modelId"] == "pair"], 20, "the pair's job"
        )
        job_id = running[0]["jobId"]
        # A pull that joined someone else's job never cancels it, even --cancel-on-exit.
        joiner = subprocess.Popen(
            [MODELPULL, "pull", "pair", "--cancel-on-exit"],
            env={**os.environ, "COLUMNS": "80", "MODELPULL_URL": service.url,
                 "MODELPULL_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # Ctrl-C as in a terminal: a CI runner may start us with SIGINT ignored, and
            # Python then never turns it into KeyboardInterrupt.
            preexec_fn=_default_sigint,
        )  # fmt: skip
        assert joiner.stdout is not None
        joined = joiner.stdout.readline()
        time.sleep(0.3)  # from the line printed to following the job: a few milliseconds
        joiner.send_signal(signal.SIGINT)
        rest, _ = joiner.communicate(timeout=20)
        assert joined.startswith(f"already downloading: job {job_id}"), joined + rest
        assert "stopped following; the download goes on" in rest, rest
        shown = service.api("GET", f"/api/models/download/status/{job_id}")
        assert shown["status"] in ("queued", "downloading"), shown["status"]
        second = cli("pull", "pair", url=service.url)
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
        service.hub.faults.clear()
        worker = service.stack.workers.pop("w1")
        worker.terminate()
        worker.wait(20)
    assert (first.returncode, second.returncode) == (0, 0), err + second.stderr
    # The job's total is known from the start, in the same units as everything else.
    assert out.splitlines()[0] == f"job {job_id}: 2 files, 4.0 MiB"
    assert second.stdout.splitlines()[0] in (
        f"already downloading: job {job_id} (queued)",
        f"already downloading: job {job_id} (downloading)",
    )
    for shown in (out, second.stdout):
        assert shown.splitlines()[-1] == f"done: job {job_id}, 4.0 MiB"
        assert "4.0 MiB / 4.0 MiB" in shown  # the whole job's bar
        assert re.search(r"\d (KiB|MiB)/s", shown) and not re.search(r"\d ?[kMG]B", shown)
    assert [j["jobId"] for j in _jobs(service) if j["modelId"] == "pair"] == [job_id]


@pytest.mark.timeout(60)
def test_pull_that_loses_the_service_says_the_download_goes_on(service: Service) -> None:
    port = free_port()
    web = subprocess.Popen(
        gunicorn_argv("127.0.0.1", port, threads=8),
        cwd=ROOT, env=service.stack.env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), 30, "the second web process")
        pull = subprocess.Popen(
            [MODELPULL, "pull", "cli/lost", "x.gguf"],
            env={**os.environ, "COLUMNS": "80", "MODELPULL_URL": url, "MODELPULL_TOKEN": TOKEN},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert pull.stdout is not None
        started = pull.stdout.readline()  # the job is under way, and followed
        os.killpg(web.pid, signal.SIGKILL)
        out, err = pull.communicate(timeout=30)
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGKILL)
        web.wait(10)
    (job,) = [j for j in _jobs(service) if j["files"][0]["repo"] == "cli/lost"]
    job_id = job["jobId"]
    assert started == f"job {job_id}: 1 file\n"
    assert pull.returncode == 1
    assert err == (
        "modelpull: the service stopped answering; the download goes on in the service: "
        f"follow it with 'modelpull status {job_id}'\n"
    )
    assert "Traceback" not in out + err


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
