"""File contents for the imitation Hub: sources, hashing, and storage on disk.

Every repo file ends up as a file on disk (so bodies can go out with sendfile) plus its
sha256 and git blob sha1, computed while the file is written or read, in chunks: nothing
holds a large file in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK_SIZE = 1 << 20

# Mirrors the usual .gitattributes of a Hub repo: weights and archives go to LFS.
LFS_EXTENSIONS = frozenset(
    {
        ".bin",
        ".safetensors",
        ".gguf",
        ".pt",
        ".pth",
        ".ckpt",
        ".onnx",
        ".h5",
        ".msgpack",
        ".pkl",
        ".npy",
        ".npz",
        ".ot",
        ".tflite",
        ".parquet",
        ".arrow",
        ".zip",
        ".gz",
        ".tar",
        ".zst",
    }
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
LFS_POINTER_VERSION = "https://git-lfs.github.com/spec/v1"


@dataclass(frozen=True)
class BytesFile:
    """Small in-memory content; `lfs=None` lets the size/extension rule decide."""

    data: bytes
    lfs: bool | None = None


@dataclass(frozen=True)
class GeneratedFile:
    """Deterministic pseudo-random content of `size` bytes from `seed`, written once to disk."""

    size: int
    seed: int = 0
    lfs: bool | None = None

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("size must be >= 0")


@dataclass(frozen=True)
class DiskFile:
    """An existing file on disk, served as-is (never copied)."""

    path: Path
    lfs: bool | None = None


FileSource = bytes | str | BytesFile | GeneratedFile | DiskFile


@dataclass(frozen=True)
class Blob:
    """Content stored on disk with its digests."""

    disk_path: Path
    size: int
    sha256: str
    git_sha1: str


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The text of the git-lfs pointer file for an object."""
    return f"version {LFS_POINTER_VERSION}\noid sha256:{sha256}\nsize {size}\n".encode()


def is_lfs(path: str, size: int, explicit: bool | None) -> bool:
    """Decide whether a repo file is stored in LFS (explicit choice, else size or extension)."""
    if explicit is not None:
        return explicit
    return size > LFS_SIZE_THRESHOLD or os.path.splitext(path)[1].lower() in LFS_EXTENSIONS


def source_lfs(source: FileSource) -> bool | None:
    """The explicit LFS choice carried by a source, if any."""
    if isinstance(source, BytesFile | GeneratedFile | DiskFile):
        return source.lfs
    return None


def generate_chunks(seed: int, size: int) -> Iterator[bytes]:
    """Yield the content of a GeneratedFile chunk by chunk.

    Whole CHUNK_SIZE blocks are drawn and the last one truncated, so a shorter file with
    the same seed is a prefix of a longer one.
    """
    rng = random.Random(seed)
    remaining = size
    while remaining > 0:
        block = rng.randbytes(CHUNK_SIZE)
        if remaining < CHUNK_SIZE:
            block = block[:remaining]
        remaining -= len(block)
        yield block


class BlobStore:
    """Materializes file sources on disk under a data directory and remembers their digests."""

    def __init__(self, data_dir: Path, cache_dir: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.blobs_dir = self.data_dir / "blobs"
        # Generated files are costly to make; a shared cache_dir lets many hubs reuse them.
        self.generated_dir = Path(cache_dir) if cache_dir is not None else self.data_dir
        self.generated_dir = self.generated_dir / "generated"
        self._lock = threading.Lock()
        # Hashing a multi-GiB file on every start of a standalone hub is slow, so digests of
        # disk files are kept in the data dir, keyed by path, size and mtime.
        self._digests_file = self.data_dir / "disk-digests.json"
        self._disk_digests: dict[str, list[str]] = {}
        if self._digests_file.exists():
            try:
                self._disk_digests = json.loads(self._digests_file.read_text())
            except (OSError, ValueError):
                self._disk_digests = {}

    def store(self, source: FileSource) -> Blob:
        """Return the blob for a source, writing it to disk first when needed."""
        if isinstance(source, str):
            source = source.encode()
        if isinstance(source, BytesFile):
            source = source.data
        if isinstance(source, bytes | bytearray | memoryview):
            return self._store_bytes(bytes(source))
        if isinstance(source, GeneratedFile):
            return self._store_generated(source)
        if isinstance(source, DiskFile):
            return self._digest_disk_file(Path(source.path))
        if isinstance(source, os.PathLike):
            return self._digest_disk_file(Path(source))
        raise TypeError(f"unsupported file source: {type(source).__name__}")

    def _store_bytes(self, data: bytes) -> Blob:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blobs_dir / sha256
        if not path.exists():
            self.blobs_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{sha256}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return Blob(path, len(data), sha256, git_blob_sha1(data))

    def _store_generated(self, spec: GeneratedFile) -> Blob:
        path = self.generated_dir / f"gen-{spec.seed}-{spec.size}.bin"
        sidecar = path.with_suffix(".json")
        with self._lock:
            if path.exists() and sidecar.exists():
                meta = json.loads(sidecar.read_text())
                if meta.get("size") == spec.size and path.stat().st_size == spec.size:
                    return Blob(path, spec.size, meta["sha256"], meta["git_sha1"])
            self.generated_dir.mkdir(parents=True, exist_ok=True)
            sha256 = hashlib.sha256()
            sha1 = hashlib.sha1(b"blob %d\0" % spec.size, usedforsecurity=False)
            # A unique temp name plus rename keeps concurrent test processes from
            # ever seeing a half-written file under the final name.
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "wb") as out:
                for block in generate_chunks(spec.seed, spec.size):
                    sha256.update(block)
                    sha1.update(block)
                    out.write(block)
            os.replace(tmp, path)
            meta = {"size": spec.size, "sha256": sha256.hexdigest(), "git_sha1": sha1.hexdigest()}
            sidecar_tmp = sidecar.with_name(sidecar.name + f".{os.getpid()}.tmp")
            sidecar_tmp.write_text(json.dumps(meta))
            os.replace(sidecar_tmp, sidecar)
            return Blob(path, spec.size, meta["sha256"], meta["git_sha1"])

    def _digest_disk_file(self, path: Path) -> Blob:
        path = path.resolve()
        st = path.stat()
        key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}"
        with self._lock:
            cached = self._disk_digests.get(key)
        if cached is None:
            sha256 = hashlib.sha256()
            sha1 = hashlib.sha1(b"blob %d\0" % st.st_size, usedforsecurity=False)
            with open(path, "rb") as f:
                while block := f.read(CHUNK_SIZE):
                    sha256.update(block)
                    sha1.update(block)
            cached = [sha256.hexdigest(), sha1.hexdigest()]
            with self._lock:
                self._disk_digests[key] = cached
                self._save_digests()
        return Blob(path, st.st_size, cached[0], cached[1])

    def _save_digests(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = self._digests_file.with_name(f"{self._digests_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._disk_digests))
            os.replace(tmp, self._digests_file)
        except OSError:
            pass  # only a cache: a read-only data dir costs a re-hash next time
