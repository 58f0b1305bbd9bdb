"""Authentication for every route but liveness, readiness and the login page.

- API clients and the CLI send `Authorization: Bearer <token>`.
- The dashboard exchanges a token for a signed, HttpOnly, SameSite session cookie at
  `/login` (or `POST /api/session`). Requests that change state with that cookie must carry
  the session's CSRF token in `X-CSRF-Token` and, when the browser sends one, an allowed
  `Origin`.
- The WebSocket (`/ws`) takes a bearer header, or the cookie from an allowed Origin only
  (cross-site WebSocket hijacking). All of this runs in `before_request`, that is before
  flask-sock answers `101 Switching Protocols`.
- A token in a URL query is never read, and never reaches an access log either:
  `RedactCredentials` blanks credential-like query parameters (and the Referer's) in the
  WSGI environ, from which gunicorn writes its request line, before the app runs.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus, urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from app import tokens
from app.settings import Settings
from app.web.errors import ApiError, error_response
from app.web.state import settings_of, state_of

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

bp = Blueprint("auth", __name__)

PUBLIC_ENDPOINTS = frozenset(
    {"health.healthz", "health.readyz", "auth.login_page", "auth.login_form", "static"}
)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "X-CSRF-Token"
# Query parameters that carry a credential by their name (?token=, ?access_token=, ?api_key=,
# ?X-Amz-Signature=, ...): nothing here reads them, and they must not be logged.
SECRET_PARAM_RE = re.compile(
    r"token|secret|passw|credential|signature|api[-_.]?key|^(key|auth|authorization|bearer"
    r"|session|ticket|sig|code)$",
    re.IGNORECASE,
)
REDACTED = "REDACTED"


def redact_query(query: str) -> str:
    """`query` with the value of every credential-like parameter replaced by REDACTED."""
    if "=" not in query:
        return query
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        if eq and SECRET_PARAM_RE.search(unquote_plus(name)):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return "&".join(parts)


def _redact_url(url: str) -> str:
    head, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_, fragment = rest.partition("#")
    return f"{head}?{redact_query(query)}{hash_}{fragment}"


class RedactCredentials:
    """WSGI middleware: blanks credentials in the URL's query (and the Referer's) in the
    environ, which is what the server's access log prints (gunicorn: RAW_URI, QUERY_STRING,
    HTTP_REFERER). The app never reads a token from a URL, so it loses nothing."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("QUERY_STRING"):
            environ["QUERY_STRING"] = redact_query(environ["QUERY_STRING"])
        for key in ("RAW_URI", "REQUEST_URI", "HTTP_REFERER"):
            if environ.get(key):
                environ[key] = _redact_url(environ[key])
        return self.app(environ, start_response)


