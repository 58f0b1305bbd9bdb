"""Settings: every variable with its default, and bad values named at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigError
from app.settings import DEFAULT_CATALOG, Downloader, Settings, load_settings


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings({})
    assert s.models_dir == tmp_path / "models"
    assert s.data_dir == tmp_path / "data"
    assert s.database_url == f"sqlite:///{tmp_path / 'data' / 'modelpull.db'}"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.celery_broker_url == s.redis_url
    assert s.models_catalog == DEFAULT_CATALOG and DEFAULT_CATALOG.is_file()
    assert s.hf_endpoint == "https://huggingface.co"
    assert s.hf_token is None and s.api_token is None
    assert s.downloader is Downloader.NATIVE
    # Adaptive unless fixed: from a few connections up to the maximum, within the host's limit.
    assert s.download_connections is None
    assert (s.download_max_connections, s.download_host_connections) == (32, 64)
    assert s.download_log_to_file is True
    assert s.download_websocket_progress is True
    assert s.allowed_origins == ()
    assert s.download_log_path == tmp_path / "data" / "logs" / "downloads.log"


def test_every_variable_is_read(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgresql://u@db:5432/modelpull",
        "REDIS_URL": "redis://cache:6379/1",
        "CELERY_BROKER_URL": "redis://broker:6379/2",
        "MODELS_DIR": str(tmp_path / "m"),
        "DATA_DIR": str(tmp_path / "d"),
        "MODELS_CATALOG": str(tmp_path / "c.yaml"),
        "HF_ENDPOINT": "http://127.0.0.1:9999/",
        "HF_TOKEN": "hf_secret",
        "DOWNLOADER": "hf_hub",
        "DOWNLOAD_CONNECTIONS": "4",
        "DOWNLOAD_LOG_TO_FILE": "false",
        "DOWNLOAD_WEBSOCKET_PROGRESS": "0",
        "API_TOKEN": "api-secret",
        "ALLOWED_ORIGINS": "https://models.example, http://127.0.0.1:8000/",
    }
    s = load_settings(env)
    assert s.database_url == "postgresql://u@db:5432/modelpull"
    assert s.redis_url == "redis://cache:6379/1"
    assert s.celery_broker_url == "redis://broker:6379/2"
    assert (s.models_dir, s.data_dir) == (tmp_path / "m", tmp_path / "d")
    assert s.models_catalog == tmp_path / "c.yaml"
    assert s.hf_endpoint == "http://127.0.0.1:9999"
    assert (s.hf_token, s.api_token) == ("hf_secret", "api-secret")
    assert s.downloader is Downloader.HF_HUB
    assert s.download_connections == 4
    assert s.download_log_to_file is False and s.download_websocket_progress is False
    assert s.allowed_origins == ("https://models.example", "http://127.0.0.1:8000")


def test_secrets_never_show_in_repr() -> None:
    s = load_settings({"HF_TOKEN": "hf_secret", "API_TOKEN": "api-secret"})
    assert "hf_secret" not in repr(s) and "api-secret" not in repr(s)
    public = s.public_dict()
    assert public["hf_token"] == "***" and public["api_token"] == "***"


def test_legacy_switch_selects_the_hf_hub_engine() -> None:
    assert load_settings({"USE_PYTHON_DOWNLOADER": "true"}).downloader is Downloader.HF_HUB
    assert load_settings({"USE_PYTHON_DOWNLOADER": "false"}).downloader is Downloader.NATIVE


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DOWNLOAD_CONNECTIONS": "eight"}, "DOWNLOAD_CONNECTIONS must be an integer"),
        ({"DOWNLOAD_CONNECTIONS": "0"}, "DOWNLOAD_CONNECTIONS must be between 1 and 64"),
        ({"DOWNLOAD_CONNECTIONS": "1000"}, "DOWNLOAD_CONNECTIONS must be between 1 and 64"),
        ({"DOWNLOADER": "aria2"}, "DOWNLOADER must be one of native, hf_hub"),
        ({"DOWNLOAD_LOG_TO_FILE": "maybe"}, "DOWNLOAD_LOG_TO_FILE must be true or false"),
        ({"DOWNLOAD_WEBSOCKET_PROGRESS": "2"}, "DOWNLOAD_WEBSOCKET_PROGRESS must be true or false"),
        ({"USE_PYTHON_DOWNLOADER": "yep"}, "USE_PYTHON_DOWNLOADER must be true or false"),
        (
            {"DOWNLOADER": "native", "USE_PYTHON_DOWNLOADER": "1"},
            "DOWNLOADER=native contradicts USE_PYTHON_DOWNLOADER",
        ),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL must start with one of"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must start with one of"),
        ({"HF_ENDPOINT": "ftp://hub"}, "HF_ENDPOINT must start with one of"),
        ({"HF_ENDPOINT": "https://"}, "HF_ENDPOINT has no host"),
        ({"ALLOWED_ORIGINS": "example.com"}, "ALLOWED_ORIGINS entries must look like"),
        ({"ALLOWED_ORIGINS": "https://a.example/path"}, "ALLOWED_ORIGINS entries must look like"),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = Settings(models_dir=tmp_path, data_dir=tmp_path)
    with pytest.raises(AttributeError):
        s.download_connections = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="DOWNLOAD_CONNECTIONS"):
        Settings(models_dir=tmp_path, data_dir=tmp_path, download_connections=0)
    with pytest.raises(ConfigError, match="DOWNLOAD_MAX_CONNECTIONS"):
        Settings(models_dir=tmp_path, data_dir=tmp_path, download_max_connections=0)
    with pytest.raises(ConfigError, match="DOWNLOAD_HOST_CONNECTIONS"):
        Settings(models_dir=tmp_path, data_dir=tmp_path, download_host_connections=999)


def test_connections_auto_a_count_or_a_clear_error() -> None:
    auto = load_settings({"DOWNLOAD_CONNECTIONS": "auto", "DOWNLOAD_MAX_CONNECTIONS": "48"})
    assert auto.download_connections is None and auto.download_max_connections == 48
    assert load_settings({"DOWNLOAD_CONNECTIONS": "12"}).download_connections == 12
    with pytest.raises(ConfigError, match="DOWNLOAD_HOST_CONNECTIONS"):
        load_settings({"DOWNLOAD_HOST_CONNECTIONS": "many"})
    with pytest.raises(ConfigError, match="DOWNLOAD_MAX_CONNECTIONS"):
        load_settings({"DOWNLOAD_MAX_CONNECTIONS": "500"})


def test_blank_values_mean_the_default() -> None:
    s = load_settings({"DOWNLOAD_CONNECTIONS": "  ", "HF_TOKEN": ""})
    assert s.download_connections is None and s.hf_token is None
