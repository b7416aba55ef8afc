"""PSNR and SSIM per frame: known answers, and agreement with scikit-image and torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr

from dancegen.tasks.frame_metrics import PSNR_CAP, psnr, ssim


def clips(seed: int = 0, frames: int = 3, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 256, (frames, size, size + 8, 3), dtype=np.uint8)
    noise = rng.normal(0, 20, reference.shape)
    generated = np.clip(reference + noise, 0, 255).astype(np.uint8)
    return generated, reference


def test_identical_frames_are_perfect() -> None:
    _, reference = clips()
    assert (psnr(reference, reference) == PSNR_CAP).all()  # capped, never +inf
    np.testing.assert_allclose(ssim(reference, reference), 1.0)


def test_psnr_matches_scikit_image_and_torchmetrics() -> None:
    generated, reference = clips()
    ours = psnr(generated, reference)
    for t in range(len(reference)):
        assert ours[t] == pytest.approx(
            peak_signal_noise_ratio(reference[t], generated[t], data_range=255), rel=1e-9)
        theirs = tm_psnr(torch.from_numpy(generated[t]).double(),
                         torch.from_numpy(reference[t]).double(), data_range=255.0)
        assert ours[t] == pytest.approx(float(theirs), rel=1e-6)  # it rounds through float32


def test_ssim_matches_scikit_image() -> None:
    generated, reference = clips(seed=1)
    ours = ssim(generated, reference)
    for t in range(len(reference)):
        theirs = structural_similarity(reference[t], generated[t], data_range=255,
                                       channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False)
        assert ours[t] == pytest.approx(theirs, abs=1e-9)
    # more noise, lower SSIM
    noisier = np.clip(reference + np.random.default_rng(2).normal(0, 60, reference.shape),
                      0, 255).astype(np.uint8)
    assert (ssim(noisier, reference) < ours).all()


def test_bad_clips_are_refused() -> None:
    generated, reference = clips()
    with pytest.raises(ValueError, match="must both be"):
        psnr(generated[:, :, :-1], reference)
    with pytest.raises(ValueError, match="uint8"):
        ssim(generated.astype(np.float32), reference)
    with pytest.raises(ValueError, match="at least 11 pixels"):
        ssim(generated[:, :8, :8], reference[:, :8, :8])
