"""Uniform JSON errors: `{"error": code, "message": text}`, never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app.errors import (
    AmbiguousError,
    IllegalTransitionError,
    ModelpullError,
    NotFoundError,
    NothingToDownloadError,
    ValidationError,
)
from app.hubmeta import HubAnswerError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer with a status, a code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> ResponseReturnValue:
    """The JSON error body and status."""
    return jsonify(error=code, message=message), status


def _from_domain(exc: ModelpullError) -> ResponseReturnValue:
    if isinstance(exc, ValidationError):
        return error_response(400, "invalid_request", f"{exc.field}: {exc.message}")
    if isinstance(exc, NotFoundError):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, HubAnswerError):
        return error_response(exc.status, exc.code, str(exc))
    if isinstance(exc, AmbiguousError):
        return error_response(409, "ambiguous", str(exc))
    if isinstance(exc, IllegalTransitionError):
        return error_response(409, "conflict", str(exc))
    if isinstance(exc, NothingToDownloadError):
        return error_response(409, "already_present", str(exc))
    log.error("unhandled domain error on %s %s: %s", request.method, request.path, exc)
    return error_response(500, "internal_error", "the server failed to handle the request")


def _from_http(exc: HTTPException) -> ResponseReturnValue:
    code = (exc.name or "error").lower().replace(" ", "_")
    response = jsonify(error=code, message=exc.description or exc.name)
    response.status_code = exc.code or 500
    # The exception's own headers are part of the answer: a 405 must name the allowed
    # methods in `Allow` (RFC 9110), a 429 or 503 may carry `Retry-After`.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers.add(name, value)
    return response


def _unexpected(exc: Exception) -> ResponseReturnValue:
    # The traceback goes to the server's log, never into the answer.
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "the server failed to handle the request")


def refuse_oversized_body() -> None:
    """before_request: 413 for a declared body over MAX_CONTENT_LENGTH, on every route.

    Werkzeug enforces the limit only when a view reads the body; a route that ignores its
    body would otherwise answer 2xx to a 5 MiB POST it silently dropped."""
    limit = request.max_content_length
    if limit is not None and (request.content_length or 0) > limit:
        raise RequestEntityTooLarge()


def init_app(app: Flask) -> None:
    """Register the handlers and the body-size gate (before authentication runs)."""
    app.before_request(refuse_oversized_body)
    app.register_error_handler(ApiError, lambda e: error_response(e.status, e.code, e.message))
    app.register_error_handler(ModelpullError, _from_domain)
    app.register_error_handler(HTTPException, _from_http)
    app.register_error_handler(Exception, _unexpected)
