"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.settings import Settings
from tests.support import RedisServer
from tests.webapp import AUTH


def test_liveness_and_readiness_need_no_credentials(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "redis": "ok", "models_dir": "ok"}


def test_readiness_names_what_is_down(client: FlaskClient, redis_server: RedisServer) -> None:
    redis_server.stop()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["error"] == "not_ready" and body["message"] == "redis unreachable"
    assert body["checks"]["database"] == "ok"


def test_readiness_fails_while_models_dir_cannot_be_written(
    client: FlaskClient, web_settings: Settings
) -> None:
    models = web_settings.models_dir
    models.rmdir()
    assert client.get("/readyz").status_code == 200  # missing: a worker creates it
    models.write_bytes(b"")  # a file where the folder should be: nothing can go in
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["checks"] == {
        "database": "ok",
        "redis": "ok",
        "models_dir": f"not writable: {models}",
    }
    assert body["message"] == f"MODELS_DIR not writable: {models}"
    # Under that file, it cannot even be created.
    deeper = dataclasses.replace(web_settings, models_dir=models / "sub")
    client.application.extensions["modelpull"].settings = deeper
    assert client.get("/readyz").get_json()["checks"]["models_dir"] == (
        f"not writable: {models / 'sub'}"
    )
    client.application.extensions["modelpull"].settings = web_settings
    models.unlink()
    models.mkdir()
    assert client.get("/readyz").status_code == 200


def test_readiness_names_every_problem_once(
    client: FlaskClient, web_settings: Settings, redis_server: RedisServer
) -> None:
    redis_server.stop()
    web_settings.models_dir.rmdir()
    web_settings.models_dir.write_bytes(b"")
    body = client.get("/readyz").get_json()
    assert (
        body["message"] == f"redis unreachable; MODELS_DIR not writable: {web_settings.models_dir}"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_readiness_fails_for_a_read_only_models_dir(
    client: FlaskClient, web_settings: Settings
) -> None:
    web_settings.models_dir.chmod(0o555)
    try:
        assert client.get("/readyz").status_code == 503
    finally:
        web_settings.models_dir.chmod(0o755)


def test_metrics_in_prometheus_format(client: FlaskClient) -> None:
    for n in range(2):  # two jobs: the same files again would be the same job
        body = {"repo": "org/r", "files": [f"a{n}", f"b{n}"]}
        client.post("/api/downloads", headers=AUTH, json=body)
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
