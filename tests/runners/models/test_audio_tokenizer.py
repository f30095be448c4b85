"""AudioTokenizer (vq02 + vq06) on the tiny random checkpoint, plus parity with StepFun's code.

The signal helpers at the top are also loaded by path by the out-of-tree
reference recorder described in tests/data/parity/README.md, so they use
numpy only.
"""

from __future__ import annotations

import importlib.util
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

PARITY_FILE = Path(__file__).resolve().parents[2] / "data" / "parity" / "tokenizer_codes.json"

# name → (sample rate, seconds of sound, seconds of leading silence, seconds of trailing silence)
PARITY_CASES: dict[str, tuple[int, float, float, float]] = {
    "speechlike_16k": (16000, 2.9, 0.4, 0.5),
    "speechlike_48k": (48000, 1.73, 0.12, 0.2),
    "speechlike_22k_long": (22050, 31.0, 0.0, 0.3),
    # 8 kHz is resampled up; its trimmed length leaves a 240-sample last vq02 chunk
    "speechlike_8k_short_tail": (8000, 2.0, 0.0, 0.0),
}


def speechlike(rate: int, seconds: float, lead_s: float = 0.0, tail_s: float = 0.0, seed: int = 7) -> np.ndarray:
    """A voiced, syllable-paced, noisy tone complex with silent margins; float32, peak 0.9.

    Gliding pitch, several partials and a 4 Hz syllable envelope give the
    encoders varied frames (a pure tone maps to a single code).
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    f0 = 120.0 + 40.0 * np.sin(2 * np.pi * 0.7 * t) + 15.0 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = np.zeros(n)
    for harmonic, gain in ((1, 1.0), (2, 0.6), (3, 0.45), (5, 0.3), (8, 0.2), (13, 0.12)):
        wobble = 1.0 + 0.5 * np.sin(2 * np.pi * (0.3 + 0.11 * harmonic) * t + harmonic)
        voiced += gain * wobble * np.sin(harmonic * phase)
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t) * 0.8 + 0.4, 0.0, None) ** 1.5
    hiss = rng.standard_normal(n) * (0.05 + 0.1 * (envelope < 0.05))
    sound = voiced * envelope + hiss
    sound *= 0.9 / np.abs(sound).max()
    out = np.concatenate([np.zeros(int(lead_s * rate)), sound, np.zeros(int(tail_s * rate))])
    return out.astype(np.float32)


def parity_signal(name: str) -> tuple[np.ndarray, int]:
    rate, seconds, lead, tail = PARITY_CASES[name]
    return speechlike(rate, seconds, lead, tail), rate


# --------------------------------------------------------------------------- fixtures


def _all_tiny_parts_exist() -> bool:
    return all(importlib.util.find_spec(f"runners.models.tiny.{m}") is not None for m in ("step1", "decoder"))


@pytest.fixture(scope="module")
def model_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny root once every part exists; a tokenizer-only root until then."""
    if _all_tiny_parts_exist():
        return request.getfixturevalue("tiny_root")
    from runners.models.tiny import build_tiny_model_root

    return build_tiny_model_root(tmp_path_factory.mktemp("tiny-tokenizer"), seed=0, parts={"tokenizer"})


@pytest.fixture(scope="module")
def tokenizer(model_root: Path):
    from runners.models.tokenizers.audio_tokenizer import AudioTokenizer
    from runners.models.store import ModelPaths

    return AudioTokenizer(ModelPaths(model_root), device="cpu")


def _audio(samples: np.ndarray, rate: int):
    from runners.audio import Audio, limit_peak

    # The engine limits every prompt to peak 0.6 before tokenizing (tts.py does the same).
    return Audio(limit_peak(torch.from_numpy(samples)), rate)


# --------------------------------------------------------------------------- behaviour


def test_same_audio_gives_same_tokens(tokenizer) -> None:
    audio = _audio(speechlike(16000, 2.0, 0.2, 0.2), 16000)
    first = tokenizer.tokenize(audio)
    second = tokenizer.tokenize(audio)
    assert first == second
    assert len(set(first.vq02)) > 3 and len(set(first.vq06)) > 3  # not a degenerate constant stream


def test_code_rates_and_ranges(tokenizer) -> None:
    tokens = tokenizer.tokenize(_audio(speechlike(16000, 3.0), 16000))
    # at most the sound plus the 0.05 s + 0.22 s margins (quiet syllable gaps at the ends may go)
    assert 2.8 < tokens.duration_s <= 3.0 + 0.27 + 0.015
    assert len(tokens.vq02) / tokens.duration_s == pytest.approx(50 / 3, abs=0.7)
    assert len(tokens.vq06) / tokens.duration_s == pytest.approx(25.0, abs=0.7)
    assert all(0 <= c < 1024 for c in tokens.vq02)
    assert all(0 <= c < 4096 for c in tokens.vq06)


