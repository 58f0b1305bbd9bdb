"""Repos of the imitation Hub: immutable snapshots, their commit history, and the JSON the
metadata API returns."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tests.hub.content import Blob, lfs_pointer

REPO_TYPES = ("model", "dataset", "space")


def iso_date(when: datetime) -> str:
    """ISO 8601 as the Hub writes it: `2026-01-02T03:04:05.000Z`."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def check_repo_path(path: str) -> str:
    """Reject paths a git tree cannot hold (absolute, empty or dot segments)."""
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid repo file path: {path!r}")
    return path


def check_repo_id(repo_id: str) -> str:
    """Accept `name` or `org/name`."""
    parts = repo_id.split("/")
    if len(parts) > 2 or any(not p or p in (".", "..") for p in parts):
        raise ValueError(f"invalid repo id: {repo_id!r}")
    return repo_id


@dataclass(frozen=True)
class FileInfo:
    """What the hub knows about one repo file at one commit (`commit`)."""

    repo_id: str
    repo_type: str
    path: str
    size: int
    sha256: str
    git_sha1: str
    lfs: bool
    commit: str
    disk_path: Path
    pointer_size: int | None = None
    pointer_oid: str | None = None

    @property
    def etag(self) -> str:
        """The etag a client caches the file under: sha256 for LFS, git sha1 otherwise."""
        return self.sha256 if self.lfs else self.git_sha1

    @property
    def blob_id(self) -> str:
        """The git oid in the repo tree: the pointer file's for LFS files."""
        return self.pointer_oid if self.lfs and self.pointer_oid else self.git_sha1

    def read_bytes(self) -> bytes:
        """The whole content; meant for small files in tests."""
        return self.disk_path.read_bytes()

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (used by the admin API)."""
        return {
            "repo_id": self.repo_id,
            "repo_type": self.repo_type,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "git_sha1": self.git_sha1,
            "lfs": self.lfs,
            "etag": self.etag,
            "blob_id": self.blob_id,
            "pointer_size": self.pointer_size,
            "commit": self.commit,
            "disk_path": str(self.disk_path),
        }


@dataclass(frozen=True)
class Commit:
    """One commit of a repo: its files, when it was made, its title and the commit before it."""

    sha: str
    files: Mapping[str, FileInfo]
    date: datetime
    title: str
    parent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (used by the admin API)."""
        return {
            "sha": self.sha,
            "date": iso_date(self.date),
            "title": self.title,
            "parent": self.parent,
            "files": [f.to_dict() for f in sorted(self.files.values(), key=lambda f: f.path)],
        }


