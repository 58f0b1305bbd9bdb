"""Engine and session factories for the job store (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Pin the PostgreSQL driver to psycopg 3 whatever spelling the operator used."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the job store; SQLite gets WAL, a busy timeout and foreign keys."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_begin(conn: Any) -> None:
    # A deferred transaction that reads and then writes cannot wait for the write lock: if
    # another connection wrote meanwhile, SQLite fails at once with "database is locked"
    # (the busy timeout does not apply to that upgrade). Taking the write lock up front makes
    # concurrent writers queue behind the busy timeout instead. Readers in WAL mode are
    # short and wait the same way; PostgreSQL is the choice for heavy concurrency.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own would be deferred).
    dbapi_connection.isolation_level = None
    # WAL lets the web tier read while a worker writes; the busy timeout makes a second
    # writer wait for the lock instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def db_now(session: Session) -> datetime:
    """The job store's clock (aware UTC): the one clock every lease is stamped and judged by.

    Workers run on several machines whose clocks drift; a worker minutes off would otherwise
    lose its files or take over live ones. PostgreSQL answers with its server's clock (the
    moment of the call, not the start of the transaction); SQLite's clock is the machine's
    own, which every process sharing the file also reads.
    """
    if session.get_bind().dialect.name == "sqlite":
        raw = session.scalar(select(func.strftime("%Y-%m-%d %H:%M:%f", "now")))
        return datetime.fromisoformat(str(raw)).replace(tzinfo=UTC)
    value = session.scalar(select(func.clock_timestamp()))
    if not isinstance(value, datetime):
        raise TypeError(f"the database answered {value!r} for the time")
    return value.astimezone(UTC)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)
