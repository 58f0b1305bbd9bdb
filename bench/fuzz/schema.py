"""The schemathesis suite: its engine (coverage, fuzzing and stateful phases) over every
operation of the app's OpenAPI document (GET /api/openapi.json)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import schemathesis
from schemathesis.core.result import Ok
from schemathesis.engine import events, from_schema

from bench.fuzz.target import Target

SUITE = "schemathesis"


def config(target: Target, examples: int, steps: int, seed: int) -> schemathesis.Config:
    """schemathesis' settings: every check, seeded, with the token."""
    return schemathesis.Config.from_dict(
        {
            "seed": seed,
            "workers": 1,
            "continue-on-failure": True,
            "suppress-health-check": ["all"],
            "generation": {"max-examples": examples, "database": "none"},
            "auth": {"openapi": {"bearer": {"bearer": target.secret}}},
            "phases": {"stateful": {"max-steps": steps}},
            # ignored_auth is replaced by the auth suite: in schemathesis 4.32 its probe
            # passes `max_redirects` to werkzeug's test client and errors out on WSGI apps.
            "checks": {"ignored_auth": {"enabled": False}},
            # A valid handshake cannot be expressed in the document (and the test client has
            # no socket to upgrade): the WebSocket is tested by hand in bench.fuzz.access and
            # on gunicorn. Nor can an opaque cursor: any string but those the server gave out
            # gets 400 (the hypothesis suite checks the other parameters exactly).
            "operations": [
                {
                    "include-operation-id": ["websocket", "listJobs"],
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                }
            ],
        }
    )


def run_schemathesis(target: Target, examples: int, steps: int, seed: int) -> dict[str, Any]:
    """schemathesis' engine over every operation of the app's OpenAPI document."""
    schema = schemathesis.openapi.from_wsgi(
        "/api/openapi.json",
        target.app,
        headers=target.bearer,
        config=config(target, examples, steps, seed),
    )
    generated: Counter[str] = Counter()
    operations = {r.ok().label for r in schema.get_all_operations() if isinstance(r, Ok)}
    seen: set[tuple[str, str, str]] = set()
    tally = target.tally
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            record_scenario(target, event.recorder, generated, seen)
        elif isinstance(event, events.NonFatalError):
            tally.check(
                SUITE,
                "schemathesis:error",
                False,
                operation=event.label,
                detail=f"{type(event.value).__name__}: {event.value}",
            )
        elif isinstance(event, events.FatalError):
            tally.check(
                SUITE,
                "schemathesis:fatal",
                False,
                detail=f"{type(event.exception).__name__}: {event.exception}",
            )
    return {
        "operations": len(operations),
        "generated_cases": sum(generated.values()),
        "generated_per_operation": dict(sorted(generated.items())),
    }


def record_scenario(
    target: Target, recorder: Any, generated: Counter[str], seen: set[tuple[str, str, str]]
) -> None:
    """Count a finished scenario's cases and every check schemathesis ran on them; a failure
    seen before (same check, operation and title) is marked "(again)"."""
    for case_node in recorder.cases.values():
        generated[case_node.value.operation.label] += 1
    for case_id, nodes in recorder.checks.items():
        for node in nodes:
            if node.failure_info is None:
                target.tally.check(SUITE, f"schemathesis:{node.name}", True)
                continue
            failure = node.failure_info.failure
            response = recorder.find_response(case_id=case_id)
            label = (
                recorder.cases[case_id].value.operation.label
                if case_id in recorder.cases
                else recorder.label
            )
            key = (node.name, label, failure.title)
            detail = f"{failure.title}: {failure.message[:400]}"
            if key in seen:
                detail = f"(again) {detail}"
            seen.add(key)
            target.tally.check(
                SUITE,
                f"schemathesis:{node.name}",
                False,
                operation=label,
                request=node.failure_info.code_sample,
                status=response.status_code if response is not None else None,
                detail=detail,
            )
