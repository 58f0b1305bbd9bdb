"""Fault injection: each fault does what it says, as often as it says, and no more."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.hub import TINY, Fault, GeneratedFile, HubAdmin, HubAdminError, ImitationHub
from tests.support import wait_for

pytestmark = pytest.mark.timeout(20)
TIMEOUT = (5, 10)


def fetch(
    url: str, timeout: tuple[float, float] = TIMEOUT, **kwargs
) -> tuple[int | None, bytes, Exception | None]:
    """Stream a GET to the end; returns status, the bytes that arrived, and any error."""
    status, body, error = None, bytearray(), None
    try:
        with requests.get(url, stream=True, timeout=timeout, **kwargs) as r:
            status = r.status_code
            # Small reads: urllib3 discards a partly filled read when the connection breaks.
            for chunk in r.iter_content(1024):
                body += chunk
    except requests.RequestException as exc:
        error = exc
    return status, bytes(body), error


def test_drop_after_cuts_the_body_once(hub: ImitationHub):
    url = hub.resolve_url(TINY, "model.bin")
    data = hub.file_info(TINY, "model.bin").read_bytes()
    fault = hub.faults.add(path="model.bin", drop_after=4096)

    first = fetch(url)
    second = fetch(url)

    assert first[0] == 200 and first[1] == data[:4096]
    assert isinstance(first[2], requests.exceptions.ChunkedEncodingError)
    assert second == (200, data, None)
    assert (fault.hits, fault.remaining) == (1, 0)
    # Only the body was faulted: the hub's 302 did not use up the count.
    assert [r.status for r in hub.requests if r.host == "hub"] == [302, 302]


def test_status_fault_answers_n_times_then_recovers(hub: ImitationHub):
    url = hub.resolve_url(TINY, "config.json")
    hub.faults.add(path="config.json", status=503, times=2)

    statuses = [requests.head(url, timeout=TIMEOUT).status_code for _ in range(2)]
    ok = requests.get(url, timeout=TIMEOUT)

    assert statuses == [503, 503]
    assert (ok.status_code, ok.content) == (200, hub.file_info(TINY, "config.json").read_bytes())


def test_429_carries_retry_after(hub: ImitationHub):
    hub.faults.add(path="config.json", status=429, retry_after=1)

    limited = requests.get(hub.resolve_url(TINY, "config.json"), timeout=TIMEOUT)

    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
    assert "X-Error-Code" not in limited.headers
    assert requests.get(hub.resolve_url(TINY, "config.json"), timeout=TIMEOUT).status_code == 200


def test_fault_on_cdn_host_leaves_the_hub_alone(hub: ImitationHub):
    hub.faults.add(path="model.bin", host="cdn", status=500)

    head = requests.head(hub.resolve_url(TINY, "model.bin"), allow_redirects=False, timeout=5)
    get = requests.get(hub.resolve_url(TINY, "model.bin"), timeout=TIMEOUT)

    assert head.status_code == 302
    assert get.status_code == 500
    assert [(r.host, r.status) for r in hub.requests] == [("hub", 302), ("hub", 302), ("cdn", 500)]


def test_fault_matches_only_its_path_glob(hub: ImitationHub):
    hub.faults.add(path="sub/*", status=500, times=None)

    assert requests.get(hub.resolve_url(TINY, "config.json"), timeout=TIMEOUT).status_code == 200
    for _ in range(3):
        r = requests.get(hub.resolve_url(TINY, "sub/dir/notes.txt"), timeout=TIMEOUT)
        assert r.status_code == 500


def test_url_glob_fault_hits_the_metadata_api(hub: ImitationHub):
    hub.faults.add(url="/api/models/*", status=503, method="GET")

    api = requests.get(f"{hub.url}/api/models/{TINY}", timeout=TIMEOUT)
    resolve = requests.get(hub.resolve_url(TINY, "config.json"), timeout=TIMEOUT)

    assert (api.status_code, resolve.status_code) == (503, 200)
    assert requests.get(f"{hub.url}/api/models/{TINY}", timeout=TIMEOUT).status_code == 200


def test_ignore_range_sends_the_whole_file(hub: ImitationHub):
    hub.faults.add(path="model.bin", ignore_range=True)
    data = hub.file_info(TINY, "model.bin").read_bytes()

    r = requests.get(
        hub.resolve_url(TINY, "model.bin"), headers={"Range": "bytes=5000-"}, timeout=TIMEOUT
    )

    assert r.status_code == 200
    assert "Content-Range" not in r.headers
    assert r.content == data


def test_corrupt_flips_exactly_one_byte_at_the_file_offset(hub: ImitationHub):
    data = hub.file_info(TINY, "model.bin").read_bytes()
    hub.faults.add(path="model.bin", corrupt_offset=5000, times=None)
    url = hub.resolve_url(TINY, "model.bin")

    whole = requests.get(url, timeout=TIMEOUT).content
    covering = requests.get(url, headers={"Range": "bytes=4990-5009"}, timeout=TIMEOUT).content
    before = requests.get(url, headers={"Range": "bytes=0-4999"}, timeout=TIMEOUT).content

    assert len(whole) == len(data)
    assert [i for i in range(len(data)) if whole[i] != data[i]] == [5000]
    assert whole[5000] == data[5000] ^ 0xFF
    assert covering[:10] + covering[11:] == data[4990:5000] + data[5001:5010]
    assert covering[10] == data[5000] ^ 0xFF
    assert before == data[:5000]


def test_stall_delays_then_continues(hub: ImitationHub):
    hub.faults.add(path="model.bin", stall_after=1024, stall_seconds=0.6)

    began = time.monotonic()
    status, body, error = fetch(hub.resolve_url(TINY, "model.bin"))

    assert time.monotonic() - began >= 0.6
    assert (status, body, error) == (200, hub.file_info(TINY, "model.bin").read_bytes(), None)


def test_stall_then_close_leaves_the_client_short(hub: ImitationHub):
    hub.faults.add(path="model.bin", stall_after=1024, stall_seconds=0.2, stall_then="close")

    status, body, error = fetch(hub.resolve_url(TINY, "model.bin"))

    assert (status, len(body)) == (200, 1024)
    assert error is not None


def test_stall_longer_than_the_read_timeout_times_the_client_out(hub: ImitationHub):
    # The stalled handler is still asleep at teardown: stop() must wake it, not wait 30 s.
    hub.faults.add(path="model.bin", stall_after=2048, stall_seconds=30)

    began = time.monotonic()
    status, body, error = fetch(hub.resolve_url(TINY, "model.bin"), timeout=(5, 0.5))

    assert (status, len(body)) == (200, 2048)
    assert isinstance(error, requests.exceptions.ConnectionError)
    assert time.monotonic() - began < 5


def test_bandwidth_cap_per_fault_limits_throughput(empty_hub: ImitationHub):
    empty_hub.add_repo("org/slow", {"w.bin": GeneratedFile(size=200_000, seed=8)})
    empty_hub.faults.add(path="w.bin", bandwidth=100_000)

    began = time.monotonic()
    status, body, _ = fetch(empty_hub.resolve_url("org/slow", "w.bin"))
    elapsed = time.monotonic() - began

    assert (status, len(body)) == (200, 200_000)
    assert 1.5 <= elapsed < 6


def test_global_bandwidth_cap_applies_to_every_response(empty_hub: ImitationHub):
    empty_hub.add_repo("org/slow", {"a.bin": GeneratedFile(size=100_000, seed=9)})
    empty_hub.bandwidth = 200_000

    began = time.monotonic()
    status, body, _ = fetch(empty_hub.resolve_url("org/slow", "a.bin"))

    assert (status, len(body)) == (200, 100_000)
    assert time.monotonic() - began >= 0.4


def test_fault_count_holds_under_concurrent_requests(hub: ImitationHub):
    fault = hub.faults.add(path="config.json", status=503, times=5)
    url = hub.resolve_url(TINY, "config.json")
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        status = requests.get(url, timeout=TIMEOUT).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(statuses) == [200] * 15 + [503] * 5
    assert fault.hits == 5


def test_invalid_faults_are_rejected():
    with pytest.raises(ValueError, match="needs an effect"):
        Fault(path="x")
    with pytest.raises(ValueError, match="cannot also shape"):
        Fault(status=500, drop_after=3)
    with pytest.raises(ValueError, match="needs a trickle_rate"):
        Fault(trickle_after=100)
    with pytest.raises(ValueError, match="trickle_rate must be > 0"):
        Fault(trickle_rate=0)
    with pytest.raises(ValueError, match="cannot also shape"):
        Fault(status=500, trickle_rate=10)


def test_admin_http_api_controls_faults_log_and_config(hub: ImitationHub):
    admin = HubAdmin(hub.url)
    added = admin.add_fault(path="config.json", status=500, times=1)

    faulted = requests.get(hub.resolve_url(TINY, "config.json"), timeout=TIMEOUT)
    listed = admin.faults()
    log = admin.requests()
    admin.configure(cdn_redirect=False, bandwidth=None)
    direct = requests.head(hub.resolve_url(TINY, "model.bin"), allow_redirects=False, timeout=5)
    cleared = admin.clear_faults()

    assert faulted.status_code == 500
    assert listed == [{**added, "hits": 1, "remaining": 0}]
    assert [(r["host"], r["method"], r["status"]) for r in log] == [("hub", "GET", 500)]
    assert direct.status_code == 200
    assert cleared == 1 and len(hub.faults) == 0
    with pytest.raises(HubAdminError, match="explode") as bad:
        admin.add_fault(path="x", explode=True)
    assert bad.value.status == 400
    admin.clear_requests()
    assert hub.requests == []


_seen: dict[str, object] = {}


def test_faults_reset_between_tests_part1(hub: ImitationHub):
    hub.faults.add(status=500, times=None)
    _seen["hub"] = hub
    assert requests.get(hub.resolve_url(TINY, "config.json"), timeout=TIMEOUT).status_code == 500


def test_faults_reset_between_tests_part2(hub: ImitationHub):
    assert _seen.get("hub") is not hub
    assert len(hub.faults) == 0 and hub.requests == []
    assert requests.get(hub.resolve_url(TINY, "config.json"), timeout=TIMEOUT).status_code == 200


def test_latency_delays_every_answer_of_hub_and_cdn(hub: ImitationHub):
    """bench/scale.py plays a distant Hub with it: each request pays it, resolve and CDN."""
    hub.latency = 0.3
    url = hub.resolve_url(TINY, "model.bin")
    began = time.monotonic()
    resp = requests.get(url, timeout=TIMEOUT)  # the Hub's redirect, then the CDN
    took = time.monotonic() - began
    assert resp.status_code == 200 and len(resp.history) == 1
    assert took >= 0.6


def timed_reads(url: str, timeout: float = 10) -> tuple[int, list[tuple[float, int]]]:
    """GET with http.client; returns the status and (seconds since the headers, bytes) of
    every read, each read taking only what one recv brought."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}" if parts.query else parts.path)
        response = conn.getresponse()
        began = time.monotonic()
        reads: list[tuple[float, int]] = []
        while chunk := response.read1(65536):
            reads.append((time.monotonic() - began, len(chunk)))
        return response.status, reads
    finally:
        conn.close()


