"""The hf_hub engine (opt-in): `huggingface_hub.hf_hub_download` in a child process.

The child reports progress as JSON lines on stdout; its stderr is read in full on a thread
(every byte, so multi-line tracebacks stay intact) and returned with any error. Cancel and
pause terminate the child; huggingface_hub cannot resume across processes, so a paused file
starts again from zero with this engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from app import storage
from app.digest import sha256_file
from app.errors import (
    CancelledError,
    ChecksumMismatchError,
    DownloadError,
    EntryNotFoundError,
    GatedRepoError,
    PausedError,
    PermanentDownloadError,
    RepoNotFoundError,
    RevisionNotFoundError,
    TransientDownloadError,
    UnauthorizedError,
)
from app.scrub import register_secrets, scrub
from worker.engine.base import (
    Control,
    ControlFn,
    DownloadRequest,
    DownloadResult,
    Identity,
    ProgressFn,
    ProgressMeter,
    safe_dest,
)
from worker.engine.hub import HubClient, resolve_patiently

IDENTIFY_RETRIES = 6
_ERRORS: list[tuple[str, type[DownloadError], str]] = [
    (
        "GatedRepoError",
        GatedRepoError,
        "is gated: accept its licence on the repo's page on the Hub and set HF_TOKEN",
    ),
    ("RepositoryNotFoundError", RepoNotFoundError, "was not found (or it is private)"),
    ("RevisionNotFoundError", RevisionNotFoundError, "has no such revision"),
    ("EntryNotFoundError", EntryNotFoundError, "has no such file at that revision"),
]


# The file in a staging folder that names its destination. No requested file can have this
# name (check_relative_path refuses it as a first segment), so the download never
# overwrites it.
STAGING_MARKER = storage.WORK_DIRNAME


def staging_root(models_dir: Path) -> Path:
    """The folder holding every hf_hub staging folder."""
    return storage.work_dir(models_dir).parent / "hf"


def staging_dir(models_dir: Path, dest: str) -> Path:
    """The folder where huggingface_hub downloads the file that becomes `dest`."""
    return staging_root(models_dir) / hashlib.sha256(dest.encode()).hexdigest()[:16]


class HfHubEngine:
    """Runs huggingface_hub in a child process; see the module docstring."""

    name = "hf_hub"

    def __init__(self, *, control_interval: float = 0.25, progress_interval: float = 0.25) -> None:
        self.control_interval = control_interval
        self.progress_interval = progress_interval

    def identify(
        self, request: DownloadRequest, *, control: ControlFn | None = None
    ) -> Identity | None:
        """What the Hub serves at the request's revision, asked the way the native engine asks
        (the protocol huggingface_hub follows). A refusal (a gated or missing repo) returns
        None: huggingface_hub then meets it and reports it with its own traceback."""
        client = HubClient(request.endpoint, request.token)
        try:
            resolved = resolve_patiently(
                client,
                request.repo,
                request.file_name,
                request.revision,
                control=control,
                max_retries=IDENTIFY_RETRIES,
                backoff_base=0.5,
                backoff_max=30.0,
                interval=self.control_interval,
            )
        except PermanentDownloadError:
            return None
        return resolved.identity()

    def download(
        self,
        request: DownloadRequest,
        *,
        progress: ProgressFn | None = None,
        control: ControlFn | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> DownloadResult:
        """Download with huggingface_hub, verify, and place the file atomically."""
        ctx: dict[str, Any] = {"repo": request.repo, "file": request.file_name}
        dest = safe_dest(request)
        staging = staging_dir(request.models_dir, request.dest)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        # First, so that a worker killed at any later moment leaves a folder the sweeper can
        # tie to its destination (and to the destination's lease) and remove.
        (staging / STAGING_MARKER).write_text(request.dest, encoding="utf-8")
        meter = ProgressMeter(progress, interval=self.progress_interval)
        try:
            # The token is one of the secrets every error made from here on is scrubbed of.
            register_secrets(request.token)
            events, stderr, code = self._run_child(request, staging, meter, control)
            stderr = scrub(stderr)
            done = next((e for e in reversed(events) if e.get("event") == "done"), None)
            if code != 0 or done is None:
                raise self._error(events, stderr, code, ctx)
            staged = staging / request.file_name
            size = staged.stat().st_size
            meter.update(size, size, status="verifying", force=True)
            sha256, etag, commit = self._verify(staged, staging, request, ctx)
            if before_commit is not None:
                before_commit()
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(staged, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(staged, dest)
            meter.update(size, size, status="completed", force=True)
            return DownloadResult(
                path=dest,
                size=size,
                sha256=sha256,
                etag=etag,
                commit=commit,
                bytes_transferred=size,
                resumed_from=0,
                stderr=stderr,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _run_child(
        self,
        request: DownloadRequest,
        staging: Path,
        meter: ProgressMeter,
        control: ControlFn | None,
    ) -> tuple[list[dict[str, Any]], str, int]:
        env = dict(os.environ)
        env["HF_ENDPOINT"] = request.endpoint
        env.pop("HF_TOKEN", None)
        env.pop("HUGGING_FACE_HUB_TOKEN", None)
        if request.token:
            env["HF_TOKEN"] = request.token
        env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        env["HF_HOME"] = str(staging / ".hf-home")
        spec = {
            "repo": request.repo,
            "file_name": request.file_name,
            "revision": request.revision,
            "local_dir": str(staging),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.engine.hf_hub_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
        events: list[dict[str, Any]] = []
        err_chunks: list[bytes] = []
        readers = [
            threading.Thread(target=_read_events, args=(proc.stdout, events, meter), daemon=True),
            threading.Thread(target=_read_all, args=(proc.stderr, err_chunks), daemon=True),
        ]
        for t in readers:
            t.start()
        try:
            while proc.poll() is None:
                time.sleep(self.control_interval)
                wanted = control() if control is not None else None
                if wanted is not None:
                    _terminate(proc)
                    cls = PausedError if wanted is Control.PAUSE else CancelledError
                    raise cls(wanted.value, repo=request.repo, file=request.file_name)
        finally:
            if proc.poll() is None:
                _terminate(proc)
            for t in readers:
                t.join(timeout=10)
        stderr = b"".join(err_chunks).decode("utf-8", errors="replace")
        return events, stderr, proc.returncode

    def _error(
        self,
        events: list[dict[str, Any]],
        stderr: str,
        code: int,
        ctx: dict[str, Any],
    ) -> DownloadError:
        err = next((e for e in reversed(events) if e.get("event") == "error"), None)
        if err is None:
            return TransientDownloadError(
                f"huggingface_hub exited with status {code} without a result",
                stderr=stderr,
                **ctx,
            )
        types = set(err.get("types") or [err.get("type")])
        status = err.get("status")
        for name, cls, text in _ERRORS:
            if name in types:
                return cls(f"repository {ctx['repo']} {text}", status=status, stderr=stderr, **ctx)
        message = f"huggingface_hub: {err.get('type')}: {scrub(str(err.get('message')))}"
        if status == 401:
            return UnauthorizedError(message, status=status, stderr=stderr, **ctx)
        if status is not None and status < 500 and status not in (408, 429):
            return PermanentDownloadError(message, status=status, stderr=stderr, **ctx)
        return TransientDownloadError(message, status=status, stderr=stderr, **ctx)

    def _verify(
        self, staged: Path, staging: Path, request: DownloadRequest, ctx: dict[str, Any]
    ) -> tuple[str, str, str]:
        meta = staging / ".cache" / "huggingface" / "download" / f"{request.file_name}.metadata"
        commit, etag = "", ""
        with contextlib.suppress(OSError, ValueError):
            commit, etag = meta.read_text().splitlines()[:2]
        sha256 = sha256_file(staged)
        expected = request.sha256 or (etag if len(etag) == 64 else None)
        if expected and sha256 != expected:
            raise ChecksumMismatchError(
                f"the downloaded bytes have sha256 {sha256}, expected {expected}; "
                "the bad data was discarded",
                **ctx,
            )
        return sha256, etag, commit


def _read_events(stream: IO[bytes], events: list[dict[str, Any]], meter: ProgressMeter) -> None:
    for raw in stream:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        events.append(event)
        if event.get("event") == "progress":
            meter.update(int(event.get("bytes") or 0), event.get("total"))


def _read_all(stream: IO[bytes], chunks: list[bytes]) -> None:
    # Read raw bytes until EOF: nothing is split or dropped, tracebacks stay whole.
    while chunk := stream.read(65536):
        chunks.append(chunk)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
