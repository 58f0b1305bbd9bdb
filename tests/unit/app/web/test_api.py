"""The REST API through Flask's test client: routes, validation, errors, control."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app import jobs
from app.dispatch import QUEUE, TASK_NAME
from app.models import DownloadFile, DownloadJob, FileStatus, JobStatus
from tests.webapp import AUTH

JOBS = "/api/models/download"


def count_rows(app: Flask) -> tuple[int, int]:
    with app.extensions["modelpull"].sessions() as s:
        return (
            s.scalar(select(func.count()).select_from(DownloadJob)) or 0,
            s.scalar(select(func.count()).select_from(DownloadFile)) or 0,
        )


def queued_messages(app: Flask) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(app.extensions["modelpull"].settings.redis_url)
    return [json.loads(m) for m in client.lrange(QUEUE, 0, -1)]


def test_models_list_flags_missing_ones_with_file_status(client: FlaskClient, app: Flask) -> None:
    models_dir = app.extensions["modelpull"].settings.models_dir
    (models_dir / "c.gguf").write_bytes(b"x")
    body = client.get("/api/models", headers=AUTH).get_json()
    by_id = {m["id"]: m for m in body["models"]}
    assert by_id["pair"]["missing"] is True and by_id["single"]["missing"] is False
    assert by_id["single"]["files"][0]["exists"] is True
    assert by_id["pair"]["files"][0]["humanSize"] == "4 B"


def test_model_files_and_unknown_models(client: FlaskClient) -> None:
    body = client.get("/api/models/pair/files", headers=AUTH).get_json()
    assert body["allPresent"] is False
    assert [f["dest"] for f in body["files"]] == ["a.gguf", "b.safetensors"]
    resp = client.get("/api/models/nope/files", headers=AUTH)
    assert resp.status_code == 404 and resp.get_json()["error"] == "not_found"


def test_starting_a_model_download_queues_its_missing_files(
    client: FlaskClient, app: Flask
) -> None:
    models_dir = app.extensions["modelpull"].settings.models_dir
    (models_dir / "b.safetensors").write_bytes(b"present")
    resp = client.post("/api/models/pair/download", headers=AUTH)
    assert resp.status_code == 202
    job = resp.get_json()
    assert resp.headers["Location"] == f"{JOBS}/status/{job['jobId']}"
    assert job["modelId"] == "pair" and job["status"] == "queued"
    assert [f["fileName"] for f in job["files"]] == ["a.gguf"]
    # One task message per file, sent by name to the downloads queue, carrying only the id.
    messages = queued_messages(app)
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == TASK_NAME
    assert job["files"][0]["fileId"] in messages[0]["headers"]["argsrepr"]


def test_a_present_model_answers_so(client: FlaskClient, app: Flask) -> None:
    (app.extensions["modelpull"].settings.models_dir / "c.gguf").write_bytes(b"x")
    resp = client.post("/api/models/single/download", headers=AUTH)
    assert resp.status_code == 200
    assert resp.get_json()["allPresent"] is True
    assert count_rows(app) == (0, 0)


def test_an_ad_hoc_download(client: FlaskClient, app: Flask) -> None:
    resp = client.post(
        "/api/downloads",
        headers=AUTH,
        json={"repo": "org/repo", "files": ["a.gguf", "dir/b.gguf"], "revision": "v1"},
    )
    assert resp.status_code == 202
    files = resp.get_json()["files"]
    # Under the repo's folder, one that names the revision: no ad-hoc file can overwrite
    # another repo's, the catalog's, or another revision's.
    assert [(f["fileName"], f["revision"], f["dest"]) for f in files] == [
        ("a.gguf", "v1", "org/repo@v1/a.gguf"),
        ("dir/b.gguf", "v1", "org/repo@v1/dir/b.gguf"),
    ]
    assert len(queued_messages(app)) == 2


BAD_BODIES: list[tuple[Any, str]] = [
    ("not json", "body"),
    (["org/repo"], "body"),
    ({"files": ["a"]}, "repo"),
    ({"repo": "org/repo"}, "files"),
    ({"repo": "org/repo", "files": ["a"], "extra": 1}, "extra"),
    ({"repo": 5, "files": ["a"]}, "repo"),
    ({"repo": "not-a-repo", "files": ["a"]}, "repo"),
    ({"repo": "org/repo\n", "files": ["a"]}, "repo"),
    ({"repo": "../../etc", "files": ["a"]}, "repo"),
    ({"repo": "org/repo", "files": []}, "files"),
    ({"repo": "org/repo", "files": "a.gguf"}, "files"),
    ({"repo": "org/repo", "files": [3]}, "files[0]"),
    ({"repo": "org/repo", "files": ["../../etc/passwd"]}, "files[0]"),
    ({"repo": "org/repo", "files": ["/abs/x"]}, "files[0]"),
    ({"repo": "org/repo", "files": ["a\\..\\b"]}, "files[0]"),
    ({"repo": "org/repo", "files": ["ok", ".modelpull/partial/x"]}, "files[1]"),
    ({"repo": "org/repo", "files": ["a", "a"]}, "files[1]"),
    ({"repo": "org/repo", "files": ["x"] * 101}, "files"),
    ({"repo": "org/repo", "files": ["a"], "revision": ""}, "revision"),
    ({"repo": "org/repo", "files": ["a"], "revision": "a b"}, "revision"),
    ({"repo": "org/repo", "files": ["a"], "revision": "ma\u00efn"}, "revision"),
    ({"repo": "org/repo", "files": ["a"], "revision": "v1#x"}, "revision"),
    ({"repo": "org/repo", "files": ["a\ud800.bin"]}, "files[0]"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_ad_hoc_requests_are_refused_naming_the_field(
    client: FlaskClient, app: Flask, body: Any, field: str
) -> None:
    if isinstance(body, str):
        resp = client.post(
            "/api/downloads", headers=AUTH, data=body, content_type="application/json"
        )
    else:
        resp = client.post("/api/downloads", headers=AUTH, json=body)
    assert resp.status_code == 400
    err = resp.get_json()
    assert err["error"] == "invalid_request" and err["message"].startswith(f"{field}:")
    assert count_rows(app) == (0, 0) and queued_messages(app) == []


def test_an_oversized_body_is_refused(client: FlaskClient, app: Flask) -> None:
    body = {"repo": "org/repo", "files": ["a" * 70_000]}
    resp = client.post("/api/downloads", headers=AUTH, json=body)
    assert resp.status_code == 413 and resp.get_json()["error"] == "request_entity_too_large"
    assert count_rows(app) == (0, 0)


def _start(client: FlaskClient, *files: str) -> dict[str, Any]:
    resp = client.post("/api/downloads", headers=AUTH, json={"repo": "org/r", "files": list(files)})
    assert resp.status_code == 202
    body: dict[str, Any] = resp.get_json()
    return body


def test_job_status_and_unknown_jobs(client: FlaskClient) -> None:
    job = _start(client, "a.bin")
    body = client.get(f"{JOBS}/status/{job['jobId']}", headers=AUTH).get_json()
    assert body["jobId"] == job["jobId"] and body["files"][0]["status"] == "queued"
    for bad in ("0" * 32, "not-an-id", "../../etc"):
        resp = client.get(f"{JOBS}/status/{bad}", headers=AUTH)
        assert resp.status_code == 404 and resp.get_json()["error"] == "not_found"


def test_job_list_is_newest_first_paginated_and_filtered(client: FlaskClient, app: Flask) -> None:
    ids = [_start(client, f"f{i}.bin")["jobId"] for i in range(5)]
    client.post(f"{JOBS}/{ids[1]}/cancel", headers=AUTH)
    seen: list[str] = []
    cursor = None
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        page = client.get(f"{JOBS}/jobs{query}", headers=AUTH).get_json()
        seen += [j["jobId"] for j in page["jobs"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    cancelled = client.get(f"{JOBS}/jobs?status=cancelled", headers=AUTH).get_json()
    assert [j["jobId"] for j in cancelled["jobs"]] == [ids[1]]
    for query, field in (
        ("?status=bogus", "status"),
        ("?limit=0", "limit"),
        ("?limit=x", "limit"),
        ("?limit=1000", "limit"),
        ("?cursor=garbage", "cursor"),
        ("?limit=%C2%B2", "limit"),
        (
            "?cursor=MDAwMS0wMS0wMVQwMDowMDowMCswMTowMHwwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMA",
            "cursor",
        ),
    ):
        resp = client.get(f"{JOBS}/jobs{query}", headers=AUTH)
        assert resp.status_code == 400 and resp.get_json()["message"].startswith(field), query


def test_pause_resume_cancel_delete(client: FlaskClient, app: Flask) -> None:
    job_id = _start(client, "a.bin", "b.bin")["jobId"]
    paused = client.post(f"{JOBS}/{job_id}/pause", headers=AUTH)
    assert paused.status_code == 200 and paused.get_json()["status"] == "paused"
    resumed = client.post(f"{JOBS}/{job_id}/resume", headers=AUTH).get_json()
    assert resumed["status"] == "queued"
    assert len(queued_messages(app)) == 4  # two at the start, two for the resume
    refused = client.delete(f"{JOBS}/{job_id}", headers=AUTH)
    assert refused.status_code == 409 and "cancel it first" in refused.get_json()["message"]
    cancelled = client.post(f"{JOBS}/{job_id}/cancel", headers=AUTH).get_json()
    assert cancelled["status"] == "cancelled"
    assert client.delete(f"{JOBS}/{job_id}", headers=AUTH).status_code == 204
    assert client.get(f"{JOBS}/status/{job_id}", headers=AUTH).status_code == 404


@pytest.mark.parametrize("action", ["resume", "pause", "retry", "cancel"])
def test_illegal_transitions_are_409_and_change_nothing(
    client: FlaskClient, app: Flask, action: str
) -> None:
    job_id = _start(client, "a.bin")["jobId"]
    with app.extensions["modelpull"].sessions.begin() as s:  # a worker completes it
        file_id = jobs.get_job(s, job_id).files[0].id
        jobs.claim_file(s, file_id, worker="w")
        jobs.finish_file(s, file_id, FileStatus.COMPLETED, worker="w")
    before = client.get(f"{JOBS}/status/{job_id}", headers=AUTH).get_json()
    resp = client.post(f"{JOBS}/{job_id}/{action}", headers=AUTH)
    assert resp.status_code == 409
    assert resp.get_json() == {
        "error": "conflict",
        "message": f"cannot {action} a job that is completed",
    }
    assert client.get(f"{JOBS}/status/{job_id}", headers=AUTH).get_json() == before


def test_retry_of_a_failed_job(client: FlaskClient, app: Flask) -> None:
    job_id = _start(client, "a.bin")["jobId"]
    with app.extensions["modelpull"].sessions.begin() as s:
        file_id = jobs.get_job(s, job_id).files[0].id
        jobs.claim_file(s, file_id, worker="w")
        jobs.finish_file(s, file_id, FileStatus.FAILED, worker="w", error="HTTP 500")
    body = client.post(f"{JOBS}/{job_id}/retry", headers=AUTH).get_json()
    # A job that has begun shows as downloading until its files end again.
    assert body["status"] == "downloading" and body["files"][0]["status"] == "queued"
    assert body["files"][0]["error"] is None
    with app.extensions["modelpull"].sessions() as s:
        assert jobs.get_job(s, job_id).status is JobStatus.DOWNLOADING


def test_unknown_routes_and_methods_answer_json(client: FlaskClient) -> None:
    resp = client.get("/api/nothing-here", headers=AUTH)
    assert resp.status_code == 404 and resp.get_json()["error"] == "not_found"
    resp = client.put("/api/models", headers=AUTH)
    assert resp.status_code == 405 and resp.get_json()["error"] == "method_not_allowed"


def test_a_crash_answers_500_without_a_traceback(web_settings: Any) -> None:
    from app import create_app

    application = create_app(web_settings)

    @application.get("/api/boom")
    def boom() -> str:
        raise RuntimeError("secret internal detail")

    resp = application.test_client().get("/api/boom", headers=AUTH)
    assert resp.status_code == 500
    text = resp.get_data(as_text=True)
    assert resp.get_json()["error"] == "internal_error"
    assert "secret internal detail" not in text and "Traceback" not in text
