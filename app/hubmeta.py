"""What the Hub says about a repo before anything is downloaded: which files it has, their
sizes, its commit, and whether it is gated. The web tier asks for the repo picker and for
the sizes of the catalog's files; nothing here downloads a file.

A user names a repo the way they found it: `org/name`, or a Hub URL with or without
`/blob/<rev>/<file>`, `/resolve/...` or `/tree/<rev>/<folder>`. `parse_repo_ref` turns any of
those into a RepoRef, or says what is wrong with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from app import storage
from app.errors import ModelpullError, ValidationError
from app.jobs import REVISION_RE

# The Hub's own hosts; the configured HF_ENDPOINT's host is accepted too.
HUB_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
TIMEOUT = (5.0, 15.0)
# A job being created waits this long at most for sizes it could do without.
QUICK_TIMEOUT = (2.0, 3.0)
# The tree API pages its answer (1000 entries a page on the real Hub): a repo this big is
# not one a person picks files from by hand.
MAX_PAGES = 50
# Links, gated-access checks and retries never follow a redirect to another host with the token.
USER_AGENT = "modelpull"


class HubAnswerError(ModelpullError):
    """The Hub could not say: `status` is the HTTP status the web tier answers with."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class RepoRef:
    """A repo (and maybe a file or folder of it) as a user named it."""

    repo: str
    revision: str = "main"
    selected: str | None = None
    folder: str | None = None


@dataclass(frozen=True)
class RepoFile:
    """One file of a repo and its size."""

    path: str
    size: int
    lfs: bool


@dataclass(frozen=True)
class RepoListing:
    """A repo's files at a revision, as the Hub answered."""

    repo: str
    revision: str
    commit: str
    gated: str  # "" (open), "auto" or "manual"
    files: tuple[RepoFile, ...]


def _check_revision(revision: str) -> str:
    if not REVISION_RE.fullmatch(revision) or ".." in revision or revision.endswith("/"):
        raise ValidationError("revision", f"{revision!r} is not a branch, tag or commit")
    return revision


def _split_revision(parts: list[str]) -> tuple[str, list[str]]:
    """The revision at the front of `parts` (refs/pr/N takes three parts) and the rest."""
    if len(parts) >= 3 and parts[0] == "refs" and parts[1] in ("pr", "convert"):
        return "/".join(parts[:3]), parts[3:]
    return parts[0], parts[1:]


