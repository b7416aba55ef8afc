"""Offline stand-ins for the pretrained SD 1.5 U-Net, VAE and CLIP image encoder.

Nothing can be downloaded here, so the tiny config builds its base models from the config's
diffusers / transformers dicts (``ldm.stand_in``), trains the VAE as an autoencoder on the
dataset's frames (reconstruction L1 + a small KL term: a random frozen VAE would give the
diffusion model meaningless latents), and writes all three to ``<run>/base/`` in the
published folder layouts, with ``stand_in.json`` saying they are stand-ins. From there they
load through the same code as the real weights.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from dancegen.config import DancegenConfig
from dancegen.storage.ldm_checkpoint import LdmRun
from dancegen.storage.location import StoreLocation
from dancegen.tasks.ldm_data import ClipSource

KL_WEIGHT = 1e-6  # SD's VAE loss weights the KL term this lightly


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
        loss = F.l1_loss(vae.decode(latents).sample, images) + \
            KL_WEIGHT * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == steps - 1:
            losses.append(round(loss.item(), 5))
    vae.eval()
    return losses


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
    started = time.perf_counter()
    losses = train_stand_in_vae(vae, ClipSource(store, config), config, stand_in.vae_steps)
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
        "vae_seconds": round(seconds, 1),
    }
    run.base.write_json("stand_in.json", summary)  # last: marks the base complete
    return summary
