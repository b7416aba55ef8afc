"""Offline stand-ins for the pretrained SD 1.5 U-Net, VAE and CLIP image encoder.

Nothing can be downloaded here, so the tiny config builds its base models from the config's
diffusers / transformers dicts (``ldm.stand_in``), trains the VAE as an autoencoder on the
dataset's frames (a foreground-weighted reconstruction L1, see below: a random frozen VAE would
give the diffusion model meaningless latents), and writes all three to ``<run>/base/`` in the
published folder layouts, with ``stand_in.json`` saying they are stand-ins. From there they
load through the same code as the real weights.

Three things make a few hundred VAE steps enough (measured with scripts/ldm_quality.py; with
plain L1 from diffusers' initialisation, 300 steps still decoded the dancer as a blob):

* the posterior starts nearly deterministic, as a trained SD VAE is (std ~0.01), and stays so
  (no KL term, see the training loop): from the default initialisation (std 1) the latents
  were half noise after 80 steps, and the diffusion model learnt to denoise the VAE's own
  noise;
* pixels unlike the frame's background weigh ``vae_foreground_weight`` more: the dancer is
  ~5% of a frame, and an unweighted loss is won by the background alone;
* the latent ``scaling_factor`` is measured on the frames (1 / std of the latents), as SD's
  0.18215 was: the noise schedule assumes unit-variance latents, and SD's constant on this
  VAE's latents gave them a variance of ~0.05 (the signal drowned in the first steps).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import Tensor
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from dancegen.config import DancegenConfig
from dancegen.storage.ldm_checkpoint import LdmRun
from dancegen.storage.location import StoreLocation
from dancegen.tasks.ldm_data import ClipSource

INITIAL_LOGVAR = -10.0  # posterior std e^-5 at the start (a trained SD VAE's is ~1e-2)
BACKGROUND_TOLERANCE = 0.05  # in [-1, 1] units: farther from the frame's median is foreground


def near_deterministic_posterior(vae: AutoencoderKL) -> None:
    """Start the encoder's log-variance output at :data:`INITIAL_LOGVAR` everywhere."""
    channels = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[channels:] = 0
        vae.quant_conv.bias[channels:] = INITIAL_LOGVAR


def foreground_weighted_l1(decoded: Tensor, images: Tensor, foreground_weight: float) -> Tensor:
    """L1 where each pixel unlike its frame's background colour (the per-channel median)
    counts ``1 + foreground_weight`` times; normalised by the total weight."""
    background = images.flatten(2).median(-1).values[..., None, None]
    foreground = (images - background).abs().amax(1, keepdim=True) > BACKGROUND_TOLERANCE
    weights = 1 + foreground_weight * foreground.float()
    return (weights * (decoded - images).abs()).mean() / weights.mean()


def train_stand_in_vae(vae: AutoencoderKL, source: ClipSource, config: DancegenConfig,
                       steps: int) -> list[float]:
    """Autoencoder training on random frames; returns the loss every 10 steps."""
    stand_in, resolution = config.ldm.stand_in, config.training.stage2.resolution
    optimizer = torch.optim.AdamW(vae.parameters(), lr=stand_in.vae_learning_rate)
    losses = []
    vae.train()
    for step in range(steps):
        generator = torch.Generator().manual_seed(config.training.seed * 7919 + step)
        images = source.batch(generator, stand_in.vae_batch_size, 1, resolution,
                              m2penc=False)["frames"][:, :, 0]
        posterior = vae.encode(images).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape,
                                                               generator=generator)
        # no KL term (SD's VAE weighs it 1e-6): under Adam even that weight moved the
        # log-variance towards the prior's 0 at the full step size, as the reconstruction
        # barely resists small noise (the posterior std went from 0.007 to 0.38 in 500 steps,
        # making the latents noisy); without it the posterior stays near-deterministic
        loss = foreground_weighted_l1(vae.decode(latents).sample, images,
                                      stand_in.vae_foreground_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == steps - 1:
            losses.append(round(loss.item(), 5))
    vae.eval()
    return losses


@torch.no_grad()
def measured_scaling_factor(vae: AutoencoderKL, source: ClipSource, config: DancegenConfig,
                            frames: int = 32) -> float:
    """1 / std of the posterior means of ``frames`` random frames (SD's recipe)."""
    generator = torch.Generator().manual_seed(config.training.seed * 7919 - 1)
    images = source.batch(generator, frames, 1, config.training.stage2.resolution,
                          m2penc=False)["frames"][:, :, 0]
    return float(1.0 / vae.encode(images).latent_dist.mean.std())


def _upload(folder: Path, target: StoreLocation) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            target.write_bytes(path.relative_to(folder).as_posix(), path.read_bytes())


def build_stand_in_base(store: str, config: DancegenConfig) -> dict:
    """Write the stand-in base models to the run's ``base/`` (once); returns its summary."""
    run = LdmRun(store, config.ldm.run_name)
    existing = run.base.read_json("stand_in.json")
    if existing is not None:
        return existing
    stand_in = config.ldm.stand_in
    torch.manual_seed(config.training.seed)
    unet = UNet2DConditionModel(**stand_in.unet)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**stand_in.image_encoder))
    vae = AutoencoderKL(**stand_in.vae)
    near_deterministic_posterior(vae)
    source = ClipSource(store, config)
    started = time.perf_counter()
    losses = train_stand_in_vae(vae, source, config, stand_in.vae_steps)
    vae.register_to_config(scaling_factor=measured_scaling_factor(vae, source, config))
    seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        unet.save_pretrained(Path(tmp, "unet"))
        vae.save_pretrained(Path(tmp, "vae"))
        image_encoder.save_pretrained(Path(tmp, "image_encoder"))
        _upload(Path(tmp), run.base)
    summary = {
        "stand_in": True,
        "note": "offline stand-ins, NOT Stable Diffusion 1.5 / sd-vae-ft-mse / CLIP: a random "
                "U-Net and CLIP encoder, and a VAE trained on this dataset's frames",
        "vae_steps": stand_in.vae_steps, "vae_losses": losses,
        "vae_scaling_factor": round(vae.config.scaling_factor, 5),
        "vae_seconds": round(seconds, 1),
    }
    run.base.write_json("stand_in.json", summary)  # last: marks the base complete
    return summary
