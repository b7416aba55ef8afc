"""EDGE's music-conditioned motion denoiser (``DanceDecoder``), as a pure ``nn.Module``.

A transformer decoder over 5-s windows of the 151-d EDGE motion vector: music features are
projected and encoded by two transformer encoder layers into cross-attention tokens; the
diffusion time plus a pooled music vector modulate every decoder sub-layer through FiLM.
Rotary position embeddings are applied to queries and keys over the full model width, with
no absolute position encoding (EDGE's ``use_rotary=True`` default).

Parameter and buffer names follow EDGE's ``model/model.py`` exactly (``cond_encoder.0...``,
``seqTransDecoder.stack.3.film2.block.1.weight``, ``rotary.freqs`` repeated in every layer
that shares the rotary module), so the ``ema_state_dict`` of the published ``checkpoint.pt``
loads with ``strict=True`` into ``DanceDecoder(EdgeModelConfig.paper(...))``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EDGE_MOTION_DIM = 151
BASELINE_FEATURE_DIM = 35
JUKEBOX_FEATURE_DIM = 4800


@dataclass(frozen=True)
class EdgeModelConfig:
    """Sizes of a DanceDecoder. :meth:`paper` is the published EDGE model."""

    cond_feature_dim: int = BASELINE_FEATURE_DIM
    seq_len: int = 150            # 5 s at 30 fps
    nfeats: int = EDGE_MOTION_DIM
    latent_dim: int = 512
    ff_size: int = 1024
    num_layers: int = 8
    num_heads: int = 8
    dropout: float = 0.1

    @classmethod
    def paper(cls, cond_feature_dim: int = JUKEBOX_FEATURE_DIM) -> EdgeModelConfig:
        """EDGE as released: 512 wide, 8 layers, 8 heads; Jukebox (4800) or baseline (35)."""
        return cls(cond_feature_dim=cond_feature_dim)

    def to_dict(self) -> dict[str, int | float]:
        """Plain form stored next to dancegen checkpoints."""
        return asdict(self)


def _rotate_half(x: Tensor) -> Tensor:
    """Pairs (x0, x1) -> (-x1, x0) along the last axis (interleaved, as rotary-embedding-torch)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over the full feature width ("lang" frequencies)."""

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.register_buffer("freqs", freqs)  # persistent: EDGE checkpoints carry it

    def rotate_queries_or_keys(self, t: Tensor) -> Tensor:
        """Rotate (..., seq, dim) by position along the sequence axis."""
        positions = torch.arange(t.shape[-2], device=t.device, dtype=self.freqs.dtype)
        angles = torch.einsum("n,f->nf", positions, self.freqs).repeat_interleave(2, dim=-1)
        angles = angles.to(t)
        return t * angles.cos() + _rotate_half(t) * angles.sin()


class SinusoidalPosEmb(nn.Module):
    """Sinusoidal embedding of the diffusion timestep (sin half, then cos half)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=x.device) * -scale)
        angles = x.float()[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class DenseFiLM(nn.Module):
    """Mish + linear: the (scale, shift) pair of one FiLM modulation from the time vector."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Mish(), nn.Linear(channels, channels * 2))

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        scale, shift = self.block(t)[:, None, :].chunk(2, dim=-1)
        return scale, shift


def _film(x: Tensor, scale_shift: tuple[Tensor, Tensor]) -> Tensor:
    scale, shift = scale_shift
    return (scale + 1) * x + shift


class TransformerEncoderLayer(nn.Module):
    """Pre-norm self-attention + feed-forward layer with rotary queries/keys (music encoder)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 rotary: RotaryEmbedding | None) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.rotary = rotary  # shared module: its buffer appears under every layer, as in EDGE

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        qk = self.rotary.rotate_queries_or_keys(h) if self.rotary is not None else h
        x = x + self.dropout1(self.self_attn(qk, qk, h, need_weights=False)[0])
        h = self.norm2(x)
        return x + self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(h)))))


