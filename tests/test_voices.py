"""The voice registry on its own: files, names, conflicts, crashes, replicas, an unwritable folder.

A stand-in engine supplies the checks and the prompt features (the served tests in
tests/test_openai_api.py run the real one); the prompt cache is the real one.
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
from runners.voices import VoiceRegistry
from tests.service_helpers import tone


class FakeEngine:
    """What the registry asks of the engine, with features that depend on the samples."""

    def __init__(self) -> None:
        self.cache = PromptCache(None)
        self.prepared = 0
        self.transcribed = 0

    def check_audio(self, audio: Audio, name: str = "audio") -> Audio:
        if audio.duration_s < 0.1:
            raise InvalidInputError(f"{name} is empty or shorter than 0.1 s", field=name)
        return audio

    def resolve_transcript(self, text: str | None, audio: Audio, field: str) -> str:
        if text:
            return text
        self.transcribed += 1
        return "heard by whisper"

    def cache_settings(self) -> str:
        return "v1|fake"

    def prepare(self, audio: Audio):  # noqa: ANN201 - the engine's PreparedAudio shape
        self.prepared += 1
        n = int(audio.samples.numel())

        class Prepared:
            codec_ids = list(range(n % 97))
            mel = torch.full((1, 10, 80), float(n))
            speaker = torch.ones(1, 192)

        return Prepared()


def clip(seconds: float = 1.0, rate: int = 16000) -> Audio:
    return Audio(torch.from_numpy(tone(seconds, rate)), rate)


def test_create_list_get_delete(tmp_path: Path) -> None:
    reg, engine = VoiceRegistry(tmp_path / "voices"), FakeEngine()
    voice = reg.create("alice_01", clip(1.5), "hello there", engine)
    assert (voice.id, voice.name, voice.text, voice.duration_s) == ("alice_01", "alice_01", "hello there", 1.5)
    assert [v.id for v in reg.all()] == ["alice_01"] and reg.get("alice_01") == voice
    reg.create("bob", clip(1.0), None, engine)  # empty text: transcribed
    assert reg.get("bob").text == "heard by whisper" and engine.transcribed == 1
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
        VoiceRegistry(tmp_path).create(name, clip(), "x", FakeEngine())
    assert bad.value.field == "name"
    assert list(tmp_path.iterdir()) == []


def test_same_name_twice_is_a_conflict_even_when_racing(tmp_path: Path) -> None:
    reg, engine = VoiceRegistry(tmp_path), FakeEngine()
    reg.create("a" * 64, clip(), "x", engine)  # 64 characters is allowed
    with pytest.raises(ConflictError):
        reg.create("a" * 64, clip(), "x", engine)

    results: list[str] = []
    barrier = threading.Barrier(4)

    def racer() -> None:
        barrier.wait()
        try:
            VoiceRegistry(tmp_path).create("raced", clip(), "x", FakeEngine())  # each its own "replica"
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
    reg.create("whole", clip(), "x", FakeEngine())
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
    reg.create("next", clip(), "x", FakeEngine())  # a later write sweeps stale temporary folders
    assert not partial.exists()


def test_replicas_sharing_a_folder_see_each_others_voices(tmp_path: Path) -> None:
    one, two = VoiceRegistry(tmp_path), VoiceRegistry(tmp_path)
    one.create("shared", clip(2.0), "from replica one", FakeEngine())
    stored = two.load("shared")  # never created through `two`
    assert stored.voice.text == "from replica one" and stored.audio.duration_s == pytest.approx(2.0)
    two.delete("shared")
    with pytest.raises(NotFoundError):
        one.load("shared")


def test_voice_survives_a_restart_and_primes_the_prompt_cache(tmp_path: Path) -> None:
    audio = clip(1.2)
    VoiceRegistry(tmp_path).create("keep", audio, "x", FakeEngine())
    engine = FakeEngine()  # a new process: empty memory cache
    stored = VoiceRegistry(tmp_path).load("keep")
    assert torch.equal(stored.audio.samples, audio.samples)  # bit-identical samples: the same cache key
    assert VoiceRegistry(tmp_path).prime(stored, engine)
    key = audio_key(limit_peak(audio.samples), audio.sample_rate, engine.cache_settings())
    hit = engine.cache.get(key)
    assert hit is not None and hit.has_features and float(hit.mel[0, 0, 0]) == audio.samples.numel()

    other = FakeEngine()
    other.cache_settings = lambda: "v1|another-model"  # type: ignore[method-assign]
    assert not VoiceRegistry(tmp_path).prime(stored, other)  # features of another model are not reused
    assert other.cache.stats().entries == 0


def test_an_unwritable_folder_is_a_clear_503(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    reg = VoiceRegistry(blocker / "voices")  # cannot be created, even by root
    assert reg.all() == []
    with pytest.raises(StorageUnavailableError, match="EDITX_VOICES_DIR") as err:
        reg.create("alice", clip(), "x", FakeEngine())
    rule = rule_for(err.value)
    assert rule.status == 503 and rule.retry_after_s is None  # an operator must fix the folder: waiting helps not
