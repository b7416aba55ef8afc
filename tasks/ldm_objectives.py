"""The paper's three training objectives, as modules (so DDP can wrap what a stage trains).

1. M2PEnc alone: L1 to the guidance images of the rendered maps (at 64x64) + heatmap MSE.
2. Image stage: reference U-Net, guidance encoders and the denoising U-Net, denoising MSE
   on single frames with the rendered maps as guidance (no temporal layers).
3. Temporal layers + M2PEnc: 0.5 Lpix + 0.5 Lguid on frame sequences, where Lpix is the
   denoising MSE of the video with *M2PEnc's* guidance (so M2PEnc learns from the pixels too)
   and Lguid is stage 1's loss on the same clips.

The denoising target follows ``ldm.schedule.prediction_type`` (the noise, or v), optionally
weighted per sample by min-SNR (``ldm.snr_gamma``, as CHAMP trains).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler
from torch import Tensor, nn
from transformers import CLIPVisionModelWithProjection

from dancegen.models.champ import ChampModel
from dancegen.models.m2penc import M2PEnc
from dancegen.models.unet3d import batch_to_frames, frames_to_batch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: Tensor, generator: torch.Generator) -> Tensor:
    """(B, 3, F, H, W) or (B, 3, H, W) images in [-1, 1] -> scaled VAE latents, same layout."""
    video = images.dim() == 5
    flat = frames_to_batch(images) if video else images
    posterior = vae.encode(flat.to(vae.dtype)).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
    latents = (posterior.mean + posterior.std * noise) * vae.config.scaling_factor
    return batch_to_frames(latents, images.shape[2]) if video else latents


@torch.no_grad()
def clip_embeds(encoder: CLIPVisionModelWithProjection, images: Tensor) -> Tensor:
    """(B, 3, H, W) images in [-1, 1] -> (B, 1, D): CHAMP's single CLIP-image token."""
    size = encoder.config.image_size
    pixels = F.interpolate((images + 1) / 2, size=(size, size), mode="bicubic",
                           align_corners=False).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    pixels = ((pixels - mean) / std).to(encoder.dtype)
    return encoder(pixel_values=pixels).image_embeds.unsqueeze(1)


def m2penc_loss(guidance: Tensor, heatmaps: Tensor, target_guidance: Tensor,
                target_heatmaps: Tensor, heatmap_weight: float) -> tuple[Tensor, dict[str, float]]:
    """Stage 1's objective: L1 on the guidance images + weighted heatmap MSE."""
    l1 = F.l1_loss(guidance.float(), target_guidance.float())
    mse = F.mse_loss(heatmaps.float(), target_heatmaps.float())
    return l1 + heatmap_weight * mse, {"guidance_l1": l1.item(), "heatmap_mse": mse.item()}


def m2penc_guidance_images(guidance_64: Tensor, resolution: int, clamp: bool) -> Tensor:
    """M2PEnc's (B, F, 12, 64, 64) output -> guidance images (B, 4, 3, F, R, R).

    ``clamp`` to [0, 1] at inference; not in training, where a clamp would cut the pixel
    loss's gradient to M2PEnc wherever it overshoots (e.g. slightly below 0 on background).
    """
    b, f = guidance_64.shape[:2]
    images = F.interpolate(guidance_64.flatten(0, 1).float(), size=(resolution, resolution),
                           mode="bilinear", align_corners=False)
    if clamp:
        images = images.clamp(0, 1)
    return images.view(b, f, 4, 3, resolution, resolution).permute(0, 2, 3, 1, 4, 5)


class M2PEncObjective(nn.Module):
    """Stage 1."""

    def __init__(self, m2penc: M2PEnc, heatmap_weight: float) -> None:
        super().__init__()
        self.m2penc, self.heatmap_weight = m2penc, heatmap_weight

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        guidance, heatmaps = self.m2penc(batch["music"])
        return m2penc_loss(guidance, heatmaps, batch["guidance_64"], batch["heatmaps"],
                           self.heatmap_weight)


