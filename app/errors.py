"""The service's error types: one tree, translated at each boundary."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from app.scrub import scrub


class ModelpullError(Exception):
    """Base of every error the service raises on purpose."""


class ConfigError(ModelpullError):
    """A setting or the catalog is invalid; raised at start, names what to fix."""


class CatalogError(ConfigError):
    """The models catalog is malformed."""


class ValidationError(ModelpullError):
    """A request names something invalid; `field` says which part (an HTTP 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(ModelpullError):
    """A job, file or model that does not exist."""


class AmbiguousError(ModelpullError):
    """A short name (a job id prefix) matches more than one thing."""


class IllegalTransitionError(ModelpullError):
    """A state change the job state machine does not allow (an HTTP 409)."""


class NothingToDownloadError(ModelpullError):
    """Every file a request names is already present."""


class DownloadError(ModelpullError):
    """A download failed; carries what failed, never a token.

    `message` and `stderr` are scrubbed (app.scrub) whenever they are set, also after
    construction: whatever stores, publishes or logs them gets them clean."""

    transient = False
    _message: str
    _stderr: str | None

    def __init__(
        self,
        message: str,
        *,
        repo: str | None = None,
        file: str | None = None,
        attempt: int | None = None,
        status: int | None = None,
        hub_code: str | None = None,
        stderr: str | None = None,
    ) -> None:
        self.message = message
        super().__init__(self.message)
        self.stderr = stderr
        self.repo = repo
        self.file = file
        self.attempt = attempt
        self.status = status
        self.hub_code = hub_code

    @property
    def message(self) -> str:
        """What failed, in the user's words, with every secret masked."""
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        self._message = scrub(value)
        self.args = (self._message,)

    @property
    def stderr(self) -> str | None:
        """What the engine's child wrote (or the traceback), with every secret masked."""
        return self._stderr

    @stderr.setter
    def stderr(self, value: str | None) -> None:
        self._stderr = scrub(value)

    def __str__(self) -> str:
        where = "/".join(p for p in (self.repo, self.file) if p)
        details = [f"HTTP {self.status}" if self.status else "", self.hub_code or ""]
        if self.attempt:
            details.append(f"attempt {self.attempt}")
        extra = ", ".join(d for d in details if d)
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} ({extra})" if extra else text


class TransientDownloadError(DownloadError):
    """A failure worth retrying: a dropped connection, a timeout, a 5xx, a 429."""

    transient = True


class PermanentDownloadError(DownloadError):
    """A failure that retrying will not fix; the user must act."""


class RepoNotFoundError(PermanentDownloadError):
    """The repository does not exist or is private to another account."""


class GatedRepoError(PermanentDownloadError):
    """The repository needs its licence accepted and an HF_TOKEN."""


class UnauthorizedError(PermanentDownloadError):
    """The Hub refused the token."""


class RevisionNotFoundError(PermanentDownloadError):
    """The branch, tag or commit does not exist in the repository."""


class EntryNotFoundError(PermanentDownloadError):
    """The file does not exist at that revision."""


class ChecksumMismatchError(PermanentDownloadError):
    """The downloaded bytes do not match the expected size or sha256."""


class DiskFullError(PermanentDownloadError):
    """Not enough free space for the file."""


@contextmanager
def disk_full_as(
    message: str, *, repo: str | None = None, file: str | None = None
) -> Iterator[None]:
    """Turn an OSError for a full disk or quota into DiskFullError(message); re-raise others."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(message, repo=repo, file=file) from None
        raise


class UnsafePathError(PermanentDownloadError):
    """A file name that would escape the models directory."""


class CancelledError(DownloadError):
    """The download was cancelled by a user."""


class PausedError(DownloadError):
    """The download was paused by a user; the partial file is kept."""
