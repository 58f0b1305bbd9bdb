"""Large files are generated and served in chunks, never held whole in memory."""

from __future__ import annotations

import hashlib
import os

import psutil
import pytest
import requests

from tests.hub import GeneratedFile, ImitationHub

SIZE = 64 * 1024 * 1024 + 123


@pytest.mark.timeout(60)
def test_64_mib_file_streams_with_matching_sha256_and_flat_memory(empty_hub: ImitationHub):
    empty_hub.add_repo("org/big", {"big.gguf": GeneratedFile(size=SIZE, seed=64)})
    info = empty_hub.file_info("org/big", "big.gguf")
    process = psutil.Process(os.getpid())
    rss_before = process.memory_info().rss

    digest, received, rss_peak = hashlib.sha256(), 0, rss_before
    with requests.get(
        empty_hub.resolve_url("org/big", "big.gguf"), stream=True, timeout=(5, 30)
    ) as r:
        assert r.status_code == 200
        for chunk in r.iter_content(1 << 20):
            digest.update(chunk)
            received += len(chunk)
            # Sampled while the body flows: a server holding the file would show here.
            rss_peak = max(rss_peak, process.memory_info().rss)
    rss_growth = rss_peak - rss_before

    assert info.lfs and info.size == SIZE == received
    assert digest.hexdigest() == info.sha256
    # The hub runs in this process, so this bounds both ends: far below the file size.
    assert rss_growth < 24 * 1024 * 1024


@pytest.mark.timeout(60)
def test_large_file_through_the_shaped_path_flips_only_the_last_byte(empty_hub: ImitationHub):
    empty_hub.add_repo("org/big", {"big.gguf": GeneratedFile(size=SIZE, seed=64)})
    info = empty_hub.file_info("org/big", "big.gguf")
    empty_hub.faults.add(path="big.gguf", corrupt_offset=SIZE - 1)

    tail = b""
    digest = hashlib.sha256()
    with requests.get(
        empty_hub.resolve_url("org/big", "big.gguf"), stream=True, timeout=(5, 30)
    ) as r:
        for chunk in r.iter_content(1 << 20):
            digest.update(chunk)
            tail = chunk

    with open(info.disk_path, "rb") as f:
        f.seek(SIZE - 1)
        last = f.read(1)[0]
    assert digest.hexdigest() != info.sha256
    assert tail[-1] == last ^ 0xFF
