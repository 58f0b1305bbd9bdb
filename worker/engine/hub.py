"""Resolve a Hub file: its download URL (after the CDN redirect), size, etag, commit, hash.

The token goes only to the Hub's own origin (HF_ENDPOINT): redirects are walked by hand,
and a hop to any other origin (the CDN) is taken without the Authorization header.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests

from app.errors import (
    DownloadError,
    EntryNotFoundError,
    GatedRepoError,
    PermanentDownloadError,
    RepoNotFoundError,
    RevisionNotFoundError,
    TransientDownloadError,
    UnauthorizedError,
)
from worker.engine.backoff import backoff_delay
from worker.engine.base import ControlFn, Identity, wait_obeying

SHA256_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
SHA1_RE = re.compile(r"[0-9a-f]{40}", re.ASCII)
DEFAULT_TIMEOUT = (10.0, 30.0)
MAX_REDIRECTS = 10
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "modelpull/0.1"


@dataclass(frozen=True)
class ResolvedFile:
    """Where and what a file is, as the Hub told us."""

    repo: str
    file_name: str
    revision: str
    url: str
    size: int
    etag: str
    commit: str
    sha256: str | None  # LFS files: the content's sha256
    git_sha1: str | None  # regular files: the git blob id

    @property
    def is_lfs(self) -> bool:
        """Large files are stored with git LFS and addressed by sha256."""
        return self.sha256 is not None

    def identity(self) -> Identity:
        """What identifies the bytes, without the (signed) URL."""
        return Identity(self.commit, self.etag, self.size, self.sha256, self.git_sha1)


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port: what decides whether a URL may see the token."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds: an integer, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class TransientHttpError(TransientDownloadError):
    """A retryable HTTP answer (429, 5xx), with the server's Retry-After if it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


def resolve_patiently(
    client: HubClient,
    repo: str,
    file_name: str,
    revision: str,
    *,
    control: ControlFn | None,
    max_retries: int,
    backoff_base: float,
    backoff_max: float,
    interval: float = 0.25,
) -> ResolvedFile:
    """Resolve, retrying transient failures with backoff (and the server's Retry-After); every
    wait obeys `control`."""
    failures = 0
    while True:
        try:
            return client.resolve(repo, file_name, revision)
        except TransientDownloadError as exc:
            failures += 1
            if failures > max_retries:
                exc.attempt = failures
                raise
            delay = backoff_delay(
                failures, base=backoff_base, cap=backoff_max, retry_after=retry_after_of(exc)
            )
            wait_obeying(delay, control, interval=interval, repo=repo, file=file_name)


def retry_after_of(exc: BaseException) -> float | None:
    """The seconds a server asked us to wait, if `exc` is an answer that said so."""
    return exc.retry_after if isinstance(exc, TransientHttpError) else None


def hub_error(
    resp: requests.Response, *, repo: str, file: str, revision: str, has_token: bool
) -> DownloadError:
    """Translate a Hub error answer into our typed error with advice a user can act on."""
    code = resp.headers.get("X-Error-Code", "")
    message = resp.headers.get("X-Error-Message", "")
    status = resp.status_code
    kw: dict[str, Any] = {"repo": repo, "file": file, "status": status, "hub_code": code or None}
    if code == "GatedRepo":
        advice = (
            "the token's account has not been granted access yet: accept the licence on the "
            "repo's page on the Hub"
            if has_token
            else "accept its licence on the repo's page on the Hub, then set HF_TOKEN to a "
            "token of that account"
        )
        return GatedRepoError(f"repository {repo} is gated: {advice}", **kw)
    if code == "RepoNotFound":
        advice = (
            "check the name; if it is private, HF_TOKEN must belong to an account that can read it"
            if has_token
            else "check the name; if it is private, set HF_TOKEN"
        )
        return RepoNotFoundError(f"repository {repo} was not found: {advice}", **kw)
    if code == "RevisionNotFound":
        return RevisionNotFoundError(f"revision {revision!r} does not exist in {repo}", **kw)
    if code == "EntryNotFound":
        return EntryNotFoundError(f"file {file!r} does not exist in {repo} at {revision}", **kw)
    if status == 401:
        if "Invalid credentials" in message or has_token:
            return UnauthorizedError(
                "the Hub rejected HF_TOKEN: it is invalid or expired; create a new one", **kw
            )
        return UnauthorizedError("the Hub requires a token: set HF_TOKEN", **kw)
    if status in TRANSIENT_STATUSES:
        return TransientHttpError(
            f"the Hub answered {status}, will retry",
            retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
            **kw,
        )
    if status == 404:
        # The error's text starts with repo/file already.
        return EntryNotFoundError(f"not found at {revision}", **kw)
    if status == 403:
        return UnauthorizedError(f"the Hub refused access to {repo}: {message}".strip(), **kw)
    return PermanentDownloadError(f"the Hub answered {status} {message}".strip(), **kw)


