"""Learned metrics of generated vs ground-truth video: LPIPS per frame and FVD.

- LPIPS (v0.1, AlexNet by default, as the lpips package): per frame pair, on uint8 frames
  mapped to [-1, 1] by ``x / 127.5 - 1`` at their own resolution (lpips does not resize).
  Networks come from :mod:`dancegen.storage.metric_weights`.
- FVD16: each video is cut into consecutive 16-frame clips (:func:`fvd_clips`), each clip
  gives the I3D's 400 pre-softmax Kinetics-400 logits (:func:`i3d_features`, preprocessing in
  :mod:`dancegen.models.i3d`), and FVD is the Frechet distance between the Gaussians fitted to
  the real and the generated features (:func:`frechet_distance`).

Frechet distance: ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``, with the unbiased
(N - 1) covariances of the Google reference (tfgan) and of common_metrics_on_video_quality
(StyleGAN-V divides by N instead, which lowers the covariance term by a factor (N - 1) / N),
``scipy.linalg.sqrtm`` and its real part, as StyleGAN-V. With fewer samples than feature
dimensions (fewer than 401 clips for I3D) the covariances are singular; ``sqrtm`` still
returns a usable root, the real part drops the round-off imaginary part, and should the root
not be finite the product is offset by 1e-6 I as pytorch-fid does. Few samples bias FVD
upwards: compare only values computed from the same number of clips.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import nn

from dancegen.models.i3d import NUM_CLASSES, I3dFeatureExtractor
from dancegen.models.lpips import LPIPS
from dancegen.tasks.frame_metrics import _check_clips

FVD_LENGTH = 16
SQRTM_OFFSET = 1e-6  # pytorch-fid's fallback when the product's root is not finite


def _device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _batches(count: int, batch: int) -> range:
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    return range(0, count, batch)


def _to_unit_range(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    images = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float()
    return images / 127.5 - 1.0


@torch.no_grad()
def lpips_per_frame(model: LPIPS, real: np.ndarray, fake: np.ndarray,
                    batch: int = 16) -> np.ndarray:
    """LPIPS per frame (T,) between two uint8 clips (T, H, W, 3); 0 for identical frames."""
    _check_clips(fake, real)
    device = _device(model)
    distances = [model(_to_unit_range(real[i:i + batch], device),
                       _to_unit_range(fake[i:i + batch], device)).cpu()
                 for i in _batches(len(real), batch)]
    return torch.cat(distances).double().numpy() if distances else np.zeros(0)


@torch.no_grad()
def i3d_features(extractor: I3dFeatureExtractor, clips: np.ndarray,
                 batch: int = 8) -> np.ndarray:
    """FVD features (N, 400) float64 of uint8 clips (N, T, H, W, 3), ``batch`` clips at once.

    N = 0 (a video shorter than one clip, see :func:`fvd_clips`) gives (0, 400).
    """
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be (N, T, H, W, 3); got {clips.shape}")
    if clips.dtype != np.uint8:
        raise ValueError("clips must be uint8 frames")
    device = _device(extractor)
    features = [extractor(torch.from_numpy(clips[i:i + batch]).to(device)).cpu()
                for i in _batches(len(clips), batch)]
    return torch.cat(features).double().numpy() if features else np.zeros((0, NUM_CLASSES))


def fvd_clips(video: np.ndarray, length: int = FVD_LENGTH, stride: int | None = None) -> np.ndarray:
    """Clips (K, length, H, W, 3) of consecutive frames of a (T, H, W, 3) video.

    ``stride`` defaults to ``length`` (non-overlapping clips; FVD16 takes 16 consecutive
    frames). The last frames that do not fill a clip are left out, and a video shorter than
    ``length`` gives no clip (K = 0), as StyleGAN-V discards short videos.
    """
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be (T, H, W, 3); got {video.shape}")
    stride = length if stride is None else stride
    if length < 1 or stride < 1:
        raise ValueError(f"clip length and stride must be at least 1; got {length}, {stride}")
    starts = range(0, len(video) - length + 1, stride)
    if not starts:
        return np.empty((0, length, *video.shape[1:]), dtype=video.dtype)
    return np.stack([video[start:start + length] for start in starts])


def _gaussian(features: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (N, D) samples."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"{name} must be (N, D) features with N >= 2 (a covariance needs two "
                         f"samples); got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} holds NaN or infinite features")
    samples = features.astype(np.float64)
    return samples.mean(axis=0), np.atleast_2d(np.cov(samples, rowvar=False))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets (FVD, FID)."""
    mu_a, sigma_a = _gaussian(a, "first features")
    mu_b, sigma_b = _gaussian(b, "second features")
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(root).all():
        offset = np.eye(len(mu_a)) * SQRTM_OFFSET
        root = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    mean_term = float(np.sum((mu_a - mu_b) ** 2))
    return mean_term + float(np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(root.real))
