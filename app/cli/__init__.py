"""The `modelpull` command: one sub-parser per command, each naming the function that runs it.

The commands live by kind: `remote` (the service's API), `launch` (the service's processes),
`admin` (the job store). The parser is built for every command, so each command's heavy
imports (SQLAlchemy, Alembic, requests, rich) wait until that command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.cli import admin, launch, remote
from app.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each command's parser sets `func`, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="modelpull",
        description="Distributed, resumable, verified downloads of Hugging Face Hub models.",
    )
    # Also after the command (`modelpull jobs --url X`); see remote.add_options.
    remote.add_options(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    remote.add_commands(sub)
    launch.add_commands(sub)
    admin.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a modelpull command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"modelpull: configuration error: {exc}", file=sys.stderr)
        return 2
