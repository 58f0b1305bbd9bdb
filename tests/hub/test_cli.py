"""`python -m tests.hub` serves a repos dir until SIGTERM, then exits 0."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.cli.localstack import free_port
from tests.hub import HubAdmin, generate_chunks

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(30)
def test_standalone_hub_serves_a_repos_dir_and_exits_cleanly(tmp_path: Path):
    repos = tmp_path / "repos"
    (repos / "org" / "demo").mkdir(parents=True)
    (repos / "org" / "demo" / "config.json").write_text('{"demo": true}')
    (repos / "hub.json").write_text(
        json.dumps({"repos": {"org/demo": {"files": {"w.gguf": {"generate": {"size": 70000}}}}}})
    )
    port, cdn_port = free_port(), free_port()
    args = ["--port", str(port), "--cdn-port", str(cdn_port), "--repos", str(repos)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hub", *args, "--host", "127.0.0.1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while not (lines and lines[-1].startswith("{")):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line.strip())
        announced = json.loads(lines[-1])
        url = f"http://127.0.0.1:{port}"

        config = requests.get(f"{url}/org/demo/resolve/main/config.json", timeout=(5, 10))
        weights = requests.get(f"{url}/org/demo/resolve/main/w.gguf", timeout=(5, 10))
        log = HubAdmin(url).requests()

        assert announced == {
            "url": url,
            "cdn_url": f"http://localhost:{cdn_port}",
            "repos": ["org/demo"],
        }
        assert config.content == b'{"demo": true}'
        expected = hashlib.sha256(b"".join(generate_chunks(0, 70000))).hexdigest()
        assert hashlib.sha256(weights.content).hexdigest() == expected
        assert [r["host"] for r in log] == ["hub", "hub", "cdn"]
        assert (repos / ".hub-data").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert code == 0


@pytest.mark.timeout(30)
def test_standalone_hub_takes_the_cdn_switches_from_the_command_line(tmp_path: Path):
    port = free_port()
    args = ["--port", str(port), "--data-dir", str(tmp_path / "data"), "--cdn-etag", "none"]
    args += ["--cdn-expired", "--signed-url-expires", "60", "--latency", "0.01"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hub", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not (line := proc.stdout.readline()).startswith("{"):
            assert line, proc.stderr.read()
        url = f"http://127.0.0.1:{port}"

        config = HubAdmin(url).config()
        refused = requests.get(f"{url}/org/tiny/resolve/main/model.bin", timeout=(5, 10))

        assert (config["cdn_etag"], config["cdn_expired"]) == ("none", True)
        assert (config["signed_url_expires"], config["latency"]) == (60, 0.01)
        assert refused.status_code == 403 and b"Request has expired" in refused.content
        assert "X-Amz-Expires=60" in refused.url
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert code == 0
