"""A job's own overall speed and ETA: nothing until there are a few seconds of data, then
steady figures (an average over seconds, not the last burst of events); the overall bar
never moves backwards as the job's files start one after another."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from tests.browser.conftest import Api, files, sign_in, start_web
from tests.stack import Stack
from tests.support import MiB

pytestmark = pytest.mark.timeout(180)

# Every 200 ms: the time, the overall bar, the job's speed and ETA as shown.
SAMPLE = """e => {
  window.__samples = [];
  const t0 = performance.now();
  const shown = (sel) => {
    const n = e.querySelector(sel);
    return n && !n.hidden ? n.textContent : null;
  };
  window.__sampler = setInterval(() => window.__samples.push({
    t: (performance.now() - t0) / 1000,
    bar: +e.querySelector("[role=progressbar]").getAttribute("aria-valuenow"),
    speed: shown(".job-speed"),
    eta: shown(".job-eta"),
  }), 200);
}"""


def seconds(eta: str) -> int:
    m = re.fullmatch(r"(?:(\d+) min )?(\d+) s left", eta)
    assert m, eta
    return int(m.group(1) or 0) * 60 + int(m.group(2))


def mib_per_s(speed: str) -> float:
    m = re.fullmatch(r"(\d+\.\d) (KiB|MiB)/s", speed)
    assert m, speed
    return float(m.group(1)) / (1024 if m.group(2) == "KiB" else 1)


def test_speed_and_eta_are_smooth_and_the_bar_never_goes_back(stack: Stack, page: Any) -> None:
    # Two files, one after the other (one download at a time), at 1 MiB/s.
    stack.hub.add_repo("org/pair", files(2, 8 * MiB, seed=80))
    stack.hub.faults.add(host="cdn", bandwidth=MiB, times=None)
    stack.start_worker("w1", concurrency=1, DOWNLOAD_CONNECTIONS="1")
    url = start_web(stack)
    api = Api(url)
    sign_in(page, url)
    job_id = api.download("org/pair", "part-1.bin", "part-2.bin")["jobId"]
    card = page.locator(f"article.job[data-job='{job_id}']")
    card.wait_for()
    card.evaluate(SAMPLE)
    card.locator("header .state[data-state=completed]").wait_for(timeout=60_000)
    samples: list[dict[str, Any]] = page.evaluate("() => window.__samples")

    bars = [s["bar"] for s in samples]
    assert bars == sorted(bars), bars  # never backwards, not even when part-2 starts
    assert bars[-1] == 100
    moving = next(s["t"] for s in samples if s["bar"] > 0)
    shown = [s for s in samples if s["eta"] is not None]
    assert shown, samples
    # Nothing until a few seconds of data.
    assert shown[0]["t"] - moving >= 2, (moving, shown[0])
    etas = [seconds(s["eta"]) for s in shown]
    for before, after in itertools.pairwise(etas):
        assert abs(after - before) <= 3, etas  # counts down; no 36 → 18 → 33
    speeds = [mib_per_s(s["speed"]) for s in shown]
    assert all(0.6 <= v <= 1.3 for v in speeds), speeds  # the job's own, about 1 MiB/s
    assert page.problems == []
