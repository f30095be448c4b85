"""CausalConditionalCFM: integrate the DiT velocity field from noise to mel.

Fixed-step Euler on a cosine time grid t_k = 1 − cos(k/N · π/2), with
classifier-free guidance: every step runs the estimator once on a batch of
[conditioned, unconditioned] inputs (mu, speaker and prompt zeroed for the
second half) and mixes v = (1 + w)·v_cond − w·v_uncond.

Noise: upstream draws one randn(1, 80, 30000) buffer when the model is built
and slices its first T frames on every call, so a frame's noise does not
depend on the utterance length. We keep that property but make the buffer a
function of a seed (:func:`seeded_noise`), so the same seed gives the same
output across processes; callers may also pass the noise explicitly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from runners.flow.dit import DiT

NOISE_FRAMES = 50 * 600  # ten minutes of 50 Hz mel, as upstream


def seeded_noise(seed: int, channels: int, frames: int) -> torch.Tensor:
    """(1, channels, frames) float32 standard normal noise on the CPU, fixed by ``seed``.

    Drawn as a (1, channels, max(frames, NOISE_FRAMES)) buffer and sliced, so
    frame i's noise is the same whatever the requested length.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    buffer = torch.randn((1, channels, max(frames, NOISE_FRAMES)), generator=gen, dtype=torch.float32)
    return buffer[:, :, :frames].contiguous()


def cosine_time_grid(n_timesteps: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """n+1 times from 0 to 1, dense near t=1 where the mel detail is resolved."""
    t = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=dtype)
    return 1 - torch.cos(t * 0.5 * math.pi)


class CausalConditionalCFM(nn.Module):
    """Euler sampler with classifier-free guidance around a :class:`DiT` (key prefix ``estimator``)."""

    def __init__(self, estimator: DiT, inference_cfg_rate: float = 0.7) -> None:
        super().__init__()
        self.estimator = estimator
        self.inference_cfg_rate = float(inference_cfg_rate)
        self.out_channels = estimator.out_channels

    @torch.inference_mode()
    def forward(
        self,
        mu: torch.Tensor,
        mask: torch.Tensor | None,
        spks: torch.Tensor,
        cond: torch.Tensor,
        noise: torch.Tensor,
        n_timesteps: int = 10,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """mu, cond (B, 80, T); mask (B, 1, T) or None; spks (B, 80); noise (B, 80, ≥T) → mel (B, 80, T).

        The guidance batch is [every row conditioned, every row unconditioned]: one estimator call per
        step whatever B is, which is what makes batching requests pay.
        """
        frames = mu.size(2)
        if noise.size(-1) < frames:
            raise ValueError(f"noise covers {noise.size(-1)} frames, {frames} needed")
        x = noise[:, :, :frames].to(device=mu.device, dtype=mu.dtype) * temperature
        grid = cosine_time_grid(n_timesteps, mu.device, mu.dtype)
        return self.solve_euler(x, grid, mu, mask, spks, cond)

    def solve_euler(
        self,
        x: torch.Tensor,
        grid: torch.Tensor,
        mu: torch.Tensor,
        mask: torch.Tensor | None,
        spks: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor:
        """Euler steps along ``grid``; the time is carried forward by accumulation, as upstream does."""
        w = self.inference_cfg_rate
        batch = x.size(0)
        mu_in = torch.cat([mu, torch.zeros_like(mu)])
        spks_in = torch.cat([spks, torch.zeros_like(spks)])
        cond_in = torch.cat([cond, torch.zeros_like(cond)])
        mask_in = None if mask is None else torch.cat([mask, mask])
        t = grid[0].reshape(1)
        dt = grid[1] - grid[0]
        steps = grid.numel() - 1
        for step in range(1, steps + 1):
            v = self.estimator(torch.cat([x, x]), mask_in, mu_in, t.expand(2 * batch), spks_in, cond_in)
            v_cond, v_uncond = v[:batch], v[batch:]
            x = x + dt * ((1.0 + w) * v_cond - w * v_uncond)
            t = t + dt
            if step < steps:
                dt = grid[step + 1] - t
        return x
