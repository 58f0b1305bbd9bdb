"""Honest when disconnected: with the web tier gone the cards show no speed or ETA and the
controls are disabled with a note; back, they work again. A file whose worker was killed
says it waits for a worker instead of pretending to download, until another worker has it."""

from __future__ import annotations

import re
import signal
from typing import Any

import pytest

from tests.browser.conftest import Api, sign_in, start_web, stop_web
from tests.browser.screens import shot
from tests.hub import GeneratedFile
from tests.stack import Stack
from tests.support import MiB

pytestmark = pytest.mark.timeout(180)

# Every state the file's badge shows, in order, however briefly.
RECORD_STATES = """() => {
  window.__states = [];
  new MutationObserver(() => {
    const badge = document.querySelector("article.job li.file .state");
    const last = window.__states[window.__states.length - 1];
    if (badge && last !== badge.dataset.state) window.__states.push(badge.dataset.state);
  }).observe(document.body, { subtree: true, childList: true, attributes: true });
}"""


def outage_noise(problem: str) -> bool:
    """What Chromium itself logs while the service is away: failed connection attempts."""
    return "ERR_CONNECTION_REFUSED" in problem or (
        "WebSocket connection to" in problem and "failed" in problem
    )


Z_IMAGE = {
    "leejet/Z-Image-Turbo-GGUF": "z_image_turbo-Q8_0.gguf",
    "black-forest-labs/FLUX.1-schnell": "ae.safetensors",
    "unsloth/Qwen3-4B-Instruct-2507-GGUF": "Qwen3-4B-Instruct-2507-Q8_0.gguf",
}


def test_offline_hides_speed_and_disables_controls_until_back(stack: Stack, page: Any) -> None:
    # The catalog's Z-Image Turbo: three files, two at a time, half a MiB/s each.
    for seed, (repo, name) in enumerate(Z_IMAGE.items()):
        stack.hub.add_repo(repo, {name: GeneratedFile(size=(16 - 4 * seed) * MiB, seed=70 + seed)})
    stack.hub.faults.add(host="cdn", bandwidth=MiB // 2, times=None)
    stack.start_worker("w1", DOWNLOAD_CONNECTIONS="1")
    url = start_web(stack)
    port = int(url.rsplit(":", 1)[1])
    api = Api(url)
    sign_in(page, url)
    job_id = api.post("/api/models/z-image-turbo/download")["jobId"]
    card = page.locator(f"article.job[data-job='{job_id}']")
    speed, eta = card.locator(".job-speed"), card.locator(".job-eta")
    speed.wait_for(timeout=20_000)
    assert re.fullmatch(r"\d+\.\d (KiB|MiB)/s", speed.inner_text())
    assert re.fullmatch(r"(\d+ min )?\d+ s left", eta.inner_text())
    shot(page, "download-in-progress.png")

    stop_web(stack)
    banner = page.locator("#connection")
    banner.get_by_text("reconnecting").wait_for(timeout=10_000)
    assert speed.is_hidden() and eta.is_hidden()
    assert "/s" not in card.locator("ul.files").inner_text()
    for name in ("pause", "cancel"):
        assert card.get_by_role("button", name=f"{name} z-image-turbo").is_disabled()
    note = card.locator(".offline-note")
    assert note.is_visible()
    assert "will work when the service is back" in note.inner_text()

    start_web(stack, port=port)
    banner.wait_for(state="hidden", timeout=30_000)
    assert note.is_hidden()
    pause = card.get_by_role("button", name="pause z-image-turbo")
    assert pause.is_enabled()
    pause.click()
    card.locator("header .state[data-state=paused]").wait_for(timeout=10_000)
    api.wait_status(job_id, "paused", timeout=10)
    card.get_by_role("button", name="resume z-image-turbo").click()
    speed.wait_for(timeout=20_000)  # the speed comes back once there is data again
    assert [p for p in page.problems if not outage_noise(p)] == []


def test_a_killed_worker_shows_waiting_for_a_worker(stack: Stack, page: Any) -> None:
    stack.hub.add_repo("org/slow", {"big.bin": GeneratedFile(size=10 * MiB, seed=71)})
    stack.hub.faults.add(host="cdn", bandwidth=MiB, times=None)
    stack.start_worker("w1", DOWNLOAD_CONNECTIONS="1")
    url = start_web(stack)
    api = Api(url)
    sign_in(page, url)
    page.evaluate(RECORD_STATES)
    job_id = api.download("org/slow", "big.bin")["jobId"]
    card = page.locator(f"article.job[data-job='{job_id}']")
    badge = card.locator("li.file .state")
    page.wait_for_function(
        "e => +e.querySelector('li.file [role=progressbar]').getAttribute('aria-valuenow') >= 15",
        arg=card.element_handle(),
        timeout=30_000,
    )

    worker = stack.workers["w1"]
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    card.locator("li.file .state[data-state=waiting]").wait_for(timeout=20_000)
    assert badge.inner_text() == "waiting for a worker"
    assert card.locator(".job-speed").is_hidden()
    assert api.job(job_id)["files"][0]["status"] == "downloading"  # the row does not know yet

    stack.start_worker("w2", DOWNLOAD_CONNECTIONS="1")
    card.locator("header .state[data-state=completed]").wait_for(timeout=60_000)
    states: list[str] = page.evaluate("() => window.__states")
    waited = states.index("waiting")
    assert "downloading" in states[:waited], states
    assert "downloading" in states[waited:], states  # moving again with the new worker
    assert states[-1] == "completed", states
    assert page.problems == []
