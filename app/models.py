"""The job store's tables: a download job and its files, API tokens, and what the Hub last said
about a repo's files (sizes before downloading)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class FileStatus(StrEnum):
    """Where one file is in its life."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """No worker will touch a file in this state again unless a user retries it."""
        return self in TERMINAL


class JobStatus(StrEnum):
    """Where a job is, derived from its files."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """The job has ended (failed jobs may still be retried)."""
        return self in JOB_TERMINAL


# The status groups, written once: every query and rule names one of these.
# A worker holds the file (its heartbeat keeps the claim).
ACTIVE = frozenset({FileStatus.DOWNLOADING, FileStatus.VERIFYING})
# The file may still be downloaded: it needs its destination and keeps its partial.
UNFINISHED = frozenset({FileStatus.QUEUED, *ACTIVE, FileStatus.PAUSED, FileStatus.FAILED})
# No worker touches the file again unless a user retries it.
TERMINAL = frozenset({FileStatus.COMPLETED, FileStatus.FAILED, FileStatus.CANCELLED})
# A job that has not ended: the dashboard's live list.
JOB_UNDER_WAY = frozenset({JobStatus.QUEUED, JobStatus.DOWNLOADING, JobStatus.PAUSED})
JOB_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A random id for a job or a file (32 hex digits)."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite keeps no zone, PostgreSQL would convert."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _enum(cls: type[StrEnum]) -> Enum:
    # Stored as plain strings (no native enum type), so adding a state is a code change only.
    return Enum(
        cls,
        native_enum=False,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base for the job store."""


class DownloadJob(Base):
    """One request to download a model's files, or an ad-hoc set of repo files."""

    __tablename__ = "download_job"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_id: Mapped[str | None] = mapped_column(String(128), index=True)
    method: Mapped[str] = mapped_column(String(16))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.QUEUED)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    files: Mapped[list[DownloadFile]] = relationship(
        back_populates="job",
        order_by="DownloadFile.file_index",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (
        # The job list: newest first, optionally filtered by status, paginated by cursor.
        Index("ix_download_job_created", "created_at", "id"),
        Index("ix_download_job_status_created", "status", "created_at", "id"),
    )

    @property
    def total_bytes(self) -> int | None:
        """Sum of the file sizes, or None while any size is unknown."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    @property
    def bytes_done(self) -> int:
        """Bytes on disk across the job's files."""
        return sum(f.bytes_done for f in self.files)


class DownloadFile(Base):
    """One file of a job: where it comes from, where it goes, and how far it got."""

    __tablename__ = "download_file"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("download_job.id", ondelete="CASCADE"), index=True
    )
    file_index: Mapped[int] = mapped_column(Integer)
    repo: Mapped[str] = mapped_column(String(200))
    revision: Mapped[str] = mapped_column(String(200), default="main")
    file_name: Mapped[str] = mapped_column(String(1000))
    dest: Mapped[str] = mapped_column(String(1000), index=True)
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    etag: Mapped[str | None] = mapped_column(String(200))
    commit: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[FileStatus] = mapped_column(
        _enum(FileStatus), default=FileStatus.QUEUED, index=True
    )
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    # bytes_done when the current claim began, and how many lost workers in a row got the
    # file no further: a file that keeps killing workers is told from one that moves on.
    claimed_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    stalled_losses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    stderr: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    task_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When its task message last reached the broker; NULL means it never did.
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    job: Mapped[DownloadJob] = relationship(back_populates="files")


class ApiToken(Base):
    """An API token: only its sha256 is stored; the token itself is shown once, at creation."""

    __tablename__ = "api_token"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters, so an operator can tell tokens apart in `modelpull token list`.
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class HubRepo(Base):
    """What the Hub last said about a repo at a revision: its commit and whether it is gated,
    or why it could not say. Refreshed now and then; never a reason to refuse a download."""

    __tablename__ = "hub_repo"

    repo: Mapped[str] = mapped_column(String(200), primary_key=True)
    revision: Mapped[str] = mapped_column(String(200), primary_key=True)
    commit: Mapped[str | None] = mapped_column(String(40))
    # "" (open), "auto" or "manual", as the Hub's model info says.
    gated: Mapped[str] = mapped_column(String(16), default="")
    error: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HubFile(Base):
    """One file of a HubRepo and its size on the Hub (the whole tree, or the files asked for)."""

    __tablename__ = "hub_file"

    repo: Mapped[str] = mapped_column(String(200), primary_key=True)
    revision: Mapped[str] = mapped_column(String(200), primary_key=True)
    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    lfs: Mapped[bool] = mapped_column(Boolean, default=False)
