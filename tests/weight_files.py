"""Metric weight files written by the tests in the released layouts, with random weights:
torchvision's AlexNet state dict (LPIPS backbone) and a TorchScript module with StyleGAN-V's
I3D call signature (FVD)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dancegen.models.lpips import BACKBONES

FEATURES = 400


def alexnet_file(path: Path, drop: str | None = None) -> Path:
    """A torchvision-layout ``alexnet-owt-*.pth`` with random weights (seeded)."""
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in BACKBONES["alex"][0]().state_dict().items()}
    # the classifier keys the real file carries (small shapes: they are dropped unread)
    state |= {f"classifier.{i}.{p}": torch.zeros(2) for i in (1, 4, 6) for p in ("weight", "bias")}
    state.pop(drop, None)
    torch.save(state, path)
    return path


class StyleganVStandIn(nn.Module):
    """StyleGAN-V's detector signature; refuses any other call than StyleGAN-V's."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("projection", torch.randn(3 * 4 * 4 * 4, FEATURES))

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.shape[1] != 3:
            raise RuntimeError("expected uint8 (N, 3, T, H, W)")
        if not (rescale and resize and return_features):
            raise RuntimeError("expected rescale=True, resize=True, return_features=True")
        pooled = F.adaptive_avg_pool3d(x.float() / 127.5 - 1, 4)
        return pooled.flatten(1) @ self.projection


def save_torchscript(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript, as the released file
        torch.jit.save(torch.jit.script(module), str(path))
    return path


