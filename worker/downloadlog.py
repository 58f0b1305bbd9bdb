"""The download log: `DATA_DIR/logs/downloads.log`, one line per operation, rotated.

Each line carries the job id, file id, repo, file name and engine; failures add the error
and the captured stderr in full (escaped onto the line). A filter scrubs tokens and signed
URL parameters from every record, whatever code produced it, with the service's one
scrubber (app.scrub; the worker's runtime registers its tokens there).
"""

from __future__ import annotations

import json
import logging
from logging.handlers import RotatingFileHandler
from typing import Any

from app.scrub import scrub
from app.settings import Settings

LOGGER_NAME = "modelpull.downloads"
_FORMATTER = logging.Formatter()


class RedactFilter(logging.Filter):
    """Scrubs every record (app.scrub: the registered tokens, bearer values, signatures),
    its traceback included, before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        # A traceback is formatted by the handler, after filters: fold it in now, scrubbed.
        if record.exc_info:
            record.exc_text = record.exc_text or _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{record.stack_info}"
        record.msg = scrub(text)
        record.args = None
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def setup_download_log(settings: Settings) -> logging.Logger:
    """The download logger; writes the file unless DOWNLOAD_LOG_TO_FILE=false."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for f in list(logger.filters):
        logger.removeFilter(f)
    logger.addFilter(RedactFilter())
    if settings.download_log_to_file:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            settings.download_log_path, maxBytes=20 * 2**20, backupCount=5, encoding="utf-8"
        )
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        )
        logger.addHandler(handler)
    return logger


def fields(**values: Any) -> str:
    """key=value pairs; values with spaces, quotes or newlines are JSON strings (one line)."""
    out = []
    for key, value in values.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(c in text for c in ' "=\n\r\t'):
            text = json.dumps(text)
        out.append(f"{key}={text}")
    return " ".join(out)
