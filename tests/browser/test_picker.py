"""The repo picker in a real Chromium: any Hub repo's files, picked and downloaded from the
models page, on a real stack (gunicorn, a worker, Redis, the imitation Hub)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from app.digest import sha256_file
from tests.browser.screens import readme_shot, shot
from tests.browser.test_dashboard import TOKEN, sign_in
from tests.hub import VALID_TOKEN, GeneratedFile
from tests.stack import Stack
from tests.support import MiB

pytestmark = pytest.mark.timeout(180)
KiB = 1 << 10
REPO = "unsloth/Qwen3-4B-Instruct-2507-GGUF"
QUANTS = {
    "README.md": "# Qwen3 4B Instruct 2507 GGUF\n",
    "Qwen3-4B-Instruct-2507-Q4_K_M.gguf": GeneratedFile(size=1536 * KiB, seed=301),
    "Qwen3-4B-Instruct-2507-Q4_K_S.gguf": GeneratedFile(size=1400 * KiB, seed=302),
    "Qwen3-4B-Instruct-2507-Q8_0.gguf": GeneratedFile(size=2600 * KiB, seed=303),
    "BF16/Qwen3-4B-Instruct-2507-BF16-00001-of-00002.gguf": GeneratedFile(
        size=3 * 1024 * KiB, seed=304
    ),
    "BF16/Qwen3-4B-Instruct-2507-BF16-00002-of-00002.gguf": GeneratedFile(
        size=2 * 1024 * KiB, seed=305
    ),
    "mmproj/mmproj-Q4_K_M.gguf": GeneratedFile(size=700 * KiB, seed=306),
}


def api_get(url: str, path: str, **params: str) -> requests.Response:
    return requests.get(
        f"{url}{path}", params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )


def show(page: Any, text: str) -> None:
    """Type a repo id or URL into the picker and press Enter, as a person would."""
    box = page.get_by_label("Repo id or Hub URL")
    box.fill(text)
    box.press("Enter")


def visible_paths(page: Any) -> list[str]:
    paths: list[str] = page.locator("#hub-files li.hub-file:visible").evaluate_all(
        "rows => rows.map(r => r.dataset.path)"
    )
    return paths


def test_a_blob_url_preselects_its_file_a_filter_narrows_and_two_files_download(
    stack: Stack, page: Any
) -> None:
    stack.hub.add_repo(REPO, QUANTS)
    stack.hub.faults.add(host="cdn", bandwidth=MiB // 2, times=None)  # a few seconds each
    stack.start_worker("w1")
    url = stack.start_web(API_TOKEN=TOKEN)
    sign_in(page, url)

    # A link to one file opens the repo with that file ticked, its size in the summary.
    show(page, f"https://huggingface.co/{REPO}/blob/main/Qwen3-4B-Instruct-2507-Q8_0.gguf")
    page.locator("#hub-view:not([hidden])").wait_for()
    assert page.locator("#hub-repo-name").inner_text() == REPO
    assert page.get_by_text("7 files · 11.1 MiB").is_visible()
    q8 = page.get_by_role("checkbox", name="Qwen3-4B-Instruct-2507-Q8_0.gguf")
    assert q8.is_checked()
    assert page.locator("#hub-selection").inner_text() == "1 file · 2.5 MiB selected"
    row = page.locator("li.hub-file[data-path='Qwen3-4B-Instruct-2507-Q8_0.gguf']")
    assert row.locator(".size").inner_text() == "2.5 MiB"
    # Folders group their files, with their count and size.
    assert (
        page.locator("details[data-folder=BF16] summary").inner_text() == "BF16/ 2 files · 5.0 MiB"
    )

    # The filter keeps one quantisation (any folder), the rest hide; the pick survives.
    page.get_by_label("Filter files").fill("Q4_K_M")
    assert visible_paths(page) == [
        "Qwen3-4B-Instruct-2507-Q4_K_M.gguf",
        "mmproj/mmproj-Q4_K_M.gguf",
    ]
    assert page.locator("#hub-matches").inner_text() == "2 of 7 files match"
    assert page.locator("details[data-folder=BF16]").is_hidden()
    assert page.locator("#hub-selection").inner_text() == (
        "1 file · 2.5 MiB selected (1 hidden by the filter)"
    )

    # Pick the two shown instead, by keyboard: Space on each checkbox.
    page.get_by_role("button", name="Clear selection").click()
    for name in ("Qwen3-4B-Instruct-2507-Q4_K_M.gguf", "mmproj/mmproj-Q4_K_M.gguf"):
        page.get_by_role("checkbox", name=name).focus()
        page.keyboard.press("Space")
    assert page.locator("#hub-selection").inner_text() == "2 files · 2.2 MiB selected"
    page.locator("#hub-picker").evaluate("e => e.scrollIntoView({ block: 'start' })")
    readme_shot(page, "picker.png")
    page.get_by_role("button", name="Download selected").click()
    status = page.locator("#hub-status")
    status.filter(has_text="Downloading 2 files (2.2 MiB): follow it in Downloads.").wait_for()
    card = page.locator("#jobs-live article.job").first
    card.wait_for()

    # The files say they are on their way; asking for them again shows the same job.
    for name in ("Qwen3-4B-Instruct-2507-Q4_K_M.gguf", "mmproj/mmproj-Q4_K_M.gguf"):
        row = page.locator(f"li.hub-file[data-path='{name}']")
        assert row.locator(".file-mark").inner_text() in ("queued", "downloading")
        page.get_by_role("checkbox", name=name).check()
    page.get_by_role("button", name="Download selected").click()
    status.filter(has_text="already being downloaded").wait_for()
    assert page.locator("#jobs-live article.job").count() == 1
    assert len(api_get(url, "/api/models/download/jobs").json()["jobs"]) == 1

    # The job finishes; the bytes are the Hub's.
    card.locator("header .state[data-state=completed]").wait_for(timeout=60_000)
    for name in ("Qwen3-4B-Instruct-2507-Q4_K_M.gguf", "mmproj/mmproj-Q4_K_M.gguf"):
        on_disk = stack.models / REPO / name
        assert sha256_file(on_disk) == stack.hub.file_info(REPO, name).sha256
        # The picker marks them present and will not offer them again.
        mark = page.locator(f"li.hub-file[data-path='{name}'] .file-mark[data-state=present]")
        mark.wait_for()
        assert mark.inner_text() == "present"
        assert page.get_by_role("checkbox", name=name).is_disabled()
    assert not (stack.models / REPO / "Qwen3-4B-Instruct-2507-Q8_0.gguf").exists()

    # A link to a folder opens that folder only.
    show(page, f"https://huggingface.co/{REPO}/tree/main/BF16")
    page.locator("details[data-folder=BF16][open]").wait_for()
    assert page.locator("details[data-folder=mmproj]").get_attribute("open") is None
    assert page.problems == []


def test_gated_missing_and_malformed_repos_say_so_in_the_picker(stack: Stack, page: Any) -> None:
    stack.hub.add_repo(
        "org/gated-model",
        {"model.safetensors": GeneratedFile(size=64 * KiB, seed=311)},
        gated="manual",
        approved_tokens=(VALID_TOKEN,),
    )
    url = stack.start_web(API_TOKEN=TOKEN)  # no HF_TOKEN: the gated repo is closed to us
    page.set_viewport_size({"width": 380, "height": 800})  # a phone: nothing sticks out
    sign_in(page, url)

    show(page, "org/gated-model")
    access = page.locator("#hub-view .picker-access")
    access.wait_for()
    answer = api_get(url, "/api/hub/repo", id="org/gated-model").json()
    assert answer["access"] == "denied"
    assert access.inner_text() == answer["message"]
    assert access.get_attribute("role") == "alert"
    assert page.locator("#hub-view .badge[data-state=denied]").inner_text() == "gated: no access"
    page.get_by_role("checkbox", name="model.safetensors").check()
    assert page.get_by_role("button", name="Download selected").is_disabled()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "picker-gated-narrow.png")

    for text, status in (("org/no-such-repo", 404), ("not a repo id!", 400)):
        show(page, text)
        error = page.get_by_role("alert").filter(has_text=api_message(url, text, status))
        error.wait_for()
        assert page.locator("#hub-view").is_hidden()
    assert page.locator("#hub-error").inner_text() == api_message(url, "not a repo id!", 400)
    # The browser logs each refused request; nothing else may go wrong.
    assert [p for p in page.problems if "Failed to load resource" not in p] == []


def api_message(url: str, text: str, status: int) -> str:
    resp = api_get(url, "/api/hub/repo", id=text)
    assert resp.status_code == status, resp.text
    message: str = resp.json()["message"]
    return message
