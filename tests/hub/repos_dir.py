"""Load repos for a standalone hub from a directory tree plus an optional hub.json/hub.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.hub.content import BytesFile, DiskFile, FileSource, GeneratedFile
from tests.hub.server import ImitationHub

SETTINGS_FILES = ("hub.json", "hub.yaml", "hub.yml")
_REPO_KEYS = {"private", "gated", "approved_tokens", "branches", "files"}


def read_settings(root: Path) -> dict[str, Any]:
    """The optional settings file of a repos dir ({} when there is none)."""
    for name in SETTINGS_FILES:
        path = root / name
        if path.exists():
            if path.suffix == ".json":
                return json.loads(path.read_text()) or {}
            import yaml

            return yaml.safe_load(path.read_text()) or {}
    return {}


def discover_repos(root: Path) -> dict[str, dict[str, FileSource]]:
    """Map `org/name` (or `datasets/org/name`) to its files found under root."""
    found: dict[str, dict[str, FileSource]] = {}
    for top in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if top.name in ("datasets", "spaces"):
            for org in sorted(p for p in top.iterdir() if p.is_dir()):
                for repo_dir in sorted(p for p in org.iterdir() if p.is_dir()):
                    found[f"{top.name}/{org.name}/{repo_dir.name}"] = _files_of(repo_dir)
        else:
            for repo_dir in sorted(p for p in top.iterdir() if p.is_dir()):
                found[f"{top.name}/{repo_dir.name}"] = _files_of(repo_dir)
    return found


def _files_of(repo_dir: Path) -> dict[str, FileSource]:
    files: dict[str, FileSource] = {}
    for path in sorted(repo_dir.rglob("*")):
        rel = path.relative_to(repo_dir)
        if path.is_file() and ".git" not in rel.parts:
            files[rel.as_posix()] = DiskFile(path)
    return files


def _file_source(root: Path, spec: Any, existing: FileSource | None) -> FileSource:
    if isinstance(spec, str):
        return spec.encode()
    if not isinstance(spec, dict):
        raise ValueError(f"bad file spec: {spec!r}")
    lfs = spec.get("lfs")
    if "generate" in spec:
        gen = spec["generate"]
        return GeneratedFile(size=int(gen["size"]), seed=int(gen.get("seed", 0)), lfs=lfs)
    if "text" in spec:
        return BytesFile(str(spec["text"]).encode(), lfs=lfs)
    if "path" in spec:
        return DiskFile((root / spec["path"]).resolve(), lfs=lfs)
    if isinstance(existing, DiskFile) and set(spec) == {"lfs"}:
        return DiskFile(existing.path, lfs=lfs)
    raise ValueError(f"file spec needs generate, text or path: {spec!r}")


def split_repo_key(key: str) -> tuple[str, str]:
    """`datasets/org/ds` -> ("dataset", "org/ds"); `org/tiny` -> ("model", "org/tiny")."""
    head, _, rest = key.partition("/")
    if head in ("datasets", "spaces") and rest:
        return head[:-1], rest
    return "model", key


def load_repos_dir(hub: ImitationHub, root: Path) -> list[str]:
    """Add every repo of a repos dir to the hub; returns the repo keys."""
    root = Path(root)
    settings = read_settings(root)
    repos = discover_repos(root)
    repo_settings: dict[str, dict[str, Any]] = settings.get("repos") or {}
    for key, conf in repo_settings.items():
        unknown = set(conf or {}) - _REPO_KEYS
        if unknown:
            raise ValueError(f"{key}: unknown repo settings {sorted(unknown)}")
        files = repos.setdefault(key, {})
        for path, spec in ((conf or {}).get("files") or {}).items():
            files[path] = _file_source(root, spec, files.get(path))
    for key, files in repos.items():
        conf = repo_settings.get(key) or {}
        repo_type, repo_id = split_repo_key(key)
        hub.add_repo(
            repo_id,
            files,
            repo_type=repo_type,
            private=bool(conf.get("private", False)),
            gated=conf.get("gated", False),
            approved_tokens=conf.get("approved_tokens", ()),
            branches=conf.get("branches", ("main",)),
        )
    return sorted(repos)
