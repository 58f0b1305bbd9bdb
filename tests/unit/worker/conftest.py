"""The worker tests' runtime: what a worker process builds, on the test's job store and a
private Redis (no worker process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.support import RedisServer
from worker.runtime import Runtime, build_runtime


@pytest.fixture
def make_runtime(
    tmp_path: Path, db_url: str, redis_server: RedisServer
) -> Iterator[Callable[..., Runtime]]:
    """Builds runtimes; keyword arguments are Settings fields (a short lease, few attempts)."""
    built: list[Runtime] = []

    def make(**overrides: Any) -> Runtime:
        settings = Settings(
            models_dir=tmp_path / "models",
            data_dir=tmp_path / "data",
            database_url=db_url,
            redis_url=redis_server.url,
            **overrides,
        )
        built.append(build_runtime(settings))
        return built[-1]

    yield make
    for rt in built:
        rt.sessions.kw["bind"].dispose()
