"""Sizes before downloading, the repo picker's API, no duplicate jobs, job id prefixes: the web
tier through Flask's test client against a real imitation Hub on a socket."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from app import create_app, hubcache, jobs
from app.events import job_to_dict
from app.models import DownloadFile, DownloadJob, utcnow
from app.settings import Settings
from tests.hub.samples import GATED, TINY
from tests.hub.server import VALID_TOKEN, ImitationHub
from tests.support import wait_for
from tests.webapp import AUTH

JOBS = "/api/models/download"
CATALOG = """\
models:
  tiny:
    name: Tiny
    files:
      - {repo: org/tiny, file: model.bin}
      - {repo: org/tiny, file: config.json}
  locked:
    files:
      - {repo: org/gated, file: model.safetensors}
      - {repo: org/gated, file: nope.bin}
  gone:
    files:
      - {repo: org/nowhere, file: x.gguf}
"""


@pytest.fixture
def hub_app(web_settings: Settings, hub: ImitationHub) -> Iterator[Flask]:
    web_settings.models_catalog.write_text(CATALOG)
    settings = dataclasses.replace(web_settings, hf_endpoint=hub.url)
    application = create_app(settings)
    yield application
    application.extensions["modelpull"].relay.stop()


@pytest.fixture
def hub_client(hub_app: Flask) -> FlaskClient:
    return hub_app.test_client()


def job_count(app: Flask) -> int:
    with app.extensions["modelpull"].sessions() as s:
        return s.scalar(select(func.count()).select_from(DownloadJob)) or 0


def refresh(app: Flask) -> int:
    state = app.extensions["modelpull"]
    return hubcache.refresh_catalog(state.sessions, state.hub, state.catalog)


def models(client: FlaskClient) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/api/models", headers=AUTH).get_json()
    return body


# --- sizes before downloading --------------------------------------------------------------


def test_catalog_sizes_come_from_the_hub_before_any_download(
    hub_app: Flask, hub_client: FlaskClient, hub: ImitationHub
) -> None:
    before = {m["id"]: m for m in models(hub_client)["models"]}
    assert before["tiny"]["totalBytes"] is None and before["tiny"]["checkedAt"] is None

    assert refresh(hub_app) == 2  # org/tiny and org/gated answered; org/nowhere did not
    by_id = {m["id"]: m for m in models(hub_client)["models"]}
    tiny = by_id["tiny"]
    sizes = {f["fileName"]: f["remoteSize"] for f in tiny["files"]}
    assert sizes == {
        "model.bin": hub.repo(TINY).files["model.bin"].size,
        "config.json": hub.repo(TINY).files["config.json"].size,
    }
    assert tiny["totalBytes"] == tiny["missingBytes"] == sum(sizes.values())
    assert tiny["files"][0]["humanSize"] == "10.0 KiB"
    assert tiny["gated"] is False and tiny["hubError"] is None and tiny["checkedAt"]
    assert by_id["locked"]["gated"] is True
    assert by_id["locked"]["hubError"] == "org/gated: no file 'nope.bin' on the Hub"
    assert by_id["gone"]["totalBytes"] is None
    assert "org/nowhere: no such repo on the Hub" in by_id["gone"]["hubError"]
    assert job_count(hub_app) == 0  # learning sizes downloads nothing


def test_the_web_tier_learns_the_sizes_in_the_background(
    web_settings: Settings, hub: ImitationHub
) -> None:
    web_settings.models_catalog.write_text(CATALOG)
    settings = dataclasses.replace(web_settings, hf_endpoint=hub.url, catalog_refresh_seconds=3600)
    app = create_app(settings)
    try:
        client = app.test_client()

        def learnt() -> dict[str, Any] | None:
            body = models(client)
            return None if body["metadataPending"] else body

        body = wait_for(learnt, 15, "the catalog's sizes")
        tiny = next(m for m in body["models"] if m["id"] == "tiny")
        files = hub.repo(TINY).files
        assert tiny["totalBytes"] is not None, body
        assert tiny["totalBytes"] == files["model.bin"].size + files["config.json"].size
    finally:
        app.extensions["modelpull-sizes"].stop.set()
        app.extensions["modelpull"].relay.stop()


def test_a_jobs_total_is_known_when_it_is_created(
    hub_app: Flask, hub_client: FlaskClient, hub: ImitationHub
) -> None:
    refresh(hub_app)
    job = hub_client.post("/api/models/tiny/download", headers=AUTH).get_json()
    assert job["totalBytes"] == sum(f["size"] for f in job["files"]) > 10 * 1024
    # An ad-hoc job asks the Hub for sizes nobody asked for before.
    body = {"repo": TINY, "files": ["sub/dir/notes.txt", "README.md"]}
    adhoc = hub_client.post("/api/downloads", headers=AUTH, json=body).get_json()
    expected = [hub.repo(TINY).files[n].size for n in body["files"]]
    assert [f["size"] for f in adhoc["files"]] == expected
    assert adhoc["totalBytes"] == sum(expected)


# --- the repo picker -----------------------------------------------------------------------


def test_a_repo_named_by_id_or_url_lists_its_files_with_sizes(
    hub_client: FlaskClient, hub: ImitationHub
) -> None:
    listed = hub_client.get(f"/api/hub/repo?id={TINY}", headers=AUTH).get_json()
    files = {f["path"]: f for f in listed["files"]}
    assert sorted(files) == sorted(hub.repo(TINY).files)
    assert files["model.bin"]["size"] == 10 * 1024 and files["model.bin"]["dest"] == (
        "org/tiny/model.bin"
    )
    assert listed["totalBytes"] == sum(f["size"] for f in listed["files"])
    assert listed["commit"] == hub.repo(TINY).commit and listed["access"] == "granted"
    for url, selected, folder in (
        (f"https://huggingface.co/{TINY}/blob/main/sub/dir/notes.txt", "sub/dir/notes.txt", None),
        (f"huggingface.co/{TINY}/resolve/main/model.bin?download=true", "model.bin", None),
        (f"{hub.url}/{TINY}/tree/main/sub", None, "sub"),
        (f"https://hf.co/{TINY}", None, None),
    ):
        got = hub_client.get("/api/hub/repo", query_string={"id": url}, headers=AUTH)
        assert got.status_code == 200, (url, got.get_json())
        body = got.get_json()
        assert (body["repo"], body["selected"], body["folder"]) == (TINY, selected, folder)


def test_a_file_already_on_disk_is_marked_present(
    hub_app: Flask, hub_client: FlaskClient, hub: ImitationHub
) -> None:
    models_dir = hub_app.extensions["modelpull"].settings.models_dir
    (models_dir / "org/tiny").mkdir(parents=True)
    (models_dir / "org/tiny/config.json").write_bytes(
        hub.repo(TINY).files["config.json"].disk_path.read_bytes()
    )
    listed = hub_client.get(f"/api/hub/repo?id={TINY}", headers=AUTH).get_json()
    present = [f["path"] for f in listed["files"] if f["present"]]
    assert present == ["config.json"]


@pytest.mark.parametrize(
    ("ask", "status", "message"),
    [
        ("org/nowhere", 404, "org/nowhere: no such repo on the Hub"),
        ("https://example.com/org/tiny", 400, "id: 'example.com' is not the Hugging Face Hub"),
        ("https://huggingface.co/datasets/org/ds", 400, "id: only model repos can be"),
        ("tiny", 400, "id: 'tiny' is not a repo id like org/name"),
        ("", 400, "id: give a repo id like org/name or a Hub URL"),
        ("https://huggingface.co/org/tiny/blob/main/nope.gguf", 404, "org/tiny has no file"),
        (
            "https://huggingface.co/org/tiny/tree/nope-branch",
            404,
            "org/tiny has no revision 'nope-branch'",
        ),
        ("org/../etc", 400, "id: "),
    ],
)
def test_a_repo_that_cannot_be_listed_says_why(
    hub_client: FlaskClient, ask: str, status: int, message: str
) -> None:
    resp = hub_client.get("/api/hub/repo", query_string={"id": ask}, headers=AUTH)
    assert resp.status_code == status, resp.get_json()
    assert resp.get_json()["message"].startswith(message), resp.get_json()


def test_a_gated_repo_says_whether_our_token_may_download(
    web_settings: Settings, hub: ImitationHub
) -> None:
    for token, access in ((None, "denied"), (VALID_TOKEN, "granted")):
        settings = dataclasses.replace(web_settings, hf_endpoint=hub.url, hf_token=token)
        app = create_app(settings)
        try:
            got = app.test_client().get(f"/api/hub/repo?id={GATED}", headers=AUTH).get_json()
        finally:
            app.extensions["modelpull"].relay.stop()
        assert got["gated"] == "manual" and got["access"] == access
        assert (got["message"] is None) == (access == "granted")
        if access == "denied":
            assert "accept its terms on the Hub" in got["message"]
            assert "HF_TOKEN" in got["message"]


def test_the_hub_token_never_reaches_the_answer(web_settings: Settings, hub: ImitationHub) -> None:
    settings = dataclasses.replace(web_settings, hf_endpoint=hub.url, hf_token=VALID_TOKEN)
    app = create_app(settings)
    try:
        client = app.test_client()
        for ask in (TINY, GATED, "org/nowhere"):
            text = client.get(f"/api/hub/repo?id={ask}", headers=AUTH).get_data(as_text=True)
            assert VALID_TOKEN not in text
    finally:
        app.extensions["modelpull"].relay.stop()


def test_the_repo_picker_needs_auth(hub_client: FlaskClient) -> None:
    resp = hub_client.get(f"/api/hub/repo?id={TINY}")
    assert resp.status_code == 401


# --- no duplicate jobs ---------------------------------------------------------------------


def test_asking_again_for_a_model_under_way_returns_its_job(
    hub_app: Flask, hub_client: FlaskClient
) -> None:
    first = hub_client.post("/api/models/tiny/download", headers=AUTH)
    again = hub_client.post("/api/models/tiny/download", headers=AUTH)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.get_json()["existing"] is False and again.get_json()["existing"] is True
    assert again.get_json()["jobId"] == first.get_json()["jobId"] and job_count(hub_app) == 1
    listed = {m["id"]: m for m in models(hub_client)["models"]}
    assert listed["tiny"]["activeJob"] == {"jobId": first.get_json()["jobId"], "status": "queued"}
    job_id = first.get_json()["jobId"]
    hub_client.post(f"{JOBS}/{job_id}/pause", headers=AUTH)
    paused = hub_client.post("/api/models/tiny/download", headers=AUTH).get_json()
    assert paused["jobId"] == job_id and paused["status"] == "paused"
    hub_client.post(f"{JOBS}/{job_id}/cancel", headers=AUTH)
    fresh = hub_client.post("/api/models/tiny/download", headers=AUTH)
    assert fresh.status_code == 202 and fresh.get_json()["jobId"] != job_id


def test_asking_again_for_files_under_way_returns_their_job(
    hub_app: Flask, hub_client: FlaskClient
) -> None:
    body = {"repo": TINY, "files": ["model.bin", "config.json"]}
    first = hub_client.post("/api/downloads", headers=AUTH, json=body).get_json()
    same = hub_client.post("/api/downloads", headers=AUTH, json=body).get_json()
    part = hub_client.post(
        "/api/downloads", headers=AUTH, json={"repo": TINY, "files": ["config.json"]}
    ).get_json()
    assert same["jobId"] == part["jobId"] == first["jobId"] and same["existing"] is True
    other = hub_client.post(
        "/api/downloads", headers=AUTH, json={"repo": TINY, "files": ["README.md"]}
    )
    assert other.status_code == 202 and job_count(hub_app) == 2
    revision = hub_client.post("/api/downloads", headers=AUTH, json={**body, "revision": "v2"})
    assert revision.status_code == 202 and job_count(hub_app) == 3


# --- job ids by prefix ---------------------------------------------------------------------


def test_a_job_is_named_by_a_unique_prefix_of_its_id(
    hub_app: Flask, hub_client: FlaskClient
) -> None:
    job = hub_client.post("/api/downloads", headers=AUTH, json={"repo": TINY, "files": ["a"]})
    job_id = job.get_json()["jobId"]
    shown = hub_client.get(f"{JOBS}/status/{job_id[:6]}", headers=AUTH)
    assert shown.status_code == 200 and shown.get_json()["jobId"] == job_id
    paused = hub_client.post(f"{JOBS}/{job_id[:8]}/pause", headers=AUTH).get_json()
    assert paused["jobId"] == job_id and paused["status"] == "paused"
    missing = "ffff" if not job_id.startswith("ffff") else "0000"
    resp = hub_client.get(f"{JOBS}/status/{missing}", headers=AUTH)
    assert resp.status_code == 404 and resp.get_json()["message"] == f"no job '{missing}'"
    for bad in ("abc", "zzzz", job_id + "0"):
        assert hub_client.get(f"{JOBS}/status/{bad}", headers=AUTH).status_code == 404


def test_an_ambiguous_prefix_says_how_many_jobs_it_matches(
    hub_app: Flask, hub_client: FlaskClient
) -> None:
    with hub_app.extensions["modelpull"].sessions.begin() as s:
        for job_id in ("abcd" + "0" * 28, "abcd" + "1" * 28):
            s.add(DownloadJob(id=job_id, method="native"))
    resp = hub_client.post(f"{JOBS}/abcd/cancel", headers=AUTH)
    assert resp.status_code == 409
    assert resp.get_json() == {
        "error": "ambiguous",
        "message": "job prefix 'abcd' matches 2 jobs; give more characters",
    }
    assert hub_client.get(f"{JOBS}/status/abcd1", headers=AUTH).get_json()["jobId"] == (
        "abcd" + "1" * 28
    )


# --- a held file whose worker went silent ---------------------------------------------------


def test_a_file_whose_worker_went_silent_waits_for_a_worker(hub_app: Flask) -> None:
    factory = hub_app.extensions["modelpull"].sessions
    with factory.begin() as s:
        job = jobs.create_job(s, [jobs.FileSpec(TINY, "a.bin")], method="native")
        job_id, file_id = job.id, job.files[0].id
    with factory.begin() as s:
        jobs.claim_file(s, file_id, worker="w:1:a")
    with factory() as s:
        assert job_to_dict(jobs.get_job(s, job_id))["files"][0]["waitingForWorker"] is False
    with factory.begin() as s:
        s.execute(
            update(DownloadFile)
            .where(DownloadFile.id == file_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=30))
        )
    with factory() as s:
        assert job_to_dict(jobs.get_job(s, job_id))["files"][0]["waitingForWorker"] is True


def test_an_ad_hoc_job_leaves_the_catalogs_hub_error_as_it_was(
    hub_app: Flask, hub_client: FlaskClient
) -> None:
    refresh(hub_app)
    body = {"repo": GATED, "files": ["config.json"]}
    assert hub_client.post("/api/downloads", headers=AUTH, json=body).status_code == 202
    locked = next(m for m in models(hub_client)["models"] if m["id"] == "locked")
    assert locked["hubError"] == "org/gated: no file 'nope.bin' on the Hub"


def test_a_catalog_job_putting_the_file_elsewhere_is_not_the_ad_hoc_job(
    hub_app: Flask, hub_client: FlaskClient
) -> None:
    # The catalog puts org/tiny's model.bin at "model.bin"; the picker asks for it at
    # "org/tiny/model.bin": answering with the catalog's job would leave that path empty.
    catalog_job = hub_client.post("/api/models/tiny/download", headers=AUTH).get_json()
    picked = hub_client.post(
        "/api/downloads", headers=AUTH, json={"repo": TINY, "files": ["model.bin"]}
    )
    assert picked.status_code == 202 and picked.get_json()["jobId"] != catalog_job["jobId"]
    assert picked.get_json()["files"][0]["dest"] == "org/tiny/model.bin"


def test_two_processes_meeting_a_new_repo_at_once_both_keep_their_answer(
    hub_app: Flask,
) -> None:
    # One transaction has made the repo's row and not committed yet when the other asks: the
    # second waits for the first (PostgreSQL: an advisory lock; SQLite: its write lock)
    # instead of inserting the same row and failing on commit.
    factory = hub_app.extensions["modelpull"].sessions
    key = ("org/new", "main")
    first_in = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        with factory.begin() as s:
            hubcache.store_sizes(s, key, "", {"a.bin": 1})
            s.flush()
            first_in.set()
            time.sleep(0.5)

    def second() -> None:
        first_in.wait(5)
        try:
            with factory.begin() as s:
                hubcache.store_sizes(s, key, "", {"b.bin": 2}, whole=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    with factory() as s:
        assert hubcache.facts(s, [key])[key].sizes == {"a.bin": 1, "b.bin": 2}
