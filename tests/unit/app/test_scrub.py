"""The one scrubber (app.scrub) on the texts a failed download really produces, and the core's
exits that apply it: DownloadError, the wire events, the API's job."""

from __future__ import annotations

import json
import traceback
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
import requests

from app.errors import DownloadError, TransientDownloadError
from app.events import file_event, job_event, job_to_dict
from app.models import DownloadFile, DownloadJob, FileStatus, JobStatus
from app.scrub import register_secrets, scrub

pytestmark = pytest.mark.timeout(10)

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
SIG = "4f1c0e5a9b7d3e2f8a6c1b0d9e8f7a6b"
AMZ_SIG = "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024"
CREDENTIAL = "AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/s3/aws4_request"
HF_TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"
SIGNED_URL = (
    f"http://localhost:41234/lfs/{SHA}?response-content-disposition="
    "inline%3B%20filename%2A%3DUTF-8%27%27w.gguf%3B%20filename%3D%22w.gguf%22%3B"
    f"&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={quote(CREDENTIAL, safe='')}"
    f"&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    f"&X-Amz-Signature={AMZ_SIG}&sig={SIG}"
)
SECRETS = (SIG, AMZ_SIG, CREDENTIAL, quote(CREDENTIAL, safe=""), "AKIAIOSFODNN7EXAMPLE")


def leaked(text: str) -> list[str]:
    return [s for s in (*SECRETS, HF_TOKEN) if s in text]


def http_error() -> requests.HTTPError:
    """The HTTPError requests raises for a CDN's 403, built the way requests builds it."""
    response = requests.Response()
    response.status_code = 403
    response.reason = "Forbidden"
    response.url = SIGNED_URL
    try:
        response.raise_for_status()
    except requests.HTTPError as exc:
        return exc
    raise AssertionError("raise_for_status did not raise")


def test_a_403_for_a_signed_url_keeps_the_url_but_not_its_signature() -> None:
    text = scrub(str(http_error()))

    assert leaked(text) == []
    # The user still sees what failed and where.
    assert text.startswith(
        f"403 Client Error: Forbidden for url: http://localhost:41234/lfs/{SHA}?"
    )
    assert "X-Amz-Expires=3600" in text and "X-Amz-Date=20240101T000000Z" in text
    assert "&X-Amz-Signature=***&sig=***" in text and "X-Amz-Credential=***&" in text


def test_a_traceback_through_huggingface_hub_keeps_its_frames_but_not_the_signature() -> None:
    try:
        try:
            raise http_error()
        except requests.HTTPError as exc:
            raise RuntimeError(f"hf_hub_download failed: {exc}") from exc
    except RuntimeError:
        trace = traceback.format_exc()
    assert SIG in trace  # the premise: Python prints the URL twice

    text = scrub(trace)

    assert leaked(text) == []
    assert "Traceback (most recent call last):" in text and "requests.exceptions.HTTPError" in text
    assert "raise_for_status" in text and "hf_hub_download failed: 403 Client Error" in text


def test_an_s3_error_body_loses_every_element_that_repeats_the_signed_request() -> None:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code>'
        "<Message>The request signature we calculated does not match the signature you "
        "provided. Check your key and signing method.</Message>"
        "<AWSAccessKeyId>AKIAIOSFODNN7EXAMPLE</AWSAccessKeyId>"
        "<StringToSign>AWS4-HMAC-SHA256\n20240101T000000Z\n"
        f"20240101/us-east-1/s3/aws4_request\n{AMZ_SIG[::-1]}</StringToSign>"
        f"<SignatureProvided>{AMZ_SIG}</SignatureProvided>"
        "<StringToSignBytes>41 57 53 34 2d 48 4d 41 43</StringToSignBytes>"
        f"<CanonicalRequest>GET\n/lfs/{SHA}\nX-Amz-Credential={quote(CREDENTIAL, safe='')}"
        "\nhost:localhost</CanonicalRequest>"
        "<RequestId>4442587FB7D0A2F9</RequestId></Error>"
    )

    text = scrub(body)

    assert leaked(text) == [] and AMZ_SIG[::-1] not in text and "41 57 53" not in text
    assert "<Code>SignatureDoesNotMatch</Code>" in text
    assert "<RequestId>4442587FB7D0A2F9</RequestId>" in text
    assert "<SignatureProvided>***</SignatureProvided>" in text


def test_a_json_body_loses_its_token_fields_and_keeps_the_error() -> None:
    body = json.dumps(
        {"error": "Access denied", "token": "tok.abc.def", "access_token": "at-123456", "n": 1}
    )

    text = scrub(body)

    assert "tok.abc.def" not in text and "at-123456" not in text
    assert json.loads(text) == {
        "error": "Access denied",
        "token": "***",
        "access_token": "***",
        "n": 1,
    }


