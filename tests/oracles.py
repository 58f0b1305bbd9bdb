"""Independent oracles of what the API may accept, for the hostile-input tests and the fuzz
bench: written apart from app.storage on purpose (a bug there must not hide itself by
agreeing with its own check)."""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Any

REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ORACLE = re.compile(rf"{REPO_PART}/{REPO_PART}", re.ASCII)
REVISION_ORACLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}", re.ASCII)


def repo_ok(repo: Any) -> bool:
    """What a Hub repo id may be: org/name, ASCII, no "--" or ".."."""
    return (
        isinstance(repo, str)
        and REPO_ORACLE.fullmatch(repo) is not None
        and "--" not in repo
        and ".." not in repo
    )


def revision_ok(rev: Any) -> bool:
    """A branch, tag or commit: ASCII, no "..", no trailing "/"."""
    return (
        isinstance(rev, str)
        and REVISION_ORACLE.fullmatch(rev) is not None
        and ".." not in rev
        and not rev.endswith("/")
    )


def contained(models_dir: Path, dest: str) -> bool:
    """A destination the workers may write: relative, plain, and inside MODELS_DIR once
    joined and normalised (checked apart from app.storage, which the app uses)."""
    if not dest or dest.startswith(("/", "~")) or any(c in dest for c in "\\\x00:"):
        return False
    if any(seg in ("", ".", "..") for seg in dest.split("/")):
        return False
    if any(unicodedata.category(c) == "Cc" for c in dest):
        return False
    root = os.path.realpath(models_dir)
    joined = os.path.realpath(os.path.join(root, dest))
    return joined.startswith(root + os.sep)