def test_trickle_sends_the_head_fast_then_small_pieces_slowly(hub: ImitationHub):
    hub.cdn_redirect = False  # one hop, so the reads time the body alone
    hub.faults.add(path="model.bin", trickle_after=8192, trickle_rate=1000)

    status, reads = timed_reads(hub.resolve_url(TINY, "model.bin"))

    received = 0
    head_done_at = None
    for at, n in reads:
        received += n
        if head_done_at is None and received >= 8192:
            head_done_at = at
    trickle = [(at, n) for at, n in reads if at > (head_done_at or 0)]
    assert (status, received) == (200, 10240)
    assert head_done_at is not None and head_done_at < 1.0
    # The last 2048 bytes take about 2 s, arriving as many small pieces with no long gap.
    assert reads[-1][0] - head_done_at >= 1.5
    assert len(trickle) >= 10 and max(n for _, n in trickle) <= 1024
    assert max(b[0] - a[0] for a, b in itertools.pairwise(trickle)) < 0.5


def test_low_bandwidth_cap_sends_small_pieces_not_bursts(empty_hub: ImitationHub):
    empty_hub.add_repo("org/slow", {"w.bin": GeneratedFile(size=2500, seed=10)})
    empty_hub.cdn_redirect = False
    empty_hub.faults.add(path="w.bin", bandwidth=1000)

    status, reads = timed_reads(empty_hub.resolve_url("org/slow", "w.bin"))

    assert (status, sum(n for _, n in reads)) == (200, 2500)
    assert reads[0][0] < 0.5 and reads[-1][0] >= 2.0
    assert max(n for _, n in reads) <= 1024
    assert max(b[0] - a[0] for a, b in itertools.pairwise(reads)) < 0.5


