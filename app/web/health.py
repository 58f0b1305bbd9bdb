"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select, text

from app.dispatch import QUEUE
from app.models import ACTIVE, DownloadFile, DownloadJob, FileStatus, JobStatus
from app.web.state import state_of

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Always 200 while the process can answer."""
    return jsonify(status="ok")


def _models_dir_check(path: Path) -> str:
    """The models_dir check: ok when this process may create files in MODELS_DIR, or create
    MODELS_DIR itself (a worker makes it on its first download). A read-only folder, or one
    under a file, fails every download."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return "ok"
    return f"not writable: {path}"


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """200 when the job store and Redis answer and MODELS_DIR is writable; 503 naming what
    is not."""
    state = state_of(current_app)
    checks: dict[str, str] = {}
    try:
        with state.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        state.dispatcher.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    checks["models_dir"] = _models_dir_check(state.settings.models_dir)
    unreachable = [name for name in ("database", "redis") if checks[name] != "ok"]
    problems = [f"{' and '.join(unreachable)} unreachable"] if unreachable else []
    if checks["models_dir"] != "ok":
        problems.append(f"MODELS_DIR {checks['models_dir']}")
    if problems:
        body = jsonify(error="not_ready", message="; ".join(problems), checks=checks)
        return body, 503
    return jsonify(status="ready", checks=checks)


def _line(name: str, value: float, **labels: str) -> str:
    if labels:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {value:g}"
    return f"{name} {value:g}"


def _queue_depth(client: Any) -> int | None:
    try:
        return int(client.llen(QUEUE))
    except Exception:
        return None


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    """Prometheus text format: downloads by state, bytes, transfers, queue, fan-out."""
    state = state_of(current_app)
    with state.sessions() as session:
        files = dict(
            session.execute(
                select(DownloadFile.status, func.count()).group_by(DownloadFile.status)
            ).all()
        )
        job_counts = dict(
            session.execute(
                select(DownloadJob.status, func.count()).group_by(DownloadJob.status)
            ).all()
        )
        done_bytes = session.scalar(select(func.coalesce(func.sum(DownloadFile.bytes_done), 0)))
    out = [
        "# HELP modelpull_files Download files by state.",
        "# TYPE modelpull_files gauge",
        *(_line("modelpull_files", files.get(s, 0), state=s.value) for s in FileStatus),
        "# HELP modelpull_jobs Download jobs by state.",
        "# TYPE modelpull_jobs gauge",
        *(_line("modelpull_jobs", job_counts.get(s, 0), state=s.value) for s in JobStatus),
        "# HELP modelpull_bytes_downloaded Bytes on disk across all files of known jobs.",
        "# TYPE modelpull_bytes_downloaded gauge",
        _line("modelpull_bytes_downloaded", float(done_bytes or 0)),
        "# HELP modelpull_active_transfers Files a worker is downloading or verifying now.",
        "# TYPE modelpull_active_transfers gauge",
        _line("modelpull_active_transfers", sum(files.get(s, 0) for s in ACTIVE)),
    ]
    depth = _queue_depth(state.dispatcher.redis)
    if depth is not None:  # the broker's absence shows in /readyz, not here
        out += [
            "# HELP modelpull_queue_depth Task messages waiting in the broker.",
            "# TYPE modelpull_queue_depth gauge",
            _line("modelpull_queue_depth", depth),
        ]
    relay = state.relay
    out += [
        "# HELP modelpull_ws_clients WebSocket clients connected to this process.",
        "# TYPE modelpull_ws_clients gauge",
        _line("modelpull_ws_clients", relay.client_count()),
        "# HELP modelpull_events_fanned_out_total Events sent to WebSocket clients.",
        "# TYPE modelpull_events_fanned_out_total counter",
        _line("modelpull_events_fanned_out_total", relay.fanned_out),
        "# HELP modelpull_events_dropped_total Events dropped for slow clients (resynced).",
        "# TYPE modelpull_events_dropped_total counter",
        _line("modelpull_events_dropped_total", relay.dropped),
    ]
    return Response("\n".join(out) + "\n", mimetype="text/plain; version=0.0.4")


def init_app(app: Flask) -> None:
    """Register the operations routes."""
    app.register_blueprint(bp)
