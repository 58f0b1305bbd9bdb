"""Fuzzing the HTTP API: schemathesis from its OpenAPI document, hypothesis, hostile requests.

    .venv/bin/python -m bench.fuzz [--quick] [--seed N] [--no-gunicorn] [--out PATH]

Argument parsing and the run: every suite in turn against one target (the package's
docstring says what each does).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from hypothesis.errors import HypothesisDeprecationWarning

from bench.common import RESULTS, write_results
from bench.fuzz.access import run_auth, run_csrf, run_websocket
from bench.fuzz.hostile import hostile_cases
from bench.fuzz.leaks import LogCapture, captured_logs, files_under, run_containment, run_logs
from bench.fuzz.properties import run_properties
from bench.fuzz.report import Run, markdown, results
from bench.fuzz.schema import run_schemathesis
from bench.fuzz.server import run_gunicorn
from bench.fuzz.tally import Tally
from bench.fuzz.target import Target, suite
from bench.fuzz.values import escape_canary


@dataclass(frozen=True)
class Budget:
    """How hard each suite tries."""

    schemathesis_examples: int
    stateful_steps: int
    property_examples: int


QUICK = Budget(schemathesis_examples=8, stateful_steps=6, property_examples=25)
FULL = Budget(schemathesis_examples=150, stateful_steps=30, property_examples=600)


def run(*, quick: bool, seed: int, gunicorn: bool = True) -> tuple[dict[str, Any], str]:
    """Every suite; returns the results and a markdown report."""
    budget = QUICK if quick else FULL
    # schemathesis 4.32 builds a recursive strategy hypothesis calls deprecated: noise here.
    warnings.filterwarnings("ignore", category=HypothesisDeprecationWarning)
    secret = "mp_fuzzcanary" + secrets.token_hex(12)
    tally = Tally(secret=secret)
    started = time.monotonic()
    with captured_logs() as capture, tempfile.TemporaryDirectory(prefix="modelpull-fuzz-") as tmp:
        workdir = Path(tmp)
        target = Target(workdir / "app", secret, tally)
        try:
            extra = run_suites(target, capture, budget, seed)
            if gunicorn:
                with suite(target, "gunicorn"):
                    run_gunicorn(target, workdir / "gunicorn")
        finally:
            target.close()
    versions = {"schemathesis": schemathesis.__version__, "hypothesis": hypothesis.__version__}
    about = Run(elapsed=time.monotonic() - started, quick=quick, seed=seed, versions=versions)
    return results(tally, about, extra), markdown(tally, about)


def run_suites(target: Target, capture: LogCapture, budget: Budget, seed: int) -> dict[str, Any]:
    """The in-process suites, in order; returns what the results add about them."""
    extra: dict[str, Any] = {}
    before = files_under(target.workdir)
    doc = target.client.get("/api/openapi.json", headers=target.bearer).get_json()
    with suite(target, "schemathesis"):
        extra["schemathesis"] = run_schemathesis(
            target, budget.schemathesis_examples, budget.stateful_steps, seed
        )
    with suite(target, "hypothesis"):
        run_properties(target, budget.property_examples, seed)
    with suite(target, "hostile"):
        hostile_cases(target)
    with suite(target, "auth"):
        run_auth(target, doc)
    with suite(target, "csrf"):
        run_csrf(target)
    with suite(target, "websocket"):
        run_websocket(target)
    with suite(target, "logs"):
        run_logs(target, capture)
    with suite(target, "containment"):
        run_containment(target, escape_canary(target.secret), before)
    # Requests werkzeug's test client would not build (a NUL or newline in a header).
    extra["unsendable_requests"] = target.unsendable
    return extra


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suites, print the report and write the results; 1 if any check failed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a short run for CI (well under 60 s)")
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz.json")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--no-gunicorn", action="store_true", help="skip the real-server pass")
    args = parser.parse_args(argv)
    data, body = run(quick=args.quick, seed=args.seed, gunicorn=not args.no_gunicorn)
    command = ".venv/bin/python -m bench.fuzz" + (" --quick" if args.quick else "")
    command += f" --seed {args.seed}"
    write_results(args.out, data, title="API fuzzing", command=command, body=body)
    return 1 if data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
