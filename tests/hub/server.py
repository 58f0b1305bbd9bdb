"""The imitation Hub: a loopback Hugging Face Hub plus a "CDN" on another hostname.

See tests/hub/README.md for the protocol it speaks, the repos-dir format and the fault API.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import mimetypes
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from tests.hub.content import Blob, BlobStore, FileSource, is_lfs, source_lfs
from tests.hub.faults import Fault, FaultSet, Host
from tests.hub.repos import FileInfo, Repo, build_repo, check_repo_path

logger = logging.getLogger(__name__)

VALID_TOKEN = "hf_valid_token"
OTHER_TOKEN = "hf_other_token"
DEFAULT_TOKENS = (VALID_TOKEN, OTHER_TOKEN)
# Well-formed but unknown to the hub: gets 401 "Invalid credentials".
BAD_TOKEN = "hf_unknown_token"
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
SIGNED_URL_EXPIRES = 3600
_SLOW_CHUNK = 64 * 1024


@dataclass
class RecordedRequest:
    """One request as the hub or the CDN saw it."""

    host: Host
    method: str
    path: str
    headers: dict[str, str]
    client: str
    time: float
    status: int | None = None
    body_bytes: int = 0

    @property
    def url_path(self) -> str:
        """The path without the query string."""
        return self.path.partition("?")[0]

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (first value of each)."""
        return {k: v[0] for k, v in parse_qs(self.path.partition("?")[2]).items()}

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name."""
        return self.headers.get(name.lower())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (used by the admin API)."""
        return {
            "host": self.host,
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "client": self.client,
            "time": self.time,
            "status": self.status,
            "body_bytes": self.body_bytes,
        }


@dataclass(frozen=True)
class _Route:
    kind: str
    repo_type: str = "model"
    repo_id: str | None = None
    revision: str | None = None
    path: str = ""


class _Disconnect(Exception):
    """The handler dropped the connection on purpose (a fault, or the hub stopping)."""


_UNSATISFIABLE = (-1, -1)


