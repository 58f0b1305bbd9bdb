"""Shared fixtures: settings, a migrated job store on SQLite and on PostgreSQL, and the real
stack (`tests/stack.py`) the pipeline, WebSocket and browser tests drive."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app import migrate
from app.db import make_engine, make_session_factory
from app.settings import Settings
from tests.hub import ImitationHub
from tests.stack import EventCollector, Stack
from tests.support import RedisServer, clear_tables, postgres_base_url, temporary_pg_database

pytest_plugins = ["tests.hub.fixtures"]

# huggingface_hub and our own code must never reach the internet from a test.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost,::1")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database for the whole session."""
    with temporary_pg_database(postgres_base_url()) as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty job store; each test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        migrate.upgrade(url)
        yield url
        return
    url = request.getfixturevalue("pg_url")
    yield url
    engine = make_engine(url)
    clear_tables(engine)
    engine.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the test job store."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Session factory on the test job store."""
    return make_session_factory(engine)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings rooted in the test's temporary folder."""
    models = tmp_path / "models"
    data = tmp_path / "data"
    models.mkdir()
    data.mkdir()
    return Settings(models_dir=models, data_dir=data)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis for the test (broker, flags, leases, the event channel)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def collector(redis_server: RedisServer) -> Iterator[EventCollector]:
    """Every event published on the test Redis's `download` channel."""
    events = EventCollector(redis_server.port)
    events.start()
    yield events
    events.stop()


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
            clear_tables(s.engine)
            s.engine.dispose()
