"""The models page in a real Chromium: sizes before anything is downloaded, the first screen
when nothing is on the machine, and a Download button that follows the model's job."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.screens import readme_shot
from tests.browser.test_dashboard import TOKEN, sign_in
from tests.hub import VALID_TOKEN, GeneratedFile
from tests.stack import Stack
from tests.support import MiB, wait_for

pytestmark = pytest.mark.timeout(180)
KiB = 1 << 10
FLUX = "black-forest-labs/FLUX.1-schnell"


def add_catalog_repos(stack: Stack, *, complete: bool = False) -> None:
    """Every catalog repo but city96/FLUX.1-schnell-gguf, with sd-turbo gated; `complete`:
    every one, none gated."""
    hub = stack.hub
    if complete:
        hub.add_repo(
            "city96/FLUX.1-schnell-gguf",
            {"flux1-schnell-Q4_K_S.gguf": GeneratedFile(size=6 * MiB, seed=208)},
        )
    hub.add_repo(
        "leejet/Z-Image-Turbo-GGUF",
        {"z_image_turbo-Q8_0.gguf": GeneratedFile(size=8704 * KiB, seed=201)},
    )
    hub.add_repo(FLUX, {"ae.safetensors": GeneratedFile(size=4 * MiB, seed=202)})
    hub.add_repo(
        "unsloth/Qwen3-4B-Instruct-2507-GGUF",
        {
            "Qwen3-4B-Instruct-2507-Q8_0.gguf": GeneratedFile(size=12 * MiB, seed=203),
            "Qwen3-4B-Instruct-2507-Q4_K_M.gguf": GeneratedFile(size=6 * MiB, seed=204),
        },
    )
    hub.add_repo(
        "comfyanonymous/flux_text_encoders",
        {
            "clip_l.safetensors": GeneratedFile(size=MiB, seed=205),
            "t5xxl_fp8_e4m3fn.safetensors": GeneratedFile(size=2 * MiB, seed=206),
        },
    )
    hub.add_repo(
        "stabilityai/sd-turbo",
        {"sd_turbo.safetensors": GeneratedFile(size=5 * MiB, seed=207)},
        gated=False if complete else "manual",
        approved_tokens=(VALID_TOKEN,),
    )


def model(page: Any, model_id: str) -> Any:
    return page.locator(f"li.model[data-model={model_id}]")


def test_sizes_show_before_any_download_and_the_first_screen_offers_both_ways(
    stack: Stack, page: Any
) -> None:
    add_catalog_repos(stack)
    # The VAE is already here (shared by two models): it counts, but not as "to download".
    shutil.copyfile(
        stack.hub.file_info(FLUX, "ae.safetensors").disk_path, stack.models / "ae.safetensors"
    )
    # A slow Hub keeps the first size refresh running while the page loads.
    stack.hub.configure(latency=3.0)
    url = stack.start_web(API_TOKEN=TOKEN)
    sign_in(page, url)

    # Nothing complete on this machine: the first screen says so and offers both ways.
    assert page.locator("#models-empty-text").inner_text() == (
        "None of the 4 catalog models is on this machine yet."
    )
    assert page.locator("#hidden-count").inner_text() == "4 missing models hidden"
    page.get_by_role("button", name="Show the catalog").click()
    assert page.get_by_label("Show missing models").is_checked()
    assert page.locator("li.model:visible").count() == 4
    assert page.locator("#models-empty").is_hidden()

    # Sizes load in the background; the page asks again by itself until they are known.
    z_image = model(page, "z-image-turbo")
    assert z_image.locator(".model-size").inner_text() == "3 files · sizes loading…"
    stack.hub.configure(latency=0.0)
    size = z_image.locator(".model-size", has_text="24.5 MiB")
    size.wait_for(timeout=60_000)
    assert size.inner_text() == "3 files · 24.5 MiB (20.5 MiB to download)"
    page.locator("#sizes-pending").wait_for(state="hidden", timeout=60_000)
    rows = z_image.locator(".model-files li")
    assert (
        rows.nth(0).inner_text()
        == "z_image_turbo-Q8_0.gguf leejet/Z-Image-Turbo-GGUF · 8.5 MiB · missing"
    )
    assert rows.nth(1).inner_text() == f"ae.safetensors {FLUX} · 4.0 MiB · present"
    assert (
        model(page, "qwen3-4b-instruct").locator(".model-size").inner_text()
        == "1 file · 6.0 MiB to download"
    )

    sd = model(page, "sd-turbo")
    assert sd.locator(".badge[data-state=gated]").inner_text() == "gated"
    assert "accept its terms there and set HF_TOKEN" in sd.locator(".gated-note").inner_text()
    assert sd.locator(".model-size").inner_text() == "1 file · 5.0 MiB to download"

    # A repo the Hub does not have: no made-up total, and the reason.
    flux = model(page, "flux1-schnell-q4")
    assert flux.locator(".model-size").inner_text() == "4 files · size unknown"
    assert "city96/FLUX.1-schnell-gguf" in flux.locator(".hub-error").inner_text()
    page.evaluate("window.scrollTo(0, 0)")
    readme_shot(page, "models.png")

    # Back to the first screen: its second button leads to the repo picker's input.
    page.get_by_label("Show missing models").uncheck()
    page.get_by_role("button", name="Pick files from a Hub repo").click()
    assert page.evaluate("document.activeElement.id") == "hub-repo"
    assert page.problems == []


def job_count(url: str) -> int:
    resp = requests.get(
        f"{url}/api/models/download/jobs", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    return len(resp.json()["jobs"])


def in_view(locator: Any) -> bool:
    return bool(
        locator.evaluate(
            "e => { const r = e.getBoundingClientRect();"
            " return r.top > -1 && r.bottom < window.innerHeight + 1; }"
        )
    )


def test_the_download_button_follows_the_job_and_a_second_ask_shows_it(
    stack: Stack, page: Any
) -> None:
    add_catalog_repos(stack, complete=True)
    stack.hub.faults.add(host="cdn", bandwidth=MiB, times=None)  # about 16 s in all
    stack.start_worker("w1")
    url = stack.start_web(API_TOKEN=TOKEN)
    sign_in(page, url)
    page.get_by_label("Show missing models").check()

    # A second tab that hears nothing live (its WebSocket goes nowhere): it stays stale.
    stale = page.context.new_page()
    stale.route_web_socket("**/ws", lambda ws: None)
    stale.goto(f"{url}/models")
    stale.wait_for_selector("#models[aria-busy=false]", state="attached")

    # By keyboard: the button turns disabled, so focus moves to its "Show" beside it.
    page.get_by_role("button", name="Download Z-Image Turbo (Q8_0)").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement?.dataset.focus === 'show:z-image-turbo'")
    button = model(page, "z-image-turbo").locator("button.download")
    page.wait_for_function(
        "() => document.querySelector('li.model[data-model=z-image-turbo] button.download')"
        "?.dataset.jobState === 'downloading'",
        timeout=30_000,
    )
    assert button.inner_text() == "Downloading…"
    assert button.is_disabled()
    job_id = page.locator("#jobs-live article.job").first.get_attribute("data-job")

    # The stale tab asks again: the API answers with the same job, whose card comes into view.
    stale.get_by_role("button", name="Download Z-Image Turbo (Q8_0)").click()
    stale_card = stale.locator(f"#jobs-live article.job[data-job='{job_id}']")
    stale_card.wait_for()
    assert stale.locator("#jobs-live article.job").count() == 1
    assert in_view(stale_card)
    stale_button = model(stale, "z-image-turbo").locator("button.download")
    expect(stale_button).to_be_disabled()
    assert stale_button.inner_text() in ("Queued", "Downloading…")
    assert job_count(url) == 1
    stale.close()

    # "Show" next to the button brings the card back from the bottom of the page.
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    show = page.get_by_role("button", name="Show the download of Z-Image Turbo (Q8_0)")
    assert show.evaluate("e => e === document.activeElement")
    page.keyboard.press("Enter")
    card = page.locator(f"#jobs-live article.job[data-job='{job_id}']")
    wait_for(lambda: in_view(card), 5, "the job card in view")
    # The README's picture of a live download: the job's speed and time left are shown.
    card.locator(".job-eta:not([hidden])").wait_for(timeout=30_000)
    page.evaluate("window.scrollTo(0, 0); document.activeElement.blur()")
    readme_shot(page, "download.png")

    # A file that lands while its job goes on is present on the model at once.
    page.wait_for_function(
        """jobId => {
            const row = [...document.querySelectorAll(
                'li.model[data-model=z-image-turbo] li[data-state]')]
                .find(li => li.textContent.startsWith('ae.safetensors'));
            const job = document.querySelector(
                `#jobs-live article.job[data-job='${jobId}'] header .state`);
            return row?.dataset.state === 'present' && job?.dataset.state === 'downloading';
        }""",
        arg=job_id,
        timeout=60_000,
    )

    # A job started elsewhere (CLI, API) shows on the button too, without a reload.
    requests.post(
        f"{url}/api/models/qwen3-4b-instruct/download",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    ).raise_for_status()
    page.wait_for_function(
        "() => ['queued', 'downloading'].includes(document.querySelector("
        "'li.model[data-model=qwen3-4b-instruct] button.download')?.dataset.jobState)",
        timeout=30_000,
    )

    card.locator("header .state[data-state=completed]").wait_for(timeout=90_000)
    model(page, "z-image-turbo").locator(".badge[data-state=present]").wait_for()
    assert job_count(url) == 2
    page.get_by_role("link", name="Jobs").click()
    page.locator("li.job[data-job]").first.wait_for()
    readme_shot(page, "jobs.png")
    assert page.problems == []
