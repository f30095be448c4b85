"""Token2Wav end to end on the tiny decoder folder: lengths, determinism, timings, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runners.models.decoder.token2wav import Token2Wav
from runners.models.tokenizers.tokens import GROUP_SIZE, TOKENS_PER_SECOND

PARITY = Path(__file__).resolve().parents[2] / "data" / "parity" / "flow_mel.npz"


def _codec_ids(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        out.append(int(torch.randint(0, 1024, (1,), generator=g)) if i % 5 < 2 else 1024 + int(torch.randint(0, 4096, (1,), generator=g)))
    return out


PROMPT = _codec_ids(20, 1)
PROMPT_MEL = torch.randn(1, 37, 80, generator=torch.Generator().manual_seed(2))  # untrimmed: not 2× the pairs
SPEAKER = torch.randn(1, 192, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("n_tokens", [25, 40, 23])
def test_duration_follows_the_token_count(t2w: Token2Wav, n_tokens: int) -> None:
    wave = t2w(_codec_ids(n_tokens, 4), PROMPT, PROMPT_MEL, SPEAKER, seed=0)
    assert wave.dim() == 1 and wave.dtype == torch.float32 and wave.device.type == "cpu"
    seconds = wave.numel() / t2w.sample_rate
    assert t2w.sample_rate == 24000
    # 41.67 tokens per second; an incomplete trailing group is padded to a whole one (0.12 s)
    assert abs(seconds - n_tokens / TOKENS_PER_SECOND) < GROUP_SIZE / TOKENS_PER_SECOND
    if n_tokens % GROUP_SIZE == 0:
        assert wave.numel() == n_tokens * 24000 * 0.12 / GROUP_SIZE
    assert torch.isfinite(wave).all() and wave.abs().max() <= 0.99 and wave.abs().max() > 0


def test_same_seed_same_wave_other_seed_other_wave(t2w: Token2Wav) -> None:
    ids = _codec_ids(30, 5)
    a = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=7)
    b = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=7)
    c = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=8)
    assert torch.equal(a.mel, b.mel) and torch.equal(a.waveform, b.waveform)
    assert (a.mel - c.mel).abs().max() > 1e-3
    assert not torch.equal(a.waveform, c.waveform)
    # no seed: the instance's fixed default, like upstream's fixed noise buffer
    assert torch.equal(t2w(ids, PROMPT, PROMPT_MEL, SPEAKER), t2w(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=t2w.default_seed))


def test_exposes_mel_and_stage_timings(t2w: Token2Wav) -> None:
    out = t2w.synthesize(_codec_ids(15, 6), PROMPT, PROMPT_MEL, SPEAKER, seed=0)
    assert out.mel.shape == (1, 80, 2 * 9)  # 3 groups → 9 frame pairs → 18 mel frames
    assert out.waveform.numel() == out.mel.size(-1) * 480
    assert out.flow_seconds > 0 and out.vocoder_seconds > 0
    assert out.duration_s == pytest.approx(15 / TOKENS_PER_SECOND)


def test_prompt_inputs_may_come_without_batch_dims(t2w: Token2Wav) -> None:
    ids = _codec_ids(10, 9)
    batched = t2w(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=1)
    flat = t2w(ids, PROMPT, PROMPT_MEL[0], SPEAKER[0], seed=1)
    assert torch.equal(batched, flat)


def test_matches_the_upstream_flow_through_the_whole_call(t2w: Token2Wav) -> None:
    data = np.load(PARITY)
    out = t2w.synthesize(
        data["token_ids"].tolist(),
        data["prompt_ids"].tolist(),
        torch.from_numpy(data["prompt_mel"]),
        torch.from_numpy(data["embedding"]),
        noise=torch.from_numpy(data["noise"]),
    )
    torch.testing.assert_close(out.mel, torch.from_numpy(data["mel"]), atol=1e-4, rtol=0)


def test_rejects_inputs_it_cannot_decode(t2w: Token2Wav) -> None:
    with pytest.raises(ValueError, match="no audio tokens"):
        t2w([], PROMPT, PROMPT_MEL, SPEAKER)
    with pytest.raises(ValueError, match="80 bins"):
        t2w(_codec_ids(5, 1), PROMPT, torch.randn(1, 10, 64), SPEAKER)
    with pytest.raises(ValueError, match="192-d"):
        t2w(_codec_ids(5, 1), PROMPT, PROMPT_MEL, torch.randn(1, 128))


def test_an_official_size_random_decoder_has_the_release_dimensions_and_decodes(tmp_path: Path) -> None:
    """``runners.models.tiny --official-size``: what the speed benchmarks run must be as large as the release."""
    from runners.models.store import DECODER_DIR, LLM_DIR
    from runners.models.step1.configuration import OFFICIAL_CONFIG
    from runners.models.tiny import build_tiny_model_root, random_codec_ids
    from runners.models.tiny.step1 import TINY_DIMS, tiny_config_dict
    from tests.runners.models.test_decoder_config import OFFICIAL_FLOW_PT_BYTES

    llm = tiny_config_dict(official_size=True)
    assert {k: llm[k] for k in TINY_DIMS} == {k: OFFICIAL_CONFIG[k] for k in TINY_DIMS}  # 3.5 B (test_step1)
    root = build_tiny_model_root(tmp_path, parts=("decoder",), official_size=True)
    big = Token2Wav(root / LLM_DIR / DECODER_DIR)
    flow_params = sum(p.numel() for p in big.flow.parameters())
    assert 0 < OFFICIAL_FLOW_PT_BYTES - 4 * flow_params < 400_000  # the released flow.pt holds as many
    assert big.hift.conv_pre.out_channels == 512  # CosyVoice's 24 kHz HiFT width (the tiny one has 16)
    out = big.synthesize(random_codec_ids(10, 4), random_codec_ids(10, 1), torch.randn(1, 12, 80),
                         torch.randn(1, 192), seed=0)
    assert out.waveform.numel() == 6 * 2 * 480 and bool(torch.isfinite(out.waveform).all())
