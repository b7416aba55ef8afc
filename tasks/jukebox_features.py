"""Jukebox features of whole tracks (EDGE's 4800-d conditioning), one Ray task per track.

As jukemirlib computes them for EDGE: audio at 44.1 kHz, peak-normalised, VQ-VAE level-2
codes (one per 128 samples), the top prior's residual stream after block ``jukebox.layer``,
FFT-resampled along time to the dataset fps. The track is cut on a fixed grid of
``jukebox.chunk_seconds`` chunks from its start (EDGE's 5-s slices), each chunk resampled,
normalised and encoded on its own, as its own context: every segment or EDGE window that
covers a moment gets the same features for it, however its window falls. Chunks are
batched; the last one is zero-padded. Results go to the store's feature cache by audio content
hash, so a track is never extracted twice.

The models are loaded once per worker process and kept (keyed on the files' change tokens).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.signal
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from dancegen.config import DancegenConfig, JukeboxSettings
from dancegen.errors import InputError
from dancegen.models.jukebox_prior import JukeboxTopPrior
from dancegen.models.jukebox_vqvae import JukeboxVQVAEEncoder
from dancegen.storage.aistpp import AistppInputs
from dancegen.storage.feature_cache import FeatureCache
from dancegen.storage.jukebox_checkpoint import load_prior, load_vqvae
from dancegen.storage.location import file_version
from dancegen.tasks.retries import retry_unless_deterministic
from dancegen.tasks.segment_inputs import resample_audio

JUKEBOX_SAMPLE_RATE = 44100
FEATURES_VERSION = 1  # bump when the features of the same audio and settings change


def resolve_weights(inputs: AistppInputs, location: str) -> str:
    """A weights location: as given when absolute or a URL, else under the inputs root."""
    if "://" in location or location.startswith("/"):
        return location
    return inputs.location.child(location).url


def weights_of(inputs: AistppInputs, settings: JukeboxSettings) -> tuple[str, str]:
    """(VQ-VAE, prior) checkpoint URLs; InputError naming the file when one is missing."""
    urls = (resolve_weights(inputs, settings.vqvae), resolve_weights(inputs, settings.prior))
    for url in urls:
        if file_version(url) is None:
            raise InputError(f"Jukebox checkpoint not found: {url} (set jukebox.vqvae / "
                             "jukebox.prior)")
    return urls


def cache_key(inputs: AistppInputs, config: DancegenConfig) -> str:
    """The feature-cache key of a build: weights (change tokens) and extraction settings."""
    vqvae_url, prior_url = weights_of(inputs, config.jukebox)
    parts = [file_version(vqvae_url), file_version(prior_url),
             config.jukebox.model_dump_json(exclude={"batch_chunks"}), config.dataset.fps,
             FEATURES_VERSION]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


@dataclass
class WorkerJukebox:
    """Loaded VQ-VAE encoder and top prior on the worker's device."""

    vqvae: JukeboxVQVAEEncoder
    prior: JukeboxTopPrior
    device: torch.device
    dtype: torch.dtype


def compute_dtype(settings: JukeboxSettings) -> torch.dtype:
    """The prior's activation dtype (``jukebox.activation_dtype``; float32 by default, as
    EDGE's features were computed)."""
    return getattr(torch, settings.activation_dtype)


@functools.lru_cache(maxsize=1)
def _jukebox(vqvae_url: str, prior_url: str, versions: tuple[str, str], layer: int, heads: int,
             blocks: int, dtype_name: str) -> WorkerJukebox:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vqvae = load_vqvae(vqvae_url).to(device).eval()
    prior = load_prior(prior_url, heads=heads, blocks=blocks, layers=layer).to(device).eval()
    return WorkerJukebox(vqvae, prior, device, getattr(torch, dtype_name))


def worker_jukebox(settings: JukeboxSettings, vqvae_url: str, prior_url: str) -> WorkerJukebox:
    """The process's Jukebox models (loaded once; again if a weights file changes)."""
    versions = (file_version(vqvae_url), file_version(prior_url))
    for url, version in zip((vqvae_url, prior_url), versions, strict=True):
        if version is None:
            raise InputError(f"Jukebox checkpoint not found: {url}")
    dtype = str(compute_dtype(settings)).removeprefix("torch.")
    return _jukebox(vqvae_url, prior_url, versions, settings.layer, settings.heads,
                    settings.blocks, dtype)


@torch.no_grad()
def chunk_features(jukebox: WorkerJukebox, chunks: np.ndarray, layer: int,
                   frames: int) -> np.ndarray:
    """(N, samples) chunks at 44.1 kHz -> (N, frames, width) float32 features."""
    peaks = np.abs(chunks).max(axis=1, keepdims=True)
    chunks = chunks / np.where(peaks > 0, peaks, 1.0)  # jukemirlib's peak normalisation
    audio = torch.from_numpy(chunks.astype(np.float32)).to(jukebox.device)
    # true float32 convolutions (no TF32 on Ampere+): the codes decide everything after
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        codes = jukebox.vqvae(audio)
    # activations in the configured dtype (LayerNorm and softmax stay float32, as Jukebox)
    hidden = jukebox.prior(codes, layer, dtype=jukebox.dtype).float().cpu().numpy()
    # jukemirlib: librosa.resample(res_type="fft"), i.e. scipy's FFT resample along time
    return scipy.signal.resample(hidden, frames, axis=1).astype(np.float32)