def test_token_forms(tokenizer) -> None:
    from runners.models.tokenizers.tokens import LLM_AUDIO_OFFSET, deinterleave, parse_token_string

    tokens = tokenizer.tokenize(_audio(speechlike(16000, 1.5), 16000))
    groups = min(len(tokens.vq02) // 2, len(tokens.vq06) // 3)
    assert len(tokens.codec_ids) == 5 * groups
    assert deinterleave(tokens.codec_ids) == (tokens.vq02[: 2 * groups], tokens.vq06[: 3 * groups])
    assert tokens.llm_ids == [LLM_AUDIO_OFFSET + c for c in tokens.codec_ids]
    assert parse_token_string(tokens.token_string) == tokens.codec_ids
    assert tokens.token_string.startswith(f"<audio_{tokens.vq02[0]}><audio_{tokens.vq02[1]}><audio_{1024 + tokens.vq06[0]}>")


def test_leading_and_trailing_silence_is_trimmed(tokenizer) -> None:
    plain = tokenizer.tokenize(_audio(speechlike(16000, 1.2), 16000))
    padded = tokenizer.tokenize(_audio(speechlike(16000, 1.2, lead_s=1.0, tail_s=1.5), 16000))
    assert padded.duration_s == pytest.approx(plain.duration_s, abs=0.02)
    assert abs(len(padded.vq06) - len(plain.vq06)) <= 1


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_other_sample_rates_are_resampled(tokenizer, rate: int) -> None:
    # 8 kHz is resampled up (the official code asserts instead), the others down.
    tokens = tokenizer.tokenize(_audio(speechlike(rate, 2.0), rate))
    assert 1.8 < tokens.duration_s <= 2.0 + 0.27 + 0.015
    assert len(tokens.vq02) / tokens.duration_s == pytest.approx(50 / 3, abs=1.0)
    assert len(tokens.vq06) / tokens.duration_s == pytest.approx(25.0, abs=1.0)


def test_stereo_file_is_mixed_to_mono(tokenizer) -> None:
    from runners.audio import decode_audio

    left = speechlike(44100, 1.5, seed=1)
    right = speechlike(44100, 1.5, seed=2)
    buf = io.BytesIO()
    sf.write(buf, np.stack([left, right], axis=1) * 0.5, 44100, format="WAV", subtype="FLOAT")
    audio = decode_audio(buf.getvalue())
    assert audio.samples.dim() == 1
    tokens = tokenizer.tokenize(audio)
    assert len(tokens.vq06) / tokens.duration_s == pytest.approx(25.0, abs=1.0)


def test_empty_audio_is_a_clear_error(tokenizer) -> None:
    from runners.audio import Audio
    from runners.models.tokenizers.audio_tokenizer import AudioTokenizationError

    with pytest.raises(AudioTokenizationError, match="no samples"):
        tokenizer.tokenize(Audio(torch.zeros(0), 16000))


def test_wrong_vq06_rate_is_a_clear_error(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    from runners.models.tokenizers.audio_tokenizer import AudioTokenizationError

    monkeypatch.setattr(tokenizer._vq06, "run", lambda inputs: [np.zeros((1, 3), dtype=np.int64)])
    with pytest.raises(AudioTokenizationError, match="25 per second"):
        tokenizer.vq06_codes(torch.from_numpy(speechlike(16000, 2.0)))


def test_missing_funasr_folder_fails_fast_without_network(model_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import funasr

    from runners.models.tokenizers.audio_tokenizer import AudioTokenizer
    from runners.models.store import ModelLayoutError, ModelPaths

    def no_hub(*args: object, **kwargs: object) -> None:
        raise AssertionError("FunASR must not be asked to resolve a missing folder")

    monkeypatch.setattr(funasr, "AutoModel", no_hub)
    start = time.monotonic()
    with pytest.raises(ModelLayoutError, match="does not exist"):
        AudioTokenizer(ModelPaths(model_root, funasr_id="someone/not-downloaded"))
    assert time.monotonic() - start < 1.0


def test_loading_keeps_global_torch_state(model_root: Path) -> None:
    from runners.models.tokenizers.audio_tokenizer import AudioTokenizer
    from runners.models.store import ModelPaths

    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    AudioTokenizer(ModelPaths(model_root))
    assert torch.equal(torch.rand(3), expected)  # FunASR's reseeding did not leak
    assert torch.get_num_threads() == threads


# --------------------------------------------------------------------------- parity with the official code


def _parity() -> dict:
    return json.loads(PARITY_FILE.read_text())


def test_whisper_mel_matches_openai_whisper_numbers() -> None:
    from runners.models.tokenizers.whisper_mel import log_mel_spectrogram, mel_filterbank

    record = _parity()
    filters = mel_filterbank(n_mels=128)
    for key, value in record["mel_filters_128"].items():
        band, bin_ = (int(v) for v in key.split(","))
        assert filters[band, bin_] == np.float32(value)
    assert float(filters.astype(np.float64).sum()) == pytest.approx(record["mel_filters_128_sum"], rel=1e-6)

    x, _ = parity_signal("speechlike_16k")
    mel = log_mel_spectrogram(torch.from_numpy(x[: 16000 + 123]))
    ref = record["plain_mel"]
    assert list(mel.shape) == ref["shape"]
    for key, value in ref["values"].items():
        band, frame = (int(v) for v in key.split(","))
        assert float(mel[band, frame]) == pytest.approx(value, abs=1e-5)
    assert float(mel.double().mean()) == pytest.approx(ref["mean"], abs=1e-5)


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_codes_match_official_tokenizer(tokenizer, case: str) -> None:
    from runners.models.tokenizers.whisper_mel import log_mel_spectrogram

    expected = _parity()["cases"][case]
    x, rate = parity_signal(case)
    audio = _audio(x, rate)
    prepared = tokenizer.prepare(audio)
    assert prepared.numel() == expected["prepared_samples"]

    mel = log_mel_spectrogram(prepared[:16000])
    assert list(mel.shape) == expected["mel_first_second_shape"]
    for key, value in expected["mel_samples"].items():
        band, frame = (int(v) for v in key.split(","))
        assert float(mel[band, frame]) == pytest.approx(value, abs=1e-4)

    if prepared.numel() > 30 * 16000:
        # the long case is here for the 30 s vq06 split; its vq02 pass is slow and
        # adds nothing the short cases do not already pin down
        assert tokenizer.vq06_codes(prepared) == expected["vq06"]
        return
    tokens = tokenizer.tokenize(audio)
    assert tokens.vq02 == expected["vq02"]
    assert tokens.vq06 == expected["vq06"]
    assert tokens.token_string.startswith(expected["token_string_prefix"])