def secret_key(settings: Settings) -> str:
    """SECRET_KEY, or one generated once and kept (0600) in DATA_DIR for later starts."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    tmp = Path(f"{path}.{secrets.token_hex(4)}")
    tmp.write_text(key)
    tmp.chmod(0o600)
    try:
        # Another web process may have written it first: theirs wins, so all agree.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def allowed_origins(settings: Settings) -> set[str]:
    """ALLOWED_ORIGINS, or the origin this request was addressed to."""
    if settings.allowed_origins:
        return set(settings.allowed_origins)
    own = urlsplit(request.host_url)
    return {f"{own.scheme}://{own.netloc}"}


def _origin_ok(settings: Settings) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin.rstrip("/") in allowed_origins(settings)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _unauthorized() -> ResponseReturnValue:
    response = jsonify(error="unauthorized", message="authentication required")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="modelpull"'
    return response


def authenticate() -> ResponseReturnValue | None:
    """before_request: establish who is asking, or answer 401/403."""
    if _public():
        return None
    settings = settings_of(current_app)
    presented = _bearer()
    if presented is not None:
        identity = _check_token(presented, settings)
        if identity is None:
            return _unauthorized()
        g.identity, g.auth_via = identity, "bearer"
        return None
    if not _session_valid(settings):
        if request.endpoint is not None and request.endpoint.startswith("pages."):
            return redirect(url_for("auth.login_page", next=request.path))
        return _unauthorized()
    identity = tokens.Identity(str(session["token_id"]), str(session.get("name", "")))
    g.identity, g.auth_via = identity, "cookie"
    if request.endpoint == "ws.socket" or request.path == "/ws":
        # Browsers send cookies with cross-site WebSocket handshakes: check where it came from.
        if request.headers.get("Origin", "").rstrip("/") not in allowed_origins(settings):
            return error_response(403, "forbidden", "origin not allowed")
        return None
    if request.method in UNSAFE_METHODS:
        if not _origin_ok(settings):
            return error_response(403, "forbidden", "origin not allowed")
        expected = session.get("csrf", "")
        # Scripts send the header; the plain sign-out form sends a hidden field.
        given = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token", "")
        if not expected or not _same(str(expected), given):
            return error_response(403, "csrf_failed", f"missing or wrong {CSRF_HEADER} header")
    return None


def _same(expected: str, given: str) -> bool:
    # compare_digest refuses str with non-ASCII characters (a TypeError, so a 500): compare
    # the bytes. Headers arrive as latin-1 text, so anything can be in `given`.
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass")
    )


def _public() -> bool:
    if request.endpoint is not None:
        return request.endpoint in PUBLIC_ENDPOINTS
    # Routing failed. A method a public path does not serve gets that path's 405 (with
    # Allow), as the path is no secret; anything else stays behind the 401.
    exc = request.routing_exception
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        adapter = current_app.url_map.bind_to_environ(request.environ)
        with contextlib.suppress(HTTPException):
            endpoint, _ = adapter.match(method=next(iter(exc.valid_methods)))
            return endpoint in PUBLIC_ENDPOINTS
    return False


def _check_token(presented: str, settings: Settings) -> tokens.Identity | None:
    # A short transaction of its own: the request's session must not hold the database (a
    # WebSocket lives for hours, and SQLite takes its write lock at BEGIN).
    with state_of(current_app).sessions.begin() as s:
        return tokens.authenticate(s, presented, settings.api_token)


def _env_fingerprint(settings: Settings) -> str:
    # Ties a cookie made with API_TOKEN to that value: rotating the token ends the sessions.
    key = (settings.api_token or "").encode()
    return hmac.new(key, b"modelpull-session", "sha256").hexdigest()


def _session_valid(settings: Settings) -> bool:
    token_id = session.get("token_id")
    if not isinstance(token_id, str):
        return False
    if token_id == tokens.ENV_IDENTITY.token_id:
        fingerprint = str(session.get("env", ""))
        return bool(settings.api_token) and hmac.compare_digest(
            fingerprint, _env_fingerprint(settings)
        )
    with state_of(current_app).sessions() as s:
        return tokens.is_active(s, token_id)


def _start_session(identity: tokens.Identity) -> str:
    session.clear()
    session.permanent = True
    session["token_id"] = identity.token_id
    if identity.token_id == tokens.ENV_IDENTITY.token_id:
        session["env"] = _env_fingerprint(settings_of(current_app))
    session["name"] = identity.name
    session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def _safe_next(target: str | None) -> str:
    # Only a local path: never an open redirect. Browsers drop tabs and newlines and read
    # a backslash as a slash, so "/\t/evil" would become "//evil".
    if not target or any(ord(c) < 0x21 or ord(c) == 0x7F or c == "\\" for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@bp.get("/login")
def login_page() -> ResponseReturnValue:
    """The sign-in form."""
    return render_template("login.html", next=_safe_next(request.args.get("next")), error=None)


@bp.post("/login")
def login_form() -> ResponseReturnValue:
    """Exchange a token (form field) for a session cookie."""
    settings = settings_of(current_app)
    if not _origin_ok(settings):
        return error_response(403, "forbidden", "origin not allowed")
    identity = _check_token(request.form.get("token", ""), settings)
    nxt = _safe_next(request.form.get("next"))
    if identity is None:
        page = render_template("login.html", next=nxt, error="That token is not valid.")
        return page, 401
    _start_session(identity)
    return redirect(nxt)


@bp.post("/api/session")
def create_session() -> ResponseReturnValue:
    """Bearer-authenticated: set the session cookie and return its CSRF token."""
    if g.get("auth_via") != "bearer":
        raise ApiError(400, "invalid_request", "send the token as Authorization: Bearer")
    csrf = _start_session(g.identity)
    return jsonify(name=g.identity.name, csrfToken=csrf), 201


@bp.get("/api/session")
def read_session() -> ResponseReturnValue:
    """Who is signed in, and the CSRF token a cookie session must send."""
    return jsonify(name=g.identity.name, via=g.auth_via, csrfToken=session.get("csrf"))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the cookie session."""
    session.clear()
    return redirect(url_for("auth.login_page"))


def init_app(app: Flask) -> None:
    """Cookie settings, the secret key, the auth hook and routes."""
    settings = settings_of(app)
    app.secret_key = secret_key(settings)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        SESSION_COOKIE_NAME="modelpull_session",
        PERMANENT_SESSION_LIFETIME=7 * 24 * 3600,
    )
    app.before_request(authenticate)
    app.register_blueprint(bp)
    app.wsgi_app = RedactCredentials(app.wsgi_app)  # type: ignore[method-assign]
