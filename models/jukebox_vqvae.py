"""The top-level encoder of OpenAI Jukebox's 5B VQ-VAE: raw audio -> level-2 codes.

Jukebox gives every level of its VQ-VAE its own encoder that starts from raw audio; the "Jukebox
features" of jukemirlib / EDGE only use the top one (level 2, hop 128 samples = 344.53 tokens/s
at 44.1 kHz), so this module holds only ``encoders.2`` and the level-2 codebook. Encoders 0 and
1, the decoders and the two lower codebooks of ``5b/vqvae.pth.tar`` are not needed (jukemirlib
runs encoders 0 and 1 and throws their output away).

Parameter and buffer names are the checkpoint's (``encoders.2.level_blocks.0.model.0.0.weight``,
``bottleneck.level_blocks.2.k``, ...), so :meth:`JukeboxVQVAEEncoder.key_filter` of the file's
``ckpt["model"]`` loads with ``load_state_dict(strict=True)``. The arithmetic follows Jukebox's
``vqvae/encdec.py``, ``vqvae/resnet.py`` and ``BottleneckBlock.quantise`` (fork
rodrigo-castellon/jukebox 6b44861, the one jukemirlib installs) op for op.

On Ampere+ GPUs cuDNN convolutions run in TF32 by default, which can flip codes that are near a
tie between two codebook rows; set ``torch.backends.cudnn.allow_tf32 = False`` for fp32 codes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class JukeboxVQVAEConfig:
    """Sizes of the Jukebox VQ-VAE (``hparams.py`` ``vqvae``); defaults are the 5B model's."""

    width: int = 32
    depth: int = 4                   # residual blocks per Resnet1D
    emb_width: int = 64              # latent (codebook row) width
    l_bins: int = 2048               # codebook size
    downs_t: tuple[int, ...] = (3, 2, 2)
    strides_t: tuple[int, ...] = (2, 2, 2)
    dilation_growth_rate: int = 3    # residual block r has dilation rate**r
    multipliers: tuple[int, ...] = (2, 1, 1)  # per-level width and depth multipliers
    level: int = 2                   # which level's encoder and codebook to build

    def __post_init__(self) -> None:
        if not 0 <= self.level < len(self.downs_t):
            raise ValueError(f"level {self.level} outside the {len(self.downs_t)} levels")
        if not len(self.downs_t) == len(self.strides_t) == len(self.multipliers):
            raise ValueError("downs_t, strides_t and multipliers need one entry per level")

    @property
    def hop_length(self) -> int:
        """Audio samples per code at :attr:`level` (128 for the 5B top level)."""
        return math.prod(s**d for s, d in zip(self.strides_t[: self.level + 1],
                                              self.downs_t[: self.level + 1], strict=True))


