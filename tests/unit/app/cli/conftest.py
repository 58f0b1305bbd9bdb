"""The CLI run in-process: an environment with only the test's settings, and a live service
(the real web app behind a werkzeug server on loopback) for the remote commands."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from app import create_app, migrate
from app.settings import Settings
from tests.support import RedisServer
from tests.webapp import ENV_TOKEN, web_settings

# Every variable load_settings reads: a setting's name in capitals, and the legacy switch.
SETTING_VARIABLES = {f.name.upper() for f in fields(Settings)} | {"USE_PYTHON_DOWNLOADER"}


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """None of the runner's settings; DATA_DIR and MODELS_DIR in tmp_path; wide output."""
    for name in SETTING_VARIABLES & set(os.environ):
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps tables at 80 columns otherwise
    return monkeypatch


@pytest.fixture
def service(environ: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """The service's URL; the CLI finds it and its token through MODELPULL_URL/_TOKEN."""
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    database_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate.upgrade(database_url)
    settings = web_settings(tmp_path, database_url=database_url, redis_url=redis_server.url)
    app = create_app(settings)  # web_settings: no catalog refresher thread
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    environ.setenv("MODELPULL_URL", url)
    environ.setenv("MODELPULL_TOKEN", ENV_TOKEN)
    try:
        yield url
    finally:
        server.shutdown()
        thread.join(10)
        app.extensions["modelpull"].relay.stop()
        redis_server.stop()
