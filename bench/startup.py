"""How long a new user waits: from `make up` (or `modelpull up`) with a fresh DATA_DIR to the
printed URL and sign-in token, the last lines `modelpull up` prints.

    .venv/bin/python -m bench.startup --runs 5

Each run gets a new DATA_DIR and MODELS_DIR (so the database is created and migrated and a
token made, as on a first start) and a free port; the clock stops at the token line, then
the stack is stopped with SIGTERM. `.venv` is already installed: the first `make up` also
installs it, which takes about a minute and is not what this measures.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, ROOT, percentile, table, write_results

PROMPT = "sign in with this token:"
TIMEOUT_S = 60.0


def free_port() -> int:
    """A free loopback port (the one `modelpull up` would be told to use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_start(how: str, workdir: Path) -> float:
    """Seconds from the command's start to the line after "sign in with this token:"."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "API_TOKEN")
    }
    env.update(DATA_DIR=str(workdir / "data"), MODELS_DIR=str(workdir / "models"))
    if how == "make up":
        argv = ["make", "-s", "up", f"PORT={port}"]
    else:
        argv = [str(ROOT / ".venv/bin/modelpull"), "up", "--port", str(port)]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    took, saw_prompt = None, False
    for line in proc.stdout:
        if saw_prompt:
            took = time.monotonic() - started
            break
        saw_prompt = PROMPT in line
        if time.monotonic() - started > TIMEOUT_S:
            break
    # The whole group: make and the modelpull it started (ours, started just above).
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    if took is None:
        raise SystemExit(f"{how} printed no token within {TIMEOUT_S:.0f} s")
    return took


def main() -> None:
    """Measure, then write bench/results/startup.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "startup.json")
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"make up": [], "modelpull up": []}
    for _ in range(args.runs):
        for how, runs in figures.items():  # interleaved: both see the same machine
            with tempfile.TemporaryDirectory(prefix="mp-startup-") as tmp:
                runs.append(round(one_start(how, Path(tmp)), 2))
    rows = [
        [how, min(r), percentile(r, 50), max(r), " ".join(f"{x:.2f}" for x in r)]
        for how, r in figures.items()
    ]
    body = table(["command", "min s", "median s", "max s", "every run (s)"], rows)
    write_results(
        args.out,
        {"runs": figures},
        title="Start-up: a fresh DATA_DIR to the printed URL and token",
        command=f".venv/bin/python -m bench.startup --runs {args.runs}",
        body=body,
    )


if __name__ == "__main__":
    main()