def test_trickle_combines_with_drop_after(hub: ImitationHub):
    hub.faults.add(path="model.bin", trickle_after=1024, trickle_rate=4000, drop_after=2048)

    began = time.monotonic()
    status, body, error = fetch(hub.resolve_url(TINY, "model.bin"))

    assert (status, len(body)) == (200, 2048)
    assert error is not None
    assert time.monotonic() - began >= 0.2


def test_stop_ends_a_trickling_response_at_once(empty_hub: ImitationHub):
    empty_hub.add_repo("org/slow", {"w.bin": GeneratedFile(size=100_000, seed=10)})
    empty_hub.faults.add(path="w.bin", trickle_rate=20, times=None)
    received: list[int] = []
    ended = threading.Event()

    def reader() -> None:
        try:
            with requests.get(
                empty_hub.resolve_url("org/slow", "w.bin"), stream=True, timeout=TIMEOUT
            ) as r:
                for chunk in r.iter_content(1):
                    received.append(len(chunk))
        except requests.RequestException:
            pass
        finally:
            ended.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    wait_for(lambda: received, 5, "the first trickled byte")
    began = time.monotonic()
    empty_hub.stop()

    assert time.monotonic() - began < 2
    assert ended.wait(2), "the client still waits on a trickle the hub should have ended"
    assert sum(received) < 100_000


def test_admin_adds_a_trickle_fault(hub: ImitationHub):
    added = HubAdmin(hub.url).add_fault(path="model.bin", trickle_after=10000, trickle_rate=500)

    began = time.monotonic()
    status, body, error = fetch(hub.resolve_url(TINY, "model.bin"))

    assert (added["trickle_after"], added["trickle_rate"]) == (10000, 500)
    assert (status, len(body), error) == (200, 10240, None)
    assert time.monotonic() - began >= 0.3
