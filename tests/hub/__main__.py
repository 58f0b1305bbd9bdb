"""Run the imitation Hub alone: `python -m tests.hub --port P --repos DIR`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from tests.hub.repos_dir import load_repos_dir, read_settings
from tests.hub.samples import add_sample_repos
from tests.hub.server import CDN_ETAG_STYLES, DEFAULT_TOKENS, SIGNED_URL_EXPIRES, ImitationHub


def build_parser() -> argparse.ArgumentParser:
    """The command line of the standalone hub."""
    parser = argparse.ArgumentParser(prog="python -m tests.hub", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="hub port (default: any free one)")
    parser.add_argument("--cdn-port", type=int, default=0, help="CDN port (default: any free)")
    parser.add_argument(
        "--cdn-hostname", default="localhost", help="hostname in CDN redirects (default localhost)"
    )
    parser.add_argument("--repos", type=Path, help="repos dir (default: the built-in sample repos)")
    parser.add_argument(
        "--data-dir", type=Path, help="where generated files go (default: REPOS/.hub-data)"
    )
    parser.add_argument(
        "--token", action="append", help="a valid token (repeatable; default the test tokens)"
    )
    parser.add_argument("--no-cdn", action="store_true", help="serve LFS files without redirect")
    parser.add_argument("--bandwidth", type=int, help="per-connection cap in bytes/s")
    parser.add_argument(
        "--cdn-etag", choices=CDN_ETAG_STYLES, help="the CDN's ETag (default sha256)"
    )
    parser.add_argument(
        "--cdn-expired", action="store_true", help="the CDN refuses every signed URL as expired"
    )
    parser.add_argument(
        "--signed-url-expires",
        type=int,
        help=f"X-Amz-Expires of CDN URLs, enforced (default {SIGNED_URL_EXPIRES})",
    )
    parser.add_argument("--latency", type=float, help="seconds before every answer")
    parser.add_argument(
        "--gate-metadata", action="store_true", help="gate the metadata API of gated repos too"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM, then exit 0."""
    args = build_parser().parse_args(argv)
    settings = read_settings(args.repos) if args.repos else {}
    data_dir = args.data_dir or (args.repos / ".hub-data" if args.repos else None)
    hub = ImitationHub(
        data_dir=data_dir,
        host=args.host,
        port=args.port,
        cdn_port=args.cdn_port,
        cdn_hostname=args.cdn_hostname,
        tokens=args.token or settings.get("tokens") or DEFAULT_TOKENS,
        cdn_redirect=not args.no_cdn and bool(settings.get("cdn_redirect", True)),
        bandwidth=args.bandwidth or settings.get("bandwidth"),
        gate_metadata=args.gate_metadata or bool(settings.get("gate_metadata", False)),
        cdn_etag=args.cdn_etag or settings.get("cdn_etag") or "sha256",
        cdn_expired=args.cdn_expired or bool(settings.get("cdn_expired", False)),
        signed_url_expires=(
            args.signed_url_expires or settings.get("signed_url_expires") or SIGNED_URL_EXPIRES
        ),
        latency=args.latency if args.latency is not None else settings.get("latency", 0.0),
    )
    if args.repos:
        keys = load_repos_dir(hub, args.repos)
    else:
        add_sample_repos(hub)
        keys = sorted(r.url_prefix for r in hub.repos())

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with hub:
        print(f"hub: {hub.url}", flush=True)
        print(f"cdn: {hub.cdn_url}", flush=True)
        for key in keys:
            print(f"repo: {key}", flush=True)
        print(json.dumps({"url": hub.url, "cdn_url": hub.cdn_url, "repos": keys}), flush=True)
        # Short waits so the signal handler gets to run promptly in the main thread.
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
