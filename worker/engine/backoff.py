"""The backoff rule: how long to wait before trying again."""

from __future__ import annotations


def backoff_delay(
    failures: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    retry_after_cap: float = 300.0,
) -> float:
    """Seconds to wait after `failures` failures in a row: base * 2**(failures - 1), at most
    `cap`; a server's Retry-After lengthens it, up to `retry_after_cap`."""
    delay = min(cap, base * 2.0 ** (failures - 1))
    if retry_after is not None:
        # The server's word wins over our own cap, but not without limit: a hostile or broken
        # Retry-After must not park a download for hours.
        delay = min(max(delay, retry_after), retry_after_cap)
    return delay
