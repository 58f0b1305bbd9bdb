"""The dashboard in a real Chromium, on a real stack: gunicorn, a worker, Redis, the Hub."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tests.browser.screens import shot
from tests.hub import GeneratedFile
from tests.stack import Stack
from tests.support import MiB, wait_for

pytestmark = pytest.mark.timeout(180)
TOKEN = "browser-test-token-0123456789"
Z_IMAGE = {
    "leejet/Z-Image-Turbo-GGUF": "z_image_turbo-Q8_0.gguf",
    "black-forest-labs/FLUX.1-schnell": "ae.safetensors",
    "unsloth/Qwen3-4B-Instruct-2507-GGUF": "Qwen3-4B-Instruct-2507-Q8_0.gguf",
}


def api_job(url: str, job_id: str) -> dict[str, Any]:
    resp = requests.get(
        f"{url}/api/models/download/status/{job_id}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    body: dict[str, Any] = resp.json()
    return body


def sign_in(page: Any, url: str) -> None:
    page.goto(f"{url}/models")
    assert "/login" in page.url
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/models$"))
    page.wait_for_selector("#models[aria-busy=false]", state="attached")


def card(page: Any) -> Any:
    return page.locator("article.job").first


def bar_values(page: Any, scope: str = "article.job li.file") -> list[int]:
    return [
        int(v)
        for v in page.locator(f"{scope} [role=progressbar]").evaluate_all(
            "els => els.map(e => e.getAttribute('aria-valuenow'))"
        )
    ]


def test_sign_in_toggle_and_download_z_image_turbo(stack: Stack, page: Any) -> None:
    for seed, (repo, name) in enumerate(Z_IMAGE.items()):
        stack.hub.add_repo(repo, {name: GeneratedFile(size=(8 + 4 * seed) * MiB, seed=70 + seed)})
    stack.hub.faults.add(host="cdn", bandwidth=MiB, times=None)
    stack.start_worker("w1")
    url = stack.start_web(API_TOKEN=TOKEN)
    sign_in(page, url)

    # Missing models are hidden by default, with a count; the toggle survives a reload.
    toggle = page.get_by_label("Show missing models")
    assert not toggle.is_checked()
    assert page.locator("li.model:visible").count() == 0
    assert page.locator("#hidden-count").inner_text() == "4 missing models hidden"
    toggle.check()
    assert page.locator("li.model:visible").count() == 4
    page.reload()
    page.wait_for_selector("#models[aria-busy=false]", state="attached")
    assert page.get_by_label("Show missing models").is_checked()
    assert page.locator("li.model:visible").count() == 4
    shot(page, "models.png")

    page.get_by_role("button", name="Download Z-Image Turbo (Q8_0)").click()
    page.wait_for_selector("article.job")
    # Each bar moves, then every bar reaches 100 % and the model is present.
    page.wait_for_function(
        "() => [...document.querySelectorAll('article.job li.file [role=progressbar]')]"
        ".map(b => +b.getAttribute('aria-valuenow')).some(v => v > 0 && v < 100)",
        timeout=30_000,
    )
    assert re.search(r"/s", page.locator("article.job .details").first.inner_text() + "/s")
    shot(page, "download-in-progress.png")
    page.wait_for_selector("article.job header .state[data-state=completed]", timeout=90_000)
    assert bar_values(page) == [100, 100, 100]
    assert bar_values(page, "article.job")[0] == 100
    page.wait_for_selector("li.model[data-model=z-image-turbo] .badge[data-state=present]")
    assert page.problems == []


def test_pause_resume_cancel_and_reload(stack: Stack, page: Any) -> None:
    stack.hub.add_repo(
        "unsloth/Qwen3-4B-Instruct-2507-GGUF",
        {"Qwen3-4B-Instruct-2507-Q4_K_M.gguf": GeneratedFile(size=20 * MiB, seed=81)},
    )
    stack.hub.add_repo(
        "stabilityai/sd-turbo", {"sd_turbo.safetensors": GeneratedFile(size=20 * MiB, seed=82)}
    )
    stack.hub.faults.add(host="cdn", bandwidth=MiB // 2, times=None)
    stack.start_worker("w1")
    url = stack.start_web(API_TOKEN=TOKEN)
    sign_in(page, url)
    page.get_by_label("Show missing models").check()

    page.get_by_role("button", name="Download Qwen3 4B Instruct 2507 (Q4_K_M)").click()
    job = page.locator("article.job[aria-label='Download qwen3-4b-instruct']")
    page.wait_for_function(
        '() => +document.querySelector("article.job li.file [role=progressbar]")'
        "?.getAttribute('aria-valuenow') > 0",
        timeout=30_000,
    )
    job.get_by_role("button", name="pause qwen3-4b-instruct").click()
    job.locator("header .state[data-state=paused]").wait_for()
    qwen_file = "article.job[aria-label='Download qwen3-4b-instruct'] li.file"
    page.wait_for_function(
        f'() => +document.querySelector("{qwen_file} [role=progressbar]")'
        ".getAttribute('aria-valuenow') > 0"
    )
    paused_at = bar_values(page, qwen_file)[0]
    assert 0 < paused_at < 100
    # The worker lets go and records how far it got; then the snapshot must show it.
    job_id = job.get_attribute("data-job")
    wait_for(
        lambda: api_job(url, job_id)["files"][0]["bytesDownloaded"] > 0, 10, "the paused bytes"
    )

    page.reload()  # the snapshot puts the page right again
    job = page.locator("article.job[aria-label='Download qwen3-4b-instruct']")
    job.locator("header .state[data-state=paused]").wait_for()
    assert (
        bar_values(page, "article.job[aria-label='Download qwen3-4b-instruct'] li.file")[0]
        >= paused_at
    )

    job.get_by_role("button", name="resume qwen3-4b-instruct").click()
    job.locator("header .state[data-state=downloading]").wait_for(timeout=30_000)

    page.get_by_role("button", name="Download SD-Turbo").click()
    sd = page.locator("article.job[aria-label='Download sd-turbo']")
    sd.get_by_role("button", name="cancel sd-turbo").click()
    sd.locator("header .state[data-state=cancelled]").wait_for(timeout=30_000)

    job.locator("header .state[data-state=completed]").wait_for(timeout=90_000)
    page.wait_for_selector("li.model[data-model=qwen3-4b-instruct] .badge[data-state=present]")
    assert page.problems == []


# Every state a file row shows, in order, however briefly: render() replaces the rows.
RECORD_STATES = """() => {
  window.__states = [];
  new MutationObserver(() => {
    for (const e of document.querySelectorAll("article.job li.file .state")) {
      const last = window.__states[window.__states.length - 1];
      if (last !== e.dataset.state) window.__states.push(e.dataset.state);
    }
  }).observe(document.body, { subtree: true, childList: true, attributes: true });
}"""


def test_a_file_shows_verifying_while_its_checksum_runs(stack: Stack, page: Any) -> None:
    stack.hub.add_repo(
        "stabilityai/sd-turbo", {"sd_turbo.safetensors": GeneratedFile(size=24 * MiB, seed=83)}
    )
    stack.start_worker("w1")
    url = stack.start_web(API_TOKEN=TOKEN)
    sign_in(page, url)
    page.get_by_label("Show missing models").check()
    page.evaluate(RECORD_STATES)
    page.get_by_role("button", name="Download SD-Turbo").click()
    sd = page.locator("article.job[aria-label='Download sd-turbo']")
    sd.locator("header .state[data-state=completed]").wait_for(timeout=60_000)
    states: list[str] = page.evaluate("() => window.__states")
    assert "verifying" in states, states
    assert states.index("verifying") < len(states) - 1 - states[::-1].index("completed"), states
    assert page.problems == []


def test_a_failing_file_shows_its_error_and_stderr(stack: Stack, page: Any) -> None:
    # One repo of flux1-schnell-q4 is missing from the Hub; the hf_hub engine keeps stderr.
    stack.hub.add_repo(
        "black-forest-labs/FLUX.1-schnell", {"ae.safetensors": GeneratedFile(size=MiB, seed=91)}
    )
    stack.hub.add_repo(
        "comfyanonymous/flux_text_encoders",
        {
            "clip_l.safetensors": GeneratedFile(size=MiB, seed=92),
            "t5xxl_fp8_e4m3fn.safetensors": GeneratedFile(size=MiB, seed=93),
        },
    )
    stack.start_worker("w1", DOWNLOADER="hf_hub")
    url = stack.start_web(API_TOKEN=TOKEN, DOWNLOADER="hf_hub")
    sign_in(page, url)
    page.get_by_label("Show missing models").check()
    page.get_by_role("button", name="Download FLUX.1 schnell (Q4_K_S)").click()
    job = page.locator("article.job[aria-label='Download flux1-schnell-q4']")
    job.locator("header .state[data-state=failed]").wait_for(timeout=90_000)
    assert "was not found" in job.locator(".file-error").first.inner_text()
    assert job.get_by_role("button", name="retry flux1-schnell-q4").is_visible()

    page.get_by_role("link", name="Jobs").click()
    entry = page.locator("li.job[data-job]").first
    entry.locator("header .state[data-state=failed]").wait_for()
    assert "1 of 4 files failed" in entry.locator("p.error").first.inner_text()
    details = entry.locator("details.stderr")
    assert not details.locator("pre").is_visible()
    details.locator("summary").click()
    assert "Traceback (most recent call last)" in details.locator("pre").inner_text()
    assert page.problems == []


def test_narrow_window_and_keyboard(stack: Stack, page: Any) -> None:
    url = stack.start_web(API_TOKEN=TOKEN)
    page.set_viewport_size({"width": 380, "height": 800})
    sign_in(page, url)
    page.get_by_label("Show missing models").focus()
    page.keyboard.press("Space")
    assert page.get_by_label("Show missing models").is_checked()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert page.problems == []
