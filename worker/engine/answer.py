"""Whether a download server's answer to a ranged GET carries the bytes asked for, from the
same file, and what to do when it does not."""

from __future__ import annotations

from collections.abc import Callable

import requests

from worker.engine.hub import ResolvedFile, hub_error
from worker.engine.terms import FileChanged, UrlExpired


class RangesUnsupported(Exception):
    """The server ignores Range: fetch the whole file on one connection."""


class RestartPlain(Exception):
    """A plain (unranged) GET broke off: it can only start again from byte 0."""


def check_answer(
    resp: requests.Response,
    pos: int,
    ranged: bool,
    validator: str | None,
    resolved: ResolvedFile,
    headers_for: Callable[[str], dict[str, str]],
) -> str | None:
    """Raise unless the answer carries the bytes asked for, from the same file; returns the
    validator to use from now on (the URL's own strong ETag, learnt from its first answer)."""
    status = resp.status_code
    if status in (200, 206):
        served = resp.headers.get("ETag", "")
        if validator and served and served != validator:
            raise FileChanged()  # the URL now serves other bytes than we have
        if validator is None and served and not served.startswith("W/"):
            validator = served
    if status == 206 and ranged:
        if not resp.headers.get("Content-Range", "").startswith(f"bytes {pos}-"):
            raise RangesUnsupported()
        return validator
    if status == 200:
        if ranged:
            raise RangesUnsupported()  # the server ignored Range
        return validator
    if status == 416:
        raise FileChanged()  # the server thinks the file is shorter than we do
    if status in (401, 403, 404, 410) and resp.headers.get("X-Error-Code") is None:
        raise UrlExpired()  # a signed CDN URL past its expiry
    raise hub_error(
        resp,
        repo=resolved.repo,
        file=resolved.file_name,
        revision=resolved.revision,
        has_token="Authorization" in headers_for(resolved.url),
    )
