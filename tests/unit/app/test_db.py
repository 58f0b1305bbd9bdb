"""The SQLite job store under concurrent writers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import func, select, update

from app import jobs, migrate
from app.db import make_engine, make_session_factory, normalize_url
from app.models import DownloadFile


def test_read_then_write_transactions_wait_for_each_other_instead_of_failing(
    tmp_path: Path,
) -> None:
    # The web tier reads a job then changes it while workers write heartbeats: with SQLite's
    # default deferred transactions the second writer fails at once ("database is locked").
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory.begin() as s:
        job = jobs.create_job(s, [jobs.FileSpec("org/r", "a.bin")], method="native")
        file_id = job.files[0].id
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def read_then_write(n: int) -> None:
        try:
            barrier.wait()
            with factory.begin() as s:
                done = s.scalar(select(func.sum(DownloadFile.bytes_done))) or 0
                time.sleep(0.05)
                s.execute(
                    update(DownloadFile)
                    .where(DownloadFile.id == file_id)
                    .values(bytes_done=done + 1)
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read_then_write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    engine.dispose()
    assert errors == []
    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        # Serialised: every increment saw the one before it.
        assert jobs.get_file(s, file_id).bytes_done == 4
    engine.dispose()


def test_postgres_urls_use_psycopg_3() -> None:
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
