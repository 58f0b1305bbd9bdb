"""The models catalog (`models.yaml`) and the state of its files in a models directory."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from app import storage
from app.errors import CatalogError

MODEL_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}", re.ASCII)
SHA256_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_MODEL_KEYS = frozenset({"name", "description", "files"})
_FILE_KEYS = frozenset({"repo", "file", "revision", "dest", "sha256", "size"})


@dataclass(frozen=True)
class CatalogFile:
    """One file of a catalog model."""

    repo: str
    file_name: str
    dest: str
    revision: str = "main"
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class CatalogModel:
    """A model the dashboard offers: a name and the files it needs."""

    id: str
    name: str
    description: str
    files: tuple[CatalogFile, ...]


@dataclass(frozen=True)
class Catalog:
    """Every model of the catalog, in file order."""

    models: tuple[CatalogModel, ...]

    def get(self, model_id: str) -> CatalogModel | None:
        """The model with this id, or None."""
        return next((m for m in self.models if m.id == model_id), None)


def load_catalog(path: Path) -> Catalog:
    """Read and validate a catalog file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the models catalog: {exc.strerror}") from exc
    return parse_catalog(text, source=str(path))


def parse_catalog(text: str, *, source: str = "models.yaml") -> Catalog:
    """Validate catalog YAML; errors name the line and the problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}" if mark else "?"
        raise CatalogError(f"{source}:{line}: invalid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: invalid YAML: {exc}") from exc
    return _Parser(source).catalog(root)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: Node | None, problem: str) -> CatalogError:
        line = f"line {node.start_mark.line + 1}" if node is not None else "line 1"
        return CatalogError(f"{self.source}:{line}: {problem}")

    def mapping(self, node: Node, what: str) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                raise self.fail(key, f"{what} has a key that is not a string")
            if key.value in out:
                raise self.fail(key, f"{what} has {key.value!r} twice")
            out[key.value] = (key, value)
        return out

    def scalar(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode) or node.value == "":
            raise self.fail(node, f"{what} must be a non-empty string")
        return str(node.value)

    def catalog(self, root: Node | None) -> Catalog:
        if root is None:
            raise self.fail(None, "the catalog is empty; it needs a 'models' mapping")
        top = self.mapping(root, "the catalog")
        if "models" not in top:
            raise self.fail(root, "the catalog needs a top-level 'models' mapping")
        unknown = set(top) - {"models"}
        if unknown:
            key = top[sorted(unknown)[0]][0]
            raise self.fail(key, f"unknown top-level key {key.value!r}")
        models_node = top["models"][1]
        entries = self.mapping(models_node, "'models'")
        if not entries:
            raise self.fail(models_node, "'models' is empty")
        return Catalog(tuple(self.model(k, v) for k, v in entries.values()))

    def model(self, key: Node, node: Node) -> CatalogModel:
        model_id = str(key.value)
        if not MODEL_ID_RE.fullmatch(model_id):
            raise self.fail(key, f"model id {model_id!r} must be lowercase letters, digits, .-_")
        fields = self.mapping(node, f"model {model_id!r}")
        for name, (k, _) in fields.items():
            if name not in _MODEL_KEYS:
                raise self.fail(k, f"model {model_id!r} has unknown key {name!r}")
        if "files" not in fields:
            raise self.fail(key, f"model {model_id!r} needs a 'files' list")
        files_node = fields["files"][1]
        if not isinstance(files_node, SequenceNode) or not files_node.value:
            raise self.fail(files_node, f"model {model_id!r}: 'files' must be a non-empty list")
        files = tuple(self.file(model_id, n) for n in files_node.value)
        seen: dict[str, Node] = {}
        for f, n in zip(files, files_node.value, strict=True):
            if f.dest in seen:
                raise self.fail(n, f"model {model_id!r} names destination {f.dest!r} twice")
            seen[f.dest] = n
        name = self.scalar(fields["name"][1], "name") if "name" in fields else model_id
        description = ""
        if "description" in fields:
            description = self.scalar(fields["description"][1], "description")
        return CatalogModel(id=model_id, name=name, description=description, files=files)

    def file(self, model_id: str, node: Node) -> CatalogFile:
        what = f"a file of model {model_id!r}"
        fields = self.mapping(node, what)
        for name, (k, _) in fields.items():
            if name not in _FILE_KEYS:
                raise self.fail(k, f"{what} has unknown key {name!r}")
        for required in ("repo", "file"):
            if required not in fields:
                raise self.fail(node, f"{what} needs '{required}'")
        values: dict[str, Any] = {}
        repo_node = fields["repo"][1]
        try:
            values["repo"] = storage.check_repo_id(self.scalar(repo_node, "repo"))
            file_node = fields["file"][1]
            values["file_name"] = storage.check_relative_path(self.scalar(file_node, "file"))
        except ValueError as exc:
            bad = repo_node if "repo" not in values else fields["file"][1]
            raise self.fail(bad, f"{what}: {exc}") from None
        values["dest"] = values["file_name"]
        if "dest" in fields:
            dest_node = fields["dest"][1]
            try:
                values["dest"] = storage.check_relative_path(self.scalar(dest_node, "dest"))
            except ValueError as exc:
                raise self.fail(dest_node, f"{what}: dest {exc}") from None
        if "revision" in fields:
            values["revision"] = self.scalar(fields["revision"][1], "revision")
        if "sha256" in fields:
            sha_node = fields["sha256"][1]
            sha = self.scalar(sha_node, "sha256").lower()
            if not SHA256_RE.fullmatch(sha):
                raise self.fail(sha_node, f"{what}: sha256 must be 64 hex digits")
            values["sha256"] = sha
        if "size" in fields:
            size_node = fields["size"][1]
            raw = self.scalar(size_node, "size")
            if not raw.isdigit() or int(raw) <= 0:
                raise self.fail(size_node, f"{what}: size must be a positive integer of bytes")
            values["size"] = int(raw)
        return CatalogFile(**values)


def human_size(n: int | None) -> str | None:
    """Bytes in binary units, the way a download manager shows them (e.g. '8.2 GiB')."""
    if n is None:
        return None
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class FileState:
    """What is on disk for one catalog file."""

    file: CatalogFile
    path: Path
    exists: bool
    size: int | None
    partial_bytes: int | None

    @property
    def present(self) -> bool:
        """The file is there and, when the catalog knows its size, has it."""
        return self.exists and (self.file.size is None or self.size == self.file.size)

    def to_dict(self) -> dict[str, Any]:
        """The wire form (camelCase)."""
        return {
            "repo": self.file.repo,
            "revision": self.file.revision,
            "fileName": self.file.file_name,
            "dest": self.file.dest,
            "path": str(self.path),
            "exists": self.exists,
            "present": self.present,
            "size": self.size,
            "expectedSize": self.file.size,
            "humanSize": human_size(self.size if self.exists else self.file.size),
            "partialBytes": self.partial_bytes,
            "sha256": self.file.sha256,
        }


def file_state(models_dir: Path, file: CatalogFile) -> FileState:
    """Inspect one file's destination and partial."""
    path = storage.dest_path(models_dir, file.dest)
    try:
        st = path.stat()
        exists, size = path.is_file(), st.st_size
    except FileNotFoundError:
        exists, size = False, None
    partial = None if exists else storage.partial_bytes(models_dir, file.dest)
    return FileState(file=file, path=path, exists=exists, size=size, partial_bytes=partial)


def model_status(models_dir: Path, model: CatalogModel) -> dict[str, Any]:
    """A model with per-file status and `allPresent`, in wire form."""
    states = [file_state(models_dir, f) for f in model.files]
    return {
        "id": model.id,
        "name": model.name,
        "description": model.description,
        "allPresent": all(s.present for s in states),
        "files": [s.to_dict() for s in states],
    }


def missing_files(models_dir: Path, model: CatalogModel) -> list[CatalogFile]:
    """The model's files that are not present yet."""
    return [f for f in model.files if not file_state(models_dir, f).present]
