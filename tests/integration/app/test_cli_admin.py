"""`modelpull token` and `modelpull db` run where the service's settings are not: the
installed command in a fresh folder, saying which database it looked for and what to do,
with exit status 1 and no traceback, and creating nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.localstack import free_port

MODELPULL = str(Path(sys.executable).parent / "modelpull")
FIX = "start the service once with 'modelpull up'"


def _run(cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "DATABASE_URL")}
    return subprocess.run(
        [MODELPULL, *argv],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "argv", [["token", "list"], ["token", "create", "laptop"], ["token", "revoke", "abc"]]
)
def test_token_commands_without_data_dir_say_which_database_is_missing(
    tmp_path: Path, argv: list[str]
) -> None:
    result = _run(tmp_path, *argv)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"modelpull: no database at {tmp_path / 'data' / 'modelpull.db'} "
        f"(DATA_DIR is not set, so ./data is used); {FIX} or set DATA_DIR/DATABASE_URL\n"
    )
    assert list(tmp_path.iterdir()) == []  # no ./data, no empty database


def test_a_data_dir_without_a_database_is_named(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    result = _run(tmp_path, "token", "list", DATA_DIR=str(data))
    assert result.returncode == 1
    assert result.stderr == (
        f"modelpull: no database at {data / 'modelpull.db'} (in DATA_DIR); "
        f"{FIX} or set DATABASE_URL\n"
    )
    assert not data.exists()
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    result = _run(tmp_path, "token", "list", DATABASE_URL=url)
    assert result.stderr == (
        f"modelpull: no database at {tmp_path / 'jobs.db'} (from DATABASE_URL); "
        "create it with 'modelpull db upgrade'\n"
    )


def test_a_database_that_was_never_migrated_says_so(tmp_path: Path) -> None:
    db = tmp_path / "data" / "modelpull.db"
    db.parent.mkdir()
    sqlite3.connect(db).close()  # an empty file: no tables
    result = _run(tmp_path, "token", "list")
    assert result.returncode == 1
    assert result.stderr == (
        f"modelpull: the database {db} is not set up (no modelpull tables); "
        f"run 'modelpull db upgrade' or {FIX}\n"
    )
    assert _run(tmp_path, "db", "upgrade").returncode == 0
    created = _run(tmp_path, "token", "create", "laptop")
    assert created.returncode == 0 and created.stdout.startswith("mp_")


def test_db_commands_name_an_unreachable_database_once_without_its_password(
    tmp_path: Path,
) -> None:
    port = free_port()  # nobody listens there
    url = f"postgresql://user:s3cret-pw@127.0.0.1:{port}/jobs"
    for argv in (["token", "list"], ["db", "upgrade"]):
        result = _run(tmp_path, *argv, DATABASE_URL=url)
        assert (result.returncode, result.stdout) == (1, ""), argv
        assert result.stderr == (
            "modelpull: cannot open the database "
            f"postgresql://user:***@127.0.0.1:{port}/jobs: Connection refused\n"
        )


def test_db_upgrade_in_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    data = tmp_path / "afile" / "data"
    result = _run(tmp_path, "db", "upgrade", DATA_DIR=str(data))
    assert result.returncode == 1
    assert result.stderr == (
        f"modelpull: cannot create the database {data / 'modelpull.db'}: Not a directory\n"
    )
