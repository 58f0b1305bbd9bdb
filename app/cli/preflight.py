"""Checks that run before a command touches anything: `modelpull up` checks its port and its
folders before it starts a process, the token commands check that the job store exists and
is migrated before they open it. Each failure is one line that names what is wrong and
where, once, and what to do; never a traceback, and never a folder created by the check."""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

from app.settings import Settings


class PreflightError(Exception):
    """Something the command needs is not there; the message says what and what to do."""


def check_port(host: str, port: int) -> None:
    """Bind host:port the way gunicorn will (SO_REUSEADDR, so a port in TIME_WAIT passes)
    and let it go: a port someone listens on fails here, before Redis is started."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PreflightError(f"cannot listen on {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PreflightError(
                    f"port {port} is already in use; choose another with --port"
                ) from None
            raise PreflightError(
                f"cannot listen on {host}:{port}: {exc.strerror}; choose another --host or --port"
            ) from None


def check_dir(variable: str, path: Path) -> None:
    """Create `path` if needed and prove it takes a new file. OSError's str() repeats the
    path, so only its strerror goes into the message."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PreflightError(f"{variable} {path} is not a folder") from None
    except OSError as exc:
        raise PreflightError(f"{variable} {path} cannot be created: {exc.strerror}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".modelpull-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PreflightError(f"{variable} {path} is not writable: {exc.strerror}") from None


def _sqlite_path(database_url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).expanduser().resolve()


def _missing_sqlite(path: Path, environ: Mapping[str, str]) -> str:
    if (environ.get("DATABASE_URL") or "").strip():
        return f"no database at {path} (from DATABASE_URL); create it with 'modelpull db upgrade'"
    if (environ.get("DATA_DIR") or "").strip():
        where = "in DATA_DIR"
        fix = "or set DATABASE_URL"
    else:
        where = "DATA_DIR is not set, so ./data is used"
        fix = "or set DATA_DIR/DATABASE_URL"
    return f"no database at {path} ({where}); start the service once with 'modelpull up' {fix}"


def _reason(exc: Exception) -> str:
    """The driver's own words, without the host or path it repeats: psycopg says
    'connection to server at "h", port 5432 failed: Connection refused'."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return first.rsplit(": ", 1)[-1].strip() or type(orig).__name__


def shown_url(database_url: str) -> str:
    """The database as a message names it: a SQLite file by its path, any other URL
    without its password."""
    from sqlalchemy.engine import make_url

    path = _sqlite_path(database_url)
    return str(path) if path else make_url(database_url).render_as_string(hide_password=True)


def database_failure(database_url: str, exc: Exception) -> str:
    """What to say when opening or migrating the job store failed (SQLAlchemyError, or the
    OSError of a SQLite folder that cannot be made)."""
    if isinstance(exc, OSError):
        return f"cannot create the database {shown_url(database_url)}: {exc.strerror}"
    return f"cannot open the database {shown_url(database_url)}: {_reason(exc)}"


def check_database(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """The job store exists and has been migrated. A missing SQLite file is not created
    (SQLAlchemy would make it, and its folder, just by connecting)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from app.db import make_engine, normalize_url

    env = os.environ if environ is None else environ
    url = normalize_url(settings.database_url)
    path = _sqlite_path(url)
    if path is not None and not path.exists():
        raise PreflightError(_missing_sqlite(path, env))
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
    except SQLAlchemyError as exc:
        raise PreflightError(database_failure(settings.database_url, exc)) from None
    finally:
        engine.dispose()
    if not {"alembic_version", "api_token"} <= tables:
        shown = shown_url(settings.database_url)
        raise PreflightError(
            f"the database {shown} is not set up (no modelpull tables); "
            "run 'modelpull db upgrade' or start the service once with 'modelpull up'"
        )