@dataclass(frozen=True)
class Repo:
    """An immutable snapshot of a repo seen at one commit; the hub swaps in a new one on every
    change.

    `history` holds every commit the repo ever had (oldest first) and `refs` maps each branch
    to its commit; `pinned` are the branches placed by hand, which new commits leave alone.
    The hub's own snapshot shows the default commit (`main`'s, or the newest when there is no
    `main`); `at(revision)` shows another one.
    """

    repo_id: str
    repo_type: str
    commit: str
    files: Mapping[str, FileInfo]
    private: bool = False
    gated: bool | str = False
    approved_tokens: frozenset[str] = frozenset()
    refs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    history: Mapping[str, Commit] = field(default_factory=lambda: MappingProxyType({}))
    pinned: frozenset[str] = frozenset()
    last_modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def key(self) -> tuple[str, str]:
        """The (repo_type, repo_id) pair that names the repo on the hub."""
        return (self.repo_type, self.repo_id)

    @property
    def url_prefix(self) -> str:
        """`datasets/org/name` style prefix of resolve URLs."""
        return self.repo_id if self.repo_type == "model" else f"{self.repo_type}s/{self.repo_id}"

    @property
    def branches(self) -> frozenset[str]:
        """The branch names a revision may use."""
        return frozenset(self.refs)

    @property
    def commits(self) -> list[str]:
        """Every commit sha the repo ever had, oldest first."""
        return list(self.history)

    def resolve_revision(self, revision: str) -> str | None:
        """The commit sha a revision names (a branch, or any past or present commit sha)."""
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.history else None

    def has_revision(self, revision: str) -> bool:
        """A branch name or the sha of any commit the repo ever had."""
        return self.resolve_revision(revision) is not None

    def at(self, revision: str) -> Repo | None:
        """The repo as it was at a revision (None if unknown): that commit's files and date."""
        sha = self.resolve_revision(revision)
        if sha is None:
            return None
        if sha == self.commit:
            return self
        snapshot = self.history[sha]
        return dataclasses.replace(
            self, commit=sha, files=snapshot.files, last_modified=snapshot.date
        )

    def directories(self) -> set[str]:
        """Every directory that holds a file, at any depth (root excluded)."""
        dirs: set[str] = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    def info_json(self, *, blobs: bool) -> dict[str, Any]:
        """Body of `GET /api/{type}s/{repo_id}[/revision/{rev}]`."""
        siblings: list[dict[str, Any]] = []
        for info in sorted(self.files.values(), key=lambda f: f.path):
            sibling: dict[str, Any] = {"rfilename": info.path}
            if blobs:
                sibling["blobId"] = info.blob_id
                sibling["size"] = info.size
                if info.lfs:
                    sibling["lfs"] = {
                        "sha256": info.sha256,
                        "size": info.size,
                        "pointerSize": info.pointer_size,
                    }
            siblings.append(sibling)
        author = self.repo_id.split("/")[0] if "/" in self.repo_id else None
        body: dict[str, Any] = {
            "_id": hashlib.sha1(
                f"{self.repo_type}/{self.repo_id}".encode(), usedforsecurity=False
            ).hexdigest()[:24],
            "id": self.repo_id,
            "author": author,
            "sha": self.commit,
            "lastModified": iso_date(self.last_modified),
            "createdAt": iso_date(self.created_at),
            "private": self.private,
            "gated": self.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(f.size for f in self.files.values()),
        }
        if self.repo_type == "model":
            body["modelId"] = self.repo_id
            body["library_name"] = None
            body["pipeline_tag"] = None
        return body

    def tree_json(
        self, sub_path: str, *, recursive: bool, expand: bool
    ) -> list[dict[str, Any]] | None:
        """Body of `GET /api/{type}s/{repo_id}/tree/{rev}[/{path}]`; None if the path is missing."""
        sub_path = sub_path.strip("/")
        dirs = self.directories()
        if sub_path and sub_path not in dirs:
            return None
        prefix = f"{sub_path}/" if sub_path else ""
        dir_oids = self._directory_oids(dirs)
        entries: list[dict[str, Any]] = []
        for d in sorted(dirs):
            if d.startswith(prefix) and (recursive or "/" not in d[len(prefix) :]):
                entries.append(self._dir_entry(d, dir_oids[d], expand))
        for path in sorted(self.files):
            if path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :]):
                entries.append(self.file_entry(self.files[path], expand=expand))
        return entries

    def paths_info_json(self, paths: Iterable[str], *, expand: bool) -> list[dict[str, Any]]:
        """Body of `POST /api/{type}s/{repo_id}/paths-info/{rev}`: known paths only."""
        dirs = self.directories()
        dir_oids = self._directory_oids(dirs)
        entries: list[dict[str, Any]] = []
        for path in paths:
            path = path.strip("/")
            if path in self.files:
                entries.append(self.file_entry(self.files[path], expand=expand))
            elif path in dirs:
                entries.append(self._dir_entry(path, dir_oids[path], expand))
        return entries

    def file_entry(self, info: FileInfo, *, expand: bool) -> dict[str, Any]:
        """One file of a tree listing. Never carries `xetHash`: it would switch clients to xet."""
        entry: dict[str, Any] = {
            "type": "file",
            "oid": info.blob_id,
            "size": info.size,
            "path": info.path,
        }
        if info.lfs:
            entry["lfs"] = {"oid": info.sha256, "size": info.size, "pointerSize": info.pointer_size}
        if expand:
            entry["lastCommit"] = self._last_commit(info.path)
            entry["securityFileStatus"] = {
                "status": "safe",
                "avScan": {"virusFound": False, "virusNames": None},
                "pickleImportScan": None,
            }
        return entry

    def _dir_entry(self, path: str, oid: str, expand: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "directory", "oid": oid, "size": 0, "path": path}
        if expand:
            entry["lastCommit"] = self._last_commit(path)
        return entry

    def last_commit_of(self, path: str) -> str:
        """The newest commit, going back from this one through its parents, that changed
        a file or directory (the sha of this commit if it is not in the history)."""
        current = self.history.get(self.commit)
        if current is None:
            return self.commit
        state = _path_state(current, path)
        while current.parent is not None and current.parent in self.history:
            parent = self.history[current.parent]
            if _path_state(parent, path) != state:
                break
            current = parent
        return current.sha

    def _last_commit(self, path: str) -> dict[str, str]:
        commit = self.history.get(self.last_commit_of(path))
        if commit is None:
            date = iso_date(self.last_modified)
            return {"id": self.commit, "title": f"Upload {path}", "date": date}
        return {"id": commit.sha, "title": commit.title, "date": iso_date(commit.date)}

    def _directory_oids(self, dirs: set[str]) -> dict[str, str]:
        # Deepest first, so a directory's oid can include its subdirectories' oids.
        oids: dict[str, str] = {}
        for d in sorted(dirs, key=lambda p: -p.count("/")):
            h = hashlib.sha1(b"tree\0", usedforsecurity=False)
            children = [(p, self.files[p].blob_id) for p in self.files if p.rpartition("/")[0] == d]
            children += [(s, oids[s]) for s in dirs if s.rpartition("/")[0] == d]
            for name, oid in sorted(children):
                h.update(f"{name}\0{oid}\n".encode())
            oids[d] = h.hexdigest()
        return oids


