"""Reduced Jukebox checkpoints in OpenAI's file format and key layout, for tests.

The real key layout, file format and feature width (4800), but a few narrow layers (attention
and MLP 48 wide), a short context and a small VQ-VAE, randomly initialised: they exercise the
loading and the extraction path, and say nothing about the real model's features.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import torch

from dancegen.models.jukebox_prior import JukeboxPriorConfig, JukeboxTopPrior
from dancegen.models.jukebox_vqvae import JukeboxVQVAEConfig, JukeboxVQVAEEncoder

PRIOR = JukeboxPriorConfig(width=4800, depth=3, heads=2, n_ctx=1728, blocks=27, m_attn=0.01,
                           m_mlp=0.01, bins=64, genres=4, artists=3, t_bins=16, layers=3)
VQVAE = JukeboxVQVAEConfig(width=8, depth=2, emb_width=16, l_bins=64, multipliers=(1, 1, 1))
# what the config must say about the reduced prior (the rest is read from its shapes)
SETTINGS = ["jukebox.layer=2", "jukebox.heads=2", "jukebox.blocks=27"]


def _save(path: Path, state: dict, legacy: bool = False) -> None:
    """As Jukebox's save_checkpoint: hps (with a numpy scalar, as training leaves), model, step."""
    content = {"hps": {"sr": 44100, "bandwidth": {"l2": np.float64(0.1)}, "heads": 2},
               "model": collections.OrderedDict(state), "step": 1000}
    torch.save(content, path, _use_new_zipfile_serialization=not legacy)


def write_reduced_jukebox(folder: Path) -> Path:
    """vqvae.pth.tar, prior_level_2.pth.tar (and a legacy-format copy of the prior)."""
    torch.manual_seed(0)
    vqvae = JukeboxVQVAEEncoder(VQVAE)
    with torch.no_grad():  # a codebook at the latents' scale, so that codes vary
        latents = vqvae.latents(torch.randn(2, 44100) * 0.3)
        vqvae.bottleneck.level_blocks["2"].k.copy_(
            latents.permute(0, 2, 1).reshape(-1, 16)[torch.randperm(latents.shape[-1])[:64]])
    state = dict(vqvae.state_dict())
    state["decoders.0.model.0.weight"] = torch.zeros(3)  # the file has more than we read
    _save(folder / "vqvae.pth.tar", state)
    prior = JukeboxTopPrior(PRIOR)
    state = dict(prior.state_dict())
    state["prior.x_out.weight"] = torch.zeros(64, 4800)  # unused for features
    _save(folder / "prior_level_2.pth.tar", state)
    _save(folder / "legacy_prior.pth.tar", state, legacy=True)
    return folder


def jukebox_overrides(folder: Path) -> list[str]:
    """Config overrides that point at the reduced checkpoints."""
    return [f"jukebox.vqvae={folder / 'vqvae.pth.tar'}",
            f"jukebox.prior={folder / 'prior_level_2.pth.tar'}", *SETTINGS]
