"""The access suites: auth (every route without or with a wrong token, the token where it must
not be), CSRF (a cookie session changing state without the header, or from another origin),
and the WebSocket from a foreign origin or without credentials."""

from __future__ import annotations

import base64
from typing import Any

from bench.fuzz.target import Target
from tests.webapp import UPGRADE

UNAUTHORIZED = {"error": "unauthorized", "message": "authentication required"}
PAGES = {"/", "/models", "/jobs"}


def credential_variants(secret: str) -> list[tuple[str, dict[str, str], str]]:
    """(name, headers, query): no token, a wrong one, or the right one where it must not be
    (URL query, cookie, other headers and schemes)."""
    basic = base64.b64encode(f"x:{secret}".encode()).decode()
    return [
        ("none", {}, ""),
        ("wrong bearer", {"Authorization": "Bearer wrong-token"}, ""),
        ("token + 1 char", {"Authorization": f"Bearer {secret}x"}, ""),
        ("token - 1 char", {"Authorization": f"Bearer {secret[:-1]}"}, ""),
        ("basic", {"Authorization": f"Basic {basic}"}, ""),
        ("token scheme", {"Authorization": f"Token {secret}"}, ""),
        ("empty bearer", {"Authorization": "Bearer "}, ""),
        ("x-api-key", {"X-API-Key": secret}, ""),
        ("query token", {}, f"token={secret}"),
        ("query access_token", {}, f"access_token={secret}"),
        ("query api_key", {}, f"api_key={secret}"),
        ("forged cookie", {"Cookie": "modelpull_session=eyJ0b2tlbl9pZCI6ImVudiJ9.x.y"}, ""),
    ]


def guarded_routes(doc: dict[str, Any], job: str) -> list[tuple[str, str, bool]]:
    """(method, concrete path, whether the path is public for another method) for every
    documented operation that needs credentials, and PUT and PATCH on every path."""
    public = {
        (m.upper(), p)
        for p, ops in doc["paths"].items()
        for m, op in ops.items()
        if op.get("security") == []
    }
    routes: list[tuple[str, str, bool]] = []
    for path, ops in doc["paths"].items():
        for method in [*ops, "put", "patch"]:
            if (method.upper(), path) in public:
                continue
            concrete = path.replace("{model_id}", "pair").replace("{job_id}", job)
            routes.append((method.upper(), concrete, any(p == path for _, p in public)))
    return routes


def run_auth(target: Target, doc: dict[str, Any]) -> None:
    """Every documented operation, and methods a path does not serve: no token, a wrong one,
    or the right one where it must not be (URL query, cookie, other headers) gets 401 (pages
    send strangers to the sign-in page) with nothing more said."""
    routes = guarded_routes(doc, target.new_job())
    variants = credential_variants(target.secret)
    for method, path, public_path in routes:
        for _, headers, query in variants:
            ex = target.send(method, path, headers=headers, query=query)
            if ex is None:
                continue
            if public_path:  # a method a public path does not serve: 405, no credentials needed
                target.expect_status(ex, {405})
                continue
            scheme, _, value = headers.get("Authorization", "").partition(" ")
            bearer_sent = scheme.lower() == "bearer" and bool(value.strip())
            if path in PAGES and method == "GET" and not bearer_sent:
                target.expect(
                    ex,
                    "stranger_sent_to_login",
                    ex.status == 302 and (ex.header("Location") or "").startswith("/login"),
                )
                continue
            target.expect_status(ex, {401})
            target.expect(
                ex,
                "no_detail_on_401",
                ex.status != 401
                or (
                    ex.json() == UNAUTHORIZED
                    and (ex.header("WWW-Authenticate") or "").startswith("Bearer")
                ),
            )


def run_csrf(target: Target) -> None:
    """A cookie session changes nothing without its CSRF header, or from another origin."""
    client, csrf = target.cookie_client()
    jobs_by_state = {
        s: target.new_job(s.split("-")[0])
        for s in ("queued-1", "queued-2", "paused", "failed", "completed")
    }
    unsafe = [
        ("POST", "/api/downloads", {"repo": "org/csrf", "files": ["c.bin"]}),
        ("POST", "/api/models/pair/download", None),
        ("POST", f"/api/models/download/{jobs_by_state['queued-1']}/cancel", None),
        ("POST", f"/api/models/download/{jobs_by_state['queued-2']}/pause", None),
        ("POST", f"/api/models/download/{jobs_by_state['paused']}/resume", None),
        ("POST", f"/api/models/download/{jobs_by_state['failed']}/retry", None),
        ("DELETE", f"/api/models/download/{jobs_by_state['completed']}", None),
        ("POST", "/api/session", None),
        ("POST", "/logout", None),
    ]
    for method, path, body in unsafe:
        for headers in csrf_variants(csrf):
            ex = target.send(method, path, client=client, headers=headers, json_body=body)
            target.expect_status(ex, {403})
        # The control: with the header, the same request does what it says (so the refusals
        # above refused something).
        ex = target.send(
            method, path, client=client, headers={"X-CSRF-Token": csrf}, json_body=body
        )
        target.expect_status(ex, {200, 201, 202, 204, 302, 400})
        if path == "/logout":
            client, csrf = target.cookie_client()
    # A cross-site form post of the sign-in form is refused too.
    target.expect_status(
        target.send(
            "POST",
            "/login",
            data={"token": target.secret},
            headers={"Origin": "https://evil.example"},
        ),
        {403},
    )


def csrf_variants(csrf: str) -> list[dict[str, str]]:
    """Headers that must not pass for the session's CSRF token `csrf`."""
    return [
        {},
        {"X-CSRF-Token": ""},
        {"X-CSRF-Token": "guess"},
        {"X-CSRF-Token": csrf + "x"},
        {"X-CSRF-Token": csrf[:-1]},
        {"X-CSRF-Token": "\xe9" + csrf},
        {"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
        {"X-CSRF-Token": csrf, "Origin": "null"},
        {"X-CSRF-Token": csrf, "Origin": "http://localhost.evil.example"},
        {"X-Csrftoken": csrf},
    ]


def run_websocket(target: Target) -> None:
    """The WebSocket refuses, before any handshake, a cookie from a foreign origin and
    anyone without credentials (the allowed case is checked on gunicorn's raw socket)."""
    client, _ = target.cookie_client()
    for origin in [
        "https://evil.example",
        "null",
        "http://localhost.evil.example",
        "http://localhost:1",
        "https://localhost",
        "http://evil.example/http://localhost",
        "HTTP://LOCALHOST",
        None,
    ]:
        headers = {**UPGRADE, **({"Origin": origin} if origin is not None else {})}
        ex = target.send("GET", "/ws", client=client, headers=headers)
        target.expect_status(ex, {403})
    for headers, query in [
        ({}, ""),
        ({"Authorization": "Bearer nope"}, ""),
        ({}, f"access_token={target.secret}"),
        ({}, f"token={target.secret}"),
        ({"Origin": "http://localhost"}, ""),
    ]:
        target.expect_status(
            target.send("GET", "/ws", headers={**UPGRADE, **headers}, query=query), {401}
        )
