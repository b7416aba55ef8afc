"""Jukebox features: checkpoint loading in OpenAI's format, extraction, the cache and the stage.

The checkpoints are reduced (see jukebox_helpers): nothing here says anything about the real
model's features.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from jukebox_helpers import jukebox_overrides, write_reduced_jukebox
from prefect_ray import RayTaskRunner

from dancegen.config import DancegenConfig, load_config
from dancegen.errors import ConfigError, InputError
from dancegen.flows.build_dataset import build_dataset
from dancegen.storage import DatasetStore
from dancegen.storage.aistpp import AistppInputs
from dancegen.storage.feature_cache import FeatureCache
from dancegen.storage.jukebox_checkpoint import load_prior, load_vqvae
from dancegen.tasks.jukebox_features import (
    cache_key,
    track_features,
    window_features,
    worker_jukebox,
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reduced checkpoints in OpenAI's layout (see jukebox_helpers)."""
    return write_reduced_jukebox(tmp_path_factory.mktemp("jukebox"))


def _config(weights: Path, *overrides: str) -> DancegenConfig:
    return load_config("configs/local-cpu.yaml", [*jukebox_overrides(weights), *overrides])


def test_checkpoints_load_in_openais_format(weights: Path) -> None:
    vqvae = load_vqvae(str(weights / "vqvae.pth.tar"))
    assert vqvae.config.hop_length == 128 and vqvae.codebook.shape == (64, 16)
    prior = load_prior(str(weights / "prior_level_2.pth.tar"), heads=2, blocks=27, layers=2)
    legacy = load_prior(str(weights / "legacy_prior.pth.tar"), heads=2, blocks=27, layers=2)
    assert prior.config.attn_width == 48 and prior.config.mlp_width == 48
    assert prior.config.layers == 2 and prior.config.n_ctx == 1728
    first = "prior.transformer._attn_mods.0.attn.c_attn.w"
    assert prior.state_dict()[first].dtype == torch.float16  # as stored
    assert torch.equal(prior.state_dict()[first], legacy.state_dict()[first])
    assert "prior.transformer._attn_mods.2.ln_0.weight" not in prior.state_dict()  # not built


def test_bad_or_missing_weights_are_clear_errors(weights: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"Jukebox checkpoint not found: .*none\.pth\.tar"):
        load_vqvae(str(tmp_path / "none.pth.tar"))
    with pytest.raises(InputError, match="not a Jukebox top prior"):
        load_prior(str(weights / "vqvae.pth.tar"), heads=2, blocks=27, layers=2)
    with pytest.raises(InputError, match="not a Jukebox VQ-VAE"):
        load_vqvae(str(weights / "prior_level_2.pth.tar"))
    with pytest.raises(InputError, match=r"has 3 layers, jukebox\.layer is 66"):
        load_prior(str(weights / "prior_level_2.pth.tar"), heads=2, blocks=27, layers=66)
    (tmp_path / "junk.pth.tar").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a readable Jukebox checkpoint"):
        load_vqvae(str(tmp_path / "junk.pth.tar"))


