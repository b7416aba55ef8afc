"""LPIPS and FVD: the released file layouts load, values match independent computations.

No pretrained backbone can be downloaded here, so the weight files are written by the tests in
the real layouts (torchvision's AlexNet state dict with its classifier keys, pytorch-i3d's
state dict, a TorchScript module with StyleGAN-V's call signature) with random weights; the
LPIPS heads are the real ones bundled with the lpips package.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn
from weight_files import FEATURES, StyleganVStandIn, alexnet_file, save_torchscript

from dancegen.errors import InputError
from dancegen.models.i3d import InceptionI3d, to_i3d_input
from dancegen.models.lpips import BACKBONES, LPIPS, LinearHeads
from dancegen.storage.metric_weights import bundled_lpips_heads, load_i3d, load_lpips
from dancegen.tasks.perceptual_metrics import (
    frechet_distance,
    fvd_clips,
    i3d_features,
    lpips_per_frame,
)

LpipsAndBackbone = tuple[LPIPS, dict[str, torch.Tensor]]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Threads spin against each other on a busy 2-core runner: a 400x400 sqrtm or a tiny I3D
    forward then takes seconds instead of tens of milliseconds. Results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
        yield
    torch.set_num_threads(threads)


def video(seed: int = 0, frames: int = 4, size: int = 64) -> np.ndarray:
    """Smooth random frames (noise on a gradient), so that added noise is a real change."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size)[:, None, None] + np.linspace(0, 50, size)[None, :, None]
    return np.clip(ramp + rng.normal(0, 10, (frames, size, size, 3)), 0, 255).astype(np.uint8)


def noisy(clip: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, clip.shape)
    return np.clip(clip + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def lpips_alex(tmp_path_factory: pytest.TempPathFactory) -> LpipsAndBackbone:
    """(model, backbone state dict) for AlexNet LPIPS with the real bundled heads."""
    path = alexnet_file(tmp_path_factory.mktemp("lpips") / "alexnet-owt-7be5be79.pth")
    return load_lpips(str(path)), torch.load(path, weights_only=True)


# --- LPIPS -------------------------------------------------------------------------------------

def test_bundled_heads_load_strictly() -> None:
    for net in ("alex", "vgg"):
        heads = torch.load(bundled_lpips_heads(net), map_location="cpu", weights_only=True)
        LinearHeads(BACKBONES[net][2]).load_state_dict(heads, strict=True)


def test_lpips_identical_symmetric_and_growing(lpips_alex: LpipsAndBackbone) -> None:
    model, _ = lpips_alex
    real = video()
    np.testing.assert_allclose(lpips_per_frame(model, real, real), 0.0, atol=1e-7)
    fake = noisy(real, 20)
    forward, backward = lpips_per_frame(model, real, fake), lpips_per_frame(model, fake, real)
    assert forward.shape == (len(real),) and forward.dtype == np.float64
    np.testing.assert_allclose(forward, backward, rtol=1e-5)
    means = [lpips_per_frame(model, real, noisy(real, sigma), batch=3).mean()
             for sigma in (5, 20, 60)]
    assert 0 < means[0] < means[1] < means[2]


def _reference_lpips(state: dict, heads: dict, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS-alex written out with functional ops from the two state dicts."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def conv(x: torch.Tensor, i: int, **kwargs: int) -> torch.Tensor:
        return F.relu(F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"],
                               **kwargs))

    def taps(x: torch.Tensor) -> list[torch.Tensor]:
        relu1 = conv((x - shift) / scale, 0, stride=4, padding=2)
        relu2 = conv(F.max_pool2d(relu1, 3, 2), 3, padding=2)
        relu3 = conv(F.max_pool2d(relu2, 3, 2), 6, padding=1)
        relu4 = conv(relu3, 8, padding=1)
        return [relu1, relu2, relu3, relu4, conv(relu4, 10, padding=1)]

    total = torch.zeros(len(a))
    for k, (fa, fb) in enumerate(zip(taps(a), taps(b), strict=True)):
        fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
        fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
        total += F.conv2d((fa - fb) ** 2, heads[f"lin{k}.model.1.weight"]).mean(dim=(1, 2, 3))
    return total


def test_lpips_matches_functional_recomputation(lpips_alex: LpipsAndBackbone) -> None:
    model, state = lpips_alex
    real = video(seed=3, frames=2)
    fake = noisy(real, 30)
    heads = torch.load(bundled_lpips_heads("alex"), map_location="cpu", weights_only=True)
    a, b = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1 for x in (real, fake))
    expected = _reference_lpips(state, heads, a, b).double().numpy()
    np.testing.assert_allclose(lpips_per_frame(model, real, fake), expected, rtol=1e-4)


def test_lpips_file_errors(tmp_path: Path) -> None:
    short = alexnet_file(tmp_path / "alexnet.pth", drop="features.8.bias")
    with pytest.raises(InputError, match=r"LPIPS.*alexnet\.pth.*missing.*'features\.8\.bias'"):
        load_lpips(str(short))
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(InputError, match=r"LPIPS.*not found: .*nowhere\.pth"):
        load_lpips(str(missing))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match=r"LPIPS: .*corrupt\.pth is not a readable state dict"):
        load_lpips(str(corrupt))
    full = alexnet_file(tmp_path / "ok.pth")
    vgg_heads = bundled_lpips_heads("vgg")
    with pytest.raises(InputError, match=r"LPIPS: .*vgg\.pth does not fit .*size mismatch"):
        load_lpips(str(full), heads_url=vgg_heads)