def parse_repo_ref(text: object, *, endpoint: str, revision: str = "main") -> RepoRef:
    """A repo id or Hub URL as a RepoRef; ValidationError("id", ...) says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("id", "give a repo id like org/name or a Hub URL")
    raw = text.strip()
    endpoint_host = urlsplit(endpoint).netloc.lower()
    lowered = raw.lower()
    if not lowered.startswith(("http://", "https://")) and lowered.split("/", 1)[0] in (
        HUB_HOSTS | {endpoint_host}
    ):
        raw = "https://" + raw
    if raw.lower().startswith(("http://", "https://")):
        url = urlsplit(raw)
        if url.netloc.lower() not in HUB_HOSTS | {endpoint_host}:
            raise ValidationError("id", f"{url.netloc!r} is not the Hugging Face Hub")
        parts = [unquote(p) for p in url.path.split("/") if p]
        # A page of the Hub: its first part may name the kind of repo.
        if parts and parts[0] in ("datasets", "spaces"):
            raise ValidationError(
                "id", "only model repos can be downloaded, not datasets or spaces"
            )
        if parts and parts[0] == "models":
            parts = parts[1:]
    else:
        parts = [p for p in raw.split("/") if p]
    if len(parts) < 2:
        raise ValidationError("id", f"{text.strip()!r} is not a repo id like org/name")
    try:
        repo = storage.check_repo_id("/".join(parts[:2]))
    except ValueError as exc:
        raise ValidationError("id", str(exc)) from None
    rest = parts[2:]
    if not rest:
        return RepoRef(repo, _check_revision(revision))
    kind = rest[0]
    if kind not in ("blob", "resolve", "tree") or len(rest) < 2:
        raise ValidationError("id", f"cannot tell a file or folder from {text.strip()!r}")
    rev, path_parts = _split_revision(rest[1:])
    path = "/".join(path_parts) or None
    if path is not None:
        try:
            storage.check_relative_path(path)
        except ValueError as exc:
            raise ValidationError("id", f"path {exc}") from None
    if kind == "tree":
        return RepoRef(repo, _check_revision(rev), folder=path)
    if path is None:
        raise ValidationError("id", f"{text.strip()!r} names no file")
    return RepoRef(repo, _check_revision(rev), selected=path)


class HubMeta:
    """The Hub's metadata API for one token (sent only to the Hub's own origin)."""

    def __init__(
        self, endpoint: str, token: str | None, *, session: requests.Session | None = None
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self._session = session or requests.Session()

    def __repr__(self) -> str:  # never show the token
        return f"HubMeta({self.endpoint!r})"

    def _get(
        self,
        url: str,
        *,
        method: str = "GET",
        timeout: tuple[float, float] = TIMEOUT,
        **kwargs: Any,
    ) -> requests.Response:
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            return self._session.request(
                method, url, headers=headers, timeout=timeout, allow_redirects=False, **kwargs
            )
        except requests.RequestException as exc:
            raise HubAnswerError(
                f"cannot reach the Hub at {self.endpoint}: {type(exc).__name__}",
                status=502,
                code="hub_unreachable",
            ) from None

    def _json(self, resp: requests.Response, repo: str, revision: str) -> Any:
        if resp.status_code == 200:
            try:
                return resp.json()
            except ValueError:
                pass
            raise HubAnswerError(
                f"the Hub's answer about {repo} is not JSON", status=502, code="hub_error"
            )
        raise _answer_error(resp, repo, revision, has_token=bool(self._token))

    def listing(self, repo: str, revision: str = "main") -> RepoListing:
        """Every file of the repo at the revision, with sizes, its commit and gating."""
        rev = quote(revision, safe="")
        info = self._json(
            self._get(f"{self.endpoint}/api/models/{repo}/revision/{rev}"), repo, revision
        )
        commit = info.get("sha") if isinstance(info, dict) else None
        if not isinstance(commit, str) or not commit:
            raise HubAnswerError(
                f"the Hub did not say which commit {repo} is at", status=502, code="hub_error"
            )
        gated = info.get("gated") or ""
        files: list[RepoFile] = []
        url: str | None = f"{self.endpoint}/api/models/{repo}/tree/{quote(commit)}?recursive=true"
        for _ in range(MAX_PAGES):
            if url is None:
                break
            resp = self._get(url)
            files += _tree_files(self._json(resp, repo, revision))
            url = _next_link(resp, self.endpoint)
        if url is not None:
            # A partial list would give a wrong total and call real files missing.
            raise HubAnswerError(
                f"{repo} has more files than the picker lists ({len(files)}+); "
                "download by name with POST /api/downloads or modelpull pull",
                status=422,
                code="too_many_files",
            )
        return RepoListing(
            repo=repo,
            revision=revision,
            commit=commit,
            gated=gated if gated in ("auto", "manual") else "",
            files=tuple(sorted(files, key=lambda f: f.path)),
        )

    def sizes(
        self,
        repo: str,
        revision: str,
        paths: list[str],
        *,
        timeout: tuple[float, float] = TIMEOUT,
    ) -> tuple[str, dict[str, int]]:
        """The repo's gating and the sizes of some of its files (paths-info): for the catalog,
        whose repos may hold far more files than it names."""
        rev = quote(revision, safe="")
        info = self._json(
            self._get(f"{self.endpoint}/api/models/{repo}/revision/{rev}", timeout=timeout),
            repo,
            revision,
        )
        gated = (info.get("gated") if isinstance(info, dict) else "") or ""
        resp = self._get(
            f"{self.endpoint}/api/models/{repo}/paths-info/{rev}",
            method="POST",
            data={"paths": paths, "expand": "false"},
            timeout=timeout,
        )
        found = {f.path: f.size for f in _tree_files(self._json(resp, repo, revision))}
        return (gated if gated in ("auto", "manual") else ""), found

    def may_download(self, repo: str, revision: str, path: str) -> bool:
        """Whether our token may download a file of a gated repo (a HEAD of its resolve URL)."""
        url = f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"
        resp = self._get(url, method="HEAD")
        return resp.status_code < 400


def _tree_files(entries: Any) -> list[RepoFile]:
    out: list[RepoFile] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("type") != "file":
            continue
        path, size = entry.get("path"), entry.get("size")
        if isinstance(path, str) and isinstance(size, int) and size >= 0:
            out.append(RepoFile(path, size, bool(entry.get("lfs"))))
    return out


def _next_link(resp: requests.Response, endpoint: str) -> str | None:
    nxt = resp.links.get("next", {}).get("url")
    if not isinstance(nxt, str):
        return None
    here, there = urlsplit(endpoint), urlsplit(nxt)
    # Only a page on the Hub itself, over the same scheme: the token goes with the request.
    return nxt if (there.scheme, there.netloc) == (here.scheme, here.netloc) else None


def _answer_error(
    resp: requests.Response, repo: str, revision: str, *, has_token: bool
) -> HubAnswerError:
    code = resp.headers.get("X-Error-Code", "")
    if code == "RevisionNotFound":
        return HubAnswerError(
            f"{repo} has no revision {revision!r} on the Hub", status=404, code="not_found"
        )
    if (
        resp.status_code == 404
        or code == "RepoNotFound"
        or (resp.status_code == 401 and not has_token)
    ):
        return HubAnswerError(
            f"{repo}: no such repo on the Hub (or it is private and the token cannot see it)",
            status=404,
            code="not_found",
        )
    if resp.status_code == 401:
        return HubAnswerError(
            "the Hub refused HF_TOKEN: check it is valid", status=502, code="hub_refused"
        )
    if code == "GatedRepo" or resp.status_code == 403:
        return HubAnswerError(
            f"{repo} is gated: accept its terms on the Hub and set HF_TOKEN",
            status=403,
            code="gated",
        )
    return HubAnswerError(
        f"the Hub answered {resp.status_code} about {repo}", status=502, code="hub_error"
    )
