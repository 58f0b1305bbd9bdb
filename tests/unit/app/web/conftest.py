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
from tests.webapp import web_settings as build_web_settings


@pytest.fixture
def web_settings(tmp_path: Path, db_url: str, redis_server: RedisServer) -> Settings:
    return build_web_settings(tmp_path, database_url=db_url, redis_url=redis_server.url)


@pytest.fixture
def app(web_settings: Settings) -> Iterator[Flask]:
    application = create_app(web_settings)
    yield application
    application.extensions["modelpull"].relay.stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
