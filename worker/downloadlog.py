"""The download log: `DATA_DIR/logs/downloads.log`, one line per operation, rotated.

Each line carries the job id, file id, repo, file name and engine; failures add the error
and the captured stderr in full (escaped onto the line). A filter scrubs tokens and signed
URL parameters from every record, whatever code produced it.
"""

from __future__ import annotations

import json
import logging
import re
from logging.handlers import RotatingFileHandler
from typing import Any

from app.settings import Settings

LOGGER_NAME = "modelpull.downloads"
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{6,}\b")
_SIGNED = re.compile(
    r"(?i)([?&](?:sig|signature|x-amz-signature|x-amz-credential|token)=)[^&\s\"']+"
)


class RedactFilter(logging.Filter):
    """Removes secrets from log records: the configured tokens, bearer values, signatures."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def scrub(self, text: str) -> str:
        """The text with every known secret masked."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        text = _BEARER.sub(r"\1***", text)
        text = _HF_TOKEN.sub("hf_***", text)
        return _SIGNED.sub(r"\1***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
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
    logger.addFilter(RedactFilter([settings.hf_token or "", settings.api_token or ""]))
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
