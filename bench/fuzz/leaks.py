"""What must not leak, checked once the request suites are done: the token into the process's
logs (the logs suite), files out of MODELS_DIR (the containment suite: every accepted
destination stays inside, and the web tier wrote no file anywhere)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select

from app import storage
from app.models import DownloadFile
from bench.fuzz.target import Target
from tests.oracles import contained, repo_ok, revision_ok


class LogCapture(logging.Handler):
    """Every log record of the process (the fuzzers' own aside), formatted with tracebacks."""

    IGNORED = ("schemathesis", "hypothesis", "bench.fuzz")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(self.IGNORED):
            with contextlib.suppress(Exception):
                self.lines.append(self.format(record))


@contextlib.contextmanager
def captured_logs() -> Iterator[LogCapture]:
    """Every record of the process, at DEBUG, while the block runs."""
    capture = LogCapture()
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(capture)
    root_logger.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root_logger.removeHandler(capture)
        root_logger.setLevel(old_level)


def run_logs(target: Target, capture: LogCapture) -> None:
    """No log line of the process carries the token (it went into URLs, bodies and headers)."""
    leaked = [line for line in capture.lines if target.secret in line]
    target.tally.check(
        "logs",
        "secret_not_logged",
        not leaked,
        operation="(in-process logging)",
        request=f"{len(capture.lines)} log records",
        detail="; ".join(leaked[:3])[:600],
    )


def run_containment(target: Target, escape: Path, before: set[str]) -> None:
    """Every destination the job store holds stays inside MODELS_DIR, and the web tier wrote
    no file anywhere (the canary a traversal named does not exist)."""
    with target.sessions() as session:
        rows = session.execute(
            select(DownloadFile.repo, DownloadFile.dest, DownloadFile.revision)
        ).all()
    for repo, dest, revision in rows:
        ok = contained(target.models_dir, dest) and repo_ok(repo) and revision_ok(revision)
        with contextlib.suppress(ValueError):
            ok = ok and storage.dest_path(target.models_dir, dest).is_relative_to(
                target.models_dir.resolve()
            )
        target.tally.check(
            "containment",
            "stored_dest_contained",
            ok,
            operation="(job store)",
            request=f"repo={repo!r} dest={dest!r} revision={revision!r}",
        )
    after = files_under(target.workdir)
    target.tally.check(
        "containment",
        "no_file_written",
        after == before and not escape.exists(),
        operation="(filesystem)",
        detail=f"new: {sorted(after - before)[:5]}",
    )


def files_under(root: Path) -> set[str]:
    """Every file under `root` but the job store and Redis's own."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith("jobs.db") and "redis" not in p.parts
    }
