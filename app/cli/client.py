"""The CLI's side of the service's HTTP API, so it works against a remote deployment as well
as `modelpull up` (`--url`/`MODELPULL_URL`, `--token`/`MODELPULL_TOKEN`)."""

from __future__ import annotations

from typing import Any

import requests

# A message, not a password (ruff's S105 goes by the name).
NO_TOKEN = "no API token: set --token or MODELPULL_TOKEN (modelpull up prints one)"  # noqa: S105
# Answers from a proxy in front of a service that is down.
_GATEWAY = frozenset({502, 503, 504})


class ClientError(Exception):
    """The service refused or could not be reached; the message says why. `unreachable`
    means no answer came from the service itself (refused, timed out, a proxy's 502);
    `status` is the HTTP status of an answer that did come."""

    def __init__(self, message: str, *, status: int | None = None, unreachable: bool = False):
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable


def _why(exc: requests.RequestException) -> str:
    """A connection failure in a few words (requests' own text repeats the URL)."""
    text = str(exc)
    for needle, said in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("No address associated", "unknown host"),
        ("timed out", "no answer in time"),
        ("Connection reset", "connection reset"),
        ("Connection aborted", "connection dropped"),
    ):
        if needle in text:
            return said
    return type(exc).__name__


class ApiClient:
    """A thin JSON client with the bearer token; `token_from` names where the token came
    from, for the message when the service refuses it."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = 15.0,
        token_from: str = "--token or MODELPULL_TOKEN",  # noqa: S107 (where it came from)
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.token_from = token_from
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the API; JSON errors become ClientError with the server's message."""
        try:
            resp = self.session.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach {self.url}: {_why(exc)}", unreachable=True) from None
        if resp.status_code == 401:
            message = (
                f"the service refused the token from {self.token_from}" if self._token else NO_TOKEN
            )
            raise ClientError(message, status=401)
        if resp.status_code == 204:
            return None
        try:
            body = resp.json()
        except ValueError:
            raise ClientError(
                f"{self.url} answered {resp.status_code}, not JSON",
                status=resp.status_code,
                unreachable=resp.status_code in _GATEWAY,
            ) from None
        if resp.status_code >= 400:
            said = body.get("message") if isinstance(body, dict) else None
            raise ClientError(str(said or f"HTTP {resp.status_code}"), status=resp.status_code)
        return body

    def ws_url(self) -> str:
        """The WebSocket URL of the service."""
        return self.url.replace("http", "ws", 1) + "/ws"

    def ws_headers(self) -> dict[str, str]:
        """Bearer header for the WebSocket handshake (never a token in the URL)."""
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}
