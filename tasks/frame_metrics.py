"""Per-frame reconstruction metrics of generated vs ground-truth video: PSNR and SSIM.

The paper reports both over the test split's frames (Table 1). Definitions, as the reference
implementations compute them (the tests check PSNR against scikit-image and torchmetrics, SSIM
against scikit-image):

- PSNR = 10 log10(MAX^2 / MSE) over all pixels and channels of a frame, MAX = 255 for uint8
  frames, capped at :data:`PSNR_CAP` = 100 dB (as common tools cap it): an identical frame
  would give +inf and make every mean over it +inf.
- SSIM (Wang et al. 2004): Gaussian window sigma 1.5 (11x11), K1 = 0.01, K2 = 0.03, population
  covariances, computed per channel on the frame, valid region only (no padding), averaged
  over the window positions and channels; scikit-image's ``structural_similarity`` with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255``.
  torchmetrics' SSIM is not the same number: it averages over the reflect-padded map.

Both take (T, H, W, 3) uint8 clips and return one value per frame, so a report can give per-clip
curves as well as the aggregate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MAX_VALUE = 255.0
PSNR_CAP = 100.0  # dB: identical frames (MSE 0) score this instead of +inf
SSIM_SIGMA, SSIM_WINDOW, SSIM_K1, SSIM_K2 = 1.5, 11, 0.01, 0.03


def _check_clips(generated: np.ndarray, reference: np.ndarray) -> None:
    if generated.shape != reference.shape or generated.ndim != 4 or generated.shape[-1] != 3:
        raise ValueError(f"clips must both be (T, H, W, 3); got {generated.shape} and "
                         f"{reference.shape}")
    if generated.dtype != np.uint8 or reference.dtype != np.uint8:
        raise ValueError("clips must be uint8 frames")


def psnr(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """PSNR in dB per frame (T,), at most :data:`PSNR_CAP` (an identical frame)."""
    _check_clips(generated, reference)
    diff = generated.astype(np.float64) - reference.astype(np.float64)
    mse = (diff ** 2).reshape(len(diff), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return np.minimum(10.0 * np.log10(MAX_VALUE ** 2 / mse), PSNR_CAP)


def _gaussian_window() -> torch.Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - SSIM_WINDOW // 2
    weights = torch.exp(-(offsets ** 2) / (2 * SSIM_SIGMA ** 2))
    weights = weights / weights.sum()
    return torch.outer(weights, weights)[None, None]  # (1, 1, 11, 11)


def ssim(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """SSIM per frame (T,), in [-1, 1]; 1 where a frame is identical to its reference."""
    _check_clips(generated, reference)
    if min(generated.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"frames must be at least {SSIM_WINDOW} pixels on each side for SSIM")
    x = torch.from_numpy(generated).double().permute(0, 3, 1, 2).flatten(0, 1)[:, None]
    y = torch.from_numpy(reference).double().permute(0, 3, 1, 2).flatten(0, 1)[:, None]
    window = _gaussian_window()

    def blur(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(image, window)  # valid region only, as scikit-image crops

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * MAX_VALUE) ** 2, (SSIM_K2 * MAX_VALUE) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / \
        ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    per_channel = index.mean(dim=(1, 2, 3))                       # (T * 3,)
    return per_channel.view(len(generated), 3).mean(dim=1).numpy()
