"""Pause, Resume, Retry and Cancel during live progress, used as people use them: a press held
for a quarter of a second, and the keyboard (Tab to the button, Enter). Progress events keep
coming meanwhile; the cards are updated in place, so the button pressed is still the button
when the press ends, and the focus stays where the user put it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Api, hold, sign_in, start_web
from tests.hub import GeneratedFile
from tests.stack import Stack
from tests.support import MiB

pytestmark = pytest.mark.timeout(180)

OVERALL = "e => +e.querySelector('[role=progressbar]').getAttribute('aria-valuenow')"


def slow_download(stack: Stack, size: int = 20 * MiB) -> None:
    """org/slow/big.bin at half a MiB/s over one connection: a good half minute of progress."""
    stack.hub.add_repo("org/slow", {"big.bin": GeneratedFile(size=size, seed=11)})
    stack.hub.faults.add(host="cdn", bandwidth=MiB // 2, times=None)
    stack.start_worker("w1", DOWNLOAD_CONNECTIONS="1")


def wait_moving(card: Any, by: int = 1) -> int:
    """Wait until the card's overall bar has moved `by` points; returns where it is."""
    start: int = card.evaluate(OVERALL)
    card.page.wait_for_function(
        f"([e, v]) => ({OVERALL})(e) >= v", arg=[card.element_handle(), start + by], timeout=30_000
    )
    value: int = card.evaluate(OVERALL)
    return value


def is_focused(locator: Any) -> bool:
    return bool(locator.evaluate("e => e === document.activeElement"))


def test_press_and_hold_each_control_during_live_progress(stack: Stack, page: Any) -> None:
    slow_download(stack)
    # A file the Hub does not have yet fails its job; once it is there, Retry fetches it.
    stack.hub.add_repo("org/late", {"late.bin": GeneratedFile(size=MiB, seed=12)})
    missing = stack.hub.faults.add(repo="org/late", host="hub", status=404, times=None)
    url = start_web(stack)
    api = Api(url)
    sign_in(page, url)

    slow_id = api.download("org/slow", "big.bin")["jobId"]
    card = page.locator(f"article.job[data-job='{slow_id}']")
    wait_moving(card)
    # Every control and the card itself get a mark that a rebuilt node would not carry.
    card.evaluate("e => { e.__kept = true; }")
    card.locator("button").evaluate_all("els => els.forEach(b => { b.__kept = true; })")

    late_id = api.download("org/late", "late.bin")["jobId"]
    late = page.locator(f"article.job[data-job='{late_id}']")
    late.locator("header .state[data-state=failed]").wait_for(timeout=30_000)
    stack.hub.faults.remove(missing.id)
    hold(page, late.get_by_role("button", name="retry org/late"))
    late.locator("header .state[data-state=completed]").wait_for(timeout=30_000)
    assert api.job(late_id)["status"] == "completed"

    hold(page, card.get_by_role("button", name="pause org/slow"))
    card.locator("header .state[data-state=paused]").wait_for(timeout=10_000)
    api.wait_status(slow_id, "paused", timeout=10)

    hold(page, card.get_by_role("button", name="resume org/slow"))
    api.wait_status(slow_id, "queued", "downloading", timeout=10)
    card.locator("header .state[data-state=downloading]").wait_for(timeout=30_000)
    api.wait_status(slow_id, "downloading", timeout=10)

    # Two seconds and more of progress (5 points at 2.5 a second): still the same nodes.
    wait_moving(card, by=5)
    assert card.evaluate("e => e.__kept === true")
    kept = card.locator("button").evaluate_all("els => els.map(b => b.__kept === true)")
    assert kept == [True, True, True, True]

    hold(page, card.get_by_role("button", name="cancel org/slow"))
    card.locator("header .state[data-state=cancelled]").wait_for(timeout=10_000)
    api.wait_status(slow_id, "cancelled", timeout=10)
    assert page.problems == []


def test_tab_and_enter_pause_and_resume_during_live_progress(stack: Stack, page: Any) -> None:
    slow_download(stack)
    url = start_web(stack)
    api = Api(url)
    sign_in(page, url)
    job_id = api.download("org/slow", "big.bin")["jobId"]
    card = page.locator(f"article.job[data-job='{job_id}']")
    wait_moving(card)

    pause = card.get_by_role("button", name="pause org/slow")
    resume = card.get_by_role("button", name="resume org/slow")
    for _ in range(40):
        page.keyboard.press("Tab")
        if is_focused(pause):
            break
    else:
        pytest.fail("Tab never reached the Pause button")
    wait_moving(card, by=3)  # over a second of live updates
    assert is_focused(pause)

    page.keyboard.press("Enter")
    card.locator("header .state[data-state=paused]").wait_for(timeout=10_000)
    api.wait_status(job_id, "paused", timeout=10)
    # Pause made way for Resume, and the keyboard went with it.
    assert is_focused(resume)

    page.keyboard.press("Enter")
    card.locator("header .state[data-state=downloading]").wait_for(timeout=30_000)
    api.wait_status(job_id, "downloading", timeout=10)
    assert is_focused(pause)
    wait_moving(card, by=3)
    assert is_focused(pause)
    assert page.problems == []