def test_a_signed_url_quoted_inside_another_url_is_scrubbed_once_or_twice_encoded() -> None:
    once = f"redirected via http://proxy.local/fetch?u={quote(SIGNED_URL, safe='')}"
    twice = f"redirected via http://proxy.local/fetch?u={quote(quote(SIGNED_URL, safe=''))}"

    for text in (scrub(once), scrub(twice)):
        assert leaked(text) == [] and quote(quote(CREDENTIAL, safe=""), safe="") not in text
        assert "X-Amz-Expires%" in text  # the parameters around the secrets survive


def test_bearer_authorization_and_hub_tokens_are_masked_but_names_stay_readable() -> None:
    text = scrub(
        f"headers={{'Authorization': 'Bearer {HF_TOKEN}'}}\n"
        f"Authorization: Bearer {HF_TOKEN[::-1]}\n"
        f"curl -H 'authorization: bearer xyz.987' ... HF_TOKEN={HF_TOKEN} token {HF_TOKEN}\n"
        "File huggingface_hub/file_download.py, in hf_hub_download: hf_raise_for_status\n"
        "redis://:hunter2pass@127.0.0.1:6379/0 http://localhost:8000/x"
    )

    assert HF_TOKEN not in text and HF_TOKEN[::-1] not in text and "xyz.987" not in text
    assert "hunter2pass" not in text and "redis://:***@127.0.0.1:6379/0" in text
    assert "Authorization: Bearer ***" in text and "token hf_***" in text
    assert "in hf_hub_download: hf_raise_for_status" in text
    assert "http://localhost:8000/x" in text


def test_a_registered_secret_is_masked_wherever_it_appears_even_url_encoded() -> None:
    secret = f"api/secret+{uuid.uuid4().hex}"  # matches no pattern: only registration helps
    register_secrets(secret, None, "")

    text = scrub(f"sent {secret} then GET /x?q={quote(secret, safe='')} ok")

    assert secret not in text and quote(secret, safe="") not in text
    assert text == "sent *** then GET /x?q=*** ok"


def test_scrubbing_twice_changes_nothing_and_none_stays_none() -> None:
    once = scrub(str(http_error()))

    assert scrub(once) == once
    assert scrub(None) is None and scrub("") == ""
    assert scrub("the Hub answered 503, will retry") == "the Hub answered 503, will retry"


# --- the core's exits ----------------------------------------------------------------------


def test_a_download_error_is_scrubbed_when_made_and_when_its_stderr_is_set_later() -> None:
    err = TransientDownloadError(
        f"huggingface_hub: HfHubHTTPError: {http_error()}",
        repo="org/r",
        file="w.gguf",
        status=403,
        stderr=f"GET {SIGNED_URL}\n",
    )
    assert leaked(str(err)) == [] and leaked(err.message) == [] and leaked(err.stderr or "") == []
    assert str(err).startswith("org/r/w.gguf: huggingface_hub: HfHubHTTPError: 403 Client Error")

    # The pipeline attaches a traceback after construction.
    err.stderr = "".join(traceback.format_exception(http_error()))
    assert err.stderr is not None and "HTTPError: 403 Client Error" in err.stderr
    assert leaked(err.stderr) == []
    assert leaked("".join(traceback.format_exception(err))) == []
    err.message = f"retrying {SIGNED_URL}"
    assert leaked(str(err)) == [] and leaked(repr(err)) == []


def test_download_error_keeps_none_as_no_stderr() -> None:
    assert DownloadError("gone").stderr is None


def failed_job() -> DownloadJob:
    """A failed job whose row holds a signed URL, as a worker before this fix stored it."""
    job = DownloadJob(
        id="j" * 32,
        model_id=None,
        status=JobStatus.FAILED,
        method="hf_hub",
        error=f"1 of 1 files failed; w.gguf: {http_error()}",
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    file = DownloadFile(
        id="f" * 32,
        file_index=0,
        repo="org/r",
        revision="main",
        file_name="w.gguf",
        dest="w.gguf",
        status=FileStatus.FAILED,
        bytes_done=0,
        size=10,
        attempts=1,
        error=f"org/r/w.gguf: {http_error()}",
        stderr=f"Traceback ...\nrequests.exceptions.HTTPError: {http_error()}\n",
    )
    job.files = [file]
    return job


def test_events_and_the_api_job_never_show_a_signature_stored_on_a_row() -> None:
    job = failed_job()
    file = job.files[0]

    shown = [
        file_event(
            job,
            file,
            status=FileStatus.FAILED,
            bytes_done=0,
            total=10,
            overall_done=0,
            overall_total=10,
            error=file.error,
            stderr=file.stderr,
        ),
        job_event(job),
        job_to_dict(job),
    ]

    for item in shown:
        assert leaked(json.dumps(item)) == [], item
    api = job_to_dict(job)
    assert api["files"][0]["error"].startswith("org/r/w.gguf: 403 Client Error: Forbidden for url")
    assert "HTTPError: 403" in api["files"][0]["stderr"] and "403" in api["error"]
