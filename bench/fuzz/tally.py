"""What the fuzz run counts: requests answered and checks evaluated, per suite, check and
operation, and every failure with what it takes to reproduce it."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field


@dataclass
class Failure:
    """One failed check, with what it takes to reproduce it."""

    suite: str
    check: str
    operation: str
    request: str
    status: int | None
    detail: str


@dataclass
class Tally:
    """Check evaluations and failures, per suite, check and operation."""

    secret: str
    requests: Counter[str] = field(default_factory=Counter)  # per suite
    by_operation: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    checks: Counter[str] = field(default_factory=Counter)
    suite_checks: Counter[str] = field(default_factory=Counter)
    failed_checks: Counter[str] = field(default_factory=Counter)
    failed_operations: Counter[str] = field(default_factory=Counter)
    failed_suites: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def request(self, suite: str, operation: str, status: int) -> None:
        """Count one request answered."""
        self.requests[suite] += 1
        self.by_operation[operation] += 1
        self.statuses[operation][status] += 1

    def check(
        self,
        suite: str,
        name: str,
        ok: bool,
        *,
        operation: str = "-",
        request: str = "-",
        status: int | None = None,
        detail: str = "",
    ) -> bool:
        """Count one evaluation of a check; record a failure."""
        self.checks[name] += 1
        self.suite_checks[suite] += 1
        if not ok:
            self.failed_checks[name] += 1
            self.failed_operations[operation] += 1
            self.failed_suites[suite] += 1
            self.failures.append(
                Failure(suite, name, operation, self.scrub(request), status, self.scrub(detail))
            )
        return ok

    def scrub(self, text: str) -> str:
        """Reports name the token, never show it."""
        return text.replace(self.secret, "$API_TOKEN").replace(self.secret[:-1], "$API_TOKEN[:-1]")

    @property
    def cases(self) -> int:
        """Requests answered, over all suites."""
        return sum(self.requests.values())