def _music(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 22050)) / 22050
    beat = (np.mod(t, 0.5) < 0.05) * np.sin(2 * np.pi * 440 * t)
    return (0.5 * beat + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def test_features_have_the_frame_rate_and_consistent_chunk_boundaries(weights: Path) -> None:
    # one chunk per pass: batched convolutions differ in the last float bit, which can flip a
    # VQ code that sits on a near-tie (as on any device); this test compares exact values
    config = _config(weights, "jukebox.batch_chunks=1")
    jukebox = worker_jukebox(config.jukebox, str(weights / "vqvae.pth.tar"),
                             str(weights / "prior_level_2.pth.tar"))
    audio = _music(12.0)
    track = track_features(jukebox, audio, 22050, config.jukebox, 30)
    assert track.shape == (3 * 150, 4800)  # three 5-s chunks (the last padded), 30 fps
    assert np.isfinite(track).all() and track.std() > 0
    np.testing.assert_array_equal(track, track_features(jukebox, audio, 22050, config.jukebox,
                                                        30))  # deterministic
    # a chunk's features are those of its 5-s slice alone (EDGE extracts per slice) ...
    alone = track_features(jukebox, audio[5 * 22050:10 * 22050], 22050, config.jukebox, 30)
    np.testing.assert_array_equal(track[150:300], alone[:150])
    # ... so overlapping windows agree on every frame they share
    a = window_features(track, 2.5, 150, 30, "a")
    b = window_features(track, 5.0, 150, 30, "b")
    np.testing.assert_array_equal(a[75:], b[:75])
    with pytest.raises(InputError, match="cover 450 frames"):
        window_features(track, 11.0, 150, 30, "late")


def test_a_chunk_longer_than_the_context_is_refused(weights: Path) -> None:
    config = _config(weights, "jukebox.chunk_seconds=6.0")  # 2067 tokens > 1728
    jukebox = worker_jukebox(config.jukebox, str(weights / "vqvae.pth.tar"),
                             str(weights / "prior_level_2.pth.tar"))
    with pytest.raises(InputError, match="the prior's context is 1728"):
        track_features(jukebox, _music(6.0), 22050, config.jukebox, 30)


def _build(inputs: Path, out: Path, config: DancegenConfig):
    flow = build_dataset.with_options(task_runner=RayTaskRunner())
    return flow(inputs=str(inputs), out=str(out), config=config, return_state=True)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server", "ray_cluster")
def test_build_fills_the_jukebox_array_and_never_extracts_twice(
        fixtures_dir: Path, weights: Path, tmp_path: Path) -> None:
    config = _config(weights, "stages=[music, jukebox]", "music.backend=jukebox",
                     "edge.synthesis.music=null", "dataset.max_segments_per_sequence=2")
    out = tmp_path / "store.zarr"
    state = _build(fixtures_dir, out, config)
    assert state.is_completed(), state.message
    summary = state.result()
    dataset = DatasetStore(out, "v1")
    segments = dataset.segments()
    tracks = {s.music_sha256 for s in segments}
    assert summary["features_extracted"] == len(tracks) == 5 and summary["features_cached"] == 0
    features = dataset.read("music/jukebox", slice(0, len(segments)))
    assert features.shape == (len(segments), 150, 4800) and features.dtype == np.float16
    assert np.isfinite(features).all()
    # the segment starting at 5 s is the second chunk of its track's cached features
    i = next(k for k, s in enumerate(segments) if s.window == 1)
    cache = FeatureCache(out, "jukebox", cache_key(AistppInputs(str(fixtures_dir)), config))
    track = cache.get(segments[i].music_sha256)
    audio, rate = soundfile.read(fixtures_dir / segments[i].music_file, dtype="float32")
    assert track.shape == (150 * math.ceil(len(audio) / rate / 5), 4800)
    np.testing.assert_array_equal(features[i], track[150:300])

    again = _build(fixtures_dir, out, config).result()
    assert again["features_extracted"] == 0 and again["features_cached"] == 5
    assert again["shards_written"] == 0


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server", "ray_cluster")
def test_missing_weights_skip_the_stage_alone(fixtures_dir: Path, weights: Path,
                                              tmp_path: Path) -> None:
    moved = tmp_path / "weights"
    shutil.copytree(weights, moved)
    (moved / "prior_level_2.pth.tar").unlink()
    config = _config(moved, "stages=[motion, jukebox]", "edge.synthesis.music=null",
                     "dataset.max_segments_per_sequence=1")
    state = _build(fixtures_dir, tmp_path / "store.zarr", config)
    assert state.is_failed()
    reason = state.result(raise_on_failure=False)["failures"]["inputs/jukebox-shared"]
    assert "Jukebox checkpoint not found" in reason and "prior_level_2.pth.tar" in reason
    dataset = DatasetStore(tmp_path / "store.zarr", "v1")
    assert len(dataset.records("motion")) == len(dataset.shard_ranges())


def test_activations_are_float32_unless_float16_is_asked_for(weights: Path) -> None:
    """EDGE's checkpoint was trained on jukemirlib's float32 activations: the default, in the
    paper config too (on any device). float16 is an opt-in; its features differ a little (the
    cache key tells the two apart) and are not bit-equal to float32's."""
    assert load_config("configs/paper.yaml").jukebox.activation_dtype == "float32"
    config = _config(weights, "jukebox.batch_chunks=1")
    assert config.jukebox.activation_dtype == "float32"
    half = _config(weights, "jukebox.batch_chunks=1", "jukebox.activation_dtype=float16")
    urls = (str(weights / "vqvae.pth.tar"), str(weights / "prior_level_2.pth.tar"))
    audio = _music(5.0)
    full_jukebox, half_jukebox = worker_jukebox(config.jukebox, *urls), None
    assert full_jukebox.dtype == torch.float32
    full = track_features(full_jukebox, audio, 22050, config.jukebox, 30)
    half_jukebox = worker_jukebox(half.jukebox, *urls)
    assert half_jukebox.dtype == torch.float16
    reduced = track_features(half_jukebox, audio, 22050, half.jukebox, 30)
    difference = np.linalg.norm(reduced - full) / np.linalg.norm(full)
    assert 0 < difference < 0.01, difference
    inputs = AistppInputs("unused")
    assert cache_key(inputs, config) != cache_key(inputs, half)
    with pytest.raises(ConfigError, match="activation_dtype"):
        _config(weights, "jukebox.activation_dtype=bfloat16")
