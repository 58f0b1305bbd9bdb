"""Fault injection for the imitation Hub: what can go wrong, where, and how often."""

from __future__ import annotations

import dataclasses
import fnmatch
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Host = Literal["hub", "cdn"]
Phase = Literal["status", "body"]

_RUNTIME_FIELDS = ("id", "hits")


@dataclass
class Fault:
    """One injected fault: a match (path, repo, url, host, method) plus what to do, `times` times.

    Match fields (all optional, all must hold):
      path    glob on the repo file path (resolve and CDN requests only), e.g. "*.gguf"
      repo    glob on the repo id
      url     glob on the request's URL path, any route, e.g. "/api/models/*"
      host    "hub" or "cdn"
      method  "GET", "HEAD", ...
    A fault with neither `path` nor `url` matches every file request (resolve and CDN).

    Effects. A `status` fault answers instead of the normal response (HEAD or GET). The
    others shape a file body and apply to GET requests that send one:
      drop_after      close the connection after this many body bytes
      ignore_range    answer 200 with the full body even if Range was asked
      stall_after     after this many body bytes, send nothing for `stall_seconds`, then
                      `stall_then` = "continue" or "close"
      corrupt_offset  flip the bits of the byte at this file offset (if the body covers it)
      bandwidth       cap this response at this many bytes per second
      trickle_rate    from body byte `trickle_after` (default 0) on, send only this many
                      bytes per second, in small pieces (the bytes before go at full speed,
                      or at `bandwidth`)
    Body effects can be combined in one fault. `times=None` means always.
    """

    path: str | None = None
    repo: str | None = None
    url: str | None = None
    host: Host | None = None
    method: str | None = None
    times: int | None = 1
    status: int | None = None
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None
    ignore_range: bool = False
    stall_after: int | None = None
    stall_seconds: float = 0.0
    stall_then: Literal["continue", "close"] = "continue"
    corrupt_offset: int | None = None
    bandwidth: int | None = None
    trickle_after: int | None = None
    trickle_rate: int | None = None
    id: int = 0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.host not in (None, "hub", "cdn"):
            raise ValueError("host must be 'hub', 'cdn' or None")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1, or None for always")
        if self.stall_then not in ("continue", "close"):
            raise ValueError("stall_then must be 'continue' or 'close'")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError("bandwidth must be > 0 bytes/s")
        if self.trickle_rate is not None and self.trickle_rate <= 0:
            raise ValueError("trickle_rate must be > 0 bytes/s")
        if self.trickle_after is not None and self.trickle_rate is None:
            raise ValueError("trickle_after needs a trickle_rate")
        if self.trickle_after is not None and self.trickle_after < 0:
            raise ValueError("trickle_after must be >= 0")
        body = self.has_body_effect
        if self.status is None and not body:
            raise ValueError("a fault needs an effect: status, drop_after, ignore_range, ...")
        if self.status is not None and body:
            raise ValueError("a status fault cannot also shape the body; add two faults")
        if self.method is not None:
            self.method = self.method.upper()

    @property
    def has_body_effect(self) -> bool:
        """True when the fault shapes a body rather than replacing the response."""
        return (
            self.drop_after is not None
            or self.ignore_range
            or self.stall_after is not None
            or self.corrupt_offset is not None
            or self.bandwidth is not None
            or self.trickle_rate is not None
        )

    @property
    def remaining(self) -> int | None:
        """How many more requests it will hit; None for always."""
        return None if self.times is None else max(self.times - self.hits, 0)

    @property
    def phase(self) -> Phase:
        """Whether the fault replaces the response or shapes its body."""
        return "status" if self.status is not None else "body"

    def matches(
        self,
        *,
        host: Host,
        method: str,
        url_path: str,
        repo_id: str | None,
        file_paths: tuple[str, ...],
    ) -> bool:
        """Whether a request fits this fault's match fields (ignoring the count)."""
        if self.host is not None and self.host != host:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.url is not None and not fnmatch.fnmatchcase(url_path, self.url):
            return False
        if self.url is None and not file_paths:
            return False
        if self.path is not None and not any(fnmatch.fnmatchcase(p, self.path) for p in file_paths):
            return False
        return self.repo is None or (
            repo_id is not None and fnmatch.fnmatchcase(repo_id, self.repo)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, with the live counters."""
        data = dataclasses.asdict(self)
        data["remaining"] = self.remaining
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        """Build from JSON (the admin API); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)} - set(_RUNTIME_FIELDS)
        unknown = set(data) - names - {"remaining"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in names})


class FaultSet:
    """The hub's active faults. Thread-safe: handler threads take faults concurrently."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(self, fault: Fault | None = None, /, **fields: Any) -> Fault:
        """Add a fault, given as a Fault or as its fields; returns it (its `hits` stay live)."""
        if fault is None:
            fault = Fault(**fields)
        elif fields:
            raise TypeError("pass a Fault or keyword fields, not both")
        with self._lock:
            fault.id = self._next_id
            fault.hits = 0
            self._next_id += 1
            self._faults.append(fault)
        return fault

    def remove(self, fault_id: int) -> bool:
        """Remove one fault by id; False if it was not there."""
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> int:
        """Remove every fault; returns how many there were."""
        with self._lock:
            count = len(self._faults)
            self._faults = []
            return count

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter(list(self._faults))

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-friendly snapshot of all faults."""
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def take(
        self,
        phase: Phase,
        *,
        host: Host,
        method: str,
        url_path: str,
        repo_id: str | None = None,
        file_paths: tuple[str, ...] = (),
    ) -> Fault | None:
        """Claim the first fault of this phase that matches and has hits left."""
        with self._lock:
            for fault in self._faults:
                if fault.phase != phase or fault.remaining == 0:
                    continue
                if fault.matches(
                    host=host,
                    method=method,
                    url_path=url_path,
                    repo_id=repo_id,
                    file_paths=file_paths,
                ):
                    fault.hits += 1
                    return fault
        return None
