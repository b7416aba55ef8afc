"""EDGE's diffusion around a :class:`DanceDecoder`: schedule, training loss and DDIM sampling.

Faithful to EDGE's ``model/diffusion.py`` with the settings EDGE trains with: 1000 steps of a
cosine schedule, the model predicts x0, L2 losses on normalised data, classifier-free guidance
(music dropped with p = 0.25 in training, weight 2 at sampling), DDIM with 50 steps and
eta = 1, x0 clamped to [-1, 1]. The loss is

    0.636 * recon + 2.964 * velocity + 0.646 * FK joints + 10.942 * foot skate

where velocity is on the pose dims, FK runs EDGE's fixed skeleton on the predicted root and
rotations, and foot skate pushes to zero the velocity of feet the model itself says are in
contact (> 0.95). Long-form sampling denoises overlapping windows as one batch and, after each
step, copies the second half of every window into the first half of the next.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import Tensor, nn

from dancegen.models.edge import DanceDecoder
from dancegen.models.motion_repr import FOOT_JOINTS, SMPLSkeleton, rotation_6d_to_axis_angle

LOSS_WEIGHTS = {"recon": 0.636, "velocity": 2.964, "fk": 0.646, "foot": 10.942}


def cosine_betas(timesteps: int, s: float = 8e-3) -> Tensor:
    """Nichol & Dhariwal's cosine schedule as EDGE computes it (float64, beta <= 0.999)."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + s
    alphas = torch.cos(steps / (1 + s) * math.pi / 2).pow(2)
    alphas = alphas / alphas[0]
    return (1 - alphas[1:] / alphas[:-1]).clamp(0, 0.999)


def ddim_timesteps(timesteps: int, sampling_steps: int) -> list[tuple[int, int]]:
    """(t, t_next) pairs from T-1 down to (0, -1), EDGE's integer truncation included."""
    times = torch.linspace(-1, timesteps - 1, steps=sampling_steps + 1).int().tolist()
    times = list(reversed(times))
    return list(itertools.pairwise(times))


