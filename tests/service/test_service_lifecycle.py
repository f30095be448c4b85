"""The prompt pipeline as a user of the HTTP service sees it (tiny model, in-process).

Lazy loading and idle unload with requests racing the unload; the prompt
cache surviving a restart of the service (the tokenizer is not called again)
and a corrupt cache file being ignored and rebuilt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from runners.models.tokenizers.audio_tokenizer import AudioTokenizer
from runners.models.decoder.prompt_features import SpeakerEncoder
from tests.concurrency import race
from tests.service_helpers import in_process_service, service_env, tone, wav_bytes
from tests.runners.test_lifecycle import wait_for

VOICE = wav_bytes(tone(1.5))


def _edit(client: TestClient, seed: int = 0) -> int:
    r = client.post("/edit", files={"audio": ("v.wav", VOICE)}, data={"edit_type": "denoise", "seed": str(seed)})
    assert r.status_code == 200, r.text
    return r.status_code


@pytest.fixture
def feature_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts every real run of the tokenizer, the prompt mel and the speaker model, in any engine here."""
    from runners.models.decoder import prompt_features

    calls = {"tokenizer": 0, "mel": 0, "speaker": 0}

    def counted(name: str, fn):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(AudioTokenizer, "tokenize", counted("tokenizer", AudioTokenizer.tokenize))
    monkeypatch.setattr(prompt_features, "prompt_mel", counted("mel", prompt_features.prompt_mel))
    monkeypatch.setattr(SpeakerEncoder, "__call__", counted("speaker", SpeakerEncoder.__call__))
    return calls


def test_lazy_load_then_idle_unload_then_racing_requests(tiny_root: Path) -> None:
    env = {**service_env(tiny_root), "EDITX_LAZY_LOAD": "1", "EDITX_IDLE_UNLOAD_S": "1"}
    with in_process_service(env) as (client, _):
        # Nothing loaded at start, yet ready: the first request will load it.
        status = client.get("/status").json()
        assert status["state"] == "unloaded" and status["load_count"] == 0 and status["lazy_load"] is True
        assert client.get("/readyz").status_code == 200

        _edit(client)
        status = client.get("/status").json()
        assert status["load_count"] == 1 and status["time_until_unload_s"] is not None

        assert wait_for(lambda: client.get("/status").json()["state"] == "unloaded", timeout=30)
        status = client.get("/status").json()
        assert status["memory"]["weights_cpu_mb"] == 0.0
        report = status["last_unload"]
        assert "idle" in report["reason"] and report["before"]["weights_cpu_mb"] > report["after"]["weights_cpu_mb"]
        assert client.get("/readyz").status_code == 200  # unloaded for idleness is still ready

        codes = race(lambda seed: _edit(client, seed), 4)
        assert codes == [200] * 4
        assert client.get("/status").json()["load_count"] == 2  # one reload served all four


def test_prompt_cache_survives_a_service_restart(tiny_root: Path, tmp_path: Path, feature_calls: dict) -> None:
    env = {**service_env(tiny_root), "EDITX_CACHE_DIR": str(tmp_path / "cache")}
    with in_process_service(env) as (client, _):
        assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=120)
        _edit(client)
        assert feature_calls == {"tokenizer": 1, "mel": 1, "speaker": 1}
        assert client.get("/status").json()["cache"]["disk_entries"] >= 1

    with in_process_service(env) as (client, _):  # a new process would see the same folder
        assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=120)
        _edit(client)
        # Served from disk: neither the tokenizer nor the mel nor the speaker model ran.
        assert feature_calls == {"tokenizer": 1, "mel": 1, "speaker": 1}
        cache = client.get("/status").json()["cache"]
        assert cache["hits"] == 1 and cache["misses"] == 0

    for entry in (tmp_path / "cache").glob("*/*.npz"):
        entry.write_bytes(entry.read_bytes()[:100])  # a crash mid-write, or a damaged disk

    with in_process_service(env) as (client, _):
        assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=120)
        _edit(client)
        assert feature_calls["tokenizer"] == 2  # the damaged entry was ignored and computed again
        _edit(client)
        assert feature_calls["tokenizer"] == 2 and client.get("/status").json()["cache"]["hits"] == 1
