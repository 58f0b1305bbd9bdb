"""Creating jobs (app/jobs/create.py): what is asked for is checked, then written queued."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app import jobs
from app.catalog import parse_catalog
from app.errors import NothingToDownloadError, ValidationError
from app.models import FileStatus, JobStatus
from tests.unit.app.jobs.support import make_job, row_counts

F = FileStatus

CATALOG = parse_catalog(
    """
models:
  pair:
    files:
      - {repo: org/one, file: a.gguf}
      - {repo: org/two, file: sub/b.safetensors, dest: b.safetensors, size: 4}
"""
)


def test_create_job_writes_queued_rows_in_order(session_factory: sessionmaker[Session]) -> None:
    job_id, _ = make_job(session_factory, 3)
    with session_factory() as s:
        job = jobs.get_job(s, job_id)
        assert job.status is JobStatus.QUEUED
        assert [f.file_index for f in job.files] == [0, 1, 2]
        assert [f.dest for f in job.files] == ["f0.bin", "f1.bin", "f2.bin"]
        assert all(f.status is F.QUEUED and f.bytes_done == 0 for f in job.files)
        assert job.created_at.tzinfo is not None
        assert job.total_bytes is None


def test_model_job_takes_only_missing_files(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    model = CATALOG.get("pair")
    assert model is not None
    (tmp_path / "b.safetensors").write_bytes(b"1234")
    with session_factory.begin() as s:
        job = jobs.create_model_job(s, model, method="native", models_dir=tmp_path)
        assert job.model_id == "pair"
        assert [(f.repo, f.file_name, f.dest) for f in job.files] == [
            ("org/one", "a.gguf", "a.gguf")
        ]


def test_model_job_for_a_present_model_is_refused(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    model = CATALOG.get("pair")
    assert model is not None
    (tmp_path / "a.gguf").write_bytes(b"x")
    (tmp_path / "b.safetensors").write_bytes(b"1234")
    with session_factory() as s, pytest.raises(NothingToDownloadError, match="already present"):
        jobs.create_model_job(s, model, method="native", models_dir=tmp_path)
    assert row_counts(session_factory) == (0, 0)


@pytest.mark.parametrize(
    ("specs", "field"),
    [
        ([], "files"),
        ([jobs.FileSpec("not a repo", "a.bin")], "repo"),
        ([jobs.FileSpec("../etc", "a.bin")], "repo"),
        ([jobs.FileSpec("org/repo", "../../etc/passwd")], "files[0]"),
        ([jobs.FileSpec("org/repo", "/etc/passwd")], "files[0]"),
        ([jobs.FileSpec("org/repo", "a.bin", dest="../x")], "files[0].dest"),
        ([jobs.FileSpec("org/repo", "a.bin", dest=".modelpull/partial/x")], "files[0].dest"),
        ([jobs.FileSpec("org/repo", "a.bin", revision="a b")], "revision"),
        ([jobs.FileSpec("org/repo", "a.bin"), jobs.FileSpec("org/other", "a.bin")], "files[1]"),
    ],
)
def test_bad_requests_name_the_field_and_write_nothing(
    session_factory: sessionmaker[Session], specs: list[jobs.FileSpec], field: str
) -> None:
    with session_factory() as s:
        with pytest.raises(ValidationError) as info:
            jobs.create_job(s, specs, method="native")
        s.commit()
    assert info.value.field == field
    assert row_counts(session_factory) == (0, 0)