def _path_state(commit: Commit, path: str) -> object:
    """What a file or directory holds at a commit, comparable between commits."""
    if path in commit.files:
        return commit.files[path].blob_id
    prefix = f"{path}/"
    return tuple(sorted((p, f.blob_id) for p, f in commit.files.items() if p.startswith(prefix)))


def check_repo_settings(repo_type: str, gated: bool | str) -> bool | str:
    """Validate the repo type and normalise `gated` (True means "manual")."""
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}")
    if gated is True:
        gated = "manual"
    if gated not in (False, "auto", "manual"):
        raise ValueError("gated must be False, True, 'auto' or 'manual'")
    return gated


def build_commit(
    repo_id: str,
    repo_type: str,
    blobs: Mapping[str, tuple[Blob, bool]],
    *,
    generation: int,
    title: str,
    parent: str | None = None,
) -> Commit:
    """Make a commit from stored blobs; its sha derives from repo, generation and content."""
    check_repo_id(repo_id)
    commit_hash = hashlib.sha1(
        f"commit {repo_type}/{repo_id} {generation}\n".encode(), usedforsecurity=False
    )
    prepared: list[tuple[str, Blob, bool, int | None, str | None]] = []
    for path in sorted(blobs):
        check_repo_path(path)
        blob, lfs = blobs[path]
        pointer_size = pointer_oid = None
        if lfs:
            pointer = lfs_pointer(blob.sha256, blob.size)
            pointer_size = len(pointer)
            pointer_oid = hashlib.sha1(
                b"blob %d\0" % len(pointer) + pointer, usedforsecurity=False
            ).hexdigest()
        prepared.append((path, blob, lfs, pointer_size, pointer_oid))
        commit_hash.update(f"{path}\0{pointer_oid or blob.git_sha1}\n".encode())
    sha = commit_hash.hexdigest()
    files = {
        path: FileInfo(
            repo_id=repo_id,
            repo_type=repo_type,
            path=path,
            size=blob.size,
            sha256=blob.sha256,
            git_sha1=blob.git_sha1,
            lfs=lfs,
            commit=sha,
            disk_path=blob.disk_path,
            pointer_size=pointer_size,
            pointer_oid=pointer_oid,
        )
        for path, blob, lfs, pointer_size, pointer_oid in prepared
    }
    return Commit(
        sha=sha,
        files=MappingProxyType(files),
        date=datetime.now(UTC),
        title=title,
        parent=parent,
    )


def assemble_repo(
    repo_id: str,
    repo_type: str,
    *,
    history: Mapping[str, Commit],
    refs: Mapping[str, str],
    pinned: Iterable[str] = (),
    private: bool = False,
    gated: bool | str = False,
    approved_tokens: Iterable[str] = (),
    created_at: datetime | None = None,
) -> Repo:
    """The repo's snapshot at its default commit: `main`'s, or the newest without a `main`."""
    gated = check_repo_settings(repo_type, gated)
    if not history:
        raise ValueError("a repo needs at least one commit")
    unknown = {name: sha for name, sha in refs.items() if sha not in history}
    if unknown:
        raise ValueError(f"branches point at unknown commits: {unknown}")
    sha = refs.get("main") or list(history)[-1]
    head = history[sha]
    return Repo(
        repo_id=repo_id,
        repo_type=repo_type,
        commit=sha,
        files=head.files,
        private=private,
        gated=gated,
        approved_tokens=frozenset(approved_tokens),
        refs=MappingProxyType(dict(refs)),
        history=MappingProxyType(dict(history)),
        pinned=frozenset(pinned) & frozenset(refs),
        last_modified=head.date,
        created_at=created_at or next(iter(history.values())).date,
    )
