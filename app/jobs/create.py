"""Creating jobs: the files asked for, checked, and written as a queued job."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from app import storage
from app.catalog import CatalogModel, missing_files
from app.errors import NothingToDownloadError, ValidationError
from app.models import DownloadFile, DownloadJob, FileStatus, JobStatus

# Branches, tags, refs/pr/N and commits: ASCII only, no spaces, no URL syntax.
REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}", re.ASCII)


@dataclass(frozen=True)
class FileSpec:
    """A file to download: where it comes from and where it goes."""

    repo: str
    file_name: str
    revision: str = "main"
    dest: str | None = None
    sha256: str | None = None
    size: int | None = None


def validate_specs(files: Sequence[FileSpec]) -> list[FileSpec]:
    # The names come from users and end up as paths under the models folder: a name that
    # could leave it, or two files with one destination, is refused before anything is written.
    if not files:
        raise ValidationError("files", "must name at least one file")
    clean: list[FileSpec] = []
    seen: set[str] = set()
    for i, spec in enumerate(files):
        try:
            repo = storage.check_repo_id(spec.repo)
        except ValueError as exc:
            raise ValidationError("repo", str(exc)) from None
        try:
            name = storage.check_relative_path(spec.file_name)
        except ValueError as exc:
            raise ValidationError(f"files[{i}]", str(exc)) from None
        revision = spec.revision or "main"
        if not REVISION_RE.fullmatch(revision) or ".." in revision or revision.endswith("/"):
            raise ValidationError("revision", f"{revision!r} is not a branch, tag or commit")
        try:
            dest = storage.check_relative_path(spec.dest or name)
        except ValueError as exc:
            raise ValidationError(f"files[{i}].dest", str(exc)) from None
        if dest in seen:
            raise ValidationError(f"files[{i}]", f"destination {dest!r} is named twice")
        seen.add(dest)
        clean.append(FileSpec(repo, name, revision, dest, spec.sha256, spec.size))
    return clean


def lock_creation(session: Session, key: str) -> None:
    """Hold, until the transaction ends, the right to create a job for `key` (a model or a
    repo): two requests for one model (a double click, two terminals) cannot both see no job
    under way and both create one. SQLite's write transactions (BEGIN IMMEDIATE) already run
    one at a time; PostgreSQL takes an advisory lock named by the key."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"modelpull-create:{key}".encode()).digest()
    lock = int.from_bytes(digest[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": lock})


def create_job(
    session: Session, files: Sequence[FileSpec], *, method: str, model_id: str | None = None
) -> DownloadJob:
    """Add a queued job with one queued row per file; the caller commits, then enqueues."""
    specs = validate_specs(files)
    job = DownloadJob(model_id=model_id, method=method, status=JobStatus.QUEUED)
    for index, spec in enumerate(specs):
        job.files.append(
            DownloadFile(
                file_index=index,
                repo=spec.repo,
                revision=spec.revision,
                file_name=spec.file_name,
                dest=spec.dest or spec.file_name,
                sha256=spec.sha256,
                size=spec.size,
                status=FileStatus.QUEUED,
                bytes_done=0,
                attempts=0,
            )
        )
    session.add(job)
    session.flush()
    return job


def create_model_job(
    session: Session, model: CatalogModel, *, method: str, models_dir: Path
) -> DownloadJob:
    """A job for the model's files not present yet; NothingToDownloadError if none is missing."""
    missing = missing_files(models_dir, model)
    if not missing:
        raise NothingToDownloadError(f"every file of {model.id} is already present")
    specs = [FileSpec(f.repo, f.file_name, f.revision, f.dest, f.sha256, f.size) for f in missing]
    return create_job(session, specs, method=method, model_id=model.id)
