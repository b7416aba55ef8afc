"""EDGE's motion normaliser: per-feature min-max scaling to [-1, 1], fitted on the training set.

EDGE fits a ``MinMaxScaler((-1, 1), clip=True)`` on every frame of the training windows and
stores it in ``checkpoint.pt`` (key ``normalizer``); the diffusion model works in the
normalised space and samples are mapped back with :meth:`MinMaxNormalizer.unnormalize`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MinMaxNormalizer(nn.Module):
    """``x * scale + min`` (clipped to [-1, 1]) and its inverse, as EDGE's MinMaxScaler."""

    def __init__(self, scale: Tensor, offset: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().float().clone())
        self.register_buffer("offset", offset.detach().float().clone())

    @classmethod
    def fit(cls, data: Tensor) -> MinMaxNormalizer:
        """Fit on (..., features) data; constant features keep scale 2 / 1 (no blow-up)."""
        flat = data.reshape(-1, data.shape[-1]).float()
        low, high = flat.min(dim=0).values, flat.max(dim=0).values
        span = high - low
        # sklearn/EDGE: a (near-)constant feature gets range 1 instead of ~0
        span = torch.where(span < 10 * torch.finfo(span.dtype).eps, torch.ones_like(span), span)
        scale = 2.0 / span
        return cls(scale, -1.0 - low * scale)

    def normalize(self, x: Tensor) -> Tensor:
        """Map to [-1, 1], clipping what the training data never reached."""
        return (x * self.scale + self.offset).clamp(-1.0, 1.0)

    def unnormalize(self, x: Tensor) -> Tensor:
        """Back to the motion representation (inputs clipped to [-1, 1] first, as EDGE)."""
        return (x.clamp(-1.0, 1.0) - self.offset) / self.scale

    def state(self) -> dict[str, Tensor]:
        """Plain tensors for a checkpoint."""
        return {"scale": self.scale.cpu(), "offset": self.offset.cpu()}
