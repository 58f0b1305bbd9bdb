"""The Downloads section of the models page: active jobs first, as live cards; finished,
failed and cancelled jobs in a short Recent list of one-line items that can be dismissed one
by one or cleared, remembered across reloads, while the Jobs page keeps the whole history."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Api, files, sign_in, start_web
from tests.hub import GeneratedFile
from tests.stack import Stack
from tests.support import MiB

pytestmark = pytest.mark.timeout(180)
KiB = 1024


def recent_ids(page: Any) -> list[str]:
    ids: list[str] = page.locator(".recent-item").evaluate_all("els => els.map(e => e.dataset.job)")
    return ids


def history(stack: Stack, api: Api) -> tuple[list[str], str]:
    """Six jobs that ended (four completed, one failed, one cancelled), oldest first, and
    one that goes on downloading."""
    stack.hub.add_repo("org/done", files(4, 256 * KiB, seed=20))
    stack.hub.add_repo("org/gone", {"x.bin": GeneratedFile(size=KiB, seed=30)})
    stack.hub.faults.add(repo="org/gone", host="hub", status=404, times=None)
    stack.hub.add_repo("org/slow", files(2, 20 * MiB, seed=40))
    stack.hub.add_repo("org/quick", {"q.bin": GeneratedFile(size=MiB, seed=41)})
    stack.hub.faults.add(host="cdn", bandwidth=MiB // 2, times=None)
    ended = []
    for i in range(4):
        job = api.download("org/done", f"part-{i + 1}.bin")
        api.wait_status(job["jobId"], "completed")
        ended.append(job["jobId"])
    failed = api.download("org/gone", "x.bin")
    api.wait_status(failed["jobId"], "failed")
    cancelled = api.download("org/slow", "part-2.bin")
    api.post(f"/api/models/download/{cancelled['jobId']}/cancel")
    api.wait_status(cancelled["jobId"], "cancelled")
    active = api.download("org/slow", "part-1.bin")
    return [*ended, failed["jobId"], cancelled["jobId"]], active["jobId"]


def test_active_first_recent_dismiss_clear_and_reload(stack: Stack, page: Any) -> None:
    stack.start_worker("w1", DOWNLOAD_CONNECTIONS="1")
    url = start_web(stack)
    api = Api(url)
    ended, active = history(stack, api)
    sign_in(page, url)

    card = page.locator(f"#jobs-live article.job[data-job='{active}']")
    card.wait_for()
    page.locator(".recent-item").nth(4).wait_for()
    # The active job is a card, above the Recent list; only the five newest that ended are
    # listed, newest first, each on one line with its state.
    assert page.locator("#jobs-live article.job").count() == 1
    assert card.bounding_box()["y"] < page.locator("section.recent").bounding_box()["y"]
    assert recent_ids(page) == ended[:0:-1]
    states = page.locator(".recent-item .state").all_inner_texts()
    assert states == ["cancelled", "failed", "completed", "completed", "completed"]
    for box in page.locator(".recent-item").evaluate_all(
        "els => els.map(e => e.getBoundingClientRect().height)"
    ):
        assert box < 40
    assert page.locator("#no-downloads").is_hidden()

    # Dismiss the newest: the oldest takes its place; a reload remembers.
    page.get_by_role("button", name="Dismiss org/slow").click()
    assert recent_ids(page) == ended[-2::-1]
    page.reload()
    page.locator(".recent-item").nth(4).wait_for()
    assert recent_ids(page) == ended[-2::-1]

    # Clear dismisses them all, for good; the active card stays.
    page.get_by_role("button", name="Clear recent downloads").click()
    assert page.locator("section.recent").is_hidden()
    page.reload()
    card.wait_for()
    page.wait_for_function("() => document.querySelector('section.recent')?.hidden === true")
    assert page.locator(".recent-item").count() == 0

    # A job that ends while watched keeps its card a moment, then joins Recent.
    quick = api.download("org/quick", "q.bin")["jobId"]
    page.locator(f"article.job[data-job='{quick}'] header .state[data-state=completed]").wait_for(
        timeout=30_000
    )
    page.locator(f".recent-item[data-job='{quick}']").wait_for(timeout=20_000)
    assert page.locator(f"article.job[data-job='{quick}']").count() == 0
    assert page.locator("#jobs-live article.job").count() == 1

    # The Jobs page still lists every job.
    page.goto(f"{url}/jobs")
    page.locator("li.job[data-job]").nth(7).wait_for()
    listed = page.locator("li.job[data-job]").evaluate_all("els => els.map(e => e.dataset.job)")
    assert set(listed) == {*ended, active, quick}
    assert page.problems == []


def test_starting_a_download_brings_its_card_into_view(stack: Stack, page: Any) -> None:
    stack.hub.add_repo(
        "stabilityai/sd-turbo", {"sd_turbo.safetensors": GeneratedFile(size=4 * MiB, seed=50)}
    )
    stack.hub.faults.add(host="cdn", bandwidth=MiB // 2, times=None)
    stack.start_worker("w1", DOWNLOAD_CONNECTIONS="1")
    url = start_web(stack)
    page.set_viewport_size({"width": 1100, "height": 500})
    sign_in(page, url)
    page.get_by_label("Show missing models").check()
    button = page.get_by_role("button", name="Download SD-Turbo")
    button.scroll_into_view_if_needed()
    assert page.evaluate("window.scrollY") > 0  # the Downloads section is out of sight
    button.click()
    card = page.locator("article.job[aria-label='Download sd-turbo']")
    card.wait_for()
    page.wait_for_function(
        "e => { const r = e.getBoundingClientRect(); return r.top > -1 && r.top < innerHeight; }",
        arg=card.element_handle(),
        timeout=5_000,
    )
    assert page.problems == []
