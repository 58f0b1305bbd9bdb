"""The backoff rule: doubling delays, capped, lengthened by a server's Retry-After."""

from __future__ import annotations

import pytest

from worker.engine.backoff import backoff_delay


def test_delays_double_from_the_base_up_to_the_cap() -> None:
    delays = [backoff_delay(n, base=0.5, cap=30.0) for n in range(1, 9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_retry_after_lengthens_the_delay_but_never_shortens_it() -> None:
    assert backoff_delay(1, base=0.5, cap=30.0, retry_after=10.0) == 10.0
    assert backoff_delay(4, base=0.5, cap=30.0, retry_after=1.0) == 4.0
    # The server may ask for more than our own cap...
    assert backoff_delay(2, base=0.5, cap=30.0, retry_after=120.0) == 120.0


def test_retry_after_is_itself_capped() -> None:
    assert backoff_delay(1, base=0.5, cap=30.0, retry_after=86_400.0) == 300.0
    assert backoff_delay(1, base=0.5, cap=30.0, retry_after=90.0, retry_after_cap=60.0) == 60.0


@pytest.mark.parametrize("attempts", range(1, 12))
def test_it_expresses_the_pipelines_requeue_countdown(attempts: int) -> None:
    assert backoff_delay(attempts, base=5.0, cap=300.0) == min(300.0, 5.0 * 2 ** (attempts - 1))


@pytest.mark.parametrize("plain_failures", range(1, 8))
def test_it_expresses_the_plain_restart_delay(plain_failures: int) -> None:
    # A plain restart waits base * 2**failures (one step further than a piece retry).
    expected = min(30.0, 0.5 * 2**plain_failures)
    assert backoff_delay(plain_failures + 1, base=0.5, cap=30.0) == expected
