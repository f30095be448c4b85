"""HiFT vocoder: official checkpoint naming, output contract, determinism, parity with upstream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runners.hift import HiFTGenerator, expected_hift_state_shapes, load_hift
from runners.tiny.vocoder import tiny_hift_section, tiny_hift_state, write_hift

PARITY = Path(__file__).parent / "data" / "parity" / "hift_wave.npz"

# The hift: section of the official CosyVoice-300M-25Hz/cosyvoice.yaml (see tests/data/parity/README.md
# for which numbers are confirmed against the real file by public ports).
OFFICIAL = {
    "in_channels": 80,
    "base_channels": 512,
    "nb_harmonics": 8,
    "sampling_rate": 24000,
    "nsf_alpha": 0.1,
    "nsf_sigma": 0.003,
    "nsf_voiced_threshold": 10,
    "upsample_rates": [8, 5, 3],
    "upsample_kernel_sizes": [16, 11, 7],
    "istft_params": {"n_fft": 16, "hop_len": 4},
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "source_resblock_kernel_sizes": [7, 7, 11],
    "source_resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "lrelu_slope": 0.1,
    "audio_limit": 0.99,
    "f0_predictor": {"num_class": 1, "in_channels": 80, "cond_channels": 512},
}


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hift") / "hift.pt"
    write_hift(path, tiny_hift_section(), seed=0)
    return path


@pytest.fixture(scope="module")
def vocoder(tiny_pt: Path) -> HiFTGenerator:
    return load_hift(tiny_pt, tiny_hift_section())


def _mel(frames: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 80, frames, generator=torch.Generator().manual_seed(seed)) * 2.0 - 5.0


def test_official_numbers_give_the_official_key_names_and_shapes() -> None:
    model = HiFTGenerator.from_config(OFFICIAL)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == expected_hift_state_shapes(OFFICIAL)
    # 328 tensors / 20 821 295 values: what torch's parametrized weight norm gives for the CosyVoice2-style
    # HiFT (246 tensors once weight norm is folded, the count a public port reports for the real hift.pt)
    assert len(shapes) == 328
    assert sum(v.numel() for v in model.state_dict().values()) == 20_821_295
    by_hand = {
        "conv_pre.parametrizations.weight.original0": (512, 1, 1),
        "conv_pre.parametrizations.weight.original1": (512, 80, 7),
        "ups.0.parametrizations.weight.original0": (512, 1, 1),  # transposed conv: g over input channels
        "ups.0.parametrizations.weight.original1": (512, 256, 16),
        "ups.2.parametrizations.weight.original1": (128, 64, 7),
        "source_downs.0.weight": (256, 18, 30),
        "source_downs.1.weight": (128, 18, 6),
        "source_downs.2.weight": (64, 18, 1),
        "source_resblocks.2.convs1.2.parametrizations.weight.original1": (64, 64, 11),
        "resblocks.8.activations2.2.alpha": (64,),
        "f0_predictor.condnet.0.parametrizations.weight.original1": (512, 80, 3),
        "f0_predictor.condnet.8.bias": (512,),
        "f0_predictor.classifier.weight": (1, 512),
        "m_source.l_linear.weight": (1, 9),
        "conv_post.parametrizations.weight.original1": (18, 64, 7),
    }
    for key, shape in by_hand.items():
        assert shapes[key] == shape, key
    assert not any(k.endswith(("weight_g", "weight_v")) or "stft_window" in k for k in shapes)


def test_tiny_checkpoint_has_exactly_the_expected_keys(tiny_pt: Path) -> None:
    state = torch.load(tiny_pt, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_hift_state_shapes(tiny_hift_section())
    assert all(v.dtype == torch.float32 for v in state.values())
    HiFTGenerator.from_config(tiny_hift_section()).load_state_dict(state, strict=True)


def test_tiny_checkpoint_is_reproducible_per_seed(tmp_path: Path, tiny_pt: Path) -> None:
    write_hift(tmp_path / "again.pt", tiny_hift_section(), seed=0)
    write_hift(tmp_path / "other.pt", tiny_hift_section(), seed=1)
    assert (tmp_path / "again.pt").read_bytes() == tiny_pt.read_bytes()
    assert (tmp_path / "other.pt").read_bytes() != tiny_pt.read_bytes()


def test_tiny_section_keeps_the_official_rate_and_hop() -> None:
    model = HiFTGenerator.from_config(tiny_hift_section())
    assert model.sampling_rate == 24000
    assert model.samples_per_frame == 480


def test_legacy_weight_g_v_checkpoint_loads_to_the_same_vocoder(tmp_path: Path, vocoder: HiFTGenerator) -> None:
    legacy = {
        k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v
        for k, v in tiny_hift_state(tiny_hift_section(), seed=0).items()
    }
    torch.save(legacy, tmp_path / "legacy.pt")
    old = load_hift(tmp_path / "legacy.pt", tiny_hift_section())
    mel = _mel(6)
    a = vocoder.inference(mel, generator=torch.Generator().manual_seed(3))
    b = old.inference(mel, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("frames", "batch"), [(1, 1), (7, 1), (33, 2)])
def test_output_is_480_samples_per_frame_bounded_and_audible(
    vocoder: HiFTGenerator, frames: int, batch: int
) -> None:
    wave = vocoder.inference(_mel(frames, batch), generator=torch.Generator().manual_seed(0))
    assert wave.shape == (batch, frames * 480)
    assert wave.dtype == torch.float32
    assert torch.isfinite(wave).all()
    assert float(wave.abs().max()) <= 0.99
    assert float(wave.std()) > 1e-3


def test_same_seed_same_wave_other_seed_other_wave(vocoder: HiFTGenerator) -> None:
    mel = _mel(10)
    a = vocoder.inference(mel, generator=torch.Generator().manual_seed(5))
    b = vocoder.inference(mel, generator=torch.Generator().manual_seed(5))
    c = vocoder.inference(mel, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_the_wave_follows_the_mel(vocoder: HiFTGenerator) -> None:
    a = vocoder.inference(_mel(10, seed=1), generator=torch.Generator().manual_seed(0))
    b = vocoder.inference(_mel(10, seed=2), generator=torch.Generator().manual_seed(0))
    assert float((a - b).abs().max()) > 1e-3


def test_folding_weight_norm_keeps_the_output(tiny_pt: Path, vocoder: HiFTGenerator) -> None:
    raw = load_hift(tiny_pt, tiny_hift_section(), fuse=False)
    mel = _mel(8)
    torch.testing.assert_close(
        raw.inference(mel, generator=torch.Generator().manual_seed(1)),
        vocoder.inference(mel, generator=torch.Generator().manual_seed(1)),
        rtol=0,
        atol=1e-6,
    )


def test_matches_upstream_hift_on_the_seeded_tiny_checkpoint(vocoder: HiFTGenerator) -> None:
    ref = np.load(PARITY)
    assert int(ref["hift_seed"]) == 0
    mel = torch.from_numpy(ref["mel"])
    seed = int(ref["seed"])
    np.testing.assert_allclose(vocoder.f0_predictor(mel).detach().numpy(), ref["f0"], rtol=1e-5, atol=1e-4)
    assert 0.0 < float((ref["f0"] > 10).mean()) < 1.0  # the sample covers voiced and unvoiced frames
    # The source integrates F0 over 9,600 samples in float32: CPUs whose kernels round differently (AVX2,
    # AVX-512, AMX) drift apart by up to ~6e-5 there (measured); a wrong phase rule is off by whole units.
    source = vocoder.source(mel, torch.Generator().manual_seed(seed)).detach().numpy()
    np.testing.assert_allclose(source, ref["source"], rtol=0, atol=2e-4)
    wave = vocoder.inference(mel, generator=torch.Generator().manual_seed(seed)).numpy()
    np.testing.assert_allclose(wave, ref["wave"], rtol=0, atol=2e-4)


def test_bad_sections_and_inputs_are_rejected(vocoder: HiFTGenerator) -> None:
    section = tiny_hift_section()
    with pytest.raises(ValueError, match="missing keys"):
        HiFTGenerator.from_config({k: v for k, v in section.items() if k != "upsample_rates"})
    with pytest.raises(ValueError, match="unknown keys"):
        HiFTGenerator.from_config({**section, "upsample_rate": [8]})
    with pytest.raises(ValueError, match="source resblock"):
        HiFTGenerator.from_config({**section, "source_resblock_kernel_sizes": [3, 3]})
    with pytest.raises(ValueError, match="mel must be"):
        vocoder.inference(torch.zeros(1, 40, 5))
