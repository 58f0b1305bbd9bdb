"""The remote commands against a live service: the real web app on loopback, with no worker,
so jobs stay queued until the test acts on them through the API."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from app.cli import follow, main
from tests.support import wait_for
from tests.webapp import AUTH

JOBS = "/api/models/download/jobs"


def _api(url: str, method: str, path: str, **kwargs: Any) -> Any:
    resp = requests.request(method, f"{url}{path}", headers=AUTH, timeout=10, **kwargs)
    resp.raise_for_status()
    return resp.json()


def _new_job(url: str) -> str:
    body = {"repo": "org/r", "files": ["w.gguf"]}
    return str(_api(url, "POST", "/api/downloads", json=body)["jobId"])


def test_models_lists_the_catalog_present_or_missing(
    service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "models" / "c.gguf").write_bytes(b"c")
    assert main(["models"]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if "│" in line}
    assert "present" in rows["single"] and "missing" in rows["pair"]


def test_jobs_and_status_show_a_job(service: str, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = _new_job(service)
    assert main(["jobs", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    # Lists show the first 12 characters of an id, which name the job as well.
    assert job_id[:12] in out and job_id not in out and "org/r" in out and "queued" in out
    assert main(["status", job_id[:12]]) == 0
    out = capsys.readouterr().out
    assert f"Job {job_id}: queued" in out and "org/r/w.gguf" in out


def test_job_actions_reach_the_service(service: str, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = _new_job(service)
    for action, status in (("pause", "paused"), ("resume", "queued"), ("cancel", "cancelled")):
        assert main([action, job_id]) == 0, action
        assert f"Job {job_id}: {status}" in capsys.readouterr().out
        assert _api(service, "GET", f"/api/models/download/status/{job_id}")["status"] == status
    assert main(["retry", job_id]) == 1  # only a failed job can be retried
    assert capsys.readouterr().err == "modelpull: cannot retry a job that is cancelled\n"


def test_url_and_token_options_win_over_the_environment(
    service: str, environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "--token", "wrong-token-value"]) == 1
    assert capsys.readouterr().err == "modelpull: the service refused the token from --token\n"
    environ.setenv("MODELPULL_URL", "http://127.0.0.1:9")
    assert main(["models"]) == 1
    assert (
        capsys.readouterr().err
        == "modelpull: cannot reach http://127.0.0.1:9: connection refused\n"
    )
    assert main(["models", "--url", service]) == 0
    assert main(["--url", service, "models"]) == 0  # before the command too


def test_pull_of_a_present_model_says_so(
    service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "models" / "a.gguf").write_bytes(b"four")
    (tmp_path / "models" / "b.safetensors").write_bytes(b"b")
    assert main(["pull", "pair"]) == 0
    assert "pair is already present" in capsys.readouterr().out
    assert _api(service, "GET", JOBS)["jobs"] == []


def _cancel_the_job_when_it_appears(url: str, seen: list[dict[str, Any]]) -> threading.Thread:
    def cancel() -> None:
        jobs = wait_for(lambda: _api(url, "GET", JOBS)["jobs"], 10, "the pulled job")
        seen.append(jobs[0])
        _api(url, "POST", f"/api/models/download/{jobs[0]['jobId']}/cancel")

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("argv", "repo", "revision"),
    [
        (["pull", "single"], "org/three", "main"),
        (["pull", "org/x", "x.gguf", "--revision", "v1"], "org/x", "v1"),
    ],
    ids=["catalog model", "repo files"],
)
def test_pull_follows_the_job_to_its_end(
    service: str,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    repo: str,
    revision: str,
) -> None:
    seen: list[dict[str, Any]] = []
    canceller = _cancel_the_job_when_it_appears(service, seen)
    assert main(argv) == 1  # it ended, but not completed
    canceller.join(10)
    (job,) = seen
    assert [(f["repo"], f["revision"]) for f in job["files"]] == [(repo, revision)]
    out = capsys.readouterr().out
    assert f"job {job['jobId']}: 1 file" in out
    assert f"cancelled: job {job['jobId']}" in out


@pytest.mark.parametrize("cancel_on_exit", [False, True])
def test_ctrl_c_stops_following_and_cancels_only_if_asked(
    service: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cancel_on_exit: bool,
) -> None:
    def interrupted(self: follow.Follower) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(follow.Follower, "run", interrupted)
    flag = ["--cancel-on-exit"] if cancel_on_exit else []
    assert main(["pull", "org/r", "w.gguf", *flag]) == 130
    (job,) = _api(service, "GET", JOBS)["jobs"]
    out = capsys.readouterr().out
    if cancel_on_exit:
        assert job["status"] == "cancelled" and f"cancelled job {job['jobId']}" in out
    else:
        assert job["status"] == "queued"
        assert f"the download goes on: follow it with 'modelpull status {job['jobId']}'" in out