class ResConv1DBlock(nn.Module):
    """``x + conv1x1(relu(dilated_conv3(relu(x))))`` (Jukebox's res_scale is 1.0 for the 5B)."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, 1, padding=dilation, dilation=dilation),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 1, 1, 0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.model(x)


class Resnet1D(nn.Module):
    """``depth`` residual blocks with dilations 1, g, g**2, ... (no dilation cycle)."""

    def __init__(self, channels: int, depth: int, dilation_growth_rate: int) -> None:
        super().__init__()
        self.model = nn.Sequential(*[ResConv1DBlock(channels, dilation_growth_rate**r)
                                     for r in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class EncoderConvBlock(nn.Module):
    """One level block: ``down_t`` x (strided conv, Resnet1D), then a k=3 conv to emb_width.

    Each strided conv (kernel 2*stride, padding stride//2) maps length n to n // stride.
    """

    def __init__(self, in_channels: int, emb_width: int, down_t: int, stride_t: int, width: int,
                 depth: int, dilation_growth_rate: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = [
            nn.Sequential(
                nn.Conv1d(in_channels if i == 0 else width, width, stride_t * 2, stride_t,
                          stride_t // 2),
                Resnet1D(width, depth, dilation_growth_rate),
            )
            for i in range(down_t)
        ]
        blocks.append(nn.Conv1d(width, emb_width, 3, 1, 1))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class Encoder(nn.Module):
    """Jukebox's ``Encoder`` for one level: its level blocks applied in sequence to raw audio."""

    def __init__(self, config: JukeboxVQVAEConfig) -> None:
        super().__init__()
        level = config.level
        width = config.width * config.multipliers[level]
        depth = config.depth * config.multipliers[level]
        self.level_blocks = nn.ModuleList([
            EncoderConvBlock(1 if i == 0 else config.emb_width, config.emb_width,
                             config.downs_t[i], config.strides_t[i], width, depth,
                             config.dilation_growth_rate)
            for i in range(level + 1)
        ])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.level_blocks:
            x = block(x)
        return x


class BottleneckBlock(nn.Module):
    """The codebook of one level (``k``, a buffer: Jukebox updates it by EMA, not by SGD)."""

    def __init__(self, l_bins: int, emb_width: int) -> None:
        super().__init__()
        self.register_buffer("k", torch.zeros(l_bins, emb_width))

    def quantise(self, latents: Tensor) -> Tensor:
        """(N, emb_width) latents -> (N,) index of the nearest codebook row (L2)."""
        k_w = self.k.t()
        # Jukebox's expansion of |x - k|^2, same op order (it decides near-ties)
        distance = (torch.sum(latents**2, dim=-1, keepdim=True) - 2 * torch.matmul(latents, k_w)
                    + torch.sum(k_w**2, dim=0, keepdim=True))
        _, codes = torch.min(distance, dim=-1)
        return codes


class Bottleneck(nn.Module):
    """Holds the codebook under ``level_blocks.<level>`` as the checkpoint names it."""

    def __init__(self, config: JukeboxVQVAEConfig) -> None:
        super().__init__()
        self.level_blocks = nn.ModuleDict(
            {str(config.level): BottleneckBlock(config.l_bins, config.emb_width)})


class JukeboxVQVAEEncoder(nn.Module):
    """Raw audio (B, T) at 44.1 kHz -> Jukebox VQ-VAE codes (B, T // hop_length) of one level.

    Only the level's encoder and codebook exist; load them with
    ``model.load_state_dict(model.key_filter(ckpt["model"]))``.
    """

    def __init__(self, config: JukeboxVQVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or JukeboxVQVAEConfig()
        self.encoders = nn.ModuleDict({str(self.config.level): Encoder(self.config)})
        self.bottleneck = Bottleneck(self.config)

    def key_filter(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The entries of a full VQ-VAE state dict (669 keys for the 5B) that this module has.

        Drops the other levels' encoders and codebooks and all decoders; anything this module
        needs but the dict lacks is left for ``load_state_dict(strict=True)`` to report.
        """
        own = self.state_dict(keep_vars=True).keys()
        return {k: v for k, v in state_dict.items() if k in own}

    @property
    def codebook(self) -> Tensor:
        """(l_bins, emb_width) codebook of the level."""
        return self.bottleneck.level_blocks[str(self.config.level)].k

    def latents(self, audio: Tensor) -> Tensor:
        """(B, T) audio -> (B, emb_width, T // hop_length) continuous encoder output."""
        if audio.ndim != 2:
            raise ValueError(f"audio must be (batch, samples), got shape {tuple(audio.shape)}")
        if audio.shape[1] < self.config.hop_length:
            # the last strided conv needs an input of >= 2 steps, i.e. >= one code's worth
            raise ValueError(f"audio of {audio.shape[1]} samples is shorter than one code "
                             f"({self.config.hop_length} samples)")
        weight = self.encoders[str(self.config.level)].level_blocks[0].model[0][0].weight
        x = audio[:, None, :].to(weight.dtype)  # Jukebox: x.permute(0, 2, 1).float()
        return self.encoders[str(self.config.level)](x)

    def forward(self, audio: Tensor) -> Tensor:
        """(B, T) float audio -> (B, T // hop_length) int64 codes in [0, l_bins)."""
        x = self.latents(audio)
        batch, width, steps = x.shape
        flat = x.permute(0, 2, 1).contiguous().view(-1, width)
        codes = self.bottleneck.level_blocks[str(self.config.level)].quantise(flat)
        return codes.view(batch, steps)
