"""Where files live under MODELS_DIR: destinations, partial files and their sidecars."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from app import sidecar

# Partial files live in a hidden folder on the same filesystem as their destination, so the
# final rename is atomic, and out of the way of tools that scan the models directory.
WORK_DIRNAME = ".modelpull"
DEFAULT_REVISION = "main"
PARTIAL_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"

_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID_RE = re.compile(rf"{_REPO_PART}/{_REPO_PART}", re.ASCII)
_FORBIDDEN_CHARS = frozenset('\\\x00:*?"<>|')
# Bidirectional overrides make a name read differently from what it is ("Trojan Source").
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Filesystems take 255 bytes per name, and the longest work file made from a destination is
# the sidecar's temporary name (".part.json.tmp" added to the last segment): a longer name
# would be accepted and then fail on the worker's first write.
MAX_SEGMENT_BYTES = 255 - len(SIDECAR_SUFFIX + sidecar.TMP_SUFFIX)


def _forbidden(ch: str) -> bool:
    # Controls (C0, DEL and C1, whose 0x9B is a terminal's CSI) would rewrite a log line or
    # a terminal; surrogates cannot be encoded as a file name at all.
    code = ord(ch)
    return (
        ch in _FORBIDDEN_CHARS
        or code < 0x20
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code < 0xE000
        or ch in _BIDI_CONTROLS
    )


def check_repo_id(value: object) -> str:
    """Return a Hub repo id (`org/name`) or raise ValueError saying what is wrong."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a repo id like org/name")
    # fullmatch: "$" would let a trailing newline through.
    if "--" in value or ".." in value or not REPO_ID_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a repo id like org/name")
    return value


def check_relative_path(value: object) -> str:
    """Return a normalised relative POSIX path that stays inside its root, or raise ValueError."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty relative path")
    if len(value) > 1000:
        raise ValueError("is longer than 1000 characters")
    if any(_forbidden(ch) for ch in value):
        raise ValueError(f"{value!r} contains a forbidden character")
    path = PurePosixPath(value)
    if path.is_absolute():
        raise ValueError(f"{value!r} is an absolute path")
    # Check the raw segments: PurePosixPath would quietly drop "." and empty ones.
    segments = value.split("/")
    if any(seg in ("", ".", "..") or not seg.strip() for seg in segments):
        raise ValueError(f"{value!r} is not a plain relative file path")
    if any(len(seg.encode()) > MAX_SEGMENT_BYTES for seg in segments):
        raise ValueError(f"a part of {value!r} is longer than {MAX_SEGMENT_BYTES} bytes")
    if segments[0] == WORK_DIRNAME:
        raise ValueError(f"{value!r} is inside the service's own work folder")
    return str(path)


def repo_dest(repo: str, file_name: str, revision: str = DEFAULT_REVISION) -> str:
    """Where an ad-hoc file goes: under its repo's folder, and for any revision but the
    default one under a folder that names the revision (`org/name@v1.0/model.gguf`), so two
    revisions of a file never share a destination."""
    if revision == DEFAULT_REVISION:
        return f"{repo}/{file_name}"
    return f"{repo}@{quote(revision, safe='')}/{file_name}"


def dest_path(models_dir: Path, dest: str) -> Path:
    """The absolute destination of a file, refusing anything that escapes models_dir."""
    root = models_dir.resolve()
    target = (root / check_relative_path(dest)).resolve()
    # resolve() follows symlinks: a link planted inside the models dir must not lead out.
    if target != root and root not in target.parents:
        raise ValueError(f"{dest!r} escapes the models directory")
    return target


def work_dir(models_dir: Path) -> Path:
    """The hidden folder for partial files."""
    return models_dir / WORK_DIRNAME / "partial"


def partial_path(models_dir: Path, dest: str) -> Path:
    """The partial file that becomes `dest` once complete and verified."""
    return work_dir(models_dir) / (check_relative_path(dest) + PARTIAL_SUFFIX)


def sidecar_path(models_dir: Path, dest: str) -> Path:
    """The sidecar recording which byte ranges of the partial file are done."""
    return work_dir(models_dir) / (check_relative_path(dest) + SIDECAR_SUFFIX)


def remove_partial(models_dir: Path, dest: str) -> None:
    """Delete the partial file of `dest` and its sidecar (either may be missing already)."""
    for path in (partial_path(models_dir, dest), sidecar_path(models_dir, dest)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def partial_bytes(models_dir: Path, dest: str) -> int | None:
    """Bytes already fetched for `dest`, or None when no partial exists."""
    part = partial_path(models_dir, dest)
    if not part.exists():
        return None
    done = sidecar.done_bytes(sidecar_path(models_dir, dest))
    # No usable sidecar: the partial was written front to back, so its size is the count.
    return part.stat().st_size if done is None else done
