"""A server that ignores Range and streams the file chunked, cutting the body short twice:
the transfer starts again from byte 0 each time (a cut chunked body is a broken connection,
not a crash) and ends with the whole file."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from worker.engine.base import ProgressMeter
from worker.engine.hashing import PrefixHasher
from worker.engine.hub import HubClient, ResolvedFile
from worker.engine.ranges import RangeSet
from worker.engine.terms import Tuning
from worker.engine.transfer import Transfer

BODY = os.urandom(3 << 20)


class Chunked(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gets = 0

    def do_GET(self) -> None:
        Chunked.gets += 1
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("ETag", '"v1"')
        self.end_headers()
        cut = Chunked.gets <= 3  # the first answers break off inside a chunk
        for start in range(0, len(BODY), 1 << 20):
            block = BODY[start : start + (1 << 20)]
            self.wfile.write(b"%x\r\n" % len(block))
            if cut and start:
                self.wfile.write(block[:1000])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(block + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Chunked.gets = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Chunked)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/f"
    httpd.shutdown()
    httpd.server_close()


def test_a_chunked_body_cut_short_is_fetched_again(server: str, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f.part", os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, len(BODY))
    sha = hashlib.sha256(BODY).hexdigest()
    resolved = ResolvedFile("o/r", "f", "main", server, len(BODY), sha, "c" * 40, sha, None)
    try:
        job = Transfer(
            fd,
            RangeSet(),
            resolved=resolved,
            client=HubClient("http://127.0.0.1:9"),
            hasher=PrefixHasher(fd, len(BODY), with_sha1=False),
            meter=ProgressMeter(None),
            control=None,
            checkpoint=lambda done, validator: None,
            tuning=Tuning(connections=2, min_split=1 << 20, backoff_base=0.01, backoff_max=0.05),
        )
        job.run()
        assert Chunked.gets >= 4  # the ranged try, two cut bodies, the whole one
        assert os.pread(fd, len(BODY), 0) == BODY
    finally:
        os.close(fd)
