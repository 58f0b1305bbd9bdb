"""The web tests' small catalog and credentials, shared with `bench.fuzz`: one copy."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings

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

# The headers of a WebSocket upgrade request, for tests that knock on /ws by hand.
UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def web_settings(
    workdir: Path, *, database_url: str, redis_url: str, api_token: str = ENV_TOKEN
) -> Settings:
    """Settings for a web app under `workdir` with the small catalog; the Hub is unreachable
    (port 9), so nothing a test starts can download for real."""
    catalog = workdir / "models.yaml"
    catalog.write_text(CATALOG)
    (workdir / "models").mkdir(exist_ok=True)
    return Settings(
        models_dir=workdir / "models",
        data_dir=workdir / "data",
        database_url=database_url,
        redis_url=redis_url,
        models_catalog=catalog,
        hf_endpoint="http://127.0.0.1:9",
        api_token=api_token,
        catalog_refresh_seconds=0,
    )