def parse_range(header: str, total: int) -> tuple[int, int] | None:
    """Parse a single `bytes=` range into inclusive (start, end).

    None means "ignore the header and send the whole file" (malformed, multiple ranges),
    as RFC 9110 allows; `_UNSATISFIABLE` means 416.
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                return _UNSATISFIABLE
            return (max(total - suffix, 0), total - 1) if total else _UNSATISFIABLE
        start = int(first)
        end = int(last) if last else total - 1
    except ValueError:
        return None
    if start < 0 or (last and end < start):
        return None
    if start >= total:
        return _UNSATISFIABLE
    return start, min(end, total - 1)


def if_range_matches(value: str, etag: str, last_modified: str) -> bool:
    """Strong comparison of an If-Range validator (etag with or without quotes, or the date)."""
    value = value.strip()
    if value.startswith("W/"):
        return False
    return value.strip('"') == etag or value == last_modified


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], hub: ImitationHub, role: Host) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.hub = hub
        self.role: Host = role
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-body is routine here (faults, cancelled downloads).
        logger.debug("connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ImitationHub/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    # Idle keep-alive connections are closed after this; stop() closes them sooner.
    timeout = 300
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.hub._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._untrack(self.connection)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.server.role, format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- plumbing -------------------------------------------------------------------------

    @property
    def hub(self) -> ImitationHub:
        return self.server.hub

    def _dispatch(self) -> None:
        url_path, _, query = self.path.partition("?")
        self._record: RecordedRequest | None = None
        self._headers_sent = False
        try:
            self._request_body = self._read_body()
            if not url_path.startswith("/_admin/"):
                self._record = self.hub._log_request(
                    self.server.role, self.command, self.path, self.headers, self.client_address
                )
                if self.hub.latency:  # a far-away server: every answer starts this late
                    self.hub._stopping.wait(self.hub.latency)
            if self.server.role == "cdn":
                self._cdn(url_path, query)
            else:
                self._hub(url_path, query)
        except (_Disconnect, ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            # A bug in the hub must not look like a network fault to the test using it.
            logger.exception("imitation hub failed on %s %s", self.command, self.path)
            self.close_connection = True
            if not self._headers_sent:
                self._error(500, "imitation hub bug, see the test log")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        self._headers_sent = True
        if self._record is not None:
            self._record.status = status
        self.send_response(status)
        for name, value in headers:
            # http.server writes headers as strict latin-1; repo paths and revisions need not be.
            self.send_header(name, value.encode("latin-1", "replace").decode("latin-1"))
        self.end_headers()

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        all_headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("X-Request-Id", uuid.uuid4().hex),
            *headers,
        ]
        self._start(status, all_headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8", headers)

    def _error(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        all_headers = [("X-Error-Message", message), *headers]
        if code is not None:
            all_headers.insert(0, ("X-Error-Code", code))
        self._json(status, {"error": message}, all_headers)

    def _cdn_error(self, status: int, code: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code></Error>'
        self._send(status, body.encode(), "application/xml", headers)

    def _fault_response(self, fault: Fault, *, cdn: bool) -> None:
        headers = list(fault.headers.items())
        if fault.retry_after is not None:
            headers.append(("Retry-After", str(fault.retry_after)))
        status = fault.status or 500
        if cdn:
            self._cdn_error(status, "InjectedFault", headers)
        else:
            self._error(status, f"Injected fault: HTTP {status}", headers=headers)

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        raise _Disconnect

    def _token(self) -> tuple[str | None, bool]:
        """The bearer token (None if absent) and whether the hub knows it."""
        auth = self.headers.get("Authorization")
        if auth is None:
            return None, True
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, False
        return token, token in self.hub.tokens

    # -- the Hub --------------------------------------------------------------------------

    def _route(self, url_path: str) -> _Route:
        parts = [unquote(p) for p in url_path.split("/")[1:]]
        if parts[:1] == ["api"]:
            return self._api_route(parts[1:])
        repo_type, rest = "model", parts
        if parts[:1] in (["datasets"], ["spaces"]):
            repo_type, rest = parts[0][:-1], parts[1:]
        if len(rest) >= 4 and rest[2] == "resolve":
            return _Route("resolve", repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
        if len(rest) >= 3 and rest[1] == "resolve":
            return _Route("resolve", repo_type, rest[0], rest[2], "/".join(rest[3:]))
        return _Route("unknown")

    def _api_route(self, parts: list[str]) -> _Route:
        if parts == ["agent-harnesses"]:
            return _Route("harnesses")
        if parts == ["whoami-v2"]:
            return _Route("whoami")
        if len(parts) < 2 or parts[0] not in ("models", "datasets", "spaces"):
            return _Route("unknown")
        repo_type, rest = parts[0][:-1], parts[1:]
        # Repo ids are sent unquoted, so `org/name` vs a legacy one-part `name` is ambiguous:
        # prefer a repo the hub knows, else assume `org/name`.
        two = "/".join(rest[:2])
        if len(rest) >= 2 and self.hub.has_repo(two, repo_type=repo_type):
            n = 2
        elif self.hub.has_repo(rest[0], repo_type=repo_type):
            n = 1
        else:
            n = min(2, len(rest))
        repo_id, tail = "/".join(rest[:n]), rest[n:]
        if not tail:
            return _Route("info", repo_type, repo_id)
        if tail[0] == "revision" and len(tail) == 2:
            return _Route("info", repo_type, repo_id, tail[1])
        if tail[0] == "tree" and len(tail) >= 2:
            return _Route("tree", repo_type, repo_id, tail[1], "/".join(tail[2:]))
        if tail[0] == "paths-info" and len(tail) == 2:
            return _Route("paths-info", repo_type, repo_id, tail[1])
        return _Route("unknown", repo_type, repo_id)

    def _hub(self, url_path: str, query: str) -> None:
        if url_path.startswith("/_admin/"):
            self._admin(url_path, query)
            return
        route = self._route(url_path)
        # Status faults come first: they stand for a proxy or load balancer in front of the app.
        fault = self.hub.faults.take(
            "status",
            host="hub",
            method=self.command,
            url_path=url_path,
            repo_id=route.repo_id,
            file_paths=(route.path,) if route.kind == "resolve" and route.path else (),
        )
        if fault is not None:
            self._fault_response(fault, cdn=False)
            return
        if route.kind in ("harnesses", "unknown"):
            self._error(404, "Not Found")
            return
        token, known = self._token()
        if not known:
            # The real Hub sends no X-Error-Code here; huggingface_hub keys on the message.
            self._error(401, INVALID_CREDENTIALS)
            return
        if route.kind == "whoami":
            if token is None:
                self._error(401, INVALID_CREDENTIALS)
            else:
                self._json(
                    200, {"type": "user", "name": "tester", "auth": {"type": "access_token"}}
                )
            return
        repo = self._check_access(route, token)
        if repo is None:
            return
        revision = route.revision
        if revision is not None and not repo.has_revision(revision):
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return
        if route.kind == "resolve":
            self._resolve(repo, route.path)
        elif route.kind == "info":
            blobs = parse_qs(query).get("blobs", ["false"])[0].lower() == "true"
            self._json(200, repo.info_json(blobs=blobs))
        elif route.kind == "tree":
            self._tree(repo, route.path, query)
        elif route.kind == "paths-info":
            self._paths_info(repo)

    def _check_access(self, route: _Route, token: str | None) -> Repo | None:
        """The repo if the token may read it; otherwise send the Hub's error and return None."""
        repo = self.hub.get_repo(route.repo_id or "", repo_type=route.repo_type)
        if repo is None or (repo.private and token not in repo.approved_tokens):
            # Like the real Hub: no token gets 401, a token without access gets 404.
            self._error(401 if token is None else 404, "Repository not found", "RepoNotFound")
            return None
        gated_route = route.kind == "resolve" or self.hub.gate_metadata
        if repo.gated and gated_route and token not in repo.approved_tokens:
            kind = repo.repo_type
            if token is None:
                message = (
                    f"Access to {kind} {repo.repo_id} is restricted. You must have access to it "
                    "and be authenticated to access it. Please log in."
                )
                self._error(401, message, "GatedRepo")
            else:
                message = (
                    f"Access to {kind} {repo.repo_id} is restricted and you are not in the "
                    f"authorized list. Visit {self.hub.url}/{repo.url_prefix} to ask for access."
                )
                self._error(403, message, "GatedRepo")
            return None
        return repo

    def _resolve(self, repo: Repo, path: str) -> None:
        info = repo.files.get(path)
        if info is None:
            # X-Repo-Commit lets huggingface_hub cache the miss under .no_exist/<commit>/.
            self._error(404, "Entry not found", "EntryNotFound", [("X-Repo-Commit", repo.commit)])
            return
        if info.lfs and self.hub.cdn_redirect:
            location = self.hub.cdn_location(info)
            # The redirect's own ETag is the pointer's git oid, not the sha256: clients must
            # read X-Linked-Etag / X-Linked-Size, as with the real Hub.
            self._send(
                302,
                f"Found. Redirecting to {location}".encode(),
                "text/plain; charset=utf-8",
                [
                    ("Location", location),
                    ("X-Repo-Commit", repo.commit),
                    ("ETag", f'"{info.blob_id}"'),
                    ("X-Linked-Etag", f'"{info.sha256}"'),
                    ("X-Linked-Size", str(info.size)),
                    ("Vary", "Origin, Accept"),
                ],
            )
            return
        extra = [("X-Repo-Commit", repo.commit)]
        if info.lfs:
            extra += [("X-Linked-Etag", f'"{info.sha256}"'), ("X-Linked-Size", str(info.size))]
        self._serve_file(info, etag=info.etag, host="hub", headers=extra)

    def _tree(self, repo: Repo, sub_path: str, query: str) -> None:
        params = parse_qs(query)
        recursive = params.get("recursive", ["false"])[0].lower() == "true"
        expand = params.get("expand", ["false"])[0].lower() == "true"
        entries = repo.tree_json(sub_path, recursive=recursive, expand=expand)
        if entries is None:
            self._error(
                404,
                f"Entry not found: {sub_path}",
                "EntryNotFound",
                [("X-Repo-Commit", repo.commit)],
            )
            return
        self._json(200, entries)

    def _paths_info(self, repo: Repo) -> None:
        if self.command != "POST":
            self._error(405, "Method not allowed")
            return
        content_type = self.headers.get("Content-Type", "")
        body = self._request_body.decode("utf-8", "replace")
        if content_type.startswith("application/json"):
            data = json.loads(body or "{}")
            paths, expand = data.get("paths", []), bool(data.get("expand"))
        else:
            form = parse_qs(body)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() == "true"
        self._json(200, repo.paths_info_json(paths, expand=expand))

    # -- file bodies ----------------------------------------------------------------------

    def _serve_file(
        self,
        info: FileInfo,
        *,
        etag: str,
        host: Host,
        headers: Iterable[tuple[str, str]] = (),
        file_paths: tuple[str, ...] | None = None,
    ) -> None:
        headers = list(headers)
        size = info.size
        last_modified = self.hub.last_modified_header(info)
        fault = None
        if self.command == "GET":
            fault = self.hub.faults.take(
                "body",
                host=host,
                method=self.command,
                url_path=self.path.partition("?")[0],
                repo_id=info.repo_id,
                file_paths=file_paths or (info.path,),
            )
        byte_range = None
        range_header = self.headers.get("Range")
        if range_header and not (fault is not None and fault.ignore_range):
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range_matches(if_range, etag, last_modified):
                byte_range = parse_range(range_header, size)
        if byte_range == _UNSATISFIABLE:
            self._send(
                416,
                b"",
                "text/plain; charset=utf-8",
                [("Content-Range", f"bytes */{size}"), ("Accept-Ranges", "bytes")],
            )
            return
        name = info.path.rsplit("/", 1)[-1]
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        start, length = 0, size
        all_headers = [
            ("Content-Type", content_type),
            ("Accept-Ranges", "bytes"),
            ("ETag", f'"{etag}"'),
            ("Last-Modified", last_modified),
            ("X-Request-Id", uuid.uuid4().hex),
        ]
        names = {n.lower() for n, _ in headers}
        if "content-disposition" not in names:
            ascii_name = name.encode("ascii", "replace").decode().replace('"', "_")
            disposition = f"inline; filename*=UTF-8''{quote(name)}; filename=\"{ascii_name}\";"
            all_headers.append(("Content-Disposition", disposition))
        all_headers += headers
        status = 200
        if byte_range is not None:
            start, end = byte_range
            length = end - start + 1
            status = 206
            all_headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        all_headers.insert(1, ("Content-Length", str(length)))
        self._start(status, all_headers)
        if self.command == "HEAD" or length == 0:
            return
        self._stream(info.disk_path, start, length, fault)

    def _stream(self, path: Path, start: int, length: int, fault: Fault | None) -> None:
        bandwidth = fault.bandwidth if fault is not None and fault.bandwidth else None
        bandwidth = bandwidth or self.hub.bandwidth
        with open(path, "rb") as f:
            if fault is None and bandwidth is None:
                # sendfile keeps the hub far from being the bottleneck of a benchmark.
                sent = self.connection.sendfile(f, start, length)
                if self._record is not None:
                    self._record.body_bytes = sent
                if sent < length:
                    self._drop()
                return
            self._stream_shaped(f.fileno(), start, length, fault, bandwidth)

    def _stream_shaped(
        self,
        fd: int,
        start: int,
        length: int,
        fault: Fault | None,
        bandwidth: int | None,
    ) -> None:
        drop_at = fault.drop_after if fault is not None else None
        stall_at = fault.stall_after if fault is not None else None
        corrupt_at = fault.corrupt_offset if fault is not None else None
        chunk = _SLOW_CHUNK
        if bandwidth:
            # About 20 writes a second keeps the pace smooth even for small caps.
            chunk = max(1024, min(chunk, bandwidth // 20))
        sent = 0
        began = time.monotonic()
        stalled = False
        while True:
            if drop_at is not None and sent >= drop_at:
                self._drop()
            if fault is not None and stall_at is not None and not stalled and sent >= stall_at:
                stalled = True
                self.wfile.flush()
                self.hub._sleep(fault.stall_seconds)
                if fault.stall_then == "close":
                    self._drop()
                if bandwidth:
                    began = time.monotonic() - sent / bandwidth
            if sent >= length:
                return
            n = min(chunk, length - sent)
            if drop_at is not None:
                n = min(n, drop_at - sent)
            if stall_at is not None and not stalled:
                n = min(n, stall_at - sent)
            pos = start + sent
            data = os.pread(fd, n, pos)
            if not data:
                self._drop()
            if corrupt_at is not None and pos <= corrupt_at < pos + len(data):
                buf = bytearray(data)
                buf[corrupt_at - pos] ^= 0xFF
                data = bytes(buf)
            self.wfile.write(data)
            sent += len(data)
            if self._record is not None:
                self._record.body_bytes = sent
            if bandwidth:
                delay = began + sent / bandwidth - time.monotonic()
                if delay > 0:
                    self.hub._sleep(delay)

    # -- the CDN --------------------------------------------------------------------------

    def _cdn(self, url_path: str, query: str) -> None:
        parts = url_path.split("/")
        sha256 = parts[2] if len(parts) == 3 and parts[1] == "lfs" else ""
        entries = self.hub.files_by_sha256(sha256) if sha256 else []
        fault = self.hub.faults.take(
            "status",
            host="cdn",
            method=self.command,
            url_path=url_path,
            repo_id=entries[0].repo_id if entries else None,
            file_paths=tuple(e.path for e in entries),
        )
        if fault is not None:
            self._fault_response(fault, cdn=True)
            return
        if self.command not in ("GET", "HEAD"):
            self._cdn_error(405, "MethodNotAllowed")
            return
        if not entries:
            self._cdn_error(404, "NoSuchKey")
            return
        params = parse_qs(query)
        if not hmac.compare_digest(params.get("sig", [""])[0], self.hub.sign(sha256)):
            # A client that drops or mangles the signed query (huggingface_hub <= 1.29 did
            # on relative redirects) gets what S3 would answer.
            self._cdn_error(403, "AccessDenied")
            return
        info = entries[0]
        disposition = params.get("response-content-disposition", [None])[0]
        headers = [("Content-Disposition", disposition)] if disposition else []
        self._serve_file(
            info,
            etag=self.hub.cdn_etag_of(info),
            host="cdn",
            headers=headers,
            file_paths=tuple(e.path for e in entries),
        )

    # -- admin ----------------------------------------------------------------------------

    def _admin(self, url_path: str, query: str) -> None:
        parts = url_path.split("/")[2:]
        method = self.command
        hub = self.hub
        try:
            if parts == ["faults"] and method == "GET":
                self._json(200, {"faults": hub.faults.to_list()})
            elif parts == ["faults"] and method == "POST":
                data = json.loads(self._request_body or b"{}")
                specs = data if isinstance(data, list) else [data]
                added = [hub.faults.add(Fault.from_dict(spec)) for spec in specs]
                self._json(201, {"faults": [f.to_dict() for f in added]})
            elif parts == ["faults"] and method == "DELETE":
                self._json(200, {"cleared": hub.faults.clear()})
            elif len(parts) == 2 and parts[0] == "faults" and method == "DELETE":
                removed = hub.faults.remove(int(parts[1]))
                self._json(200 if removed else 404, {"removed": removed})
            elif parts == ["requests"] and method == "GET":
                self._json(200, {"requests": [r.to_dict() for r in hub.requests]})
            elif parts == ["requests"] and method == "DELETE":
                hub.clear_requests()
                self._json(200, {"cleared": True})
            elif parts == ["config"] and method in ("GET", "POST"):
                if method == "POST":
                    hub.configure(**json.loads(self._request_body or b"{}"))
                self._json(200, hub.config())
            elif parts == ["repos"] and method == "GET":
                self._json(200, {"repos": [hub.repo_summary(r) for r in hub.repos()]})
            else:
                self._json(404, {"error": f"no admin route {method} {url_path}"})
        except (ValueError, TypeError, KeyError) as exc:
            self._json(400, {"error": str(exc)})


class ImitationHub:
    """A loopback Hub (`url`) and CDN (`cdn_url`) serving repos built from bytes or files."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        cdn_hostname: str = "localhost",
        hub_hostname: str | None = None,
        tokens: Iterable[str] = DEFAULT_TOKENS,
        cdn_redirect: bool = True,
        bandwidth: int | None = None,
        gate_metadata: bool = False,
        cdn_etag: str = "sha256",
        cache_dir: Path | str | None = None,
        request_log_size: int = 100_000,
    ) -> None:
        self._own_data_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="imitation-hub-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = BlobStore(self.data_dir, Path(cache_dir) if cache_dir else None)
        self.tokens: set[str] = set(tokens)
        self.cdn_redirect = cdn_redirect
        self.bandwidth = bandwidth
        # Seconds before each answer (Hub and CDN): what a real, distant Hub costs per request.
        self.latency = 0.0
        self.gate_metadata = gate_metadata
        self.cdn_etag = _check_cdn_etag(cdn_etag)
        self.faults = FaultSet()
        self._host = host
        self._ports = (port, cdn_port)
        self._hub_hostname = hub_hostname or (
            "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
        )
        self._cdn_hostname = cdn_hostname
        self._secret = os.urandom(16)
        self._repos: dict[tuple[str, str], Repo] = {}
        self._generations: dict[tuple[str, str], int] = {}
        self._by_sha256: dict[str, list[FileInfo]] = {}
        self._repos_lock = threading.RLock()
        self._log: deque[RecordedRequest] = deque(maxlen=request_log_size)
        self._log_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._stopping = threading.Event()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> ImitationHub:
        """Bind both listeners and serve them from daemon threads."""
        if self._servers:
            return self
        self._stopping.clear()
        roles: tuple[Host, Host] = ("hub", "cdn")
        for role, port in zip(roles, self._ports, strict=True):
            server = _Server((self._host, port), self, role)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"imitation-{role}",
                daemon=True,
            )
            self._servers.append(server)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        """Close the listeners and every open connection; remove a temp data dir."""
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> ImitationHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ImitationHub {self.url if self._servers else 'stopped'}>"

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The Hub's port."""
        return self._server("hub").server_address[1]

    @property
    def cdn_port(self) -> int:
        """The CDN's port."""
        return self._server("cdn").server_address[1]

    @property
    def url(self) -> str:
        """The Hub endpoint, e.g. for HF_ENDPOINT: `http://127.0.0.1:PORT`."""
        return f"http://{_url_host(self._hub_hostname)}:{self.port}"

    @property
    def cdn_url(self) -> str:
        """The CDN origin, on another hostname than the Hub: `http://localhost:PORT`."""
        return f"http://{_url_host(self._cdn_hostname)}:{self.cdn_port}"

    def resolve_url(
        self, repo_id: str, path: str, *, revision: str = "main", repo_type: str = "model"
    ) -> str:
        """The resolve URL a client would use for a file."""
        prefix = repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"
        return f"{self.url}/{prefix}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def cdn_location(self, info: FileInfo) -> str:
        """The signed CDN URL that resolve redirects an LFS file to."""
        name = info.path.rsplit("/", 1)[-1]
        disposition = quote(f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";")
        return (
            f"{self.cdn_url}/lfs/{info.sha256}?response-content-disposition={disposition}"
            f"&X-Amz-Expires={SIGNED_URL_EXPIRES}&sig={self.sign(info.sha256)}"
        )

    def cdn_etag_of(self, info: FileInfo) -> str:
        """The CDN's ETag for an object: its sha256, or with cdn_etag="opaque" an S3-like md5."""
        if self.cdn_etag == "sha256":
            return info.sha256
        return hashlib.md5(info.sha256.encode(), usedforsecurity=False).hexdigest()

    def sign(self, sha256: str) -> str:
        """The fake signature the CDN accepts for an object."""
        return hmac.new(self._secret, sha256.encode(), hashlib.sha256).hexdigest()[:32]

    # -- repos ----------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, FileSource],
        *,
        repo_type: str = "model",
        private: bool = False,
        gated: bool | str = False,
        approved_tokens: Iterable[str] = (),
        branches: Iterable[str] = ("main",),
    ) -> Repo:
        """Create or replace a repo; sources are bytes, str, BytesFile, GeneratedFile, DiskFile."""
        stored = {
            check_repo_path(path): self._store(path, source) for path, source in files.items()
        }
        with self._repos_lock:
            key = (repo_type, repo_id)
            old = self._repos.get(key)
            return self._commit(
                key,
                stored,
                private=private,
                gated=gated,
                approved_tokens=approved_tokens,
                branches=branches,
                created_at=old.created_at if old else None,
            )

    def put_file(
        self, repo_id: str, path: str, source: FileSource, *, repo_type: str = "model"
    ) -> Repo:
        """Add or replace one file; the repo gets a new commit sha."""
        stored = self._store(check_repo_path(path), source)
        with self._repos_lock:
            repo = self.repo(repo_id, repo_type=repo_type)
            files = _blobs_of(repo)
            files[path] = stored
            return self._recommit(repo, files)

    def delete_file(self, repo_id: str, path: str, *, repo_type: str = "model") -> Repo:
        """Remove one file; the repo gets a new commit sha."""
        with self._repos_lock:
            repo = self.repo(repo_id, repo_type=repo_type)
            files = _blobs_of(repo)
            del files[path]
            return self._recommit(repo, files)

    def update_repo(
        self,
        repo_id: str,
        *,
        repo_type: str = "model",
        private: bool | None = None,
        gated: bool | str | None = None,
        approved_tokens: Iterable[str] | None = None,
        branches: Iterable[str] | None = None,
    ) -> Repo:
        """Change access settings or branches; the content and commit stay the same."""
        with self._repos_lock:
            repo = self.repo(repo_id, repo_type=repo_type)
            key = repo.key
            new = build_repo(
                repo_id,
                repo_type,
                _blobs_of(repo),
                generation=self._generations[key],
                private=repo.private if private is None else private,
                gated=repo.gated if gated is None else gated,
                approved_tokens=(
                    repo.approved_tokens if approved_tokens is None else approved_tokens
                ),
                branches=repo.branches if branches is None else branches,
                created_at=repo.created_at,
            )
            self._repos[key] = new
            self._reindex()
            return new

    def remove_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        """Forget a repo (its commit history counter is kept, so re-adding gets a new sha)."""
        with self._repos_lock:
            self._repos.pop((repo_type, repo_id), None)
            self._reindex()

    def has_repo(self, repo_id: str, *, repo_type: str = "model") -> bool:
        """Whether the hub serves this repo."""
        return (repo_type, repo_id) in self._repos

    def get_repo(self, repo_id: str, *, repo_type: str = "model") -> Repo | None:
        """The repo's current snapshot, or None."""
        return self._repos.get((repo_type, repo_id))

    def repo(self, repo_id: str, *, repo_type: str = "model") -> Repo:
        """The repo's current snapshot (KeyError if missing)."""
        repo = self.get_repo(repo_id, repo_type=repo_type)
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r}")
        return repo

    def repos(self) -> list[Repo]:
        """All repos, sorted by type and id."""
        with self._repos_lock:
            return [self._repos[k] for k in sorted(self._repos)]

    def commit(self, repo_id: str, *, repo_type: str = "model") -> str:
        """The repo's current commit sha."""
        return self.repo(repo_id, repo_type=repo_type).commit

    def file_info(self, repo_id: str, path: str, *, repo_type: str = "model") -> FileInfo:
        """Size, sha256, git sha1, etag, LFS flag, commit and disk path of a repo file."""
        return self.repo(repo_id, repo_type=repo_type).files[path]

    def files_by_sha256(self, sha256: str) -> list[FileInfo]:
        """Every repo file with this content (what the CDN serves for an object)."""
        return self._by_sha256.get(sha256, [])

    def repo_summary(self, repo: Repo) -> dict[str, Any]:
        """JSON-friendly description of a repo (admin API)."""
        return {
            "repo_id": repo.repo_id,
            "repo_type": repo.repo_type,
            "commit": repo.commit,
            "private": repo.private,
            "gated": repo.gated,
            "files": [f.to_dict() for f in repo.files.values()],
        }

    def last_modified_header(self, info: FileInfo) -> str:
        """The Last-Modified value sent with a file (the repo's last change)."""
        repo = self.get_repo(info.repo_id, repo_type=info.repo_type)
        when = repo.last_modified if repo is not None else None
        return format_datetime(when, usegmt=True) if when else ""

    def _store(self, path: str, source: FileSource) -> tuple[Blob, bool]:
        blob = self.store.store(source)
        return blob, is_lfs(path, blob.size, source_lfs(source))

    def _recommit(self, repo: Repo, files: dict[str, tuple[Blob, bool]]) -> Repo:
        return self._commit(
            repo.key,
            files,
            private=repo.private,
            gated=repo.gated,
            approved_tokens=repo.approved_tokens,
            branches=repo.branches,
            created_at=repo.created_at,
        )

    def _commit(
        self, key: tuple[str, str], files: Mapping[str, tuple[Blob, bool]], **settings: Any
    ) -> Repo:
        # A new generation for every content change: clients cache trees and snapshots by
        # commit and treat them as immutable, so the same sha must never mean new content.
        generation = self._generations.get(key, 0) + 1
        repo = build_repo(key[1], key[0], files, generation=generation, **settings)
        self._generations[key] = generation
        self._repos[key] = repo
        self._reindex()
        return repo

    def _reindex(self) -> None:
        index: dict[str, list[FileInfo]] = {}
        for repo in self._repos.values():
            for info in repo.files.values():
                if info.lfs:
                    index.setdefault(info.sha256, []).append(info)
        self._by_sha256 = index

    # -- settings -------------------------------------------------------------------------

    def configure(
        self,
        *,
        cdn_redirect: bool | None = None,
        bandwidth: int | str | None = "unchanged",
        gate_metadata: bool | None = None,
        cdn_etag: str | None = None,
        tokens: Iterable[str] | None = None,
    ) -> None:
        """Change hub-wide switches (also reachable as `POST /_admin/config`)."""
        if cdn_redirect is not None:
            self.cdn_redirect = bool(cdn_redirect)
        if bandwidth != "unchanged":
            if bandwidth is not None and (not isinstance(bandwidth, int) or bandwidth <= 0):
                raise ValueError("bandwidth must be a positive int or null")
            self.bandwidth = bandwidth
        if gate_metadata is not None:
            self.gate_metadata = bool(gate_metadata)
        if cdn_etag is not None:
            self.cdn_etag = _check_cdn_etag(cdn_etag)
        if tokens is not None:
            self.tokens = set(tokens)

    def config(self) -> dict[str, Any]:
        """The hub-wide switches and addresses."""
        return {
            "url": self.url,
            "cdn_url": self.cdn_url,
            "cdn_redirect": self.cdn_redirect,
            "bandwidth": self.bandwidth,
            "gate_metadata": self.gate_metadata,
            "cdn_etag": self.cdn_etag,
            "tokens": sorted(self.tokens),
        }

    # -- request log ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request seen so far by the hub and the CDN (admin calls excluded), in order."""
        with self._log_lock:
            return list(self._log)

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._log_lock:
            self._log.clear()

    def _log_request(
        self, role: Host, method: str, path: str, headers: Any, client: Any
    ) -> RecordedRequest:
        merged: dict[str, str] = {}
        for name, value in headers.items():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        record = RecordedRequest(
            host=role,
            method=method,
            path=path,
            headers=merged,
            client=f"{client[0]}:{client[1]}",
            time=time.time(),
        )
        with self._log_lock:
            self._log.append(record)
        return record

    # -- internals used by handlers -------------------------------------------------------

    def _server(self, role: Host) -> _Server:
        for server in self._servers:
            if server.role == role:
                return server
        raise RuntimeError("the hub is not started")

    def _track(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._connections.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._connections.discard(conn)

    def _sleep(self, seconds: float) -> None:
        """Sleep in a handler, but wake up (and drop the connection) when the hub stops."""
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Disconnect


def _blobs_of(repo: Repo) -> dict[str, tuple[Blob, bool]]:
    return {
        path: (Blob(info.disk_path, info.size, info.sha256, info.git_sha1), info.lfs)
        for path, info in repo.files.items()
    }


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_cdn_etag(style: str) -> str:
    if style not in ("sha256", "opaque"):
        raise ValueError("cdn_etag must be 'sha256' or 'opaque'")
    return style
