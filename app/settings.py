"""The service's settings: the one place that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from app.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOG = PROJECT_ROOT / "models.yaml"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Downloader(StrEnum):
    """Which engine moves the bytes."""

    NATIVE = "native"
    HF_HUB = "hf_hub"


@dataclass(frozen=True)
class Settings:
    """Typed, immutable configuration; tests build it directly, the service via load_settings."""

    models_dir: Path
    data_dir: Path
    database_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str = ""
    models_catalog: Path = DEFAULT_CATALOG
    hf_endpoint: str = "https://huggingface.co"
    # Secrets stay out of repr() so a logged Settings never shows them.
    hf_token: str | None = field(default=None, repr=False)
    downloader: Downloader = Downloader.NATIVE
    # Connections per file: a fixed count, or None (unset, "auto") to adapt up to the maximum.
    download_connections: int | None = None
    download_max_connections: int = 32
    # Connections one worker process opens to one host, over all the files it downloads.
    download_host_connections: int = 64
    download_log_to_file: bool = True
    download_websocket_progress: bool = True
    api_token: str | None = field(default=None, repr=False)
    allowed_origins: tuple[str, ...] = ()
    # How long a worker's hold on a file lasts without a heartbeat before another takes it.
    download_lease_seconds: int = 60
    # Claims of one file (worker deaths, transient failures) before it is failed for good.
    download_max_attempts: int = 5
    # A connection that brings fewer bytes than this in this many seconds is stalled: it is
    # reconnected, and counted against the retries when reconnecting does not help.
    download_trickle_bytes: int = 32 * 1024
    download_trickle_seconds: int = 30
    # How often a worker looks for lost files (expired leases, messages that never left).
    sweep_interval_seconds: int = 10
    worker_concurrency: int = 2
    # How often the web tier asks the Hub for the catalog's sizes (0: never, not even at start).
    catalog_refresh_seconds: int = 6 * 3600
    # Signs session cookies; when unset, one is generated once and kept in DATA_DIR.
    secret_key: str | None = field(default=None, repr=False)
    session_cookie_secure: bool = False
    # Where the CLI finds the service, and the token it sends.
    modelpull_url: str = "http://127.0.0.1:8000"
    modelpull_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Derived defaults: frozen, so set through object.__setattr__ once, here.
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'modelpull.db'}")
        if not self.celery_broker_url:
            object.__setattr__(self, "celery_broker_url", self.redis_url)
        if self.download_connections is not None and not 1 <= self.download_connections <= 64:
            raise ConfigError("DOWNLOAD_CONNECTIONS must be between 1 and 64, or auto")
        if not 1 <= self.download_max_connections <= 128:
            raise ConfigError("DOWNLOAD_MAX_CONNECTIONS must be between 1 and 128")
        if not 1 <= self.download_host_connections <= 256:
            raise ConfigError("DOWNLOAD_HOST_CONNECTIONS must be between 1 and 256")

    @property
    def log_dir(self) -> Path:
        """Where the download log lives."""
        return self.data_dir / "logs"

    @property
    def download_log_path(self) -> Path:
        """The download log file (rotated)."""
        return self.log_dir / "downloads.log"

    def public_dict(self) -> dict[str, object]:
        """Every setting with secrets masked, for display."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                value = "***" if value else None
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _parse_int(name: str, raw: str, *, low: int, high: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _parse_url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{name} must start with one of {allowed}")
    # A URL without a host is only meaningful for sqlite files and unix sockets.
    if not parts.netloc and not parts.scheme.startswith(("sqlite", "unix", "redis+socket")):
        raise ConfigError(f"{name} has no host")
    return value


def _parse_downloader(env: Mapping[str, str]) -> Downloader:
    raw = env.get("DOWNLOADER", "").strip().lower()
    legacy = env.get("USE_PYTHON_DOWNLOADER")
    chosen: Downloader | None = None
    if raw:
        try:
            chosen = Downloader(raw)
        except ValueError:
            allowed = ", ".join(d.value for d in Downloader)
            raise ConfigError(f"DOWNLOADER must be one of {allowed}, got {raw!r}") from None
    if legacy is not None and legacy.strip() and _parse_bool("USE_PYTHON_DOWNLOADER", legacy):
        if chosen is Downloader.NATIVE:
            raise ConfigError("DOWNLOADER=native contradicts USE_PYTHON_DOWNLOADER=true")
        chosen = Downloader.HF_HUB
    return chosen or Downloader.NATIVE


def _parse_origins(raw: str) -> tuple[str, ...]:
    origins = []
    for item in raw.split(","):
        origin = item.strip().rstrip("/")
        if not origin:
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ConfigError(
                f"ALLOWED_ORIGINS entries must look like https://host[:port], got {item.strip()!r}"
            )
        origins.append(origin)
    return tuple(origins)


# The whole-number settings and their ranges; each is the lowercase field of Settings.
_INT_SETTINGS = (
    ("DOWNLOAD_LEASE_SECONDS", 2, 3600),
    ("DOWNLOAD_MAX_ATTEMPTS", 1, 100),
    ("DOWNLOAD_TRICKLE_BYTES", 0, 1 << 30),
    ("DOWNLOAD_TRICKLE_SECONDS", 1, 3600),
    ("SWEEP_INTERVAL_SECONDS", 1, 3600),
    ("WORKER_CONCURRENCY", 1, 64),
    ("CATALOG_REFRESH_SECONDS", 0, 7 * 24 * 3600),
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment, failing with a message that names the variable."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value is not None and value.strip() != "" else None

    data_dir = Path(get("DATA_DIR") or "data").expanduser().resolve()
    models_dir = Path(get("MODELS_DIR") or "models").expanduser().resolve()
    kwargs: dict[str, object] = {"data_dir": data_dir, "models_dir": models_dir}

    if (raw := get("DATABASE_URL")) is not None:
        kwargs["database_url"] = _parse_url(
            "DATABASE_URL", raw, ("sqlite", "postgresql", "postgresql+psycopg")
        )
    if (raw := get("REDIS_URL")) is not None:
        kwargs["redis_url"] = _parse_url("REDIS_URL", raw, ("redis", "rediss", "unix"))
    if (raw := get("CELERY_BROKER_URL")) is not None:
        kwargs["celery_broker_url"] = _parse_url(
            "CELERY_BROKER_URL", raw, ("redis", "rediss", "redis+socket")
        )
    if (raw := get("MODELS_CATALOG")) is not None:
        kwargs["models_catalog"] = Path(raw).expanduser().resolve()
    if (raw := get("HF_ENDPOINT")) is not None:
        kwargs["hf_endpoint"] = _parse_url("HF_ENDPOINT", raw, ("http", "https")).rstrip("/")
    if (raw := get("HF_TOKEN")) is not None:
        kwargs["hf_token"] = raw.strip()
    kwargs["downloader"] = _parse_downloader(env)
    if (raw := get("DOWNLOAD_CONNECTIONS")) is not None and raw.strip().lower() != "auto":
        kwargs["download_connections"] = _parse_int("DOWNLOAD_CONNECTIONS", raw, low=1, high=64)
    for name, high in (("DOWNLOAD_MAX_CONNECTIONS", 128), ("DOWNLOAD_HOST_CONNECTIONS", 256)):
        if (raw := get(name)) is not None:
            kwargs[name.lower()] = _parse_int(name, raw, low=1, high=high)
    if (raw := get("DOWNLOAD_LOG_TO_FILE")) is not None:
        kwargs["download_log_to_file"] = _parse_bool("DOWNLOAD_LOG_TO_FILE", raw)
    if (raw := get("DOWNLOAD_WEBSOCKET_PROGRESS")) is not None:
        kwargs["download_websocket_progress"] = _parse_bool("DOWNLOAD_WEBSOCKET_PROGRESS", raw)
    if (raw := get("API_TOKEN")) is not None:
        kwargs["api_token"] = raw.strip()
    if (raw := get("ALLOWED_ORIGINS")) is not None:
        kwargs["allowed_origins"] = _parse_origins(raw)
    if (raw := get("SECRET_KEY")) is not None:
        if len(raw.strip()) < 16:
            raise ConfigError("SECRET_KEY must be at least 16 characters")
        kwargs["secret_key"] = raw.strip()
    if (raw := get("MODELPULL_URL")) is not None:
        kwargs["modelpull_url"] = _parse_url("MODELPULL_URL", raw, ("http", "https")).rstrip("/")
    if (raw := get("MODELPULL_TOKEN")) is not None:
        kwargs["modelpull_token"] = raw.strip()
    if (raw := get("SESSION_COOKIE_SECURE")) is not None:
        kwargs["session_cookie_secure"] = _parse_bool("SESSION_COOKIE_SECURE", raw)
    for name, low, high in _INT_SETTINGS:
        if (raw := get(name)) is not None:
            kwargs[name.lower()] = _parse_int(name, raw, low=low, high=high)
    return Settings(**kwargs)  # type: ignore[arg-type]
