"""M2PEnc, the paper's music-to-pose encoder: per-frame music features -> pose guidance.

As the paper describes it: music features (N, D) (Jukebox 4800-d, or EDGE's 35-d baseline) ->
linear -> (N, 4096) -> reshape (N, 64, 64) -> alternating inflated Conv3D and 3D attention
blocks -> guidance (N, C_guid, 64, 64) and keypoint heatmaps (N, C_heat, 64, 64).

What the paper leaves open, and what dancegen does (docs/ldm.md):
- The sequence of N frames is one (1, N, 64, 64) volume; the "inflated" convolutions are
  3x3 spatial kernels inflated over time (3x3x3), as in I3D.
- Full 3D attention at 64x64 over 75 frames would be 307k tokens, so the attention blocks run
  at a reduced grid (``attention_size``, 16x16 in the paper config) reached by strided
  convolutions, and the features come back to 64x64 through a U-Net-like path with skips.
- The guidance output is the four guidance images (depth, normal, semantic, skeleton; 3
  channels each, values in [0, 1]) at 64x64 — the maps the guidance encoders take — so
  stage 1 can supervise it with the rendered maps and stage 3 can feed it to the LDM.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch.nn.functional as F
from torch import Tensor, nn

GRID = 64  # the paper's 4096 = 64 x 64


@dataclass(frozen=True)
class M2PEncConfig:
    """Sizes of an M2PEnc; ``channels[i]`` is the width at 64 / 2**i pixels."""

    music_dim: int = 4800
    channels: tuple[int, ...] = (32, 64, 128)
    attention_blocks: int = 2
    attention_heads: int = 8
    guidance_channels: int = 12      # 4 guidance images x RGB
    heatmap_channels: int = 18       # OpenPose-18 keypoints
    norm_num_groups: int = 8

    @property
    def attention_size(self) -> int:
        return GRID >> (len(self.channels) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(config: M2PEncConfig, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(config.norm_num_groups, channels), channels)


def inflated_conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv3d:
    """A 3x3 conv inflated over time: 3x3x3, strided in space only."""
    return nn.Conv3d(c_in, c_out, kernel_size=3, stride=(1, stride, stride), padding=1)


class InflatedConvBlock(nn.Module):
    """Pre-norm residual block of two inflated convolutions."""

    def __init__(self, channels: int, config: M2PEncConfig) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(config, channels), inflated_conv(channels, channels)
        self.norm2, self.conv2 = _norm(config, channels), inflated_conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class SpatioTemporalAttention(nn.Module):
    """Full self-attention over all (frame, y, x) positions of a (B, C, N, H, W) volume."""

    def __init__(self, channels: int, config: M2PEncConfig) -> None:
        super().__init__()
        if channels % config.attention_heads:
            raise ValueError(f"{channels} channels do not split into "
                             f"{config.attention_heads} heads")
        self.heads = config.attention_heads
        self.norm = _norm(config, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, n, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)                   # (B, N*H*W, C)
        q, k, v = self.qkv(tokens).view(b, -1, 3, self.heads, c // self.heads).unbind(2)
        attended = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))      # (B, heads, L, d)
        attended = self.out(attended.transpose(1, 2).reshape(b, -1, c))
        return x + attended.transpose(1, 2).reshape(b, c, n, h, w)


class M2PEnc(nn.Module):
    """music (B, N, D) -> guidance (B, N, C_guid, 64, 64), heatmaps (B, N, C_heat, 64, 64)."""

    def __init__(self, config: M2PEncConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.channels
        self.music_proj = nn.Linear(config.music_dim, GRID * GRID)
        self.conv_in = inflated_conv(1, widths[0])
        self.down = nn.ModuleList()
        for c_in, c_out in itertools.pairwise(widths):
            self.down.append(nn.ModuleList([InflatedConvBlock(c_in, config),
                                            inflated_conv(c_in, c_out, stride=2)]))
        bottom = widths[-1]
        self.middle = nn.ModuleList()
        for _ in range(config.attention_blocks):  # alternate conv and 3D attention
            self.middle.append(InflatedConvBlock(bottom, config))
            self.middle.append(SpatioTemporalAttention(bottom, config))
        self.up = nn.ModuleList()
        for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True):
            self.up.append(nn.ModuleList([inflated_conv(c_in, c_out),
                                          InflatedConvBlock(c_out, config)]))
        self.norm_out = _norm(config, widths[0])
        self.guidance_out = inflated_conv(widths[0], config.guidance_channels)
        self.heatmap_out = inflated_conv(widths[0], config.heatmap_channels)

    def forward(self, music: Tensor) -> tuple[Tensor, Tensor]:
        b, n, _ = music.shape
        x = self.music_proj(music).view(b, 1, n, GRID, GRID)
        x = self.conv_in(x)
        skips = []
        for block, downsample in self.down:
            x = block(x)
            skips.append(x)
            x = downsample(x)
        for layer in self.middle:
            x = layer(x)
        for conv, block in self.up:
            x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
            x = block(conv(x) + skips.pop())
        x = F.silu(self.norm_out(x))
        guidance = self.guidance_out(x).transpose(1, 2)   # (B, N, C, 64, 64)
        heatmaps = self.heatmap_out(x).transpose(1, 2)
        return guidance, heatmaps