def test_lpips_refuses_bad_clips(lpips_alex: LpipsAndBackbone) -> None:
    model, _ = lpips_alex
    real = video(frames=2)
    with pytest.raises(ValueError, match="must both be"):
        lpips_per_frame(model, real, real[:1])
    with pytest.raises(ValueError, match="uint8"):
        lpips_per_frame(model, real, real.astype(np.float32))


# --- Frechet distance ----------------------------------------------------------------------------

def gaussian_samples(mean: np.ndarray, variances: np.ndarray, count: int,
                     seed: int) -> np.ndarray:
    """Samples whose sample mean and unbiased covariance are exactly mean and diag(variances)."""
    z = np.random.default_rng(seed).normal(size=(count, len(mean)))
    z -= z.mean(axis=0)
    q, _ = np.linalg.qr(z)  # orthonormal columns, still zero-mean
    return mean + q * np.sqrt((count - 1) * variances)


def test_frechet_distance_closed_form_and_symmetry() -> None:
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 3.0]), np.array([0.5, 1.0, 0.0, 2.0])
    var1, var2 = np.array([1.0, 2.0, 0.5, 4.0]), np.array([3.0, 0.2, 0.5, 1.0])
    a, b = gaussian_samples(mu1, var1, 50, 0), gaussian_samples(mu2, var2, 80, 1)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_with_fewer_samples_than_dimensions() -> None:
    features = np.random.default_rng(0).normal(size=(6, 40))  # rank-5 40x40 covariances
    other = features + 0.5  # same covariance, means 0.5 apart in each dimension
    assert abs(frechet_distance(features, features)) < 1e-6 * np.trace(np.cov(features.T))
    assert frechet_distance(features, other) == pytest.approx(0.25 * 40, rel=1e-3)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(features[:1], features)
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(features, features[:, :10])


def test_fvd_clips() -> None:
    frames = video(frames=40, size=8)
    clips = fvd_clips(frames)
    assert clips.shape == (2, 16, 8, 8, 3)
    np.testing.assert_array_equal(clips[1], frames[16:32])
    assert fvd_clips(frames, length=16, stride=8).shape[0] == 4
    assert fvd_clips(frames[:10]).shape == (0, 16, 8, 8, 3)


# --- I3D ---------------------------------------------------------------------------------------

def test_torchscript_i3d_is_called_as_stylegan_v(tmp_path: Path) -> None:
    torch.manual_seed(0)
    stand_in = StyleganVStandIn()
    extractor = load_i3d(str(save_torchscript(stand_in, tmp_path / "i3d_torchscript.pt")))
    real = np.stack([video(seed, frames=16, size=32) for seed in range(3)])
    features = i3d_features(extractor, real, batch=2)
    assert features.shape == (3, FEATURES) and features.dtype == np.float64
    with torch.no_grad():
        expected = stand_in(torch.from_numpy(real).permute(0, 4, 1, 2, 3), True, True, True)
    np.testing.assert_allclose(features, expected.double().numpy(), rtol=1e-5, atol=1e-5)
    # identical videos: FVD ~ 0; different ones: FVD > 0
    assert abs(frechet_distance(features, features)) < 1e-6 * np.trace(np.cov(features.T))
    fake = np.stack([noisy(clip, 40) for clip in real])
    assert frechet_distance(features, i3d_features(extractor, fake)) > 1e-3
    with pytest.raises(ValueError, match="uint8"):
        i3d_features(extractor, real.astype(np.float32))
    # a video shorter than one clip has no clip, hence no features
    assert i3d_features(extractor, fvd_clips(real[0, :8])).shape == (0, FEATURES)


def test_torchscript_with_another_signature_is_refused(tmp_path: Path) -> None:
    path = save_torchscript(nn.Linear(2, 2), tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"FVD \(I3D\): .*other\.pt .*lacks"):
        load_i3d(str(path))


def test_i3d_state_dict_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = InceptionI3d(bn_eps=1e-5).eval()  # VideoGPT's copy, as its i3d_pretrained_400.pt
    for name, buffer in network.named_buffers():  # non-trivial batch-norm statistics
        if name.endswith("running_var"):
            buffer.uniform_(0.5, 1.5)
        elif name.endswith("running_mean"):
            buffer.normal_(0, 0.1)
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(network.state_dict(), path)
    # 193 px and 9 frames: the smallest input the fixed (2, 7, 7) average pool accepts
    extractor = load_i3d(str(path), size=193)
    loaded = extractor.network.state_dict()
    assert all(torch.equal(value, loaded[key]) for key, value in network.state_dict().items())
    clips = video(frames=9)[None]
    with torch.no_grad():
        expected = network.video_logits(to_i3d_input(torch.from_numpy(clips), 193))
    features = i3d_features(extractor, clips)
    assert features.shape == (1, FEATURES)
    assert extractor.protocol.startswith("videogpt")  # read from the file name
    np.testing.assert_allclose(features, expected.double().numpy(), rtol=1e-5, atol=1e-6)
    # the same weights read as piergiaj's copy (BatchNorm eps 1e-3) give other features
    other = i3d_features(load_i3d(str(path), size=193, protocol="piergiaj"), clips)
    assert np.abs(other - features).max() > 1e-4 * np.abs(features).max()  # > 10x the rtol
    lacking = {k: v for k, v in network.state_dict().items() if k != "Mixed_4c.b1b.conv3d.weight"}
    torch.save(lacking, path)
    with pytest.raises(InputError, match=r"FVD \(I3D\).*missing.*'Mixed_4c\.b1b\.conv3d\.weight'"):
        load_i3d(str(path))


def test_missing_i3d_file_names_fvd(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"FVD \(I3D\).*not found: .*absent\.pt"):
        load_i3d(str(tmp_path / "absent.pt"))
