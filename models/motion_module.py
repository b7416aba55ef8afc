"""AnimateDiff's "Vanilla" temporal module: the temporal layers of the denoising 3D U-Net.

Each module attends along time at every pixel: ``(b f) c h w -> (b h w) f c``, two temporal
self-attention blocks with a sinusoidal frame position encoding, a GEGLU feed-forward, and a
zero-initialised output projection, so a freshly inserted module leaves the image U-Net's output
unchanged (CHAMP and AnimateDiff rely on this to start stage 2 / the video stage from an image
model).

Parameter and buffer names follow AnimateDiff's ``motion_module.py`` (the layout of
``mm_sd_v15_v2.ckpt`` and CHAMP's ``motion_module.pth``)::

    temporal_transformer.norm / proj_in / proj_out
    temporal_transformer.transformer_blocks.0.attention_blocks.{0,1}.{to_q,to_k,to_v,to_out.0}
    temporal_transformer.transformer_blocks.0.attention_blocks.{0,1}.pos_encoder.pe
    temporal_transformer.transformer_blocks.0.{norms.{0,1}, ff.net.0.proj, ff.net.2, ff_norm}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import Tensor, nn


@dataclass(frozen=True)
class MotionModuleConfig:
    """CHAMP's ``motion_module_kwargs`` (configs/inference/inference.yaml)."""

    num_attention_heads: int = 8
    num_transformer_block: int = 1
    attention_blocks: int = 2                 # ("Temporal_Self", "Temporal_Self")
    max_frames: int = 32                      # temporal_position_encoding_max_len
    norm_num_groups: int = 32


class PositionalEncoding(nn.Module):
    """Sinusoidal frame positions, stored in the checkpoint as ``pe`` (1, max_len, dim)."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"{x.shape[1]} frames exceed the temporal position encoding's "
                             f"{self.pe.shape[1]}: sample shorter windows")
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(Attention):
    """Self-attention over frames; the position encoding is added to its input."""

    def __init__(self, dim: int, heads: int, max_frames: int) -> None:
        super().__init__(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False)
        self.pos_encoder = PositionalEncoding(dim, max_frames)

    def forward(self, hidden_states: Tensor, **_: object) -> Tensor:  # (N, frames, dim)
        return super().forward(self.pos_encoder(hidden_states))


class TemporalTransformerBlock(nn.Module):
    """Pre-norm temporal self-attention blocks, then a GEGLU feed-forward."""

    def __init__(self, dim: int, config: MotionModuleConfig) -> None:
        super().__init__()
        heads = config.num_attention_heads
        self.attention_blocks = nn.ModuleList(
            TemporalAttention(dim, heads, config.max_frames)
            for _ in range(config.attention_blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(config.attention_blocks))
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """GroupNorm, project in, temporal blocks, zero-initialised projection out, residual."""

    def __init__(self, channels: int, config: MotionModuleConfig) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(config.norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(channels, config)
            for _ in range(config.num_transformer_block))
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """``x``: (batch * frames, C, H, W), frames of one video consecutive."""
        bf, c, h, w = x.shape
        b = bf // num_frames
        tokens = self.norm(x).reshape(b, num_frames, c, h * w)
        tokens = tokens.permute(0, 3, 1, 2).reshape(b * h * w, num_frames, c)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens)
        out = tokens.reshape(b, h * w, num_frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
        return out + x


class TemporalModule(nn.Module):
    """One motion module (``VanillaTemporalModule``): a temporal transformer on a block output."""

    def __init__(self, channels: int, config: MotionModuleConfig) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, config)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        return self.temporal_transformer(x, num_frames)
