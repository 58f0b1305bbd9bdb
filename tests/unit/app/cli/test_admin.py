"""`modelpull token` and `modelpull db` against a real job store (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app import migrate
from app.cli import main
from app.db import make_engine, make_session_factory
from app.tokens import authenticate
from tests.support import postgres_base_url, temporary_pg_database


def test_token_create_list_revoke(
    environ: pytest.MonkeyPatch, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    environ.setenv("DATABASE_URL", db_url)
    assert main(["token", "create", "laptop"]) == 0
    out, err = capsys.readouterr()
    plain = out.strip()
    assert plain.startswith("mp_") and out == f"{plain}\n"  # the token alone, for $(...)
    assert "(laptop); it is shown only now" in err

    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session:
            assert authenticate(session, plain, None) is not None

        assert main(["token", "list"]) == 0
        listed = capsys.readouterr().out
        token_id = listed.split()[0]
        assert f"{plain[:10]}…" in listed and "active" in listed and "laptop" in listed
        assert plain not in listed  # only the prefix is ever shown again

        assert main(["token", "revoke", plain[:10]]) == 0  # by the prefix `list` shows
        assert capsys.readouterr().out == f"revoked {token_id} (laptop)\n"
        with make_session_factory(engine)() as session:
            assert authenticate(session, plain, None) is None
        assert main(["token", "list"]) == 0
        assert "revoked" in capsys.readouterr().out
    finally:
        engine.dispose()

    assert main(["token", "revoke", "nothing"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("modelpull: ") and "nothing" in err


def _sqlite_revision(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(version)


def test_db_upgrade_migrates_the_default_sqlite_store(
    environ: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "data" / "modelpull.db"
    assert main(["db", "upgrade", "--revision", "0001"]) == 0
    assert capsys.readouterr().out == f"database is at revision 0001: sqlite:///{db}\n"
    assert _sqlite_revision(db) == "0001"
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out == f"database is at revision head: sqlite:///{db}\n"
    assert [_sqlite_revision(db)] == migrate.heads()


@pytest.mark.postgres
def test_db_upgrade_never_prints_the_password(
    environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with temporary_pg_database(postgres_base_url()) as url:
        # The test server trusts local connections: any password is accepted, none printed.
        with_password = make_url(url).set(password="s3cret-pw")
        environ.setenv("DATABASE_URL", with_password.render_as_string(hide_password=False))
        assert main(["db", "upgrade"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("database is at revision head: postgresql")
        assert "s3cret-pw" not in out and "***" in out
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                assert migrate.heads() == [
                    conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                ]
        finally:
            engine.dispose()
