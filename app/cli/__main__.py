"""`python -m app.cli`: the same as the `modelpull` command."""

from app.cli import main

raise SystemExit(main())