class HubClient:
    """Talks to the Hub's resolve and metadata endpoints for one token."""

    def __init__(
        self,
        endpoint: str,
        token: str | None = None,
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self._session = session or requests.Session()
        self._timeout = timeout
        self._origin = origin(self.endpoint)

    def __repr__(self) -> str:  # never show the token
        return f"HubClient({self.endpoint!r}, token={'***' if self._token else None})"

    def headers_for(self, url: str) -> dict[str, str]:
        """Request headers for `url`: Authorization only for the Hub's own origin."""
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if self._token and origin(url) == self._origin:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def resolve_url(self, repo: str, file_name: str, revision: str) -> str:
        """The Hub's resolve URL for a file."""
        return f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(file_name)}"

    def resolve(self, repo: str, file_name: str, revision: str = "main") -> ResolvedFile:
        """HEAD the resolve URL, walking same-origin redirects; stop at the CDN's."""
        url = self.resolve_url(repo, file_name, revision)
        ctx = {"repo": repo, "file": file_name, "revision": revision}
        for _ in range(MAX_REDIRECTS):
            try:
                resp = self._session.head(
                    url, headers=self.headers_for(url), allow_redirects=False, timeout=self._timeout
                )
            except requests.RequestException as exc:
                raise TransientDownloadError(
                    f"cannot reach the Hub at {self.endpoint}: {type(exc).__name__}",
                    repo=repo,
                    file=file_name,
                ) from None
            if resp.is_redirect:
                location = urljoin(url, resp.headers["Location"])
                if origin(location) == self._origin:
                    url = location  # a renamed repo: follow it, still on the Hub
                    continue
                return self._from_headers(resp, location, **ctx)
            if resp.status_code == 200:
                return self._from_headers(resp, url, **ctx)
            raise hub_error(resp, **ctx, has_token=bool(self._token))
        raise PermanentDownloadError(
            "too many redirects while resolving the file", repo=repo, file=file_name
        )

    def _from_headers(
        self, resp: requests.Response, url: str, *, repo: str, file: str, revision: str
    ) -> ResolvedFile:
        h = resp.headers
        commit = h.get("X-Repo-Commit", "")
        etag = (h.get("X-Linked-Etag") or h.get("ETag") or "").removeprefix("W/").strip('"')
        size_header = h.get("X-Linked-Size") or (
            None if resp.is_redirect else h.get("Content-Length")
        )
        if not commit or not etag or size_header is None or not size_header.isdigit():
            raise PermanentDownloadError(
                "the Hub's answer lacks the commit, etag or size of the file",
                repo=repo,
                file=file,
                status=resp.status_code,
            )
        sha256 = etag if SHA256_RE.fullmatch(etag) else None
        git_sha1 = etag if sha256 is None and SHA1_RE.fullmatch(etag) else None
        return ResolvedFile(
            repo=repo,
            file_name=file,
            revision=revision,
            url=url,
            size=int(size_header),
            etag=etag,
            commit=commit,
            sha256=sha256,
            git_sha1=git_sha1,
        )

    def lfs_sha256(self, repo: str, file_name: str, commit: str) -> str | None:
        """The file's LFS sha256 from the metadata API (tree listing at the commit)."""
        folder = file_name.rsplit("/", 1)[0] if "/" in file_name else ""
        url = f"{self.endpoint}/api/models/{repo}/tree/{quote(commit, safe='')}"
        if folder:
            url += "/" + quote(folder, safe="")
        try:
            resp = self._session.get(
                url, headers=self.headers_for(url), timeout=self._timeout, allow_redirects=False
            )
        except requests.RequestException:
            return None
        if resp.status_code != 200:
            return None
        try:
            entries = resp.json()
        except ValueError:
            return None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("path") == file_name:
                oid = (entry.get("lfs") or {}).get("oid")
                return oid if isinstance(oid, str) and SHA256_RE.fullmatch(oid) else None
        return None