class DenoisingObjective(nn.Module):
    """Stages 2 and 3: noise-prediction MSE; stage 3 adds M2PEnc's guidance and loss."""

    def __init__(self, champ: ChampModel, m2penc: M2PEnc | None = None,
                 pixel_weight: float = 1.0, guidance_weight: float = 0.0,
                 heatmap_weight: float = 1.0, resolution: int | None = None) -> None:
        super().__init__()
        self.champ, self.m2penc, self.resolution = champ, m2penc, resolution
        self.pixel_weight, self.guidance_weight = pixel_weight, guidance_weight
        self.heatmap_weight = heatmap_weight

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """``batch``: noisy_latents, timesteps, target (and optionally per-sample
        loss_weights), reference_latents (or absent for the
        unconditional step), clip, guidance (stage 2) or music/guidance_64/heatmaps (3, which
        needs ``resolution``: the pixel size of M2PEnc's guidance)."""
        parts: dict[str, float] = {}
        if self.m2penc is None:
            guidance_images = batch["guidance"]
            temporal = False
        else:
            guidance_64, heatmaps = self.m2penc(batch["music"])
            guidance_loss, parts = m2penc_loss(guidance_64, heatmaps, batch["guidance_64"],
                                               batch["heatmaps"], self.heatmap_weight)
            guidance_images = m2penc_guidance_images(guidance_64, self.resolution, clamp=False)
            temporal = True
        predicted = self.champ(batch["noisy_latents"], batch["timesteps"],
                               batch.get("reference_latents"), batch["clip"], guidance_images,
                               temporal=temporal)
        pixel_loss = denoising_loss(predicted, batch["target"], batch.get("loss_weights"))
        parts["denoise_mse"] = pixel_loss.item()
        if self.m2penc is None:
            return pixel_loss, parts
        return self.pixel_weight * pixel_loss + self.guidance_weight * guidance_loss, parts


def shift_images(images: Tensor, dx: int, dy: int, fill: str) -> Tensor:
    """Move (..., H, W) images ``dx`` pixels right and ``dy`` down; the uncovered border is
    the edge pixels repeated (``fill="replicate"``, for frames) or zeros ("constant", for
    guidance maps, whose background is 0)."""
    h, w = images.shape[-2:]
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))
    padded = F.pad(images.reshape(1, -1, h, w), pad, mode=fill)
    moved = padded[..., max(-dy, 0):max(-dy, 0) + h, max(-dx, 0):max(-dx, 0) + w]
    return moved.reshape(images.shape)


def displace_targets(frames: Tensor, guidance: Tensor, max_shift: int,
                     generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Stage 2's target frames (B, 3, F, R, R) and their guidance (B, G, 3, F, R, R), each
    sample moved by its own random offset of up to ``max_shift`` pixels; the reference
    frame is not moved. Why: a reference from the same short clip stands almost where the
    target does, so copying it is a good guess a short training learns first, and the
    guidance is ignored; once the target can stand elsewhere, only the guidance says where
    the body is (scripts/ldm_quality.py measures it with displaced guidance)."""
    offsets = torch.randint(-max_shift, max_shift + 1, (len(frames), 2), generator=generator)
    moved = [(shift_images(f, int(dx), int(dy), "replicate"),
              shift_images(g, int(dx), int(dy), "constant"))
             for f, g, (dx, dy) in zip(frames, guidance, offsets.tolist(), strict=True)]
    return torch.stack([f for f, _ in moved]), torch.stack([g for _, g in moved])


def add_noise(scheduler: DDPMScheduler, latents: Tensor, generator: torch.Generator,
              noise_offset: float) -> tuple[Tensor, Tensor, Tensor]:
    """(noisy latents, noise, timesteps) for (B, C, F, h, w) latents, CHAMP's offset noise."""
    b, c = latents.shape[:2]
    noise = torch.randn(latents.shape, generator=generator)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((b, c, 1, 1, 1), generator=generator)
    noise = noise.to(latents)
    timesteps = torch.randint(scheduler.config.num_train_timesteps, (b,),
                              generator=generator).to(latents.device)
    return scheduler.add_noise(latents, noise, timesteps), noise, timesteps


def denoising_target(scheduler: DDPMScheduler, latents: Tensor, noise: Tensor,
                     timesteps: Tensor) -> Tensor:
    """What the U-Net learns to predict: the noise, or v = sqrt(a) * noise - sqrt(1-a) * x0."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r}")


def min_snr_weights(scheduler: DDPMScheduler, timesteps: Tensor, gamma: float) -> Tensor:
    """Per-sample min-SNR weights (Hang et al. 2023) as CHAMP's and diffusers' scripts compute
    them: min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) / (SNR + 1) for v (the v loss
    already weighs a step by SNR + 1 relative to the epsilon loss)."""
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas / (1 - alphas)
    clipped = snr.clamp(max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr


def denoising_loss(predicted: Tensor, target: Tensor, weights: Tensor | None) -> Tensor:
    """MSE, averaged per sample, then (if given) weighted per sample and averaged."""
    per_sample = F.mse_loss(predicted.float(), target.float(), reduction="none")
    per_sample = per_sample.flatten(1).mean(1)
    if weights is None:
        return per_sample.mean()
    return (per_sample * weights.to(per_sample)).mean()
