"""What Jukebox extraction costs: FLOPs per second of music, and a measurement on this device.

The estimate for the 5B prior is analytic FLOPs divided by the FLOP rate this device reaches
on the same computation at a smaller width (measured here, on a randomly initialised model of
the 5B's structure); run it on the GPU type you plan for and the figure is for that GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from dancegen.config import JukeboxSettings
from dancegen.models.jukebox_prior import JukeboxPriorConfig, JukeboxTopPrior
from dancegen.models.jukebox_vqvae import JukeboxVQVAEConfig, JukeboxVQVAEEncoder
from dancegen.tasks.jukebox_features import WorkerJukebox, compute_dtype, track_features

JUKEBOX_RATE = 44100


def prior_flops_per_token(config: JukeboxPriorConfig, layers: int, context: int) -> float:
    """Multiply-adds x 2 per token through ``layers`` blocks with ``context``-token chunks.

    Per block: the q/k/v, output and two MLP projections, plus the three factored attention
    patterns (each token attends to at most one block of ``block_ctx`` keys, or to the
    ``context / block_ctx`` keys at its offset).
    """
    w, a, m = config.width, config.attn_width, config.mlp_width
    projections = w * 3 * a + a * w + 2 * w * m
    keys = max(config.block_ctx, context // config.block_ctx)
    attention = 2 * keys * a  # scores and weighted values
    return 2.0 * layers * (projections + attention)


def vqvae_flops_per_sample(config: JukeboxVQVAEConfig) -> float:
    """Multiply-adds x 2 per audio sample of the level-2 encoder (all its convolutions)."""
    width, total, rate = config.width * config.multipliers[config.level], 0.0, 1.0
    channels = 1
    for down, stride in zip(config.downs_t, config.strides_t, strict=True):
        for _ in range(down):
            rate /= stride
            total += rate * channels * width * 2 * stride  # the strided conv, kernel 2 * stride
            total += rate * config.depth * (width * width * 3 + width * width)  # resnet
            channels = width
        total += rate * width * config.emb_width * 3
        channels = config.emb_width
    return 2.0 * total


def flops_per_music_second(prior: JukeboxPriorConfig, vqvae: JukeboxVQVAEConfig,
                           settings: JukeboxSettings) -> float:
    """FLOPs to extract one second of music at layer ``settings.layer``."""
    tokens_per_second = JUKEBOX_RATE / vqvae.hop_length
    context = round(settings.chunk_seconds * tokens_per_second)
    return (tokens_per_second * prior_flops_per_token(prior, settings.layer, context)
            + JUKEBOX_RATE * vqvae_flops_per_sample(vqvae))


@dataclass
class CostMeasurement:
    """A measured extraction on this device, and what it implies for the 5B model."""

    device: str
    probe_width: int
    seconds_per_music_second: float   # of the probe model
    flops_per_second: float           # achieved on the probe
    estimate_5b: float                # seconds of compute per second of music, 5B, this device


def measure(settings: JukeboxSettings, music_seconds: float = 10.0,
            probe_width: int = 1024, probe_layers: int = 6) -> CostMeasurement:
    """Time a probe of the 5B's structure at ``probe_width`` and scale by FLOPs to the 5B."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    probe = JukeboxPriorConfig(width=probe_width, layers=probe_layers, depth=probe_layers)
    vqvae_config = JukeboxVQVAEConfig()
    jukebox = WorkerJukebox(JukeboxVQVAEEncoder(vqvae_config).to(device).eval(),
                            JukeboxTopPrior(probe).to(device).eval(), device,
                            compute_dtype(settings))
    probe_settings = settings.model_copy(update={"layer": probe_layers})
    audio = np.random.default_rng(0).standard_normal(int(music_seconds * JUKEBOX_RATE))
    track_features(jukebox, audio.astype(np.float32) * 0.1, JUKEBOX_RATE, probe_settings, 30)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    track_features(jukebox, audio.astype(np.float32) * 0.1, JUKEBOX_RATE, probe_settings, 30)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    achieved = flops_per_music_second(probe, vqvae_config, probe_settings) * music_seconds / seconds
    full = flops_per_music_second(JukeboxPriorConfig(), vqvae_config, settings)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    return CostMeasurement(name, probe_width, seconds / music_seconds, achieved, full / achieved)
