"""A web app on a migrated job store and a private Redis (the broker its messages go to)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.settings import Settings
from tests.support import RedisServer

ENV_TOKEN = "env-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {ENV_TOKEN}"}

CATALOG = """\
models:
  pair:
    name: A pair
    files:
      - {repo: org/one, file: a.gguf, size: 4}
      - {repo: org/two, file: sub/b.safetensors, dest: b.safetensors}
  single:
    files:
      - {repo: org/three, file: c.gguf}
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def web_settings(tmp_path: Path, db_url: str, redis_server: RedisServer) -> Settings:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG)
    (tmp_path / "models").mkdir()
    return Settings(
        models_dir=tmp_path / "models",
        data_dir=tmp_path / "data",
        database_url=db_url,
        redis_url=redis_server.url,
        models_catalog=catalog,
        hf_endpoint="http://127.0.0.1:9",
        api_token=ENV_TOKEN,
    )


@pytest.fixture
def app(web_settings: Settings) -> Iterator[Flask]:
    application = create_app(web_settings)
    yield application
    application.extensions["modelpull"].relay.stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