class FiLMTransformerDecoderLayer(nn.Module):
    """Pre-norm self-attention, cross-attention to the music tokens and feed-forward; each
    sub-layer's output is FiLM-modulated by the time vector before its residual add."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 rotary: RotaryEmbedding | None) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout,
                                                    batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.film1 = DenseFiLM(d_model)
        self.film2 = DenseFiLM(d_model)
        self.film3 = DenseFiLM(d_model)
        self.rotary = rotary

    def _rot(self, x: Tensor) -> Tensor:
        return self.rotary.rotate_queries_or_keys(x) if self.rotary is not None else x

    def forward(self, x: Tensor, memory: Tensor, t: Tensor) -> Tensor:
        h = self.norm1(x)
        qk = self._rot(h)
        attended = self.dropout1(self.self_attn(qk, qk, h, need_weights=False)[0])
        x = x + _film(attended, self.film1(t))
        h = self.norm2(x)
        crossed = self.multihead_attn(self._rot(h), self._rot(memory), memory,
                                      need_weights=False)[0]
        x = x + _film(self.dropout2(crossed), self.film2(t))
        h = self.norm3(x)
        fed = self.dropout3(self.linear2(self.dropout(F.gelu(self.linear1(h)))))
        return x + _film(fed, self.film3(t))


class DecoderLayerStack(nn.Module):
    """The decoder layers (EDGE keeps them under ``seqTransDecoder.stack``)."""

    def __init__(self, stack: nn.ModuleList) -> None:
        super().__init__()
        self.stack = stack

    def forward(self, x: Tensor, cond: Tensor, t: Tensor) -> Tensor:
        for layer in self.stack:
            x = layer(x, cond, t)
        return x


class DanceDecoder(nn.Module):
    """Predicts the clean motion x0 (B, S, 151) from noisy motion, music features and time."""

    def __init__(self, config: EdgeModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.latent_dim
        self.rotary = RotaryEmbedding(d)
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(d), nn.Linear(d, d * 4), nn.Mish())
        self.to_time_cond = nn.Sequential(nn.Linear(d * 4, d))
        # two time tokens appended to the music tokens (EDGE: Rearrange "b (r d) -> b r d")
        self.to_time_tokens = nn.Sequential(nn.Linear(d * 4, d * 2), nn.Unflatten(-1, (2, d)))
        # learned "no music" embeddings for classifier-free guidance
        self.null_cond_embed = nn.Parameter(torch.randn(1, config.seq_len, d))
        self.null_cond_hidden = nn.Parameter(torch.randn(1, d))
        self.norm_cond = nn.LayerNorm(d)
        self.input_projection = nn.Linear(config.nfeats, d)
        self.cond_encoder = nn.Sequential(*[
            TransformerEncoderLayer(d, config.num_heads, config.ff_size, config.dropout,
                                    self.rotary)
            for _ in range(2)
        ])
        self.cond_projection = nn.Linear(config.cond_feature_dim, d)
        self.non_attn_cond_projection = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.seqTransDecoder = DecoderLayerStack(nn.ModuleList([  # EDGE's key name
            FiLMTransformerDecoderLayer(d, config.num_heads, config.ff_size, config.dropout,
                                        self.rotary)
            for _ in range(config.num_layers)
        ]))
        self.final_layer = nn.Linear(d, config.nfeats)

    def forward(self, x: Tensor, cond: Tensor, times: Tensor,
                cond_drop_prob: float = 0.0) -> Tensor:
        """Denoise.

        Args:
            x: (B, S, nfeats) noisy motion (normalised to [-1, 1]).
            cond: (B, S, cond_feature_dim) music features of the same window.
            times: (B,) integer diffusion timesteps.
            cond_drop_prob: probability of replacing a sample's music by the null embedding
                (0.25 in training, 0 or 1 for the two halves of classifier-free guidance).

        Returns:
            (B, S, nfeats) the predicted clean motion.
        """
        batch = x.shape[0]
        h = self.input_projection(x)
        if cond_drop_prob <= 0:  # (no random draw then, as EDGE's prob_mask_like)
            keep = torch.ones(batch, dtype=torch.bool, device=x.device)
        elif cond_drop_prob >= 1:
            keep = torch.zeros(batch, dtype=torch.bool, device=x.device)
        else:
            keep = torch.rand(batch, device=x.device) < 1 - cond_drop_prob
        tokens = self.cond_encoder(self.cond_projection(cond))
        tokens = torch.where(keep[:, None, None], tokens, self.null_cond_embed.to(tokens.dtype))
        cond_hidden = self.non_attn_cond_projection(tokens.mean(dim=-2))
        t_hidden = self.time_mlp(times)
        t = self.to_time_cond(t_hidden)
        t_tokens = self.to_time_tokens(t_hidden)
        t = t + torch.where(keep[:, None], cond_hidden, self.null_cond_hidden.to(t.dtype))
        memory = self.norm_cond(torch.cat((tokens, t_tokens), dim=-2))
        return self.final_layer(self.seqTransDecoder(h, memory, t))

    def guided_forward(self, x: Tensor, cond: Tensor, times: Tensor, weight: float) -> Tensor:
        """Classifier-free guidance: unconditional + weight * (conditional - unconditional)."""
        unconditional = self.forward(x, cond, times, cond_drop_prob=1.0)
        conditional = self.forward(x, cond, times, cond_drop_prob=0.0)
        return unconditional + (conditional - unconditional) * weight
