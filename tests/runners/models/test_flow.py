"""The flow decoder: official key layout, determinism, lengths, and parity with the upstream flow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runners.models.decoder.config import load_decoder_config
from runners.models.decoder.flow import CausalMaskedDiffWithXvec, cosine_time_grid, expected_flow_state_shapes, seeded_noise
from runners.models.store import DECODER_DIR, LLM_DIR
from runners.models.tiny.decoder import write_flow
from runners.models.tokenizers.tokens import to_frame_pairs

PARITY = Path(__file__).resolve().parents[2] / "data" / "parity" / "flow_mel.npz"
PARITY_ATOL = 1e-4  # measured difference on the CPU in fp32: 0.0 (bit-identical)


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from runners.models.tiny import build_tiny_model_root

    root = build_tiny_model_root(tmp_path_factory.mktemp("tiny-flow"), seed=0, parts=("decoder",))
    return root / LLM_DIR / DECODER_DIR


@pytest.fixture(scope="module")
def flow(decoder_dir: Path) -> CausalMaskedDiffWithXvec:
    cfg = load_decoder_config(decoder_dir)
    model = CausalMaskedDiffWithXvec(cfg.flow)
    model.load_state_dict(torch.load(decoder_dir / "flow.pt", weights_only=True), strict=True)
    return model.eval()


def _pairs(n_groups: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    for _ in range(n_groups):
        ids += torch.randint(0, 1024, (2,), generator=g).tolist()
        ids += (1024 + torch.randint(0, 4096, (3,), generator=g)).tolist()
    return to_frame_pairs(ids)


def _inputs(n_prompt_groups: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    prompt = _pairs(n_prompt_groups, 1)
    g = torch.Generator().manual_seed(2)
    return prompt, torch.randn(1, prompt.size(1) * 2, 80, generator=g), torch.randn(1, 192, generator=g)


def test_tiny_flow_pt_has_exactly_the_expected_keys(decoder_dir: Path) -> None:
    cfg = load_decoder_config(decoder_dir).flow
    state = torch.load(decoder_dir / "flow.pt", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_flow_state_shapes(cfg)
    assert all(v.dtype == torch.float32 for v in state.values())


def test_tiny_flow_pt_is_a_function_of_the_seed(decoder_dir: Path, tmp_path: Path) -> None:
    cfg = load_decoder_config(decoder_dir).flow
    again = write_flow(tmp_path / "a.pt", cfg, seed=0)
    assert again == (decoder_dir / "flow.pt").read_bytes()
    assert write_flow(tmp_path / "b.pt", cfg, seed=1) != again


def test_two_mel_frames_per_token_frame_and_finite(flow: CausalMaskedDiffWithXvec) -> None:
    prompt, prompt_mel, spk = _inputs()
    for n_groups in (1, 4):
        token = _pairs(n_groups, 3)
        mel = flow.inference(token, prompt, prompt_mel, spk, seed=0)
        assert mel.shape == (1, 80, 2 * token.size(1))
        assert torch.isfinite(mel).all()


def test_same_seed_same_mel_other_seed_other_mel(flow: CausalMaskedDiffWithXvec) -> None:
    prompt, prompt_mel, spk = _inputs()
    token = _pairs(3, 4)
    a = flow.inference(token, prompt, prompt_mel, spk, seed=11)
    b = flow.inference(token, prompt, prompt_mel, spk, seed=11)
    c = flow.inference(token, prompt, prompt_mel, spk, seed=12)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_prompt_speaker_and_tokens_all_steer_the_output(flow: CausalMaskedDiffWithXvec) -> None:
    prompt, prompt_mel, spk = _inputs()
    token = _pairs(3, 5)
    base = flow.inference(token, prompt, prompt_mel, spk, seed=0)
    assert (flow.inference(token, prompt, prompt_mel + 1.0, spk, seed=0) - base).abs().max() > 1e-3
    assert (flow.inference(token, prompt, prompt_mel, -spk, seed=0) - base).abs().max() > 1e-3
    assert (flow.inference(_pairs(3, 6), prompt, prompt_mel, spk, seed=0) - base).abs().max() > 1e-3


def test_works_without_a_prompt(flow: CausalMaskedDiffWithXvec) -> None:
    token = _pairs(2, 7)
    mel = flow.inference(token, torch.zeros(1, 0, 2, dtype=torch.long), torch.zeros(1, 0, 80), torch.randn(1, 192))
    assert mel.shape == (1, 80, 12) and torch.isfinite(mel).all()


def test_noise_of_a_frame_does_not_depend_on_the_length() -> None:
    assert torch.equal(seeded_noise(5, 80, 10), seeded_noise(5, 80, 400)[:, :, :10])
    assert not torch.equal(seeded_noise(5, 80, 10), seeded_noise(6, 80, 10))


def test_cosine_grid_is_dense_near_the_end() -> None:
    grid = cosine_time_grid(10, torch.device("cpu"), torch.float32)
    assert grid[0] == 0 and grid[-1] == pytest.approx(1.0)
    steps = grid.diff()
    assert (steps > 0).all() and steps[-1] > steps[0]


def test_frame_pairs_match_the_upstream_reshape() -> None:
    data = np.load(PARITY)
    for n in range(5, 16):  # every trailing remainder, whole groups included
        ours = to_frame_pairs(data[f"reshape_ids_{n}"].tolist())[0].numpy()
        np.testing.assert_array_equal(ours, data[f"reshape_pairs_{n}"], err_msg=f"{n} codec ids")


def test_mel_matches_the_upstream_flow(flow: CausalMaskedDiffWithXvec) -> None:
    """Upstream CausalMaskedDiffWithXvec on the same tiny flow.pt, same noise (see tests/data/parity/README.md)."""
    from runners.models.decoder.token2wav import align_prompt_mel

    data = np.load(PARITY)
    assert int(data["tiny_seed"]) == 0
    token = to_frame_pairs(data["token_ids"].tolist())
    prompt = to_frame_pairs(data["prompt_ids"].tolist())
    np.testing.assert_array_equal(token.numpy(), data["token_pairs"])
    prompt_feat = align_prompt_mel(torch.from_numpy(data["prompt_mel"]), prompt.size(1) * 2)
    mel = flow.inference(
        token,
        prompt,
        prompt_feat,
        torch.from_numpy(data["embedding"]),
        n_timesteps=int(data["n_timesteps"]),
        noise=torch.from_numpy(data["noise"]),
    )
    reference = torch.from_numpy(data["mel"])
    assert mel.shape == reference.shape
    torch.testing.assert_close(mel, reference, atol=PARITY_ATOL, rtol=0)
