"""The quick API fuzz (`python -m bench.fuzz --quick`) finds nothing, and really fuzzes: every
operation of the OpenAPI document, every suite, the real gunicorn pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def test_quick_fuzz_of_the_api_finds_no_failure(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
    )
    report = out.with_suffix(".md")
    assert report.is_file(), proc.stdout[-4000:] + proc.stderr[-4000:]
    data: dict[str, Any] = json.loads(out.read_text())
    # Any failure is listed with its request: show them.
    assert data["failures"] == 0 and proc.returncode == 0, json.dumps(
        data["failure_list"][:20], indent=1
    )
    assert data["cases"] > 1500 and data["checks"] > 10 * data["cases"] // 2
    assert data["machine"]["cores"]
    suites = data["suites"]
    for name in ("schemathesis", "hypothesis", "hostile", "auth", "csrf", "websocket", "gunicorn"):
        assert suites[name]["cases"] > 0, name
    # schemathesis generated cases for every operation of the document, stateful ones included.
    doc_ops = data["schemathesis"]["operations"]
    assert doc_ops >= 20 and len(data["schemathesis"]["generated_per_operation"]) == doc_ops
    # The checks that matter ran many times, and the leak checks ran on every log.
    per_check = data["per_check"]
    for name in ("no_server_error", "refusal_keeps_db", "refusal_sends_nothing", "error_body_json"):
        assert per_check[name]["evaluated"] > 500, name
    assert per_check["secret_not_logged"]["evaluated"] >= 4  # in-process + gunicorn's logs
    # Refusals were refused and accepted requests happened too (the DB check compared real
    # changes): 202s, 4xx and the real WebSocket handshake on gunicorn.
    statuses = data["per_operation"]["POST /api/downloads"]["statuses"]
    assert int(statuses.get("202", 0)) > 0 and int(statuses.get("400", 0)) > 0
    assert int(statuses.get("413", 0)) > 0 and int(statuses.get("403", 0)) > 0
    assert any("101" in v["statuses"] for k, v in data["per_operation"].items() if "/ws" in k)
