"""The CLI's side of the service's HTTP API, so it works against a remote deployment as well
as `modelpull up` (`--url`/`MODELPULL_URL`, `--token`/`MODELPULL_TOKEN`)."""

from __future__ import annotations

from typing import Any

import requests


class ClientError(Exception):
    """The service refused or could not be reached; the message says why."""


class ApiClient:
    """A thin JSON client with the bearer token."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the API; JSON errors become ClientError with the server's message."""
        try:
            resp = self.session.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach {self.url}: {type(exc).__name__}") from None
        if resp.status_code == 401:
            raise ClientError("the service refused the token: set --token or MODELPULL_TOKEN")
        if resp.status_code == 204:
            return None
        try:
            body = resp.json()
        except ValueError:
            raise ClientError(f"{self.url} answered {resp.status_code}, not JSON") from None
        if resp.status_code >= 400:
            raise ClientError(body.get("message") or f"HTTP {resp.status_code}")
        return body

    def ws_url(self) -> str:
        """The WebSocket URL of the service."""
        return self.url.replace("http", "ws", 1) + "/ws"

    def ws_headers(self) -> dict[str, str]:
        """Bearer header for the WebSocket handshake (never a token in the URL)."""
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}
