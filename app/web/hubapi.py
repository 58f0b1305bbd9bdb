"""The repo picker's API, `GET /api/hub/repo`: any Hub repo's files with their sizes, named by
a repo id or a Hub URL, before anything is downloaded. Picked files are downloaded with
`POST /api/downloads`, like any ad-hoc job."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from app import hubcache, storage
from app.hubmeta import RepoListing, RepoRef, parse_repo_ref
from app.web.errors import ApiError
from app.web.state import state_of

bp = Blueprint("hubapi", __name__, url_prefix="/api/hub")


def _present(dest: str, size: int) -> bool:
    try:
        path = storage.dest_path(state_of(current_app).settings.models_dir, dest)
        return path.is_file() and path.stat().st_size == size
    except (OSError, ValueError):
        return False


def _check_pointed(ref: RepoRef, listing: RepoListing) -> None:
    """A URL that named a file or folder the repo does not have says so."""
    paths = {f.path for f in listing.files}
    where = f"at {ref.revision}"
    if ref.selected is not None and ref.selected not in paths:
        raise ApiError(404, "not_found", f"{ref.repo} has no file {ref.selected!r} {where}")
    if ref.folder is not None and not any(p.startswith(ref.folder + "/") for p in paths):
        raise ApiError(404, "not_found", f"{ref.repo} has no folder {ref.folder!r} {where}")


@bp.get("/repo")
def repo() -> ResponseReturnValue:
    """A repo's files with sizes: `?id=<repo id or Hub URL>&revision=` (a URL's revision wins)."""
    state = state_of(current_app)
    ref = parse_repo_ref(
        request.args.get("id"),
        endpoint=state.settings.hf_endpoint,
        revision=request.args.get("revision") or "main",
    )
    listing = state.hub.listing(ref.repo, ref.revision)
    with state.sessions.begin() as session:
        hubcache.store_listing(session, listing)
    _check_pointed(ref, listing)
    access, message = "unknown", None
    if listing.gated and listing.files:
        granted = state.hub.may_download(ref.repo, listing.commit, listing.files[0].path)
        access = "granted" if granted else "denied"
        if not granted:
            message = (
                f"{ref.repo} is gated: accept its terms on the Hub with your account, then set "
                "HF_TOKEN to a token of that account where the workers run"
            )
    elif not listing.gated:
        access = "granted"
    files: list[dict[str, Any]] = []
    for f in listing.files:
        dest = storage.repo_dest(ref.repo, f.path, ref.revision)
        files.append(
            {
                "path": f.path,
                "size": f.size,
                "lfs": f.lfs,
                "dest": dest,
                "present": _present(dest, f.size),
            }
        )
    return jsonify(
        repo=ref.repo,
        revision=ref.revision,
        commit=listing.commit,
        gated=listing.gated or False,
        access=access,
        message=message,
        selected=ref.selected,
        folder=ref.folder,
        totalBytes=sum(f.size for f in listing.files),
        files=files,
    )
