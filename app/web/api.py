"""The REST API (the README's "The HTTP API"): views translate HTTP into `app.services` calls."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.routing import BaseConverter

from app import hubcache, jobs, services, storage
from app.catalog import CatalogModel, model_status
from app.db import db_now
from app.errors import NothingToDownloadError
from app.events import job_to_dict
from app.hubmeta import QUICK_TIMEOUT, HubAnswerError
from app.models import JobStatus
from app.web.errors import ApiError
from app.web.state import db, state_of

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api")


@bp.record_once
def _add_converter(setup: BlueprintSetupState) -> None:
    setup.app.url_map.converters["jobref"] = JobRef


class JobRef(BaseConverter):
    """A job id or a prefix of one (`jobs.resolve_job_id` decides which job, or says none):
    any one path part but "jobs", so "/download/jobs" (the list) is never a job to delete."""

    regex = r"(?!jobs$)[^/]{1,64}"


JOB = "<jobref:job_id>"
MAX_FILES = 100
# An ad-hoc file lands at "<repo>/<name>" (repo ids are at most 193 characters), and a
# destination is at most 1000: a name of 800 always fits, whatever the repo.
MAX_NAME = 800
MAX_PAGE = 200


def _model(model_id: str) -> CatalogModel:
    model = state_of(current_app).catalog.get(model_id)
    if model is None:
        raise ApiError(404, "not_found", f"no model {model_id!r} in the catalog")
    return model


def _job_id(job_id: str) -> str:
    """The full id of the job `job_id` names (an id or a unique prefix)."""
    # A session of its own, ended here: SQLite's transactions take the write lock at BEGIN,
    # and the action that follows opens its own.
    with state_of(current_app).sessions() as session:
        return jobs.resolve_job_id(session, job_id)


def _json_object(allowed: set[str], required: set[str]) -> dict[str, Any]:
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        # `silent` covers ValueError only; JSON nested deeper than the parser recurses (a few
        # KiB of "[") is not an object either.
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "body: must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, "invalid_request", f"{unknown[0]}: unknown field")
    missing = sorted(required - set(body))
    if missing:
        raise ApiError(400, "invalid_request", f"{missing[0]}: required")
    return body


@bp.get("/models")
def list_models() -> ResponseReturnValue:
    """The catalog with per-file status and sizes; missing models included and flagged."""
    state = state_of(current_app)
    models, pending = services.catalog_view(state.sessions, state.settings, state.catalog)
    # Pending only while a refresher will answer: with CATALOG_REFRESH_SECONDS=0 none will.
    return jsonify(
        models=models, metadataPending=pending and state.settings.catalog_refresh_seconds > 0
    )


@bp.get("/models/<model_id>/files")
def model_files(model_id: str) -> ResponseReturnValue:
    """Per-file status of one model: path, exists, size, humanSize, partial bytes."""
    return jsonify(model_status(state_of(current_app).settings.models_dir, _model(model_id)))


@bp.post("/models/<model_id>/download")
def download_model(model_id: str) -> ResponseReturnValue:
    """Start a job for the model's missing files (202), or say it is present (200)."""
    model = _model(model_id)
    state = state_of(current_app)
    try:
        job = services.start_model_download(state.sessions, state.dispatcher, state.settings, model)
    except NothingToDownloadError as exc:
        return jsonify(modelId=model.id, allPresent=True, message=str(exc)), 200
    return _accepted(job)


@bp.post("/downloads")
def download_files() -> ResponseReturnValue:
    """An ad-hoc job: `{repo, files: [...], revision?}` (202)."""
    body = _json_object({"repo", "files", "revision"}, {"repo", "files"})
    repo, files, revision = body["repo"], body["files"], body.get("revision", "main")
    if not isinstance(repo, str):
        raise ApiError(400, "invalid_request", "repo: must be a string like org/name")
    if not isinstance(files, list) or not files or len(files) > MAX_FILES:
        raise ApiError(400, "invalid_request", f"files: must be a list of 1 to {MAX_FILES} names")
    for i, name in enumerate(files):
        if not isinstance(name, str):
            raise ApiError(400, "invalid_request", f"files[{i}]: must be a string")
        if len(name) > MAX_NAME:
            raise ApiError(400, "invalid_request", f"files[{i}]: at most {MAX_NAME} characters")
    if not isinstance(revision, str) or not revision:
        raise ApiError(400, "invalid_request", "revision: must be a non-empty string")
    # Ad-hoc files land under their repo's folder (and another revision than main under one
    # that names it): two repos' "model.safetensors", a catalog model's file, or two
    # revisions of one file can never overwrite each other.
    specs = [
        jobs.FileSpec(repo, name, revision, dest=storage.repo_dest(repo, name, revision))
        for name in files
    ]
    state = state_of(current_app)
    # Checked before the Hub or the job store hear of them: the names come from users.
    specs = jobs.validate_specs(specs)
    _learn_sizes(repo, revision, [s.file_name for s in specs])
    job = services.start_files_download(state.sessions, state.dispatcher, state.settings, specs)
    return _accepted(job)


