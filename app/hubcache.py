"""What the Hub last said about repos, kept in the job store (`hub_repo`, `hub_file`): the
catalog's sizes before anything is downloaded, a job's total when it is created, and the
repo picker's listing. Refreshed now and then (`refresh_catalog`), never trusted to check a
file: the worker asks the Hub again, at the job's commit, before it downloads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from app.catalog import Catalog
from app.db import db_now
from app.hubmeta import HubAnswerError, HubMeta, RepoListing
from app.jobs import lock_creation
from app.models import HubFile, HubRepo
from app.scrub import scrub

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (repo, revision)


@dataclass(frozen=True)
class RepoFacts:
    """What is known of one repo at a revision."""

    gated: str
    error: str | None
    checked_at: datetime
    sizes: dict[str, int]


def _repo_row(session: Session, key: Key) -> HubRepo:
    """The repo's row, made if it is new. Two processes may meet a repo for the first time at
    once (two web replicas refreshing, the refresher and the picker): on PostgreSQL an
    advisory lock lets one insert it and the other see it; SQLite's writers already queue."""
    lock_creation(session, f"hub:{key[0]}@{key[1]}")
    row = session.get(HubRepo, key)
    if row is None:
        row = HubRepo(repo=key[0], revision=key[1], gated="")
        session.add(row)
    return row


def store_listing(session: Session, listing: RepoListing) -> None:
    """Keep a whole listing (the picker's): it replaces what was known of the repo."""
    key = (listing.repo, listing.revision)
    row = _repo_row(session, key)
    row.commit, row.gated, row.error = listing.commit, listing.gated, None
    row.checked_at = db_now(session)
    session.execute(delete(HubFile).where(HubFile.repo == key[0], HubFile.revision == key[1]))
    session.add_all(
        HubFile(repo=key[0], revision=key[1], path=f.path, size=f.size, lfs=f.lfs)
        for f in listing.files
    )


def store_sizes(
    session: Session, key: Key, gated: str, sizes: dict[str, int], *, whole: bool = True
) -> None:
    """Keep the sizes of some files of a repo, replacing theirs only. `whole`: these are all
    the files asked about (the catalog's), so an earlier error no longer holds; an ad-hoc
    job's few files leave the catalog's error as it was."""
    row = _repo_row(session, key)
    row.gated, row.checked_at = gated, db_now(session)
    if whole:
        row.error = None
    if sizes:
        session.execute(
            delete(HubFile).where(
                HubFile.repo == key[0], HubFile.revision == key[1], HubFile.path.in_(list(sizes))
            )
        )
    session.add_all(
        HubFile(repo=key[0], revision=key[1], path=p, size=n, lfs=False) for p, n in sizes.items()
    )


def store_error(session: Session, key: Key, error: str) -> None:
    """Say why the Hub could not tell; sizes learnt before are kept."""
    row = _repo_row(session, key)
    row.error, row.checked_at = scrub(error), db_now(session)


def facts(session: Session, keys: Iterable[Key]) -> dict[Key, RepoFacts]:
    """What is known of each repo (absent: never asked)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    repos = session.scalars(
        select(HubRepo).where(tuple_(HubRepo.repo, HubRepo.revision).in_(wanted))
    ).all()
    out = {(r.repo, r.revision): RepoFacts(r.gated, r.error, r.checked_at, {}) for r in repos}
    rows = session.execute(
        select(HubFile.repo, HubFile.revision, HubFile.path, HubFile.size).where(
            tuple_(HubFile.repo, HubFile.revision).in_(list(out))
        )
    ).all()
    for repo, revision, path, size in rows:
        out[(repo, revision)].sizes[path] = size
    return out


def catalog_keys(catalog: Catalog) -> dict[Key, list[str]]:
    """Each (repo, revision) of the catalog and the files it names there."""
    out: dict[Key, list[str]] = {}
    for model in catalog.models:
        for f in model.files:
            names = out.setdefault((f.repo, f.revision), [])
            if f.file_name not in names:
                names.append(f.file_name)
    return out


def refresh_catalog(
    factory: sessionmaker[Session],
    hub: HubMeta,
    catalog: Catalog,
    *,
    stop: threading.Event | None = None,
) -> int:
    """Ask the Hub for the sizes of every catalog file; returns how many repos answered."""
    answered = 0
    for key, names in catalog_keys(catalog).items():
        if stop is not None and stop.is_set():
            break
        try:
            gated, sizes = hub.sizes(key[0], key[1], names)
        except HubAnswerError as exc:
            log.warning("catalog sizes of %s: %s", key[0], scrub(str(exc)))
            with factory.begin() as session:
                store_error(session, key, str(exc))
            continue
        missing = [n for n in names if n not in sizes]
        with factory.begin() as session:
            store_sizes(session, key, gated, sizes)
            if missing:
                store_error(session, key, f"{key[0]}: no file {missing[0]!r} on the Hub")
        answered += 1
    return answered


def known_sizes(session: Session, key: Key, names: Sequence[str]) -> dict[str, int]:
    """The sizes known of some files of a repo."""
    known = facts(session, [key]).get(key)
    if known is None:
        return {}
    return {n: known.sizes[n] for n in names if n in known.sizes}
