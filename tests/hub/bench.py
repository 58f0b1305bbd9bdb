"""Measure the imitation Hub's uncapped throughput: `python -m tests.hub.bench [--mib N]`."""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

from tests.hub.content import GeneratedFile
from tests.hub.server import ImitationHub


def raw_get(url: str, buffer: bytearray) -> int:
    """GET over one plain socket, reading into a reused buffer; returns body bytes read."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        view = memoryview(buffer)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        header, _, rest = head.partition(b"\r\n\r\n")
        if not header.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(header.decode(errors="replace"))
        total = len(rest)
        while n := sock.recv_into(view):
            total += n
        return total


def main() -> None:
    """Print MB/s for a raw socket reader and for requests, direct and through the CDN."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp, ImitationHub(Path(tmp)) as hub:
        hub.add_repo("bench/big", {"big.gguf": GeneratedFile(size=size, seed=7)})
        info = hub.file_info("bench/big", "big.gguf")
        cdn_url = hub.cdn_location(info)
        buffer = bytearray(4 << 20)
        for label in ("raw socket, CDN", "requests iter_content(8 MiB), CDN"):
            best = 0.0
            for _ in range(args.rounds):
                began = time.perf_counter()
                got = (
                    raw_get(cdn_url, buffer) if label.startswith("raw") else _requests_get(cdn_url)
                )
                elapsed = time.perf_counter() - began
                assert got == size, (got, size)
                best = max(best, size / elapsed / 1e6)
            print(f"{label}: {best:,.0f} MB/s ({args.mib} MiB, best of {args.rounds})")


def _requests_get(url: str) -> int:
    total = 0
    with requests.get(url, stream=True, timeout=(5, 60)) as response:
        for chunk in response.iter_content(8 << 20):
            total += len(chunk)
    return total


if __name__ == "__main__":
    main()
