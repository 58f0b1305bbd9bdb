"""No secret leaves the worker: a CDN that refuses its signed URL with 403, a Hub token in use,
and the row, every event on Redis, the download log and the API's job all free of the
signature and the token. Real worker processes of each engine, a private Redis, the
imitation Hub over loopback, the web app on the same job store."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from app import create_app, jobs
from app.errors import TransientDownloadError
from app.models import JobStatus
from app.settings import Settings
from tests.hub import VALID_TOKEN, GeneratedFile
from tests.stack import Stack
from tests.support import RedisServer, wait_for
from worker.runtime import build_runtime

pytestmark = pytest.mark.timeout(120)

REPO = "org/signed"
FILE = "w.gguf"
# An API token no pattern would recognise: only the worker's registration can mask it.
API_TOKEN = "api-token-for-the-secrets-test-7f3a9c"
# The query parameters of a signed CDN URL that are credentials (whatever the CDN adds).
SIGNED_PARAMS = {
    "sig",
    "signature",
    "policy",
    "key-pair-id",
    "token",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
}


def signed_values(stack: Stack) -> list[str]:
    """The credentials in the CDN URL the Hub hands out for the file, plain and URL-encoded."""
    info = stack.hub.file_info(REPO, FILE)
    query = urlsplit(stack.hub.cdn_location(info)).query
    values = [v for k, v in parse_qsl(query) if k.lower() in SIGNED_PARAMS]
    assert stack.hub.sign(info.sha256) in values  # the premise: the URL is signed
    return sorted({form for v in values for form in (v, quote(v, safe=""))})


def api_job(stack: Stack, job_id: str) -> str:
    """The API's answer for the job, as a client receives it."""
    settings = dataclasses.replace(stack.settings, api_token=API_TOKEN, catalog_refresh_seconds=0)
    client = create_app(settings).test_client()
    response = client.get(
        f"/api/models/download/status/{job_id}",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert response.status_code == 200, response.text
    return response.get_data(as_text=True)


@pytest.mark.parametrize("downloader", ["native", "hf_hub"])
def test_a_cdn_403_with_its_signed_url_leaves_no_secret_anywhere(
    stack: Stack, downloader: str
) -> None:
    stack.hub.add_repo(
        REPO,
        {FILE: GeneratedFile(size=2 << 20, seed=12)},
        gated=True,
        approved_tokens=(VALID_TOKEN,),  # the token is needed, so it is sent
    )
    secrets = [*signed_values(stack), VALID_TOKEN, API_TOKEN]
    stack.hub.faults.add(host="cdn", status=403, times=None)
    stack.start_worker(
        "w1",
        DOWNLOADER=downloader,
        HF_TOKEN=VALID_TOKEN,
        API_TOKEN=API_TOKEN,
        DOWNLOAD_MAX_ATTEMPTS="1",
    )

    job = stack.submit(jobs.FileSpec(REPO, FILE))
    files = stack.wait_job(job["jobId"], JobStatus.FAILED, timeout=90)
    events = stack.collector.until_job_event(job["jobId"])

    # The failure really came from the CDN refusing its signed URL.
    refused = [r for r in stack.hub.requests if r.host == "cdn" and r.status == 403]
    assert refused and all("sig=" in r.path for r in refused)
    row = files[0]
    failed = [e for e in events if e["type"] == "failed"]
    assert failed and failed[-1]["data"]["scope"] == "job"
    log = stack.data / "logs" / "downloads.log"
    wait_for(lambda: log.exists() and "failed" in log.read_text(), 10, "the failure in the log")

    places = {
        "row error": row.error or "",
        "row stderr": row.stderr or "",
        "events": json.dumps(events),
        "download log": log.read_text(),
        "API": api_job(stack, job["jobId"]),
    }
    found = {where: [s for s in secrets if s in text] for where, text in places.items()}
    assert found == {where: [] for where in places}
    assert row.error, "a failed file says why"
    if downloader == "hf_hub":
        # The user still reads what failed and where: only the secrets are masked.
        assert "HTTP 403" in row.error
        assert row.stderr and "403 Forbidden" in row.stderr
        assert f"{stack.hub.cdn_url}/lfs/" in row.stderr and "sig=***" in row.stderr


def test_the_worker_masks_its_own_tokens_in_errors_and_log_tracebacks(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    hub_token = "plain-hub-token-0123456789"  # no hf_ prefix: no pattern matches it
    settings = Settings(
        models_dir=tmp_path / "models",
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
        redis_url=redis_server.url,
        hf_token=hub_token,
        api_token=API_TOKEN,
    )
    rt = build_runtime(settings)
    try:
        err = TransientDownloadError(f"proxy said: bad credentials {hub_token}")
        err.stderr = f"env HUB={hub_token} API={API_TOKEN}\n"
        try:
            raise RuntimeError(f"the client sent {hub_token}")
        except RuntimeError:
            rt.log.exception("unexpected job=j1 error=%s", err)
        for h in rt.log.handlers:
            h.flush()
        text = settings.download_log_path.read_text()
    finally:
        rt.sessions.kw["bind"].dispose()
        for h in list(rt.log.handlers):
            rt.log.removeHandler(h)
            h.close()

    assert hub_token not in str(err) and hub_token not in (err.stderr or "")
    assert API_TOKEN not in (err.stderr or "") and "API=***" in (err.stderr or "")
    assert hub_token not in text and "RuntimeError: the client sent ***" in text
    assert "unexpected job=j1 error=proxy said: bad credentials ***" in text
