"""The Jobs page is live over the same WebSocket as the models page: a job started while it
is open appears at the top and moves to completed without a reload; names and badges keep
apart; an error is said once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Api, files, sign_in, start_web
from tests.browser.screens import shot
from tests.hub import GeneratedFile
from tests.stack import Stack
from tests.support import MiB

pytestmark = pytest.mark.timeout(180)

SOME_FILE_MOVING = """e => [...e.querySelectorAll('li.file [role=progressbar]')]
  .some(b => +b.getAttribute('aria-valuenow') > 0 && +b.getAttribute('aria-valuenow') < 100)"""


def test_jobs_page_follows_jobs_live(stack: Stack, page: Any) -> None:
    stack.hub.add_repo("org/live", files(2, 6 * MiB, seed=60))
    stack.hub.add_repo("org/gone", {"x.bin": GeneratedFile(size=MiB, seed=61)})
    stack.hub.faults.add(repo="org/gone", host="hub", status=404, times=None)
    stack.hub.faults.add(host="cdn", bandwidth=2 * MiB, times=None)
    stack.start_worker("w1", DOWNLOAD_CONNECTIONS="1")
    url = start_web(stack)
    api = Api(url)
    sign_in(page, url, "/jobs")
    page.get_by_text("No jobs yet.").wait_for()

    first = api.download("org/live", "part-1.bin", "part-2.bin")["jobId"]
    entry = page.locator(f"li.job[data-job='{first}']")
    entry.wait_for()
    page.wait_for_function(SOME_FILE_MOVING, arg=entry.element_handle(), timeout=30_000)
    entry.locator("header .state[data-state=completed]").wait_for(timeout=60_000)
    bars = entry.locator("[role=progressbar]").evaluate_all(
        "els => els.map(e => +e.getAttribute('aria-valuenow'))"
    )
    assert bars == [100, 100, 100]
    assert entry.locator(".amount").inner_text() == "12.0 MiB of 12.0 MiB"
    assert entry.locator(".duration").inner_text().endswith(" s")
    assert page.get_by_text("No jobs yet.").is_hidden()

    # The newest job goes on top; its error is said once: the job says how many files
    # failed, the file says why.
    failed = api.download("org/gone", "x.bin")["jobId"]
    top = page.locator("li.job[data-job]").first
    top.locator("header .state[data-state=failed]").wait_for(timeout=30_000)
    assert top.get_attribute("data-job") == failed
    why = api.job(failed)["files"][0]["error"]
    assert why
    assert top.inner_text().count(why) == 1
    assert top.locator(".job-error").inner_text() == "1 of 1 file failed"
    assert top.locator(".file-error").inner_text() == why

    # A file's name and its badge never run together.
    for row in page.locator("li.file").all():
        name = row.locator(".name").bounding_box()
        badge = row.locator(".file-head .state").bounding_box()
        assert (
            badge["x"] >= name["x"] + name["width"] + 4 or badge["y"] >= name["y"] + name["height"]
        )
    shot(page, "jobs.png")

    # A reload shows the same, from the history.
    page.reload()
    page.locator(f"li.job[data-job='{first}'] header .state[data-state=completed]").wait_for()
    order = page.locator("li.job[data-job]").evaluate_all("els => els.map(e => e.dataset.job)")
    assert order == [failed, first]
    assert page.problems == []