def _learn_sizes(repo: str, revision: str, names: list[str]) -> None:
    """Ask the Hub for sizes not known yet (the picker already asked), so the job's total is
    known from the start; a Hub that does not answer leaves them to the worker."""
    state = state_of(current_app)
    try:
        with state.sessions() as session:
            known = hubcache.known_sizes(session, (repo, revision), names)
        unknown = [n for n in names if n not in known]
        if not unknown:
            return
        gated, sizes = state.hub.sizes(repo, revision, unknown, timeout=QUICK_TIMEOUT)
        with state.sessions.begin() as session:
            hubcache.store_sizes(session, (repo, revision), gated, sizes, whole=False)
    except (HubAnswerError, SQLAlchemyError) as exc:
        # Sizes are a nicety: the job goes ahead, and its worker says what is wrong.
        log.info("sizes of %s unknown at creation: %s", repo, type(exc).__name__)


def _accepted(job: dict[str, Any]) -> Response:
    """202 and where to follow a new job; 200 for the job under way that was asked again."""
    response = jsonify(job)
    response.status_code = 200 if job.get("existing") else 202
    response.headers["Location"] = f"/api/models/download/status/{job['jobId']}"
    return response


@bp.get(f"/models/download/status/{JOB}")
def job_status(job_id: str) -> ResponseReturnValue:
    """One job with its files."""
    return jsonify(job_to_dict(jobs.get_job(db(), _job_id(job_id))))


@bp.get("/models/download/jobs")
def job_list() -> ResponseReturnValue:
    """Jobs newest first: `?status=&limit=&cursor=` → `{jobs, nextCursor}`."""
    raw_status = request.args.get("status")
    status = None
    if raw_status:
        try:
            status = JobStatus(raw_status)
        except ValueError:
            allowed = ", ".join(s.value for s in JobStatus)
            raise ApiError(400, "invalid_request", f"status: one of {allowed}") from None
    raw_limit = request.args.get("limit", "50")
    if not re.fullmatch(r"[0-9]{1,4}", raw_limit, re.ASCII) or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise ApiError(400, "invalid_request", f"limit: an integer from 1 to {MAX_PAGE}")
    page, cursor = jobs.list_jobs(
        db(), status=status, limit=int(raw_limit), cursor=request.args.get("cursor") or None
    )
    now = db_now(db())  # one clock for the page, not one query per job
    return jsonify(jobs=[job_to_dict(j, now=now) for j in page], nextCursor=cursor)


def _control(job_id: str, action: str) -> ResponseReturnValue:
    state = state_of(current_app)
    return jsonify(services.control_job(state.sessions, state.dispatcher, _job_id(job_id), action))


@bp.post(f"/models/download/{JOB}/cancel")
def cancel(job_id: str) -> ResponseReturnValue:
    """Cancel a job: unfinished files stop and their partials are deleted."""
    return _control(job_id, "cancel")


@bp.post(f"/models/download/{JOB}/pause")
def pause(job_id: str) -> ResponseReturnValue:
    """Pause a job: running files stop, partials are kept."""
    return _control(job_id, "pause")


@bp.post(f"/models/download/{JOB}/resume")
def resume(job_id: str) -> ResponseReturnValue:
    """Resume a paused job from its partials."""
    return _control(job_id, "resume")


@bp.post(f"/models/download/{JOB}/retry")
def retry(job_id: str) -> ResponseReturnValue:
    """Retry a failed job's failed files from their partials."""
    return _control(job_id, "retry")


@bp.delete(f"/models/download/{JOB}")
def delete(job_id: str) -> ResponseReturnValue:
    """Forget a finished job (its files stay on disk)."""
    session = db()
    jobs.delete_job(session, _job_id(job_id))
    session.commit()
    return "", 204
