"""CHAMP's guidance encoder: one guidance image sequence -> features at latent resolution.

A small conv net that downsamples a 3-channel guidance image (values in [0, 1]) by 8, the
VAE's factor, applies one spatial transformer and a zero-initialised output conv to the
denoising U-Net's first width (320 in SD 1.5). Zero init means a new encoder adds nothing
until it has learned something (CHAMP's ``zero_module``).

Parameter names follow CHAMP's ``models/guidance_encoder.py`` so its published
``guidance_encoder_{depth,normal,semantic_map,dwpose}.pth`` load with ``strict=True``:
``conv_in``, ``blocks.{0..5}``, ``attentions.{0..5}``, ``guidance_attention``, ``conv_out``.
CHAMP builds a transformer after every block but its forward uses only ``attentions[-1]``;
the unused ones are kept (so the files load) and frozen (so they get no optimizer state).
Frames are folded into the batch: CHAMP's ``InflatedConv3d`` is a 2D conv per frame.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch.nn.functional as F
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import Tensor, nn


@dataclass(frozen=True)
class GuidanceEncoderConfig:
    """CHAMP's ``guidance_encoder_kwargs``; the embedding width is the U-Net's first width."""

    guidance_embedding_channels: int = 320
    guidance_input_channels: int = 3
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)
    attention_num_heads: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


def _transformer(channels: int, heads: int, groups: int) -> Transformer2DModel:
    """A spatial self-attention transformer as CHAMP's ``Transformer3DModel`` (no context)."""
    return Transformer2DModel(num_attention_heads=heads, attention_head_dim=channels // heads,
                              in_channels=channels, norm_num_groups=groups)


def _groups(channels: int) -> int:
    """CHAMP's 32 GroupNorm groups where the width allows (tiny configs: a divisor)."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


class GuidanceEncoder(nn.Module):
    """(N, 3, H, W) guidance images in [0, 1] -> (N, C_embed, H / 8, W / 8) features."""

    def __init__(self, config: GuidanceEncoderConfig) -> None:
        super().__init__()
        self.config = config
        widths, heads = config.block_out_channels, config.attention_num_heads
        self.conv_in = nn.Conv2d(config.guidance_input_channels, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.attentions = nn.ModuleList()
        for c_in, c_out in itertools.pairwise(widths):
            self.blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            # CHAMP: one GroupNorm group after the plain conv, 32 after the strided one
            self.attentions.append(_transformer(c_in, heads, 1))
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
            self.attentions.append(_transformer(c_out, heads, _groups(c_out)))
        self.guidance_attention = _transformer(widths[-1], heads, _groups(widths[-1]))
        self.conv_out = nn.Conv2d(widths[-1], config.guidance_embedding_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        for unused in [*self.attentions[:-1], self.guidance_attention]:
            unused.requires_grad_(False)

    def forward(self, guidance: Tensor) -> Tensor:
        x = F.silu(self.conv_in(guidance))
        for block in self.blocks:
            x = F.silu(block(x))
        x = self.attentions[-1](x, return_dict=False)[0]
        return self.conv_out(x)
