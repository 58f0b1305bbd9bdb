"""Browser tests: Playwright driving Debian's Chromium against a real running stack."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.hub import GeneratedFile
from tests.stack import Stack
from tests.support import wait_for

ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def chromium_path() -> str | None:
    """MODELPULL_CHROMIUM, else Debian's chromium on PATH."""
    path = os.environ.get("MODELPULL_CHROMIUM") or shutil.which("chromium")
    return path if path and Path(path).exists() else None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: CI must run the browser tests (.ci/run installs it)")
        pytest.skip("no Chromium on this machine: browser tests skipped (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; console errors and page errors fail the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.problems = problems
    yield pg
    context.close()


# --- helpers of the live dashboard tests (tests/browser/test_live_*.py) --------------------

TOKEN = "browser-test-token-0123456789"
# gunicorn's graceful stop waits for open WebSockets; a test stopping the web tier should not.
WEB_OPTIONS = ("--graceful-timeout", "1")


class Api:
    """The service's HTTP API, as the CLI would call it (bearer token)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"

    def get(self, path: str) -> Any:
        resp = self.session.get(f"{self.url}{path}", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = self.session.post(f"{self.url}{path}", json=body, timeout=10)
        assert resp.status_code < 300, resp.text
        return resp.json()

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.get(f"/api/models/download/status/{job_id}")
        return body

    def download(self, repo: str, *files: str) -> dict[str, Any]:
        """Start an ad-hoc job (POST /api/downloads), as the repo picker or the CLI does."""
        body: dict[str, Any] = self.post("/api/downloads", {"repo": repo, "files": list(files)})
        return body

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in statuses else None

        found: dict[str, Any] = wait_for(reached, timeout, f"job {job_id} to be {statuses}", 0.1)
        return found


def start_web(stack: Stack, port: int | None = None, **env: str) -> str:
    """The stack's web tier with the test token, on a given port if asked (so a test can
    stop it and start it again where the open page expects it); returns its base URL."""
    return stack.start_web(port=port, options=WEB_OPTIONS, **{"API_TOKEN": TOKEN, **env})


def stop_web(stack: Stack) -> None:
    """Stop the web tier (every open WebSocket drops with it)."""
    proc = stack.workers.pop("web")
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)


def sign_in(page: Any, url: str, path: str = "/models") -> None:
    """Sign in with the token and land on `path`, its script done loading."""
    page.goto(f"{url}{path}")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}{path}")
    page.wait_for_load_state("load")  # module scripts have run


def hold(page: Any, locator: Any, ms: int = 250) -> None:
    """Press a control and hold it `ms` before letting go, as a person does."""
    locator.hover()
    page.mouse.down()
    page.wait_for_timeout(ms)
    page.mouse.up()


def files(count: int, size: int, seed: int) -> dict[str, GeneratedFile]:
    """`count` generated files of `size` bytes: part-1.bin, part-2.bin, ..."""
    return {f"part-{i + 1}.bin": GeneratedFile(size=size, seed=seed + i) for i in range(count)}
