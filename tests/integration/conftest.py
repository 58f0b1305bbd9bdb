"""The pipeline tests' stack fixture; the stack itself is in `tests/stack.py`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from app import migrate
from app.models import FileStatus
from tests.hub import ImitationHub
from tests.stack import DestinationWatcher, MiB, Stack, cdn_bytes
from tests.support import RedisServer, sha256_of, wait_for


@pytest.fixture(params=["sqlite"])
def stack(request: pytest.FixtureRequest, tmp_path: Path, hub: ImitationHub) -> Iterator[Stack]:
    """A fresh stack; `@pytest.mark.parametrize("stack", ["postgres"], indirect=True)` runs
    it on PostgreSQL instead."""
    if request.param == "postgres":
        db_url = request.getfixturevalue("pg_url")
    else:
        db_url = f"sqlite:///{tmp_path / 'jobs.db'}"
        migrate.upgrade(db_url)
    server = RedisServer(tmp_path / "redis")
    server.start()
    s = Stack(tmp=tmp_path, hub=hub, db_url=db_url, redis=server)
    s.collector.start()
    try:
        yield s
    finally:
        s.close()
        server.stop()
        if request.param == "postgres":
            with s.engine.begin() as conn:
                conn.execute(text("TRUNCATE download_file, download_job CASCADE"))
            s.engine.dispose()


__all__ = [
    "DestinationWatcher",
    "FileStatus",
    "MiB",
    "Stack",
    "cdn_bytes",
    "sha256_of",
    "wait_for",
]
