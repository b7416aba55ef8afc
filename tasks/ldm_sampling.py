"""DDIM sampling of the LDM, and how a long video is cut into pieces the model can denoise.

Two levels of overlap, as the reference systems do it (REFERENCE.md sections 4.3, 4.4 and 6):

* **Segments** (5 s by default, the unit M2PEnc and the dataset work in) follow each other
  with ``overlap_frames`` in common. A segment's first frames are *conditioned* on the end of
  the previous one, UniAnimate-style: at each denoising step those latents are replaced by
  the previous segment's final latents noised to the current step (its "first-frame
  conditioning" through the noise input), so the new segment continues where the last one
  stopped. In the last ``overlap_release`` of the steps the overlap is left free to settle
  into the new segment, and the two renderings of the overlap are then cross-faded.
* **Windows** inside a segment: the motion modules attend over ``window_frames`` frames, so
  the denoiser runs on overlapping windows and the predictions of a frame are averaged
  (CHAMP's "uniform" context scheduler; the last window ends on the last frame).

Classifier-free guidance follows the training dropout: the unconditional branch has no
reference image and a zero CLIP embedding; the pose guidance is kept in both (CHAMP).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler
from torch import Tensor

from dancegen.config import GenerationConfig, NoiseSchedule
from dancegen.models.champ import ChampModel
from dancegen.models.unet3d import frames_to_batch


def window_starts(frames: int, window: int, overlap: int) -> list[int]:
    """First frames of overlapping windows covering ``frames``; the last ends on the end."""
    if frames <= window:
        return [0]
    starts = list(range(0, frames - window + 1, window - overlap))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return starts


def segment_spans(total: int, segment: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) frames of the segments of a ``total``-frame video.

    Each segment starts ``overlap`` frames before the previous one ends; the last one ends on
    the final frame and may be shorter (M2PEnc and the windows take any length).
    """
    if overlap >= segment:
        raise ValueError(f"a {overlap}-frame overlap needs segments longer than {segment}")
    spans, start = [], 0
    while start + segment < total:
        spans.append((start, start + segment))
        start += segment - overlap
    spans.append((start, total))
    return spans


@dataclass(frozen=True)
class SamplerSettings:
    """The sampling knobs of :class:`~dancegen.config.GenerationConfig`."""

    steps: int
    guidance_scale: float
    eta: float
    window_frames: int
    window_overlap: int
    overlap_release: float = 0.0

    @classmethod
    def of(cls, generation: GenerationConfig) -> SamplerSettings:
        return cls(generation.ddim_steps, generation.guidance_scale, generation.eta,
                   generation.window_frames, generation.window_overlap,
                   generation.overlap_release)

    @property
    def conditioned_steps(self) -> int:
        """Steps in which a prefix replaces the overlap's latents (the first ones)."""
        return round(self.steps * (1 - self.overlap_release))


def ddim_scheduler(schedule: NoiseSchedule) -> DDIMScheduler:
    """DDIM on the training schedule (its parameterisation and spacing), with SD 1.5's other
    inference settings (``steps_offset`` only shifts "leading" steps)."""
    return DDIMScheduler(**schedule.scheduler_kwargs(), clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def _predict_noise(champ: ChampModel, latents: Tensor, timestep: Tensor, guidance: Tensor,
                   reference: dict[str, Tensor], clip: Tensor, settings: SamplerSettings
                   ) -> Tensor:
    """Guided noise prediction for (1, C, F, h, w) latents, window by window."""
    total = torch.zeros_like(latents)
    count = torch.zeros(1, 1, latents.shape[2], 1, 1, device=latents.device)
    for start in window_starts(latents.shape[2], settings.window_frames, settings.window_overlap):
        frames = slice(start, start + settings.window_frames)
        x, g = latents[:, :, frames], guidance[:, :, frames]
        with champ.banked(reference):
            noise = champ.denoise(x, timestep, clip, g)
        if settings.guidance_scale != 1.0:
            with champ.banked({}):
                uncond = champ.denoise(x, timestep, torch.zeros_like(clip), g)
            noise = uncond + settings.guidance_scale * (noise - uncond)
        total[:, :, frames] += noise
        count[:, :, frames] += 1
    return total / count


@torch.no_grad()
def sample_segment(champ: ChampModel, guidance: Tensor, reference: dict[str, Tensor],
                   clip: Tensor, schedule: NoiseSchedule, settings: SamplerSettings,
                   generator: torch.Generator, prefix: Tensor | None = None,
                   on_step: Callable[[], None] = lambda: None) -> Tensor:
    """Denoise one segment: clean latents (1, 4, F, h, w).

    ``guidance``: summed guidance features (1, C, F, h, w) (:meth:`ChampModel.encode_guidance`);
    ``reference``: :meth:`ChampModel.reference_states`; ``clip``: (1, 1, D);
    ``prefix``: clean latents (1, 4, O, h, w) the first O frames continue from (replaced
    in the first ``settings.conditioned_steps`` steps, free afterwards).
    ``generator`` (CPU) draws every random number, so a seed fixes the video.
    """
    device = guidance.device
    b, _, f, h, w = guidance.shape
    scheduler = ddim_scheduler(schedule)
    scheduler.set_timesteps(settings.steps, device=device)
    channels = champ.denoising_unet.unet.config.in_channels
    latents = torch.randn((b, channels, f, h, w), generator=generator).to(device)
    latents = latents * scheduler.init_noise_sigma
    if prefix is not None:
        known = prefix.shape[2]
        prefix_noise = torch.randn(prefix.shape, generator=generator).to(device)
    for i, t in enumerate(scheduler.timesteps):
        if prefix is not None and i < settings.conditioned_steps:
            latents[:, :, :known] = scheduler.add_noise(prefix, prefix_noise, t.reshape(1))
        noise = _predict_noise(champ, latents, t.reshape(1), guidance, reference, clip, settings)
        variance_noise = None
        if settings.eta > 0:
            variance_noise = torch.randn(latents.shape, generator=generator).to(device)
        latents = scheduler.step(noise, t, latents, eta=settings.eta,
                                 variance_noise=variance_noise).prev_sample
        on_step()
    if prefix is not None and settings.conditioned_steps == settings.steps:
        latents[:, :, :known] = prefix  # never released: exactly the previous frames
    return latents


@torch.no_grad()
def decode_frames(vae: AutoencoderKL, latents: Tensor, batch: int = 16) -> np.ndarray:
    """Scaled latents (1, 4, F, h, w) -> (F, H, W, 3) uint8 RGB frames."""
    flat = frames_to_batch(latents) / vae.config.scaling_factor
    images = [vae.decode(flat[i:i + batch].to(vae.dtype)).sample.float()
              for i in range(0, len(flat), batch)]
    pixels = ((torch.cat(images).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def crossfade(previous: np.ndarray, following: np.ndarray) -> np.ndarray:
    """Blend two renderings of the same O frames, from all ``previous`` to all ``following``."""
    weights = (np.arange(1, len(previous) + 1) / (len(previous) + 1))[:, None, None, None]
    blended = (1 - weights) * previous.astype(np.float64) + weights * following
    return blended.round().astype(np.uint8)
