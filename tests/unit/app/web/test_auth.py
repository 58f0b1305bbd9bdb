"""Authentication: bearer tokens, the cookie session, CSRF, origins, and no leaks."""

from __future__ import annotations

import re
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import tokens
from tests.webapp import AUTH, ENV_TOKEN

PUBLIC = {"/healthz", "/readyz", "/login", "/static/<path:filename>"}


def _protected_routes(app: Flask) -> list[tuple[str, str]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.rule in PUBLIC or rule.endpoint.startswith("pages."):
            continue
        path = re.sub(r"<[^>]+>", "0" * 32, rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((method, path))
    return routes


def test_every_route_but_liveness_and_login_needs_credentials(
    client: FlaskClient, app: Flask
) -> None:
    routes = _protected_routes(app)
    assert len(routes) >= 15
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            resp = client.open(path, method=method, headers=headers)
            assert resp.status_code == 401, (method, path, headers)
            assert resp.get_json() == {
                "error": "unauthorized",
                "message": "authentication required",
            }
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_pages_send_strangers_to_the_login_page(client: FlaskClient) -> None:
    for path in ("/", "/models", "/jobs"):
        resp = client.get(path)
        assert resp.status_code == 302
        assert resp.headers["Location"].startswith("/login?next=")
    client.post("/login", data={"token": ENV_TOKEN})
    page = client.get("/models").get_data(as_text=True)
    assert 'name="csrf-token"' in page and "Show missing models" in page


def test_a_token_in_the_url_is_never_accepted(client: FlaskClient) -> None:
    for name in ("token", "access_token", "api_key"):
        assert client.get(f"/api/models?{name}={ENV_TOKEN}").status_code == 401


def test_created_tokens_work_until_revoked(client: FlaskClient, app: Flask) -> None:
    sessions = app.extensions["modelpull"].sessions
    with sessions.begin() as s:
        row, plain = tokens.create_token(s, "laptop")
        token_id = row.id
    with sessions() as s:  # only the hash is stored
        stored = tokens.list_tokens(s)[0]
        assert stored.token_hash != plain and plain not in stored.token_hash
    headers = {"Authorization": f"Bearer {plain}"}
    assert client.get("/api/models", headers=headers).status_code == 200
    with sessions() as s:
        assert tokens.list_tokens(s)[0].last_used_at is not None
    with sessions.begin() as s:
        tokens.revoke_token(s, token_id)
    assert client.get("/api/models", headers=headers).status_code == 401
    assert client.get("/api/models", headers=AUTH).status_code == 200  # API_TOKEN still works


def _login(client: FlaskClient, token: str = ENV_TOKEN, **extra: str) -> tuple[int, str]:
    resp = client.post("/login", data={"token": token, **extra}, headers={})
    return resp.status_code, resp.headers.get("Location", "")


def test_login_sets_a_hardened_session_cookie(client: FlaskClient) -> None:
    assert client.get("/login").status_code == 200
    resp = client.post("/login", data={"token": ENV_TOKEN, "next": "/api/models"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/api/models"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert ENV_TOKEN not in cookie
    assert client.get("/api/models").status_code == 200  # the cookie now authenticates


def test_a_wrong_token_at_login_is_refused_without_detail(client: FlaskClient) -> None:
    resp = client.post("/login", data={"token": "nope"})
    assert resp.status_code == 401 and "not valid" in resp.get_data(as_text=True)
    assert "Set-Cookie" not in resp.headers or "modelpull_session=;" in resp.headers["Set-Cookie"]
    assert client.get("/api/models").status_code == 401


@pytest.mark.parametrize(
    "target",
    ["//evil.example/x", "https://evil.example/", "\\\\evil", "", "/\t/evil.example/x", "/\n/x"],
)
def test_login_never_redirects_off_site(client: FlaskClient, target: str) -> None:
    assert _login(client, next=target) == (302, "/")


def test_cookie_sessions_need_the_csrf_token_to_change_anything(client: FlaskClient) -> None:
    client.post("/login", data={"token": ENV_TOKEN})
    body = {"repo": "org/r", "files": ["a.bin"]}
    refused = client.post("/api/downloads", json=body)
    assert refused.status_code == 403 and refused.get_json()["error"] == "csrf_failed"
    wrong = client.post("/api/downloads", json=body, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    csrf = client.get("/api/session").get_json()["csrfToken"]
    cross = client.post(
        "/api/downloads",
        json=body,
        headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
    )
    assert cross.status_code == 403 and cross.get_json()["message"] == "origin not allowed"
    ok = client.post(
        "/api/downloads", json=body, headers={"X-CSRF-Token": csrf, "Origin": "http://localhost"}
    )
    assert ok.status_code == 202


def test_a_stored_token_cookie_session_can_act_while_workers_write(
    client: FlaskClient, app: Flask
) -> None:
    # The token check must not hold the database for the rest of the request: on SQLite
    # that would lock out the action's own transaction and every worker.
    sessions = app.extensions["modelpull"].sessions
    with sessions.begin() as s:
        _, plain = tokens.create_token(s, "browser")
    assert client.post("/login", data={"token": plain}).status_code == 302
    csrf = client.get("/api/session").get_json()["csrfToken"]
    started = time.monotonic()
    resp = client.post(
        "/api/downloads",
        json={"repo": "org/r", "files": ["a.bin"]},
        headers={"X-CSRF-Token": csrf},
    )
    assert resp.status_code == 202 and time.monotonic() - started < 5
    job_id = resp.get_json()["jobId"]
    assert (
        client.post(
            f"/api/models/download/{job_id}/pause", headers={"X-CSRF-Token": csrf}
        ).get_json()["status"]
        == "paused"
    )


def test_rotating_api_token_ends_its_cookie_sessions(client: FlaskClient, app: Flask) -> None:
    import dataclasses

    client.post("/login", data={"token": ENV_TOKEN})
    assert client.get("/api/models").status_code == 200
    state = app.extensions["modelpull"]
    state.settings = dataclasses.replace(state.settings, api_token="a-new-token-0123456789")
    assert client.get("/api/models").status_code == 401


def test_bearer_requests_need_no_csrf_token(client: FlaskClient) -> None:
    resp = client.post("/api/downloads", headers=AUTH, json={"repo": "org/r", "files": ["a"]})
    assert resp.status_code == 202


def test_a_bearer_token_can_open_a_cookie_session(client: FlaskClient) -> None:
    resp = client.post("/api/session", headers=AUTH)
    assert resp.status_code == 201 and resp.get_json()["csrfToken"]
    assert client.get("/api/session").get_json()["via"] == "cookie"


def test_logout_ends_the_session(client: FlaskClient) -> None:
    client.post("/login", data={"token": ENV_TOKEN})
    csrf = client.get("/api/session").get_json()["csrfToken"]
    assert client.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 302
    assert client.get("/api/models").status_code == 401


def test_a_cross_site_login_post_is_refused(client: FlaskClient) -> None:
    resp = client.post(
        "/login", data={"token": ENV_TOKEN}, headers={"Origin": "https://evil.example"}
    )
    assert resp.status_code == 403


def test_the_websocket_refuses_a_cookie_from_another_origin_before_upgrading(
    client: FlaskClient,
) -> None:
    client.post("/login", data={"token": ENV_TOKEN})
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    upgrade["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
    resp = client.get("/ws", headers={**upgrade, "Origin": "https://evil.example"})
    assert resp.status_code == 403
    resp = client.get("/ws", headers=upgrade)  # no Origin at all: not a browser we trust
    assert resp.status_code == 403
    anonymous = FlaskClient(client.application)
    assert anonymous.get("/ws", headers=upgrade).status_code == 401


def test_token_cli_creates_lists_and_revokes(
    app: Flask, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli.admin import run_token as _token

    settings = app.extensions["modelpull"].settings

    class Args:
        token_command = "create"
        name = "ci"
        token_id = ""

    assert _token(Args(), settings) == 0  # type: ignore[arg-type]
    plain = capsys.readouterr().out.strip()
    assert plain.startswith("mp_")
    Args.token_command = "list"
    assert _token(Args(), settings) == 0  # type: ignore[arg-type]
    listed = capsys.readouterr().out
    assert "active" in listed and "ci" in listed and plain not in listed
    Args.token_command, Args.token_id = "revoke", listed.split()[0]
    assert _token(Args(), settings) == 0  # type: ignore[arg-type]
    Args.token_id = "nothing"
    assert _token(Args(), settings) == 1  # type: ignore[arg-type]