def track_features(jukebox: WorkerJukebox, audio: np.ndarray, rate: int,
                   settings: JukeboxSettings, fps: int) -> np.ndarray:
    """Features of a whole track on the fixed chunk grid: (chunks * chunk frames, width)."""
    # cut at the native rate, then resample each chunk on its own: a chunk is then exactly
    # what EDGE's slice files gave jukemirlib, whatever the rest of the track is
    native, chunk = round(settings.chunk_seconds * rate), round(
        settings.chunk_seconds * JUKEBOX_SAMPLE_RATE)
    count = max(1, math.ceil(len(audio) / native))
    chunks = np.zeros((count, chunk), np.float32)
    for i in range(count):
        resampled = resample_audio(audio[i * native:(i + 1) * native], rate, JUKEBOX_SAMPLE_RATE)
        chunks[i, : min(chunk, len(resampled))] = resampled[:chunk]
    tokens, context = chunk // jukebox.vqvae.config.hop_length, jukebox.prior.config.n_ctx
    if tokens > context:
        raise InputError(f"jukebox.chunk_seconds={settings.chunk_seconds} is {tokens} tokens; "
                         f"the prior's context is {context}")
    frames = round(settings.chunk_seconds * fps)
    parts = [chunk_features(jukebox, chunks[i:i + settings.batch_chunks], settings.layer, frames)
             for i in range(0, count, settings.batch_chunks)]
    return np.concatenate(parts).reshape(count * frames, -1)


def cached_track_features(audio: np.ndarray, rate: int, config: DancegenConfig,
                          weights_root: AistppInputs, sha256: str,
                          cache: FeatureCache | None) -> np.ndarray:
    """A track's features from the cache, or extracted (and cached): float16 values as float32.

    The build's feature phase, EDGE training and EDGE synthesis all go through here, so a track
    is extracted once whichever needs it first.
    """
    cached = cache.get(sha256) if cache is not None else None
    if cached is not None:
        return cached.astype(np.float32)
    jukebox = worker_jukebox(config.jukebox, *weights_of(weights_root, config.jukebox))
    stored = as_stored(track_features(jukebox, audio, rate, config.jukebox, config.dataset.fps))
    if cache is not None:
        cache.put(sha256, stored)
    return stored.astype(np.float32)


def as_stored(track: np.ndarray) -> np.ndarray:
    """Features as the cache and the data contract hold them: float16, all finite."""
    stored = track.astype(np.float16)
    if not np.isfinite(stored).all():  # float16 overflow would poison every later read
        raise RuntimeError("Jukebox features exceed float16's range, the stored dtype: the "
                           "weights or the audio are not what Jukebox expects")
    return stored


def store_cache(store: str, inputs: AistppInputs, config: DancegenConfig) -> FeatureCache:
    """The build's Jukebox feature cache in ``store`` for these weights and settings."""
    return FeatureCache(store, "jukebox", cache_key(inputs, config))


def window_features(track: np.ndarray, start_s: float, frames: int, fps: int,
                    where: str) -> np.ndarray:
    """The frames of one window, cut from a track's features."""
    first = round(start_s * fps)
    if first + frames > len(track):
        raise InputError(f"{where}: Jukebox features cover {len(track)} frames, the window "
                         f"needs frames {first}..{first + frames}")
    return track[first:first + frames]


@dataclass(frozen=True)
class FeatureUnit:
    """One track to extract (small; no arrays)."""

    inputs_url: str     # the root holding the music file
    music_file: str
    music_sha256: str
    vqvae_url: str
    prior_url: str
    cache_url: str

    @property
    def unit_id(self) -> str:
        """Name of the unit in logs and failure records."""
        return f"jukebox/{self.music_sha256[:12]}"


@dataclass(frozen=True)
class FeatureResult:
    """What travels back: sizes and timings."""

    unit_id: str
    music_seconds: float
    frames: int
    nbytes: int
    seconds: float


def extract_track_now(unit: FeatureUnit, config: DancegenConfig) -> FeatureResult:
    """Extract one track's features and put them in the cache."""
    started = time.perf_counter()
    inputs = AistppInputs(unit.inputs_url)
    audio, rate = inputs.load_audio(unit.music_file)
    jukebox = worker_jukebox(config.jukebox, unit.vqvae_url, unit.prior_url)
    stored = as_stored(track_features(jukebox, audio, rate, config.jukebox, config.dataset.fps))
    nbytes = FeatureCache.at(unit.cache_url).put(unit.music_sha256, stored)
    return FeatureResult(unit.unit_id, len(audio) / rate, len(stored), nbytes,
                         time.perf_counter() - started)


@task(name="extract-jukebox", task_run_name="jukebox-{unit.music_file}", cache_policy=NO_CACHE,
      persist_result=False, retry_condition_fn=retry_unless_deterministic)
def extract_track(unit: FeatureUnit, config: DancegenConfig) -> FeatureResult:
    """Prefect task (on a Ray worker, GPU at paper scale): one track's Jukebox features."""
    return extract_track_now(unit, config)
