"""LPIPS (Zhang et al. 2018), the learned perceptual distance of the paper's Table 1, v0.1.

The layout follows the ``lpips`` package (0.1.4) so that its released files load unchanged:

- :class:`Backbone` holds torchvision's ``features`` stack (``alexnet().features`` or
  ``vgg16().features``, same indices), so torchvision's ImageNet files
  (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``) load into it once their
  ``classifier.*`` entries are dropped. The compared activations are the ReLU outputs
  relu1..relu5 (AlexNet) or relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (VGG16).
- :class:`LinearHeads` holds the calibrated 1x1 convolutions ``lin{k}.model.1.weight``
  (C_k -> 1, no bias; index 0 of each ``model`` is a Dropout), exactly the keys of the
  package's bundled ``weights/v0.1/{alex,vgg}.pth``.

Distance, for images in [-1, 1]: shift/scale the input (``ScalingLayer``), take each tapped
activation, unit-normalise it over channels (``x / (||x|| + 1e-10)``), square the difference of
the two images' activations, weight the channels with the head, average over space and sum
over the layers. Identical images give exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # lpips.normalize_tensor: added to the norm, so all-zero activations stay 0


def _alexnet_features() -> nn.Sequential:
    """torchvision ``alexnet().features`` (convs at 0, 3, 6, 8, 10)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
    )


def _vgg16_features() -> nn.Sequential:
    """torchvision ``vgg16().features`` (configuration D, no batch norm)."""
    layers: list[nn.Module] = []
    channels = 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    return nn.Sequential(*layers)


# net -> (features builder, indices of the tapped ReLUs, their channel counts)
BACKBONES: dict[str, tuple[Callable[[], nn.Sequential], tuple[int, ...], tuple[int, ...]]] = {
    "alex": (_alexnet_features, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256)),
    "vgg": (_vgg16_features, (3, 8, 15, 22, 29), (64, 128, 256, 512, 512)),
}


class ScalingLayer(nn.Module):
    """Maps [-1, 1] images to the statistics the ImageNet backbones were trained on."""

    def __init__(self) -> None:
        super().__init__()
        # not persistent: constants, and the released files do not carry them
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None], persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.shift) / self.scale


class Backbone(nn.Module):
    """torchvision's ``features`` stack; returns the activations at the tapped ReLUs."""

    def __init__(self, net: str) -> None:
        super().__init__()
        if net not in BACKBONES:
            raise ValueError(f"LPIPS backbone must be one of {sorted(BACKBONES)}, not {net!r}")
        build, self.taps, self.channels = BACKBONES[net]
        self.features = build()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        tapped = []
        x = images
        for index, layer in enumerate(self.features[: self.taps[-1] + 1]):
            x = layer(x)
            if index in self.taps:
                tapped.append(x)
        return tapped


class LinearHead(nn.Module):
    """lpips ``NetLinLayer``: Dropout, then a 1x1 convolution C -> 1 without bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LinearHeads(nn.ModuleDict):
    """``lin0`` .. ``lin{L-1}``: the state-dict layout of lpips' ``weights/v0.1/*.pth``."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__({f"lin{k}": LinearHead(c) for k, c in enumerate(channels)})


def normalize_channels(x: torch.Tensor) -> torch.Tensor:
    """Unit length over the channel axis, as ``lpips.normalize_tensor``."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between two image batches in [-1, 1], (N, 3, H, W) -> (N,)."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        self.scaling = ScalingLayer()
        self.backbone = Backbone(net)
        self.heads = LinearHeads(self.backbone.channels)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"LPIPS needs two (N, 3, H, W) batches; got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
        # one backbone pass over both batches (no batch norm: the halves do not interact)
        activations = self.backbone(self.scaling(torch.cat([a, b])))
        distance = a.new_zeros(len(a))
        for head, both in zip(self.heads.values(), activations, strict=True):
            first, second = normalize_channels(both).chunk(2)
            distance = distance + head((first - second) ** 2).mean(dim=(1, 2, 3))
        return distance
