"""One scrubber for every text that leaves a process: secrets out, the rest left readable.

Error messages and captured stderr pass through `scrub` before they are stored on a row,
published, logged or returned by the API. It masks the tokens this process holds (registered
once where the worker's runtime and the web app are built), `Authorization` and `Bearer`
values, Hub (`hf_…`) and service (`mp_…`) tokens, basic-auth passwords in URLs, and the values
of the query parameters, JSON fields and S3 error elements that carry signatures or
credentials, whether plain or URL-encoded inside another URL.
"""

from __future__ import annotations

import re
import threading
from typing import overload
from urllib.parse import quote

MASK = "***"

# Signed-URL parameters (S3, CloudFront, GCS, Azure, the Hub's CDN) and credential fields.
_NAMES = (
    r"x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature"
    r"|x-goog-credential|awsaccesskeyid|signature|policy|key-pair-id|sig"
    r"|access_token|refresh_token|id_token|hf_token|api_token|token"
    r"|api_key|apikey|credential|client_secret|secret|password"
)
# A value's characters: up to the next parameter, quote, space, tag or JSON escape. An
# encoded value (inside a quoted URL) also ends at %26 / %2526, the encoded "&".
_VALUE = r"(?:%(?!26|2526)[0-9a-f]{2}|[^&\s\"'<>\\%#,;)\]}])+"
# `name=value` in a query string, a form, a log line; `name%3Dvalue` once or twice encoded.
# The name starts a word or ends a snake_case one (HUGGING_FACE_HUB_TOKEN=); it is not the
# tail of a hyphenated name ("x-request-signature") unless right after an encoded "&" or "?".
_STARTS_PARAM = r"(?:(?<=%26)|(?<=%3f)|(?<=%2526)|(?<=%253f)|(?<![a-z0-9-]))"
_PARAM = re.compile(rf"(?i)({_STARTS_PARAM}(?:{_NAMES})(?:=|%3d|%253d))({_VALUE})")
# "name": "value" in JSON or a Python repr, also when the JSON sits escaped inside a string.
_FIELD = re.compile(rf"(?i)(\\?[\"'](?:{_NAMES}|authorization)\\?[\"']\s*:\s*\\?[\"'])([^\"'\\]+)")
# S3's error XML repeats what was signed; any of it is enough to replay or forge a request.
_XML = re.compile(
    r"(?is)(<(SignatureProvided|StringToSign|StringToSignBytes|CanonicalRequest"
    r"|CanonicalRequestBytes|AWSAccessKeyId|Signature|Policy|Credential|SecurityToken"
    r"|Token)>)(.*?)(</\2>)"
)
_AUTHORIZATION = re.compile(
    r"(?i)(authorization\s*[:=]\s*(?:(?:bearer|basic|token)\s+)?)([^\s\"',;&]+)"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)([a-z0-9._~+/=-]+)")
# Hub tokens are hf_ and 34 letters; ten or more keeps `hf_hub_download` readable.
_HF_TOKEN = re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{10,}")
# The service's own API tokens (app.tokens): mp_ and 43 URL-safe characters.
_MP_TOKEN = re.compile(r"(?<![A-Za-z0-9])mp_[A-Za-z0-9_-]{40,}")
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)([^/\s@]+)(@)")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secrets(*secrets: str | None) -> None:
    """Mask these exact strings (the tokens this process holds) in every text from now on."""
    global _secrets
    fresh = set()
    for secret in secrets:
        if secret and secret.strip():
            fresh.add(secret.strip())
            fresh.add(quote(secret.strip(), safe=""))
    with _lock:
        # Longest first: a token that contains another is masked whole.
        _secrets = tuple(sorted(set(_secrets) | fresh, key=len, reverse=True))


@overload
def scrub(text: str) -> str: ...
@overload
def scrub(text: None) -> None: ...
def scrub(text: str | None) -> str | None:
    """The text with every secret masked as `***`; None stays None. Idempotent."""
    if not text:
        return text
    for secret in _secrets:
        text = text.replace(secret, MASK)
    text = _XML.sub(rf"\1{MASK}\4", text)
    text = _FIELD.sub(rf"\1{MASK}", text)
    text = _AUTHORIZATION.sub(rf"\1{MASK}", text)
    text = _BEARER.sub(rf"\1{MASK}", text)
    text = _PARAM.sub(rf"\1{MASK}", text)
    text = _URL_PASSWORD.sub(rf"\1{MASK}\3", text)
    text = _HF_TOKEN.sub(f"hf_{MASK}", text)
    return _MP_TOKEN.sub(f"mp_{MASK}", text)
