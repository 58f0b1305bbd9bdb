"""The hf_hub engine's child process: runs `hf_hub_download` and reports on stdout.

Input: one JSON object on stdin ({repo, file_name, revision, local_dir}); HF_ENDPOINT and
HF_TOKEN come in the environment (never on the command line, where `ps` would show them).
Output: JSON lines on stdout, `{"event": "progress", "bytes": n, "total": t}` (throttled),
then `{"event": "done", "path": ...}` or `{"event": "error", "type": ..., "message": ...}`.
Everything huggingface_hub logs, and any traceback, goes to stderr, which the parent keeps.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any


def emit(event: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed at once so the parent sees it live."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> int:
    """Download one file as the spec on stdin says."""
    spec = json.loads(sys.stdin.read())
    # huggingface_hub reads HF_* at import: import it only now that the environment is final.
    from huggingface_hub import hf_hub_download
    from tqdm.auto import tqdm

    class JsonTqdm(tqdm):  # type: ignore[misc]
        """A progress bar that prints JSON lines instead of drawing."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 (closed with the bar)
            super().__init__(*args, **kwargs)
            self._last = 0.0

        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            now = time.monotonic()
            if now - self._last >= 0.2 or (self.total and self.n >= self.total):
                self._last = now
                emit({"event": "progress", "bytes": int(self.n), "total": self.total})
            return shown

        def close(self) -> None:
            super().close()
            self.fp.close()

    try:
        path = hf_hub_download(
            repo_id=spec["repo"],
            filename=spec["file_name"],
            revision=spec.get("revision") or "main",
            local_dir=spec["local_dir"],
            tqdm_class=JsonTqdm,
        )
    except Exception as exc:
        traceback.print_exc()
        status = getattr(getattr(exc, "response", None), "status_code", None)
        emit(
            {
                "event": "error",
                "type": type(exc).__name__,
                "types": [c.__name__ for c in type(exc).__mro__],
                "status": status,
                "message": str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            }
        )
        return 1
    emit({"event": "done", "path": path, "size": os.path.getsize(path)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
