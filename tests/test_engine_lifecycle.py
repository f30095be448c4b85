"""Engine lifecycle on the tiny model: prompt cache hits, persistence, lazy load, idle unload/offload."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runners.config import EngineConfig
from runners.engine import EditXEngine
from runners.errors import EngineUnavailableError
from tests.concurrency import race
from tests.test_engine import voice


def make(tiny_root: Path, **overrides) -> EditXEngine:
    values = {"model_path": str(tiny_root), "max_new_tokens": 30, "cache_dir": ""} | overrides
    return EditXEngine(EngineConfig(**values))


def count_tokenizer_calls(engine: EditXEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    tokenizer = engine.parts.audio_tokenizer
    real = tokenizer.tokenize

    def spy(audio):
        calls.append(1)
        return real(audio)

    monkeypatch.setattr(tokenizer, "tokenize", spy)
    return calls


def wait_for(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_second_identical_prompt_is_a_cache_hit(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make(tiny_root).load()
    calls = count_tokenizer_calls(engine, monkeypatch)
    first = engine.clone(voice(), "prompt", "Hello.", seed=0)
    second = engine.clone(voice(), "prompt", "Hello.", seed=0)
    assert len(calls) == 1  # the tokenizer ran once; the second request came from the cache
    assert (first.samples == second.samples).all()
    stats = engine.status()["cache"]
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["time_saved_s"] > 0


def test_cache_survives_a_restart_and_corrupt_entries_are_rebuilt(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(tiny_root, cache_dir=str(tmp_path)).load().prepare(voice())
    restarted = make(tiny_root, cache_dir=str(tmp_path)).load()
    calls = count_tokenizer_calls(restarted, monkeypatch)
    restarted.prepare(voice())
    assert calls == []
    for f in tmp_path.glob("*/*.npz"):
        f.write_bytes(b"garbage")
    third = make(tiny_root, cache_dir=str(tmp_path)).load()
    calls = count_tokenizer_calls(third, monkeypatch)
    third.prepare(voice())
    assert len(calls) == 1  # the damaged entry was ignored and computed again
    rebuilt = [p.stem for p in tmp_path.glob("*/*.npz")]
    assert len(rebuilt) == 1
    assert make(tiny_root, cache_dir=str(tmp_path)).cache.get(rebuilt[0]) is not None


def test_lazy_engine_is_ready_and_loads_on_first_request(tiny_root: Path) -> None:
    engine = make(tiny_root, lazy_load=True)
    assert engine.state == "unloaded" and engine.ready
    engine.clone(voice(), "prompt", "Hi.", seed=0)
    assert engine.state == "loaded" and engine.load_count == 1


def test_failed_load_is_not_ready(tmp_path: Path) -> None:
    engine = EditXEngine(EngineConfig(model_path=str(tmp_path)))
    assert not engine.ready
    with pytest.raises(EngineUnavailableError, match="incomplete"):
        engine.load()
    assert engine.state == "failed" and not engine.ready and "missing" in engine.status()["error"]


def test_idle_unload_frees_and_racing_requests_reload(tiny_root: Path) -> None:
    engine = make(tiny_root, idle_unload_s=0.5)
    try:
        engine.load()
        engine.clone(voice(), "prompt", "Hi.", seed=0)
        assert wait_for(lambda: engine.state == "unloaded")
        assert engine._parts is None and engine.ready
        report = engine.status()["last_unload"]
        assert report["action"] == "unload" and "idle" in report["reason"]
        held = "weights_cuda_mb" if engine.device.type == "cuda" else "weights_cpu_mb"
        assert report["before"][held] > 1.0 and report["after"][held] == 0.0  # the weights were really let go
        results = race(lambda i: engine.clone(voice(), "prompt", f"Hi {i}.", seed=i), 3)
        assert all(not isinstance(r, BaseException) for r in results), results
        assert engine.load_count == 2  # reloaded once, shared by the racing requests
    finally:
        engine.close()


def test_requests_in_flight_are_never_cut_off(tiny_root: Path) -> None:
    engine = make(tiny_root, idle_unload_s=0.3, max_new_tokens=120)
    try:
        engine.load()
        for i in range(3):  # each request takes longer than the idle limit
            out = engine.edit(voice(), "words", "emotion", "sad", n_edit_iter=2, seed=i)
            assert out.samples.size > 0
    finally:
        engine.close()


def test_idle_offload_keeps_weights_in_cpu_memory(tiny_root: Path) -> None:
    engine = make(tiny_root, idle_unload_s=0.4, idle_action="offload")
    try:
        engine.load()
        assert wait_for(lambda: engine.state == "offloaded")
        assert engine._parts is not None and engine.ready
        assert engine.status()["memory"]["weights_cpu_mb"] > 1.0  # kept, in CPU memory
        engine.clone(voice(), "prompt", "Hi.", seed=0)
        assert engine.state == "loaded" and engine.load_count == 1  # brought back, not reloaded
    finally:
        engine.close()
