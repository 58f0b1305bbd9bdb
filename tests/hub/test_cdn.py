"""The CDN: S3-style presigned URLs, error bodies that echo them, and a CDN without ETags."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import pytest
import requests

from tests.hub import TINY, GeneratedFile, HubAdmin, ImitationHub
from tests.support import wait_for

pytestmark = pytest.mark.timeout(20)
TIMEOUT = (5, 10)


def signed_url(hub: ImitationHub, path: str = "model.bin") -> str:
    """The CDN location the hub redirects a resolve of an LFS file to."""
    r = requests.head(hub.resolve_url(TINY, path), allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 302
    return r.headers["Location"]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def error_fields(response: requests.Response) -> dict[str, str]:
    """The S3-style XML error body as {tag: text}."""
    assert response.headers["Content-Type"] == "application/xml"
    root = ElementTree.fromstring(response.content)  # noqa: S314 - our own hub's answer
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def test_cdn_location_is_an_s3_presigned_url_the_cdn_accepts(hub: ImitationHub):
    info = hub.file_info(TINY, "model.bin")
    url = signed_url(hub)

    r = requests.get(url, timeout=TIMEOUT)

    q = query_of(url)
    assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    key, date, region, service, terminal = q["X-Amz-Credential"].split("/")
    assert re.fullmatch(r"AKIA[A-Z2-7]{16}", key) and key == hub.cdn_access_key
    assert (region, service, terminal) == ("us-east-1", "s3", "aws4_request")
    assert re.fullmatch(r"\d{8}T\d{6}Z", q["X-Amz-Date"]) and q["X-Amz-Date"][:8] == date
    assert (q["X-Amz-Expires"], q["X-Amz-SignedHeaders"]) == ("3600", "host")
    assert re.fullmatch(r"[0-9a-f]{64}", q["X-Amz-Signature"])
    assert q["sig"]
    assert (r.status_code, r.content) == (200, info.read_bytes())
    assert 'filename="model.bin"' in r.headers["Content-Disposition"]


def test_resolves_share_one_signed_url_until_half_its_life_is_gone(hub: ImitationHub):
    first = signed_url(hub)
    again = signed_url(hub)
    given = hub.cdn_location(hub.file_info(TINY, "model.bin"))
    hub.signed_url_expires = 2
    short = signed_url(hub)

    renewed = wait_for(
        lambda: (url := signed_url(hub)) != short and url, 5, "a renewed short-lived URL"
    )

    # What the hub would hand out is what clients were given: tests can list the secrets.
    assert first == again == given
    assert query_of(short)["X-Amz-Signature"] != query_of(first)["X-Amz-Signature"]
    assert query_of(renewed)["X-Amz-Date"] > query_of(short)["X-Amz-Date"]
    assert requests.get(renewed, timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        ("signature", "SignatureDoesNotMatch"),
        ("longer_expiry", "SignatureDoesNotMatch"),
        ("other_object", "SignatureDoesNotMatch"),
        ("sig", "SignatureDoesNotMatch"),
        ("unsigned", "AccessDenied"),
    ],
)
def test_a_tampered_or_unsigned_url_is_refused_with_a_body_echoing_it(
    hub: ImitationHub, tamper: str, code: str
):
    url = signed_url(hub)
    q = query_of(url)
    if tamper == "signature":
        url = url.replace(q["X-Amz-Signature"], "0" * 64)
    elif tamper == "longer_expiry":
        url = url.replace("X-Amz-Expires=3600", "X-Amz-Expires=86400")
    elif tamper == "other_object":
        other = hub.file_info(TINY, "model.bin").sha256
        hub.put_file(TINY, "model.bin", GeneratedFile(size=10240, seed=77))
        url = url.replace(other, hub.file_info(TINY, "model.bin").sha256)
    elif tamper == "sig":
        url = url.replace(f"sig={q['sig']}", "sig=" + "0" * len(q["sig"]))
    else:
        url = url.partition("?")[0]

    r = requests.get(url, timeout=TIMEOUT)

    assert r.status_code == 403
    fields = error_fields(r)
    assert fields["Code"] == code
    assert fields["Resource"] == urlsplit(url).path
    assert fields["RequestURL"] == url
    assert fields.get("SignatureProvided") == query_of(url).get("X-Amz-Signature")
    assert fields["RequestId"] == r.headers["x-amz-request-id"]


def test_cdn_expired_refuses_valid_urls_and_the_body_echoes_the_signature(hub: ImitationHub):
    url = signed_url(hub)
    signature = query_of(url)["X-Amz-Signature"]
    hub.cdn_expired = True

    get = requests.get(url, timeout=TIMEOUT)
    head = requests.head(url, timeout=TIMEOUT)
    fresh_url = signed_url(hub)
    fresh = requests.get(fresh_url, timeout=TIMEOUT)
    hub.cdn_expired = False
    again = requests.get(url, timeout=TIMEOUT)

    assert (get.status_code, head.status_code, fresh.status_code) == (403, 403, 403)
    fields = error_fields(get)
    assert (fields["Code"], fields["Message"]) == ("AccessDenied", "Request has expired")
    assert fields["X-Amz-Expires"] == "3600"
    assert fields["SignatureProvided"] == signature
    assert fields["RequestURL"] == url and f"X-Amz-Signature={signature}" in fields["RequestURL"]
    assert fields["ServerTime"] > fields["Expires"]
    assert signature in get.text
    assert error_fields(fresh)["Message"] == "Request has expired"
    assert again.status_code == 200


def test_short_lived_urls_work_then_expire_on_their_own(hub: ImitationHub):
    hub.signed_url_expires = 2
    url = signed_url(hub)

    fresh = requests.get(url, timeout=TIMEOUT)
    # A Response is falsy when it is an error: wrap it for wait_for.
    (expired,) = wait_for(
        lambda: [r for r in [requests.get(url, timeout=TIMEOUT)] if r.status_code == 403],
        6,
        "the two-second URL to expire",
    )

    assert query_of(url)["X-Amz-Expires"] == "2"
    assert fresh.status_code == 200
    assert error_fields(expired)["Message"] == "Request has expired"


@pytest.mark.parametrize(
    ("status", "code"),
    [(403, "AccessDenied"), (404, "NoSuchKey"), (500, "InternalError"), (503, "SlowDown")],
)
def test_cdn_status_faults_answer_like_s3_and_echo_the_signature(
    hub: ImitationHub, status: int, code: str
):
    hub.faults.add(host="cdn", status=status, times=None)
    url = signed_url(hub)

    r = requests.get(url, timeout=TIMEOUT)

    assert r.status_code == status
    fields = error_fields(r)
    assert fields["Code"] == code
    assert fields["SignatureProvided"] == query_of(url)["X-Amz-Signature"]
    assert fields["RequestURL"] == url


def test_admin_config_switches_expiry_and_etag(hub: ImitationHub):
    admin = HubAdmin(hub.url)

    config = admin.configure(cdn_expired=True, cdn_etag="none", signed_url_expires=60)
    refused = requests.get(hub.resolve_url(TINY, "model.bin"), timeout=TIMEOUT)
    admin.configure(cdn_expired=False)
    served = requests.get(hub.resolve_url(TINY, "model.bin"), timeout=TIMEOUT)

    assert (config["cdn_expired"], config["cdn_etag"], config["signed_url_expires"]) == (
        True,
        "none",
        60,
    )
    assert error_fields(refused)["Message"] == "Request has expired"
    assert served.status_code == 200 and "ETag" not in served.headers
    assert query_of(served.history[0].headers["Location"])["X-Amz-Expires"] == "60"


def test_cdn_without_etag_sends_no_validator(empty_hub: ImitationHub):
    hub = ImitationHub(data_dir=empty_hub.data_dir / "no-etag", cdn_etag="none")
    with hub:
        hub.add_repo(TINY, {"model.bin": GeneratedFile(size=10240, seed=1)})
        info = hub.file_info(TINY, "model.bin")

        redirect = requests.head(
            hub.resolve_url(TINY, "model.bin"), allow_redirects=False, timeout=TIMEOUT
        )
        head = requests.head(redirect.headers["Location"], timeout=TIMEOUT)
        get = requests.get(redirect.headers["Location"], timeout=TIMEOUT)

    # The Hub still names the content; only the CDN is silent.
    assert redirect.headers["X-Linked-Etag"] == f'"{info.sha256}"'
    for r in (head, get):
        assert r.status_code == 200
        assert "ETag" not in r.headers and "Last-Modified" not in r.headers
    assert get.content == info.read_bytes()


def test_cdn_without_etag_honours_range_whatever_if_range_says(hub: ImitationHub):
    old = hub.file_info(TINY, "model.bin")
    last_modified = requests.head(
        hub.resolve_url(TINY, "model.bin"), allow_redirects=True, timeout=TIMEOUT
    ).headers["Last-Modified"]
    hub.put_file(TINY, "model.bin", GeneratedFile(size=10240, seed=99))
    new = hub.file_info(TINY, "model.bin")
    hub.cdn_etag = "none"
    url = hub.resolve_url(TINY, "model.bin")

    stale_etag = requests.get(
        url, headers={"Range": "bytes=5000-", "If-Range": f'"{old.sha256}"'}, timeout=TIMEOUT
    )
    stale_date = requests.get(
        url, headers={"Range": "bytes=5000-", "If-Range": last_modified}, timeout=TIMEOUT
    )

    # No validator to compare with: the slice of whatever the object is now, so a client
    # that resumes on the strength of If-Range alone splices two contents.
    for r in (stale_etag, stale_date):
        assert r.status_code == 206
        assert r.headers["Content-Range"] == "bytes 5000-10239/10240"
        assert r.content == new.read_bytes()[5000:] != old.read_bytes()[5000:]
