"""The imitation Hub: a loopback Hugging Face Hub plus a "CDN" on another hostname.

See tests/hub/README.md for the protocol it speaks, the repos-dir format and the fault API.
"""

from __future__ import annotations

import base64
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
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote
from xml.sax.saxutils import escape

from tests.hub.content import (
    Blob,
    BlobStore,
    BytesFile,
    FileSource,
    GeneratedFile,
    is_lfs,
    source_lfs,
)
from tests.hub.faults import Fault, FaultSet, Host
from tests.hub.repos import (
    Commit,
    FileInfo,
    Repo,
    assemble_repo,
    build_commit,
    check_repo_path,
    check_repo_settings,
)

logger = logging.getLogger(__name__)

VALID_TOKEN = "hf_valid_token"
OTHER_TOKEN = "hf_other_token"
DEFAULT_TOKENS = (VALID_TOKEN, OTHER_TOKEN)
# Well-formed but unknown to the hub: gets 401 "Invalid credentials".
BAD_TOKEN = "hf_unknown_token"
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
SIGNED_URL_EXPIRES = 3600
CDN_ETAG_STYLES = ("sha256", "opaque", "none")
AMZ_ALGORITHM = "AWS4-HMAC-SHA256"
AMZ_REGION = "us-east-1"
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_SLOW_CHUNK = 64 * 1024
# S3's answer to an injected CDN status: its error code and message.
_S3_ERRORS = {
    400: ("InvalidRequest", "Invalid Request"),
    403: ("AccessDenied", "Access Denied"),
    404: ("NoSuchKey", "The specified key does not exist."),
    416: ("InvalidRange", "The requested range is not satisfiable"),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


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

    def _cdn_error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Iterable[tuple[str, str]] = (),
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """An S3-style XML error that echoes the request, signature included, as S3 does."""
        params = parse_qs(self.path.partition("?")[2])
        fields = [("Code", code), ("Message", message), *details]
        if "X-Amz-Expires" in params and not any(n == "X-Amz-Expires" for n, _ in fields):
            fields.append(("X-Amz-Expires", params["X-Amz-Expires"][0]))
        host = self.headers.get("Host") or self.hub.cdn_url.partition("://")[2]
        fields += [
            ("Resource", self.path.partition("?")[0]),
            ("RequestURL", f"http://{host}{self.path}"),
        ]
        signatures = params.get("X-Amz-Signature") or params.get("sig")
        if signatures:
            fields.append(("SignatureProvided", signatures[0]))
        credential = params.get("X-Amz-Credential", [""])[0]
        if credential:
            fields.append(("AWSAccessKeyId", credential.partition("/")[0]))
        request_id = uuid.uuid4().hex[:16].upper()
        fields += [("RequestId", request_id), ("HostId", base64.b64encode(os.urandom(48)).decode())]
        body = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields)
        xml = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{body}</Error>'
        self._send(
            status,
            xml.encode(),
            "application/xml",
            [("x-amz-request-id", request_id), *headers],
        )

    def _fault_response(self, fault: Fault, *, cdn: bool) -> None:
        headers = list(fault.headers.items())
        if fault.retry_after is not None:
            headers.append(("Retry-After", str(fault.retry_after)))
        status = fault.status or 500
        if cdn:
            fallback = ("InjectedFault", f"Injected fault: HTTP {status}")
            code, message = _S3_ERRORS.get(status, fallback)
            self._cdn_error(status, code, message, headers=headers)
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
        if route.revision is not None:
            # Any commit the repo ever had stays readable, as on the real Hub.
            at_revision = repo.at(route.revision)
            if at_revision is None:
                self._error(404, f"Invalid rev id: {route.revision}", "RevisionNotFound")
                return
            repo = at_revision
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
        etag: str | None,
        host: Host,
        headers: Iterable[tuple[str, str]] = (),
        file_paths: tuple[str, ...] | None = None,
    ) -> None:
        headers = list(headers)
        size = info.size
        # Without an ETag there is no Last-Modified either: no validator at all.
        last_modified = self.hub.last_modified_header(info) if etag is not None else None
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
            # A server without validators does not implement If-Range at all: it honours Range
            # whatever If-Range says, as many object-store bridges do (RFC 9110 would have it
            # send 200; add an ignore_range fault for that).
            if (
                if_range is None
                or etag is None
                or if_range_matches(if_range, etag, last_modified or "")
            ):
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
            ("X-Request-Id", uuid.uuid4().hex),
        ]
        if etag is not None:
            all_headers += [("ETag", f'"{etag}"'), ("Last-Modified", last_modified or "")]
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
        trickle_rate = fault.trickle_rate if fault is not None else None
        trickle_at = (fault.trickle_after or 0) if fault is not None and trickle_rate else None
        sent = 0
        stalled = False
        # Pacing restarts whenever the rate changes (trickle begins) or a stall ends.
        pace_rate: int | None = None
        pace_since, pace_sent = time.monotonic(), 0
        while True:
            if drop_at is not None and sent >= drop_at:
                self._drop()
            if fault is not None and stall_at is not None and not stalled and sent >= stall_at:
                stalled = True
                self.wfile.flush()
                self.hub._sleep(fault.stall_seconds)
                if fault.stall_then == "close":
                    self._drop()
                pace_since, pace_sent = time.monotonic(), sent
            if sent >= length:
                return
            trickling = trickle_at is not None and sent >= trickle_at
            rate = trickle_rate if trickling else bandwidth
            if rate != pace_rate:
                pace_rate, pace_since, pace_sent = rate, time.monotonic(), sent
            n = min(_piece_size(rate), length - sent)
            for limit in (drop_at, None if stalled else stall_at, trickle_at):
                if limit is not None and limit > sent:
                    n = min(n, limit - sent)
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
            if rate:
                delay = pace_since + (sent - pace_sent) / rate - time.monotonic()
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
            message = "The specified method is not allowed against this resource."
            self._cdn_error(405, "MethodNotAllowed", message)
            return
        if not entries:
            self._cdn_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        params = {k: v[0] for k, v in parse_qs(query).items()}
        if not self._signature_holds(url_path, sha256, params):
            return
        info = entries[0]
        disposition = params.get("response-content-disposition")
        headers = [("Content-Disposition", disposition)] if disposition else []
        self._serve_file(
            info,
            etag=self.hub.cdn_etag_of(info),
            host="cdn",
            headers=headers,
            file_paths=tuple(e.path for e in entries),
        )

    def _signature_holds(self, url_path: str, sha256: str, params: dict[str, str]) -> bool:
        """Check a presigned URL like S3 does; if it fails, send S3's 403 and return False.

        A client that drops or mangles the signed query (huggingface_hub <= 1.29 did on
        relative redirects), or comes back after the URL expired, gets what S3 would answer.
        """
        hub = self.hub
        required = (
            *("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires"),
            *("X-Amz-SignedHeaders", "X-Amz-Signature", "sig"),
        )
        if any(not params.get(name) for name in required):
            message = (
                "Query-string authentication version 4 requires the X-Amz-Algorithm, "
                "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
                "and X-Amz-Expires parameters."
            )
            self._cdn_error(403, "AccessDenied", message)
            return False
        try:
            signed_at = datetime.strptime(params["X-Amz-Date"], _AMZ_DATE).replace(tzinfo=UTC)
            lifetime = int(params["X-Amz-Expires"])
        except ValueError:
            self._cdn_error(403, "AccessDenied", "X-Amz-Date must be in the ISO8601 Long Format")
            return False
        expires_at = signed_at.timestamp() + lifetime
        now = time.time()
        if hub.cdn_expired:
            # As if the CDN's clock had run past every URL's expiry.
            now = max(now, expires_at + 1)
        if now >= expires_at:
            self._cdn_error(
                403,
                "AccessDenied",
                "Request has expired",
                details=[
                    ("X-Amz-Expires", params["X-Amz-Expires"]),
                    ("Expires", _iso_seconds(expires_at)),
                    ("ServerTime", _iso_seconds(now)),
                ],
            )
            return False
        string_to_sign = hub.string_to_sign(
            url_path, params["X-Amz-Date"], lifetime, params["X-Amz-Credential"]
        )
        expected = hub.signature(
            url_path, params["X-Amz-Date"], lifetime, params["X-Amz-Credential"]
        )
        if not (
            params["X-Amz-Algorithm"] == AMZ_ALGORITHM
            and hmac.compare_digest(params["X-Amz-Signature"], expected)
            and hmac.compare_digest(params["sig"], hub.sign(sha256))
        ):
            message = (
                "The request signature we calculated does not match the signature you "
                "provided. Check your key and signing method."
            )
            details = [("StringToSign", string_to_sign)]
            self._cdn_error(403, "SignatureDoesNotMatch", message, details=details)
            return False
        return True

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
            elif parts[:1] == ["repos"] and len(parts) > 1:
                self._admin_repo([unquote(p) for p in parts[1:]], method)
            else:
                self._json(404, {"error": f"no admin route {method} {url_path}"})
        except (ValueError, TypeError, KeyError) as exc:
            self._json(400, {"error": str(exc)})

    def _admin_repo(self, parts: list[str], method: str) -> None:
        """`/_admin/repos/[datasets/|spaces/]{repo_id}[/files|/commits|/branches]`."""
        hub = self.hub
        repo_type = "model"
        if parts[0] in ("datasets", "spaces"):
            repo_type, parts = parts[0][:-1], parts[1:]
        # As in the API routes: `org/name` unless only a one-part id names a known repo.
        n = 2
        if not hub.has_repo("/".join(parts[:2]), repo_type=repo_type) and hub.has_repo(
            parts[0], repo_type=repo_type
        ):
            n = 1
        repo_id, tail = "/".join(parts[:n]), parts[n:]
        if not hub.has_repo(repo_id, repo_type=repo_type):
            self._json(404, {"error": f"no {repo_type} repo {repo_id!r}"})
            return
        data: Any = json.loads(self._request_body or b"{}") if method == "POST" else {}
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        if not tail and method == "GET":
            repo = hub.repo(repo_id, repo_type=repo_type)
        elif tail == ["commits"] and method == "GET":
            repo = hub.repo(repo_id, repo_type=repo_type)
            commits = [c.to_dict() for c in repo.history.values()]
            self._json(200, {"commits": commits, "refs": dict(repo.refs)})
            return
        elif tail == ["files"] and method == "POST":
            unknown = set(data) - {"path", "generate", "text", "lfs"}
            if unknown:
                raise ValueError(f"unknown file fields: {sorted(unknown)}")
            source = _admin_file_source(data)
            repo = hub.put_file(repo_id, str(data["path"]), source, repo_type=repo_type)
        elif tail[:1] == ["files"] and len(tail) > 1 and method == "DELETE":
            repo = hub.delete_file(repo_id, "/".join(tail[1:]), repo_type=repo_type)
        elif tail == ["branches"] and method == "POST":
            unknown = set(data) - {"branch", "commit"}
            if unknown:
                raise ValueError(f"unknown branch fields: {sorted(unknown)}")
            branch, commit = str(data["branch"]), str(data["commit"])
            repo = hub.set_branch(repo_id, branch, commit, repo_type=repo_type)
        else:
            self._json(404, {"error": f"no admin route {method} {self.path}"})
            return
        self._json(200, hub.repo_summary(repo))


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
        cdn_expired: bool = False,
        signed_url_expires: int = SIGNED_URL_EXPIRES,
        latency: float = 0.0,
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
        self.latency = latency
        self.gate_metadata = gate_metadata
        self.cdn_etag = _check_cdn_etag(cdn_etag)
        # The CDN refuses every signed URL as expired (S3's 403 "Request has expired").
        self.cdn_expired = cdn_expired
        # X-Amz-Expires of the URLs resolve hands out; the CDN enforces it.
        self.signed_url_expires = _check_expires(signed_url_expires)
        self.faults = FaultSet()
        self._host = host
        self._ports = (port, cdn_port)
        self._hub_hostname = hub_hostname or (
            "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
        )
        self._cdn_hostname = cdn_hostname
        self._secret = os.urandom(16)
        self._presigned: dict[tuple[str, int], tuple[float, str, str, str]] = {}
        self._repos: dict[tuple[str, str], Repo] = {}
        self._generations: dict[tuple[str, str], int] = {}
        self._by_sha256: dict[str, dict[tuple[str, str, str], FileInfo]] = {}
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
        """The presigned CDN URL (S3 query-string auth, plus `sig`) that resolve redirects to."""
        name = info.path.rsplit("/", 1)[-1]
        disposition = quote(f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";")
        resource = f"/lfs/{info.sha256}"
        amz_date, credential, signature = self._presign(resource, self.signed_url_expires)
        return (
            f"{self.cdn_url}{resource}?response-content-disposition={disposition}"
            f"&X-Amz-Algorithm={AMZ_ALGORITHM}&X-Amz-Credential={quote(credential, safe='')}"
            f"&X-Amz-Date={amz_date}&X-Amz-Expires={self.signed_url_expires}"
            f"&X-Amz-Signature={signature}&X-Amz-SignedHeaders=host"
            f"&sig={self.sign(info.sha256)}"
        )

    def cdn_etag_of(self, info: FileInfo) -> str | None:
        """The CDN's ETag for an object: its sha256, an S3-like md5 ("opaque"), or None."""
        if self.cdn_etag == "none":
            return None
        if self.cdn_etag == "sha256":
            return info.sha256
        return hashlib.md5(info.sha256.encode(), usedforsecurity=False).hexdigest()

    def _presign(self, resource: str, expires: int) -> tuple[str, str, str]:
        # Like the real Hub, hand out the same signed URL while more than half of its life
        # is left: repeated resolves agree, and cdn_location() shows what clients were given.
        now = time.time()
        cached = self._presigned.get((resource, expires))
        if cached is not None and now < cached[0] + expires / 2:
            return cached[1:]
        signed_at = datetime.fromtimestamp(int(now), UTC)
        amz_date = signed_at.strftime(_AMZ_DATE)
        credential = f"{self.cdn_access_key}/{signed_at:%Y%m%d}/{AMZ_REGION}/s3/aws4_request"
        signature = self.signature(resource, amz_date, expires, credential)
        self._presigned[(resource, expires)] = (int(now), amz_date, credential, signature)
        return amz_date, credential, signature

    @property
    def cdn_access_key(self) -> str:
        """The fake AWS access key id in the CDN URLs' X-Amz-Credential (`AKIA` + 16)."""
        return "AKIA" + base64.b32encode(self._secret).decode()[:16]

    def sign(self, sha256: str) -> str:
        """The `sig` query parameter the CDN requires for an object."""
        return hmac.new(self._secret, sha256.encode(), hashlib.sha256).hexdigest()[:32]

    def string_to_sign(self, resource: str, amz_date: str, expires: int, credential: str) -> str:
        """What X-Amz-Signature covers: a tampered path, date, lifetime or key breaks it."""
        return "\n".join([AMZ_ALGORITHM, amz_date, credential, str(expires), resource, "host"])

    def signature(self, resource: str, amz_date: str, expires: int, credential: str) -> str:
        """The X-Amz-Signature (64 hex) the CDN expects for these signed values."""
        text = self.string_to_sign(resource, amz_date, expires, credential)
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

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
        """Create a repo, or replace its files with a new commit (its past commits stay).

        Sources are bytes, str, BytesFile, GeneratedFile or DiskFile; every branch points
        at the new commit.
        """
        check_repo_settings(repo_type, gated)
        branches = tuple(branches)
        stored = {
            check_repo_path(path): self._store(path, source) for path, source in files.items()
        }
        with self._repos_lock:
            key = (repo_type, repo_id)
            old = self._repos.get(key)
            commit = self._new_commit(
                key,
                stored,
                title="Initial commit" if old is None else "Replace every file",
                parent=old.commit if old is not None else None,
            )
            history = {**(old.history if old is not None else {}), commit.sha: commit}
            return self._install(
                assemble_repo(
                    repo_id,
                    repo_type,
                    history=history,
                    refs={name: commit.sha for name in branches},
                    private=private,
                    gated=gated,
                    approved_tokens=approved_tokens,
                    created_at=old.created_at if old is not None else None,
                ),
                commit,
            )

    def put_file(
        self, repo_id: str, path: str, source: FileSource, *, repo_type: str = "model"
    ) -> Repo:
        """Add or replace one file in a new commit on top of `main`; returns the repo there.

        `main` and the branches named in `branches=` move to the new commit; a branch placed
        with set_branch stays where it was put. Every past commit stays readable.
        """
        stored = self._store(check_repo_path(path), source)
        with self._repos_lock:
            repo = self.repo(repo_id, repo_type=repo_type)
            files = _blobs_of(repo)
            files[path] = stored
            return self._advance(repo, files, f"Upload {path}")

    def delete_file(self, repo_id: str, path: str, *, repo_type: str = "model") -> Repo:
        """Remove one file in a new commit on top of `main` (branches move as for put_file)."""
        with self._repos_lock:
            repo = self.repo(repo_id, repo_type=repo_type)
            files = _blobs_of(repo)
            del files[path]
            return self._advance(repo, files, f"Delete {path}")

    def set_branch(
        self, repo_id: str, branch: str, revision: str, *, repo_type: str = "model"
    ) -> Repo:
        """Point a branch (new or existing) at any commit the repo ever had, or at another
        branch's commit. Moving `main` changes what `main`, the info API without a revision,
        `commit()` and `file_info()` answer, and what put_file builds on; any other branch
        set here stays put when later commits move `main`."""
        with self._repos_lock:
            repo = self.repo(repo_id, repo_type=repo_type)
            sha = repo.resolve_revision(revision)
            if sha is None:
                raise KeyError(f"{repo_id} has no commit or branch {revision!r}")
            pinned = repo.pinned | {branch} if branch != "main" else repo.pinned
            return self._rebuild(repo, refs={**repo.refs, branch: sha}, pinned=pinned)

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
        """Change access settings or the branch names; no new commit.

        Kept branches keep their commit; new names point at main's commit and follow it.
        """
        with self._repos_lock:
            repo = self.repo(repo_id, repo_type=repo_type)
            refs = dict(repo.refs)
            if branches is not None:
                refs = {name: repo.refs.get(name, repo.commit) for name in branches}
            return self._rebuild(
                repo,
                refs=refs,
                private=repo.private if private is None else private,
                gated=repo.gated if gated is None else gated,
                approved_tokens=(
                    repo.approved_tokens if approved_tokens is None else approved_tokens
                ),
            )

    def remove_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        """Forget a repo and its history; its commit counter is kept, so re-adding it gets new
        shas (the CDN stops serving its objects)."""
        with self._repos_lock:
            self._repos.pop((repo_type, repo_id), None)
            self._reindex()

    def has_repo(self, repo_id: str, *, repo_type: str = "model") -> bool:
        """Whether the hub serves this repo."""
        return (repo_type, repo_id) in self._repos

    def get_repo(self, repo_id: str, *, repo_type: str = "model") -> Repo | None:
        """The repo at `main` (its default commit), or None."""
        return self._repos.get((repo_type, repo_id))

    def repo(self, repo_id: str, *, revision: str | None = None, repo_type: str = "model") -> Repo:
        """The repo at `main`, or at a revision (branch or any past commit sha); KeyError if
        either is unknown."""
        repo = self.get_repo(repo_id, repo_type=repo_type)
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r}")
        if revision is None:
            return repo
        at_revision = repo.at(revision)
        if at_revision is None:
            raise KeyError(f"{repo_id} has no commit or branch {revision!r}")
        return at_revision

    def repos(self) -> list[Repo]:
        """All repos, sorted by type and id."""
        with self._repos_lock:
            return [self._repos[k] for k in sorted(self._repos)]

    def commit(self, repo_id: str, *, repo_type: str = "model") -> str:
        """The commit sha `main` points at (the newest one unless set_branch moved it)."""
        return self.repo(repo_id, repo_type=repo_type).commit

    def commits(self, repo_id: str, *, repo_type: str = "model") -> list[str]:
        """Every commit sha the repo ever had, oldest first; all stay readable."""
        return self.repo(repo_id, repo_type=repo_type).commits

    def file_info(
        self,
        repo_id: str,
        path: str,
        *,
        revision: str | None = None,
        repo_type: str = "model",
    ) -> FileInfo:
        """Size, sha256, git sha1, etag, LFS flag, commit and disk path of a repo file, at
        `main` or at a revision (branch or commit sha)."""
        return self.repo(repo_id, revision=revision, repo_type=repo_type).files[path]

    def files_by_sha256(self, sha256: str) -> list[FileInfo]:
        """Every repo file, at any commit, with this content (what the CDN serves for an
        object), the oldest first."""
        return list(self._by_sha256.get(sha256, {}).values())

    def repo_summary(self, repo: Repo) -> dict[str, Any]:
        """JSON-friendly description of a repo (admin API)."""
        return {
            "repo_id": repo.repo_id,
            "repo_type": repo.repo_type,
            "commit": repo.commit,
            "private": repo.private,
            "gated": repo.gated,
            "refs": dict(repo.refs),
            "commits": repo.commits,
            "files": [f.to_dict() for f in repo.files.values()],
        }

    def last_modified_header(self, info: FileInfo) -> str:
        """The Last-Modified value sent with a file: when its content last changed, up to
        its commit (stable across commits that leave it alone)."""
        repo = self.get_repo(info.repo_id, repo_type=info.repo_type)
        at_commit = repo.at(info.commit) if repo is not None else None
        if at_commit is None:
            return ""
        changed = at_commit.history[at_commit.last_commit_of(info.path)].date
        return format_datetime(changed, usegmt=True)

    def _store(self, path: str, source: FileSource) -> tuple[Blob, bool]:
        blob = self.store.store(source)
        return blob, is_lfs(path, blob.size, source_lfs(source))

    def _new_commit(
        self,
        key: tuple[str, str],
        files: Mapping[str, tuple[Blob, bool]],
        *,
        title: str,
        parent: str | None,
    ) -> Commit:
        # A new generation for every content change: clients cache trees and snapshots by
        # commit and treat them as immutable, so the same sha must never mean new content.
        generation = self._generations.get(key, 0) + 1
        commit = build_commit(
            key[1], key[0], files, generation=generation, title=title, parent=parent
        )
        self._generations[key] = generation
        return commit

    def _advance(self, repo: Repo, files: dict[str, tuple[Blob, bool]], title: str) -> Repo:
        commit = self._new_commit(repo.key, files, title=title, parent=repo.commit)
        refs = {name: sha if name in repo.pinned else commit.sha for name, sha in repo.refs.items()}
        return self._rebuild(repo, history={**repo.history, commit.sha: commit}, refs=refs)

    def _rebuild(self, repo: Repo, **changes: Any) -> Repo:
        settings: dict[str, Any] = {
            "history": repo.history,
            "refs": repo.refs,
            "pinned": repo.pinned,
            "private": repo.private,
            "gated": repo.gated,
            "approved_tokens": repo.approved_tokens,
            "created_at": repo.created_at,
        }
        settings.update(changes)
        new = assemble_repo(repo.repo_id, repo.repo_type, **settings)
        added = [c for sha, c in new.history.items() if sha not in repo.history]
        return self._install(new, *added)

    def _install(self, repo: Repo, *new_commits: Commit) -> Repo:
        self._repos[repo.key] = repo
        for commit in new_commits:
            self._index(commit)
        return repo

    def _index(
        self, commit: Commit, index: dict[str, dict[tuple[str, str, str], FileInfo]] | None = None
    ) -> None:
        # Copy on write: CDN handlers read the index without the lock. The first commit that
        # holds a (repo, path, content) names it, so its Last-Modified never moves.
        index = self._by_sha256 if index is None else index
        for info in commit.files.values():
            if not info.lfs:
                continue
            entries = index.get(info.sha256, {})
            key = (info.repo_type, info.repo_id, info.path)
            if key not in entries:
                index[info.sha256] = {**entries, key: info}

    def _reindex(self) -> None:
        index: dict[str, dict[tuple[str, str, str], FileInfo]] = {}
        for repo in self._repos.values():
            for commit in repo.history.values():
                self._index(commit, index)
        self._by_sha256 = index

    # -- settings -------------------------------------------------------------------------

    def configure(
        self,
        *,
        cdn_redirect: bool | None = None,
        bandwidth: int | str | None = "unchanged",
        gate_metadata: bool | None = None,
        cdn_etag: str | None = None,
        cdn_expired: bool | None = None,
        signed_url_expires: int | None = None,
        latency: float | None = None,
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
        if cdn_expired is not None:
            self.cdn_expired = bool(cdn_expired)
        if signed_url_expires is not None:
            self.signed_url_expires = _check_expires(signed_url_expires)
        if latency is not None:
            if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
                raise ValueError("latency must be a number of seconds >= 0")
            self.latency = float(latency)
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
            "cdn_expired": self.cdn_expired,
            "signed_url_expires": self.signed_url_expires,
            "latency": self.latency,
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


def _piece_size(rate: int | None) -> int:
    """Bytes per write: 64 KiB at full speed; under a cap about 20 writes a second, so a
    slow rate reaches the client as a steady trickle of small pieces, never as bursts."""
    if not rate:
        return _SLOW_CHUNK
    return max(1, min(_SLOW_CHUNK, int(rate // 20)))


def _admin_file_source(spec: dict[str, Any]) -> FileSource:
    """A file from the admin API: `{"generate": {"size", "seed"}}` or `{"text"}`, + `lfs`."""
    lfs = spec.get("lfs")
    if lfs is not None and not isinstance(lfs, bool):
        raise ValueError("lfs must be true, false or null")
    if "path" not in spec:
        raise ValueError("a file needs its repo path: {'path': ...}")
    if ("generate" in spec) == ("text" in spec):
        raise ValueError("a file needs exactly one of 'generate' or 'text'")
    if "text" in spec:
        return BytesFile(str(spec["text"]).encode(), lfs=lfs)
    generate = spec["generate"]
    if not isinstance(generate, dict) or set(generate) - {"size", "seed"}:
        raise ValueError("generate takes {'size': N, 'seed': S}")
    return GeneratedFile(size=int(generate["size"]), seed=int(generate.get("seed", 0)), lfs=lfs)


def _iso_seconds(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_cdn_etag(style: str) -> str:
    if style not in CDN_ETAG_STYLES:
        raise ValueError("cdn_etag must be 'sha256', 'opaque' or 'none'")
    return style


def _check_expires(seconds: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise ValueError("signed_url_expires must be a positive int (seconds)")
    return seconds
