"""PromptCache: hits, LRU bounds, persistence, crash-safe and corrupt entries, measured statistics."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from runners.prompt_cache import PromptCache, PromptFeatures, audio_key
from tests.concurrency import race


def features(n: int = 10, compute_s: float = 0.5) -> PromptFeatures:
    return PromptFeatures(list(range(n)), torch.randn(1, 2 * n, 80), torch.randn(1, 192), compute_s=compute_s)


def test_key_depends_on_samples_rate_and_settings() -> None:
    x = torch.randn(16000)
    k = audio_key(x, 16000, "root=a")
    assert k == audio_key(x.clone(), 16000, "root=a")
    assert k != audio_key(x, 24000, "root=a")
    assert k != audio_key(x, 16000, "root=b")
    y = x.clone()
    y[5000] += 1e-3
    assert k != audio_key(y, 16000, "root=a")


def test_hit_after_put_and_statistics() -> None:
    cache = PromptCache()
    assert cache.get("k") is None
    cache.put("k", features(compute_s=0.25))
    got = cache.get("k")
    assert got is not None and got.codec_ids == list(range(10))
    s = cache.stats()
    assert (s.hits, s.misses, s.entries) == (1, 1, 1)
    assert s.hit_rate == 0.5 and s.bytes > 192 * 4
    assert 0.2 < s.time_saved_s <= 0.25


def test_transcript_merges_into_an_entry() -> None:
    cache = PromptCache()
    cache.put("k", PromptFeatures(transcript="hello", compute_s=0.1))
    assert cache.get("k") is None  # no features yet: a miss for prepare
    assert cache.get("k", need_features=False, need_transcript=True).transcript == "hello"
    cache.put("k", features())
    both = cache.get("k", need_transcript=True)
    assert both.transcript == "hello" and both.has_features


def test_lru_is_bounded_by_entries_and_bytes() -> None:
    cache = PromptCache(max_entries=2)
    for k in "abc":
        cache.put(k, features())
    assert cache.peek("a") is None and cache.peek("c") is not None
    small = PromptCache(max_bytes=features().nbytes() + 10)
    small.put("a", features())
    small.put("b", features())
    assert small.stats().entries == 1 and small.peek("b") is not None


def test_entries_survive_a_restart(tmp_path: Path) -> None:
    first = PromptCache(tmp_path)
    f = features()
    first.put("abcdef", f)
    second = PromptCache(tmp_path)  # a new process would see the same folder
    got = second.get("abcdef")
    assert got is not None and got.codec_ids == f.codec_ids
    assert torch.equal(got.mel, f.mel) and torch.equal(got.speaker, f.speaker)
    assert second.stats().disk_entries == 1


def test_corrupt_or_half_written_entries_are_ignored_and_rebuilt(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    cache.put("abcdef", features())
    path = next(tmp_path.glob("*/*.npz"))
    path.write_bytes(path.read_bytes()[:100])  # torn file
    fresh = PromptCache(tmp_path)
    assert fresh.get("abcdef") is None
    assert not path.exists()
    fresh.put("abcdef", features())
    assert PromptCache(tmp_path).get("abcdef") is not None
    # a leftover temporary file from a crash mid-write is never read as an entry
    (path.parent / ".tmp-xyz.part").write_bytes(b"partial")
    assert PromptCache(tmp_path).stats().disk_entries == 1


def test_disk_size_cap_drops_oldest(tmp_path: Path) -> None:
    probe = PromptCache(tmp_path / "probe")
    probe.put("zz0", features())
    one_entry = probe.stats().disk_bytes
    cache = PromptCache(tmp_path / "capped", max_disk_bytes=int(one_entry * 1.5))
    cache.put("aa1", features())
    time.sleep(0.01)
    cache.put("bb2", features())
    assert cache.stats().disk_entries == 1
    assert PromptCache(tmp_path / "capped").get("bb2") is not None  # the newest one stays


def test_clear_empties_memory_and_disk(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    cache.put("a1", features())
    cache.put("b2", features())
    assert cache.clear() == 2
    s = cache.stats()
    assert (s.entries, s.disk_entries, s.hits) == (0, 0, 0)


def test_concurrent_use_is_safe(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path, max_entries=8)

    def worker(i: int) -> None:
        for j in range(20):
            key = f"{(i + j) % 12:02d}key"
            if cache.get(key) is None:
                cache.put(key, features(4))

    errors = [r for r in race(worker, 6) if isinstance(r, BaseException)]
    assert not errors
    s = cache.stats()
    assert s.hits + s.misses == 120 and s.entries <= 8
