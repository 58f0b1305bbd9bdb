"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from tests.support import RedisServer
from tests.webapp import AUTH


def test_liveness_and_readiness_need_no_credentials(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "redis": "ok"}


def test_readiness_names_what_is_down(client: FlaskClient, redis_server: RedisServer) -> None:
    redis_server.stop()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["error"] == "not_ready" and body["message"] == "redis unreachable"
    assert body["checks"]["database"] == "ok"


def test_metrics_in_prometheus_format(client: FlaskClient) -> None:
    for _ in range(2):
        client.post("/api/downloads", headers=AUTH, json={"repo": "org/r", "files": ["a", "b"]})
    assert client.get("/metrics").status_code == 401
    resp = client.get("/metrics", headers=AUTH)
    assert resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    assert 'modelpull_files{state="queued"} 4' in text
    assert 'modelpull_jobs{state="queued"} 2' in text
    assert "modelpull_active_transfers 0" in text
    assert "modelpull_queue_depth 4" in text
    assert "modelpull_ws_clients 0" in text
    assert "# TYPE modelpull_events_fanned_out_total counter" in text


def test_the_openapi_document_describes_every_route(client: FlaskClient, app: Flask) -> None:
    doc = client.get("/api/openapi.json", headers=AUTH).get_json()
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            served.add((method, path))
    assert documented == served
