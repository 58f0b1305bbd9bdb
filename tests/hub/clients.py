"""Helpers for code that talks to an imitation Hub: an admin client and a client environment."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

# Variables that would leak the developer's own Hub setup (token, endpoint, cache) into tests.
_HF_LEAKY_PREFIXES = ("HF_", "HUGGINGFACE_", "HUGGING_FACE_")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def hf_environ(
    endpoint: str,
    hf_home: Path | str,
    *,
    token: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for a child process running huggingface_hub against an imitation Hub.

    huggingface_hub reads these at import time, which is why clients run in a child process.
    """
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(_HF_LEAKY_PREFIXES) and k not in _PROXY_VARS
    }
    env.update(
        {
            "HF_ENDPOINT": endpoint,
            "HF_HOME": str(hf_home),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "NO_PROXY": "127.0.0.1,localhost,::1",
            "no_proxy": "127.0.0.1,localhost,::1",
        }
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


class HubAdminError(Exception):
    """The hub refused an admin call (bad fault fields, unknown route)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class HubAdmin:
    """Controls an imitation Hub over HTTP (`/_admin/...`), e.g. one from `python -m tests.hub`."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/_admin/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                raise HubAdminError(exc.code, exc.read().decode(errors="replace")) from None

    def add_fault(self, **fields: Any) -> dict[str, Any]:
        """Add one fault (same fields as tests.hub.Fault); returns it with its id."""
        added: dict[str, Any] = self._call("POST", "faults", fields)["faults"][0]
        return added

    def faults(self) -> list[dict[str, Any]]:
        """The active faults with their hit counts."""
        faults: list[dict[str, Any]] = self._call("GET", "faults")["faults"]
        return faults

    def clear_faults(self) -> int:
        """Remove every fault."""
        return int(self._call("DELETE", "faults")["cleared"])

    def requests(self) -> list[dict[str, Any]]:
        """The request log (hub and CDN)."""
        log: list[dict[str, Any]] = self._call("GET", "requests")["requests"]
        return log

    def clear_requests(self) -> None:
        """Empty the request log."""
        self._call("DELETE", "requests")

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change hub-wide switches (cdn_redirect, bandwidth, gate_metadata, cdn_etag,
        cdn_expired, signed_url_expires, latency, tokens); returns the config."""
        config: dict[str, Any] = self._call("POST", "config", settings)
        return config

    def config(self) -> dict[str, Any]:
        """URLs and hub-wide switches."""
        config: dict[str, Any] = self._call("GET", "config")
        return config

    def repos(self) -> list[dict[str, Any]]:
        """Repos with their files' sizes, digests and commits."""
        repos: list[dict[str, Any]] = self._call("GET", "repos")["repos"]
        return repos

    def repo(self, repo_id: str, *, repo_type: str = "model") -> dict[str, Any]:
        """One repo at `main`: `commit`, `refs`, `commits` (oldest first) and `files`."""
        summary: dict[str, Any] = self._call("GET", _repo_path(repo_id, repo_type))
        return summary

    def commits(self, repo_id: str, *, repo_type: str = "model") -> list[dict[str, Any]]:
        """Every commit, oldest first: `sha`, `date`, `title`, `parent`, `files`."""
        commits: list[dict[str, Any]] = self._call(
            "GET", f"{_repo_path(repo_id, repo_type)}/commits"
        )["commits"]
        return commits

    def put_file(
        self,
        repo_id: str,
        path: str,
        *,
        text: str | None = None,
        size: int | None = None,
        seed: int = 0,
        lfs: bool | None = None,
        repo_type: str = "model",
    ) -> dict[str, Any]:
        """Add or replace a file (`text`, or generated from `size` and `seed`) in a new
        commit on main; returns the repo, whose `commit` is the new sha."""
        if (text is None) == (size is None):
            raise ValueError("pass text or size")
        body: dict[str, Any] = {"path": path, "lfs": lfs}
        if text is not None:
            body["text"] = text
        else:
            body["generate"] = {"size": size, "seed": seed}
        summary: dict[str, Any] = self._call(
            "POST", f"{_repo_path(repo_id, repo_type)}/files", body
        )
        return summary

    def delete_file(self, repo_id: str, path: str, *, repo_type: str = "model") -> dict[str, Any]:
        """Remove a file in a new commit on main; returns the repo."""
        target = f"{_repo_path(repo_id, repo_type)}/files/{quote(path)}"
        summary: dict[str, Any] = self._call("DELETE", target)
        return summary

    def set_branch(
        self, repo_id: str, branch: str, commit: str, *, repo_type: str = "model"
    ) -> dict[str, Any]:
        """Point a branch at any past commit sha (or another branch); returns the repo."""
        body = {"branch": branch, "commit": commit}
        summary: dict[str, Any] = self._call(
            "POST", f"{_repo_path(repo_id, repo_type)}/branches", body
        )
        return summary


def _repo_path(repo_id: str, repo_type: str) -> str:
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    return f"repos/{prefix}{quote(repo_id)}"
