"""Shared fixtures: settings, and a migrated job store on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app import migrate
from app.db import make_engine, make_session_factory, normalize_url
from app.settings import Settings
from tests.hub.fixtures import empty_hub, hf_env, hub, hub_cache_dir  # noqa: F401

# huggingface_hub and our own code must never reach the internet from a test.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost,::1")


@contextmanager
def temporary_pg_database(base_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database beside `base_url`'s, dropped afterwards."""
    url = make_url(normalize_url(base_url))
    name = f"modelpull_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def postgres_base_url() -> str:
    """TEST_DATABASE_URL, required in CI; elsewhere its absence skips PostgreSQL tests."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("TEST_DATABASE_URL is not set: CI must run the PostgreSQL tests")
        pytest.skip("TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    return base


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
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE download_file, download_job CASCADE"))
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
