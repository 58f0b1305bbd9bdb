"""The fuzz run's results: the JSON written to --out and the markdown report beside it (per
suite, per check, per operation, and each distinct failure with its request)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.common import table
from bench.fuzz.tally import Failure, Tally


@dataclass(frozen=True)
class Run:
    """What the report says about the run itself."""

    elapsed: float
    quick: bool
    seed: int
    versions: dict[str, str]  # schemathesis, hypothesis


def unique_failures(tally: Tally) -> list[tuple[Failure, int]]:
    """Each distinct failure (check, operation, request or schemathesis' message) once, with
    how many times it happened."""
    unique: dict[tuple[str, str, str], tuple[Failure, int]] = {}
    for f in tally.failures:
        key = (
            f.check,
            f.operation,
            f.request[:120]
            if f.suite != "schemathesis"
            else f.detail.removeprefix("(again) ")[:80],
        )
        first, count = unique.get(key, (f, 0))
        unique[key] = (first, count + 1)
    return list(unique.values())


def suites(tally: Tally) -> list[str]:
    """The suites in the order they ran."""
    return list(dict.fromkeys([*tally.seconds, *tally.requests]))


def markdown(tally: Tally, run: Run) -> str:
    """The report's body: the headline, then a table per suite, check and operation, then the
    failures (if any)."""
    suite_rows = [
        [
            s,
            tally.requests.get(s, 0),
            tally.suite_checks.get(s, 0),
            tally.failed_suites.get(s, 0),
            f"{tally.seconds.get(s, 0):.1f}",
        ]
        for s in suites(tally)
    ]
    check_rows = [[c, n, tally.failed_checks.get(c, 0)] for c, n in sorted(tally.checks.items())]
    failure_rows = [
        [
            f.suite,
            f.check,
            f"`{f.operation}`",
            f.status,
            n,
            f"`{f.request[:160]}`",
            f.detail[:160].replace("|", "/"),
        ]
        for f, n in unique_failures(tally)
    ]
    versions = run.versions
    parts = [
        f"**{tally.cases} cases** (requests answered), {sum(tally.checks.values())} checks, "
        f"**{len(tally.failures)} failures**, {run.elapsed:.0f} s "
        f"({'quick' if run.quick else 'full'} run, seed {run.seed}, "
        f"schemathesis {versions['schemathesis']}, hypothesis {versions['hypothesis']}).",
        "### Per suite\n\n"
        + table(["suite", "cases", "checks", "failures", "seconds"], suite_rows),
        "### Per check\n\n" + table(["check", "evaluated", "failures"], check_rows),
        "### Per operation\n\n"
        + table(["operation", "cases", "failures", "statuses"], operation_rows(tally)),
    ]
    if failure_rows:
        header = ["suite", "check", "operation", "status", "times", "request", "detail"]
        parts.append("### Failures\n\n" + table(header, failure_rows))
    return "\n\n".join(parts)


def operation_rows(tally: Tally) -> list[list[Any]]:
    """Per operation: cases, failures and the statuses answered; then operations that only
    failed (a check outside any request)."""
    rows: list[list[Any]] = [
        [
            f"`{op}`",
            n,
            tally.failed_operations.get(op, 0),
            " ".join(f"{code}x{k}" for code, k in sorted(tally.statuses[op].items())),
        ]
        for op, n in sorted(tally.by_operation.items())
    ]
    rows += [
        [f"`{op}`", 0, n, ""]
        for op, n in sorted(tally.failed_operations.items())
        if op not in tally.by_operation
    ]
    return rows


def results(tally: Tally, run: Run, extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON results."""
    return {
        "cases": tally.cases,
        "failures": len(tally.failures),
        "checks": sum(tally.checks.values()),
        "seconds": round(run.elapsed, 1),
        "quick": run.quick,
        "seed": run.seed,
        "versions": run.versions,
        "suites": {
            s: {
                "cases": tally.requests.get(s, 0),
                "checks": tally.suite_checks.get(s, 0),
                "failures": tally.failed_suites.get(s, 0),
                "seconds": round(tally.seconds.get(s, 0), 1),
            }
            for s in suites(tally)
        },
        "per_check": {
            c: {"evaluated": n, "failures": tally.failed_checks.get(c, 0)}
            for c, n in sorted(tally.checks.items())
        },
        "per_operation": {
            op: {
                "cases": n,
                "failures": tally.failed_operations.get(op, 0),
                "statuses": {str(k): v for k, v in sorted(tally.statuses[op].items())},
            }
            for op, n in sorted(tally.by_operation.items())
        },
        "failure_list": [vars(f) | {"times": n} for f, n in unique_failures(tally)[:200]],
        **extra,
    }
