"""The stacks bench.chaos and bench.scale drive: the imitation Hub, a private Redis, the job
store and Celery workers (tests/stack.py's Stack), started and stopped the same way."""

from __future__ import annotations

import tempfile
from pathlib import Path

from app import migrate
from app.db import make_engine
from tests.hub import ImitationHub
from tests.stack import Stack
from tests.support import RedisServer, clear_tables


def imitation_hub(workdir: Path) -> ImitationHub:
    """The imitation Hub, started, its data under `workdir`; generated files are kept in one
    cache across runs (they are costly to make)."""
    cache = Path(tempfile.gettempdir()) / "modelpull-bench-hub-cache"
    cache.mkdir(exist_ok=True)
    hub = ImitationHub(data_dir=workdir / "hub", cache_dir=cache)
    hub.start()
    return hub


def start_stack(
    where: Path, hub: ImitationHub, db_url: str | None = None, env: dict[str, str] | None = None
) -> Stack:
    """A stack in `where`: a private Redis, the job store (SQLite in `where` unless `db_url`)
    migrated, the event collector listening; `env` goes to every process it starts."""
    redis = RedisServer(where / "redis")
    redis.start()
    db_url = db_url or f"sqlite:///{where / 'jobs.db'}"
    migrate.upgrade(db_url)
    stack = Stack(tmp=where, hub=hub, db_url=db_url, redis=redis, extra_env=env or {})
    stack.collector.start()
    return stack


def stop_stack(stack: Stack) -> None:
    """Stop the stack's processes, then its Redis."""
    stack.close()
    stack.redis.stop()


def empty_store(db_url: str) -> None:
    """Migrate the (PostgreSQL) job store at `db_url` and empty every table: each run starts
    from nothing."""
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    clear_tables(engine)
    engine.dispose()
