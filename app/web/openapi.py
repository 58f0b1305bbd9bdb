"""`GET /api/openapi.json`: the API described in OpenAPI 3.1 (a test checks it against the
app's routes, so the two cannot drift apart)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from app.models import JobStatus
from app.storage import MAX_SEGMENT_BYTES

bp = Blueprint("openapi", __name__)

_ERROR = {"$ref": "#/components/schemas/Error"}
_JOB = {"$ref": "#/components/schemas/Job"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (the message names the field), or not a WebSocket handshake",
        401: "Missing or wrong credentials",
        403: "Cross-site request refused (origin or CSRF token)",
        404: "Unknown model, job, repo, revision or file",
        409: "Not allowed in the job's current state, or a job id prefix that matches several",
        413: "Body too large",
        422: "A repo too large for the picker to list",
        502: "The Hub did not answer, or refused the Hub token",
        503: "Not ready",
    }
    return {str(c): _json(_ERROR, text[c]) for c in (401, *codes)}


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "A job id, or a unique prefix of one (4 hex digits at least)",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{4,32}$"},
}
_MODEL_ID = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}


# The request schema says what `app.storage` and `app.jobs` accept (ECMA-262 patterns), so a
# client can validate before sending and a fuzzer knows where the edges are.
_REPO_PART = "[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_PATTERN = rf"^(?!.*--)(?!.*\.\.){_REPO_PART}/{_REPO_PART}$"
REVISION_PATTERN = r"^(?!.*\.\.)(?!.*/$)[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"
# A file name: "/"-separated parts, none empty, "." or "..", nor blank, nor over 241 bytes
# (the pattern counts characters); no controls, bidi overrides or \\:*?"<>|; not in .modelpull.
_NAME_CHAR = r'[^\x00-\x1f\x7f-\x9f\\/:*?"<>|\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]'
_BLANK = r"[ \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"  # what str.strip() drops
_SEGMENT = rf"(?!\.{{1,2}}(?:/|$))(?!{_BLANK}+(?:/|$)){_NAME_CHAR}{{1,{MAX_SEGMENT_BYTES}}}"
FILE_PATTERN = rf"^(?!\.modelpull(?:/|$)){_SEGMENT}(?:/{_SEGMENT})*$"
_JOB_LINKS = {
    op: {"operationId": op, "parameters": {"job_id": "$response.body#/jobId"}}
    for op in ("jobStatus", "cancelJob", "pauseJob", "resumeJob", "retryJob", "deleteJob")
}


def _control(verb: str, text: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"{verb}Job",
            "summary": text,
            "parameters": [_JOB_ID],
            "responses": {"200": _json(_JOB, "The job after the change"), **_errors(403, 404, 409)},
        }
    }


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    file_schema = {
        "type": "object",
        "properties": {
            k: {"type": t}
            for k, t in {
                "fileId": "string", "fileIndex": "integer", "repo": "string",
                "revision": "string", "fileName": "string", "dest": "string",
                "size": ["integer", "null"], "sha256": ["string", "null"], "status": "string",
                "bytesDownloaded": "integer", "attempts": "integer",
                "error": ["string", "null"], "stderr": ["string", "null"],
                "heartbeatAt": ["string", "null"], "waitingForWorker": "boolean",
            }.items()
        },
    }  # fmt: skip
    job_schema = {
        "type": "object",
        "required": ["jobId", "status", "files"],
        "properties": {
            "jobId": {"type": "string"},
            "modelId": {"type": ["string", "null"]},
            "status": {
                "enum": ["queued", "downloading", "paused", "completed", "failed", "cancelled"]
            },
            "method": {"type": "string"},
            "createdAt": {"type": "string", "format": "date-time"},
            "startedAt": {"type": ["string", "null"]},
            "finishedAt": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]},
            "totalBytes": {"type": ["integer", "null"]},
            "bytesDownloaded": {"type": "integer"},
            "files": {"type": "array", "items": file_schema},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "modelpull", "version": "1", "description": "Model downloads"},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "modelpull_session"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "Job": job_schema,
            },
        },
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": {
            "/api/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "The catalog with per-file status; missing models flagged",
                    "responses": {"200": _json({"type": "object"}, "Models"), **_errors()},
                }
            },
            "/api/models/{model_id}/files": {
                "get": {
                    "operationId": "modelFiles",
                    "summary": "Per-file status of a model",
                    "parameters": [_MODEL_ID],
                    "responses": {"200": _json({"type": "object"}, "Files"), **_errors(404)},
                }
            },
            "/api/models/{model_id}/download": {
                "post": {
                    "operationId": "downloadModel",
                    "summary": "Start a job for the model's missing files",
                    "parameters": [_MODEL_ID],
                    "responses": {
                        "202": {**_json(_JOB, "The job, queued"), "links": _JOB_LINKS},
                        "200": _json(
                            {"type": "object"},
                            "Every file is already present, or the model's job under way "
                            "(existing: true)",
                        ),
                        **_errors(403, 404),
                    },
                }
            },
            "/api/downloads": {
                "post": {
                    "operationId": "downloadFiles",
                    "summary": "An ad-hoc job for files of one repo",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["repo", "files"],
                                    "properties": {
                                        "repo": {"type": "string", "pattern": REPO_PATTERN},
                                        "files": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": 100,
                                            "uniqueItems": True,
                                            "items": {
                                                "type": "string",
                                                "maxLength": 800,
                                                "pattern": FILE_PATTERN,
                                            },
                                        },
                                        "revision": {
                                            "type": "string",
                                            "pattern": REVISION_PATTERN,
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {**_json(_JOB, "The job, queued"), "links": _JOB_LINKS},
                        "200": _json(_JOB, "A job under way that holds every file (existing)"),
                        **_errors(400, 403, 413),
                    },
                }
            },
            "/api/hub/repo": {
                "get": {
                    "operationId": "hubRepo",
                    "summary": "A Hub repo's files with sizes, named by repo id or Hub URL",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "query",
                            "required": True,
                            "description": "org/name, or a Hub URL: https://huggingface.co/"
                            "org/name[/blob|resolve|tree/<revision>/<path>]",
                            "schema": {"type": "string", "pattern": REPO_PATTERN},
                        },
                        {
                            "name": "revision",
                            "in": "query",
                            "schema": {"type": "string", "pattern": REVISION_PATTERN},
                        },
                    ],
                    "responses": {
                        "200": _json({"type": "object"}, "The repo's files"),
                        **_errors(400, 404, 422, 502),
                    },
                }
            },
            "/api/models/download/status/{job_id}": {
                "get": {
                    "operationId": "jobStatus",
                    "summary": "A job with its files",
                    "parameters": [_JOB_ID],
                    "responses": {"200": _json(_JOB, "The job"), **_errors(404)},
                }
            },
            "/api/models/download/jobs": {
                "get": {
                    "operationId": "listJobs",
                    "summary": "Jobs, newest first, a page at a time",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "description": "Only jobs in this state (empty: every state)",
                            "schema": {"enum": ["", *(s.value for s in JobStatus)]},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "jobs": {"type": "array", "items": _JOB},
                                    "nextCursor": {"type": ["string", "null"]},
                                },
                            },
                            "A page of jobs",
                        ),
                        **_errors(400),
                    },
                }
            },
            "/api/models/download/{job_id}/cancel": _control("cancel", "Cancel a job"),
            "/api/models/download/{job_id}/pause": _control("pause", "Pause a job"),
            "/api/models/download/{job_id}/resume": _control("resume", "Resume a paused job"),
            "/api/models/download/{job_id}/retry": _control("retry", "Retry a failed job"),
            "/api/models/download/{job_id}": {
                "delete": {
                    "operationId": "deleteJob",
                    "summary": "Forget a finished job; its files stay",
                    "parameters": [_JOB_ID],
                    "responses": {"204": {"description": "Forgotten"}, **_errors(403, 404, 409)},
                }
            },
            "/api/session": {
                "get": {
                    "operationId": "readSession",
                    "summary": "Who is signed in, and the CSRF token of a cookie session",
                    "responses": {"200": _json({"type": "object"}, "The session"), **_errors()},
                },
                "post": {
                    "operationId": "createSession",
                    "summary": "Exchange the bearer token for a session cookie",
                    "responses": {"201": _json({"type": "object"}, "Signed in"), **_errors(400)},
                },
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_errors()},
                }
            },
            "/ws": {
                "get": {
                    "operationId": "websocket",
                    "summary": "WebSocket: subscribe to the download channel (snapshot, events)",
                    "responses": {
                        "101": {"description": "Switching protocols"},
                        **_errors(400, 403),
                    },
                }
            },
            "/login": {
                "get": {
                    "operationId": "loginPage",
                    "summary": "The sign-in page",
                    "security": [],
                    "responses": {"200": {"description": "HTML"}},
                },
                "post": {
                    "operationId": "login",
                    "summary": "Form sign-in: a token for a session cookie",
                    "security": [],
                    "responses": {
                        "302": {"description": "Signed in"},
                        "401": {"description": "Wrong token"},
                    },
                },
            },
            "/logout": {
                "post": {
                    "operationId": "logout",
                    "summary": "End the cookie session",
                    "responses": {"302": {"description": "Signed out"}, **_errors(403)},
                }
            },
            "/": {
                "get": {
                    "operationId": "home",
                    "summary": "Dashboard home: redirects to /models",
                    "responses": {"302": {"description": "To the models page"}},
                }
            },
            "/models": {
                "get": {
                    "operationId": "modelsPage",
                    "summary": "Dashboard: the models and live downloads (HTML)",
                    "responses": {
                        "200": {"description": "HTML"},
                        "302": {"description": "Sign in"},
                    },
                }
            },
            "/jobs": {
                "get": {
                    "operationId": "jobsPage",
                    "summary": "Dashboard: the history of jobs (HTML)",
                    "responses": {
                        "200": {"description": "HTML"},
                        "302": {"description": "Sign in"},
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": {"description": "Alive"}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: the job store and Redis answer, MODELS_DIR is writable",
                    "security": [],
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": _json(_ERROR, "Names what is unreachable"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text/plain"}, **_errors()},
                }
            },
        },
    }


@bp.get("/api/openapi.json")
def openapi() -> ResponseReturnValue:
    """The API's OpenAPI document."""
    return jsonify(document())