def _at(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    return values.gather(-1, t).reshape(len(t), *((1,) * (like.dim() - 1)))


class EdgeDiffusion(nn.Module):
    """Gaussian diffusion over normalised 151-d motion windows with a DanceDecoder."""

    def __init__(self, model: DanceDecoder, timesteps: int = 1000, cond_drop_prob: float = 0.25,
                 guidance_weight: float = 2.0) -> None:
        super().__init__()
        self.model = model
        self.timesteps = timesteps
        self.cond_drop_prob = cond_drop_prob
        self.guidance_weight = guidance_weight
        self.skeleton = SMPLSkeleton()
        alphas_cumprod = torch.cumprod(1.0 - cosine_betas(timesteps).float(), dim=0)
        for name, value in {
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
        }.items():
            self.register_buffer(name, value, persistent=False)  # derived: not in checkpoints

    # --- training ------------------------------------------------------------------------

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Noise clean motion to step t."""
        return (_at(self.sqrt_alphas_cumprod, t, x0) * x0
                + _at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def _joints(self, motion: Tensor) -> Tensor:
        """FK of (B, S, 147) [root pos | 24 x 6D] (normalised space, as EDGE does it)."""
        b, s, _ = motion.shape
        rotations = rotation_6d_to_axis_angle(motion[..., 3:].reshape(b, s, 24, 6))
        return self.skeleton(rotations, motion[..., :3])

    def loss(self, x0: Tensor, cond: Tensor, t: Tensor | None = None) -> tuple[Tensor, dict]:
        """EDGE's weighted training loss for a batch; returns (total, weighted parts)."""
        if t is None:
            t = torch.randint(0, self.timesteps, (len(x0),), device=x0.device)
        noisy = self.q_sample(x0, t, torch.randn_like(x0))
        predicted = self.model(noisy, cond, t, cond_drop_prob=self.cond_drop_prob)
        recon = (predicted - x0).pow(2).mean()
        contact, motion = predicted[..., :4], predicted[..., 4:]
        target = x0[..., 4:]
        velocity = ((motion[:, 1:] - motion[:, :-1]) - (target[:, 1:] - target[:, :-1])).pow(2)
        joints, target_joints = self._joints(motion), self._joints(target)
        fk = (joints - target_joints).pow(2).mean()
        feet = joints[:, :, list(FOOT_JOINTS)]
        foot_velocity = torch.zeros_like(feet)
        foot_velocity[:, :-1] = feet[:, 1:] - feet[:, :-1]
        foot_velocity = foot_velocity * (contact > 0.95)[..., None]  # model's own contacts
        parts = {
            "recon": LOSS_WEIGHTS["recon"] * recon,
            "velocity": LOSS_WEIGHTS["velocity"] * velocity.mean(),
            "fk": LOSS_WEIGHTS["fk"] * fk,
            "foot": LOSS_WEIGHTS["foot"] * foot_velocity.pow(2).mean(),
        }
        return sum(parts.values()), parts

    # --- sampling ------------------------------------------------------------------------

    def _ddim(self, cond: Tensor, steps: int, eta: float, weights: list[float],
              generator: torch.Generator | None, chain_windows: bool) -> Tensor:
        batch, seq_len = cond.shape[0], cond.shape[1]
        shape = (batch, seq_len, self.model.config.nfeats)
        x = torch.randn(shape, generator=generator, device=cond.device)
        half = seq_len // 2
        for (time, time_next), weight in zip(ddim_timesteps(self.timesteps, steps), weights,
                                             strict=True):
            t = torch.full((batch,), time, device=cond.device, dtype=torch.long)
            x0 = self.model.guided_forward(x, cond, t, weight).clamp(-1.0, 1.0)
            if time_next < 0:
                x = x0
                continue
            noise_pred = ((_at(self.sqrt_recip_alphas_cumprod, t, x) * x - x0)
                          / _at(self.sqrt_recipm1_alphas_cumprod, t, x))
            alpha, alpha_next = self.alphas_cumprod[time], self.alphas_cumprod[time_next]
            sigma = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
            c = (1 - alpha_next - sigma**2).sqrt()
            noise = torch.randn(shape, generator=generator, device=cond.device)
            x = x0 * alpha_next.sqrt() + c * noise_pred + sigma * noise
            if chain_windows and time > 0:
                # the first half of each window is the second half of the previous one
                x[1:, :half] = x[:-1, half:]
        return x

    @torch.no_grad()
    def sample(self, cond: Tensor, steps: int = 50, eta: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """Independent windows: (B, S, F) music -> (B, S, 151) normalised motion."""
        return self._ddim(cond, steps, eta, [self.guidance_weight] * steps, generator, False)

    @torch.no_grad()
    def sample_long(self, cond: Tensor, steps: int = 50, eta: float = 1.0,
                    generator: torch.Generator | None = None) -> Tensor:
        """Consecutive half-overlapping windows of one track, denoised jointly (EDGE long mode).

        Guidance ramps from 0 to ``guidance_weight`` over the first half of the steps, as
        EDGE's ``long_ddim_sample``. Stitch the result with ``motion_repr.stitch_windows``.
        """
        if cond.shape[0] == 1:
            return self.sample(cond, steps, eta, generator)
        if cond.shape[1] % 2:
            raise ValueError(f"long-form windows need an even length, got {cond.shape[1]}")
        ramp = np.clip(np.linspace(0, self.guidance_weight * 2, steps), None, self.guidance_weight)
        return self._ddim(cond, steps, eta, [float(w) for w in ramp], generator, True)


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, parameter by parameter (EDGE's EMA)."""
    for avg, new in zip(average.parameters(), model.parameters(), strict=True):
        avg.lerp_(new.detach(), 1.0 - decay)
