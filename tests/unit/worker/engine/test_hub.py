"""Resolving files on the Hub: metadata, redirects, token scope, typed errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import requests

from app.cli.localstack import free_port
from app.errors import (
    EntryNotFoundError,
    GatedRepoError,
    PermanentDownloadError,
    RepoNotFoundError,
    TransientDownloadError,
    UnauthorizedError,
)
from tests.hub import VALID_TOKEN, GeneratedFile, ImitationHub
from worker.engine.hub import HubClient, TransientHttpError, hub_error, origin, retry_after_seconds

REPO = "org/models"


@pytest.fixture
def repo_hub(hub: ImitationHub) -> ImitationHub:
    hub.add_repo(REPO, {"sub/w.safetensors": GeneratedFile(size=300_000, seed=4), "c.json": b"{}"})
    return hub


def test_an_lfs_file_resolves_to_the_cdn_with_its_sha256(repo_hub: ImitationHub) -> None:
    info = repo_hub.file_info(REPO, "sub/w.safetensors")
    got = HubClient(repo_hub.url, VALID_TOKEN).resolve(REPO, "sub/w.safetensors")
    assert got.is_lfs and got.sha256 == info.sha256 and got.git_sha1 is None
    assert (got.size, got.etag, got.commit) == (info.size, info.sha256, info.commit)
    assert got.url.startswith(repo_hub.cdn_url)


def test_a_regular_file_resolves_on_the_hub_with_its_git_blob_id(repo_hub: ImitationHub) -> None:
    got = HubClient(repo_hub.url).resolve(REPO, "c.json")
    assert not got.is_lfs and got.git_sha1 == repo_hub.file_info(REPO, "c.json").git_sha1
    assert got.url == f"{repo_hub.url}/{REPO}/resolve/main/c.json" and got.size == 2


def test_the_token_goes_only_to_the_hub_origin() -> None:
    client = HubClient("http://127.0.0.1:9000", "hf_secret")
    assert client.headers_for("http://127.0.0.1:9000/x")["Authorization"] == "Bearer hf_secret"
    for other in ("http://localhost:9000/x", "http://127.0.0.1:9001/x", "https://127.0.0.1:9000/"):
        assert "Authorization" not in client.headers_for(other)
    assert "hf_secret" not in repr(client)
    assert origin("https://Hub.example/a") == ("https", "hub.example", 443)


def test_lfs_sha256_from_the_metadata_api(repo_hub: ImitationHub) -> None:
    info = repo_hub.file_info(REPO, "sub/w.safetensors")
    client = HubClient(repo_hub.url)
    assert client.lfs_sha256(REPO, "sub/w.safetensors", info.commit) == info.sha256
    assert client.lfs_sha256(REPO, "c.json", info.commit) is None  # not an LFS file
    assert client.lfs_sha256(REPO, "sub/none.bin", info.commit) is None
    assert client.lfs_sha256("org/absent", "x", info.commit) is None
    assert HubClient(f"http://127.0.0.1:{free_port()}").lfs_sha256(REPO, "x", "c") is None


def test_an_unreachable_hub_is_a_transient_error() -> None:
    with pytest.raises(TransientDownloadError, match="cannot reach the Hub"):
        HubClient(f"http://127.0.0.1:{free_port()}", timeout=(1, 1)).resolve(REPO, "x")


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds(formatdate(1_000_030, usegmt=True), now=1_000_000) == 30.0
    assert retry_after_seconds(formatdate(1_000_000, usegmt=True), now=1_000_100) == 0.0


def _response(status: int, **headers: str) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.headers.update(headers)
    return resp


@pytest.mark.parametrize(
    ("status", "headers", "token", "error", "text"),
    [
        (403, {"X-Error-Code": "GatedRepo"}, True, GatedRepoError, "not been granted access"),
        (404, {"X-Error-Code": "RepoNotFound"}, True, RepoNotFoundError, "can read it"),
        (401, {}, False, UnauthorizedError, "requires a token"),
        (401, {}, True, UnauthorizedError, "rejected HF_TOKEN"),
        (404, {}, False, EntryNotFoundError, "o/r/f: not found at main (HTTP 404)"),
        (403, {"X-Error-Message": "blocked"}, False, UnauthorizedError, "refused access"),
        (400, {}, False, PermanentDownloadError, "answered 400"),
        (503, {"Retry-After": "4"}, False, TransientHttpError, "will retry"),
    ],
)
def test_hub_error_mapping(
    status: int, headers: dict[str, str], token: bool, error: type[Exception], text: str
) -> None:
    err = hub_error(
        _response(status, **headers), repo="o/r", file="f", revision="main", has_token=token
    )
    assert type(err) is error and text in str(err)
    if isinstance(err, TransientHttpError):
        assert err.retry_after == 4.0


class _Redirector(BaseHTTPRequestHandler):
    """A Hub that renamed a repo (same-origin 307), loops, or omits headers."""

    seen_auth: ClassVar[list[str | None]] = []

    def do_HEAD(self) -> None:
        type(self).seen_auth.append(self.headers.get("Authorization"))
        if self.path.startswith("/old/name/"):
            self.send_response(307)
            self.send_header("Location", self.path.replace("/old/name/", "/new/name/"))
        elif self.path.startswith("/loop/"):
            self.send_response(302)
            self.send_header("Location", self.path)
        elif self.path.startswith("/new/name/"):
            self.send_response(200)
            self.send_header("X-Repo-Commit", "a" * 40)
            self.send_header("ETag", '"' + "b" * 40 + '"')
            self.send_header("Content-Length", "5")
        else:
            self.send_response(200)
            self.send_header("Content-Length", "5")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def redirector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Redirector.seen_auth = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_renamed_repo_is_followed_on_the_same_origin_with_the_token(redirector: str) -> None:
    got = HubClient(redirector, "hf_tok").resolve("old/name", "f.json")
    assert got.url == f"{redirector}/new/name/resolve/main/f.json"
    assert (got.commit, got.etag, got.size) == ("a" * 40, "b" * 40, 5)
    assert _Redirector.seen_auth == ["Bearer hf_tok", "Bearer hf_tok"]


def test_redirect_loops_and_answers_without_metadata_fail_clearly(redirector: str) -> None:
    with pytest.raises(PermanentDownloadError, match="too many redirects"):
        HubClient(redirector).resolve("loop/x", "f")
    with pytest.raises(PermanentDownloadError, match="lacks the commit"):
        HubClient(redirector).resolve("bare/x", "f")
