"""The voice registry on its own: files, names, conflicts, crashes, replicas, an unwritable folder.

Stand-in features are stored (the served tests in tests/api/openai/test_openai_api.py compute real ones
through the engine); the prompt cache and the preparation stage that reuses them are the real ones.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from api.errors import rule_for
from runners.audio import Audio, limit_peak
from runners.errors import ConflictError, InvalidInputError, NotFoundError, StorageUnavailableError
from runners.prompt_cache import PromptCache, audio_key
from runners.config import EngineConfig
from runners.pipeline.prepare import Preparer
from runners.voices import Voice, VoiceRegistry
from tests.service_helpers import tone


def store(reg: VoiceRegistry, name: str, audio: Audio, text: str = "x", settings: str = "v1|fake") -> Voice:
    """Register a voice with features that depend on its samples (the engine computes real ones)."""
    n = int(audio.samples.numel())
    return reg.create(name, audio, text, list(range(n % 97)), torch.full((1, 10, 80), float(n)), torch.ones(1, 192),
                      settings)


def clip(seconds: float = 1.0, rate: int = 16000) -> Audio:
    return Audio(torch.from_numpy(tone(seconds, rate)), rate)


def test_create_list_get_delete(tmp_path: Path) -> None:
    reg = VoiceRegistry(tmp_path / "voices")
    voice = store(reg, "alice_01", clip(1.5), "hello there")
    assert (voice.id, voice.name, voice.text, voice.duration_s) == ("alice_01", "alice_01", "hello there", 1.5)
    assert [v.id for v in reg.all()] == ["alice_01"] and reg.get("alice_01") == voice
    store(reg, "bob", clip(1.0), "heard by whisper")
    assert reg.get("bob").text == "heard by whisper"
    assert [v.id for v in reg.all()] == ["alice_01", "bob"]
    assert reg.delete("alice_01").id == "alice_01"
    assert [v.id for v in reg.all()] == ["bob"]
    with pytest.raises(NotFoundError, match="registered: bob"):
        reg.get("alice_01")
    with pytest.raises(NotFoundError):
        reg.delete("alice_01")


@pytest.mark.parametrize("name", ["", "a" * 65, "has space", "../escape", "dot.name", "ümlaut"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInputError) as bad:
        store(VoiceRegistry(tmp_path), name, clip())
    assert bad.value.field == "name"
    assert list(tmp_path.iterdir()) == []


def test_same_name_twice_is_a_conflict_even_when_racing(tmp_path: Path) -> None:
    reg = VoiceRegistry(tmp_path)
    store(reg, "a" * 64, clip())  # 64 characters is allowed
    with pytest.raises(ConflictError):
        store(reg, "a" * 64, clip())
    with pytest.raises(ConflictError):
        reg.check_new("a" * 64)  # what the engine asks before it computes any feature

    results: list[str] = []
    barrier = threading.Barrier(4)

    def racer() -> None:
        barrier.wait()
        try:
            store(VoiceRegistry(tmp_path), "raced", clip())  # each its own "replica"
            results.append("created")
        except ConflictError:
            results.append("conflict")

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 3 + ["created"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_a_half_written_voice_is_never_listed(tmp_path: Path) -> None:
    reg = VoiceRegistry(tmp_path)
    store(reg, "whole", clip())
    partial = tmp_path / ".tmp-crashed"  # what a writer that died mid-way leaves behind
    partial.mkdir()
    (partial / "audio.wav").write_bytes(b"RIFF")
    broken = tmp_path / "broken"  # a folder with no description is not a voice either
    broken.mkdir()
    assert [v.id for v in reg.all()] == ["whole"]
    with pytest.raises(NotFoundError):
        reg.get("broken")
    old = 1_000_000_000
    os.utime(partial, (old, old))
    store(reg, "next", clip())  # a later write sweeps stale temporary folders
    assert not partial.exists()


def test_replicas_sharing_a_folder_see_each_others_voices(tmp_path: Path) -> None:
    one, two = VoiceRegistry(tmp_path), VoiceRegistry(tmp_path)
    store(one, "shared", clip(2.0), "from replica one")
    stored = two.load("shared")  # never created through `two`
    assert stored.voice.text == "from replica one" and stored.audio.duration_s == pytest.approx(2.0)
    two.delete("shared")
    with pytest.raises(NotFoundError):
        one.load("shared")


def test_voice_survives_a_restart_and_primes_the_prompt_cache(tmp_path: Path) -> None:
    audio = clip(1.2)
    store(VoiceRegistry(tmp_path), "keep", audio)
    stored = VoiceRegistry(tmp_path).load("keep")  # a new process: empty memory cache
    assert torch.equal(stored.audio.samples, audio.samples)  # bit-identical samples: the same cache key

    def preparer(settings: str) -> Preparer:
        return Preparer(EngineConfig(), PromptCache(None), None, VoiceRegistry(tmp_path),  # type: ignore[arg-type]
                        parts=lambda: None, settings=lambda: settings)  # type: ignore[arg-type,return-value]

    prep = preparer("v1|fake")
    assert prep.use_stored_features(stored)
    key = audio_key(limit_peak(audio.samples), audio.sample_rate, "v1|fake")
    hit = prep.cache.get(key)
    assert hit is not None and hit.has_features and float(hit.mel[0, 0, 0]) == audio.samples.numel()
    # the clone's preparation finds them under the key it computes: no model part is asked
    prepared = prep.features(prep.voice_prompt("keep", None, None)[0])
    assert prepared.codec_ids == list(range(audio.samples.numel() % 97))

    other = preparer("v1|another-model")
    assert not other.use_stored_features(stored)  # features of another model are not reused
    assert other.cache.stats().entries == 0


def test_an_unwritable_folder_is_a_clear_503(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    reg = VoiceRegistry(blocker / "voices")  # cannot be created, even by root
    assert reg.all() == []
    with pytest.raises(StorageUnavailableError, match="EDITX_VOICES_DIR") as err:
        store(reg, "alice", clip())
    rule = rule_for(err.value)
    assert rule.status == 503 and rule.retry_after_s is None  # an operator must fix the folder: waiting helps not
