"""Pseudo-motions: EDGE samples a dance for each new music track, written in the AIST++ layout.

One task per track (on a GPU worker at paper scale): decode the music, cut it into 5-s windows
at half-window stride, compute the music features, denoise all windows of the track as one
batch with EDGE's long-form sampling, stitch, and write ``motions/<sequence>.npz`` (AIST++
keys plus ``fps``, no pickle: reading it back runs no code whoever wrote it) and a copy of the
music into the pseudo-motion root. The track's record,
written last, makes it complete; its key covers the music bytes, the checkpoint and the
sampling settings, so a re-run resamples only new or changed tracks.

The EDGE model is loaded once per worker process and kept (keyed on the checkpoint file's
change token).
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import posixpath
import re
import time
from dataclasses import dataclass

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from dancegen.config import DancegenConfig
from dancegen.errors import InputError
from dancegen.models.edge import DanceDecoder
from dancegen.models.edge_diffusion import EdgeDiffusion
from dancegen.models.edge_normalizer import MinMaxNormalizer
from dancegen.models.motion_repr import (
    axis_angle_to_rotation_6d,
    decode_edge151,
    rotation_6d_to_axis_angle,
    stitch_windows,
)
from dancegen.storage.aistpp import AistppInputs
from dancegen.storage.audio import decode_audio
from dancegen.storage.edge_checkpoint import load_checkpoint
from dancegen.storage.feature_cache import FeatureCache
from dancegen.storage.location import StoreLocation, file_version
from dancegen.tasks.edge_data import FEATURE_DIMS, music_conditioning
from dancegen.tasks.retries import retry_unless_deterministic

SYNTHESIS_VERSION = 1           # bump when the output of a track changes for the same key
# (not bumped for .pkl -> .npz: the arrays are the same, and a store's older .pkl files are read
# with the restricted unpickler, so they stay valid until their track is synthesised again)


def pseudo_music_id(file_name: str, sha256: str) -> str:
    """AIST++-style music id of a new track: ``mX`` + its name's letters/digits + hash prefix.

    ``mX`` keeps it clear of AIST++ ids (whose genre decides EDGE's starting tempo).
    """
    stem = re.sub(r"[^A-Za-z0-9]", "", posixpath.splitext(posixpath.basename(file_name))[0])
    return f"mX{stem[:24]}{sha256[:6]}"


def pseudo_sequence(music_id: str) -> str:
    """AIST++-style sequence name of a pseudo-motion (genre ``gEDGE``, situation ``sPM``)."""
    return f"gEDGE_sPM_cAll_d00_{music_id}_ch00"


@dataclass(frozen=True)
class TrackUnit:
    """One track to synthesise (small; no arrays)."""

    inputs_url: str       # the build's inputs root (relative weight paths are under it)
    music_root: str
    music_file: str       # relative to music_root
    music_sha256: str
    pseudo_url: str
    checkpoint_url: str
    smpl_scaling: float | None      # from the config; None: the checkpoint's record, else...
    fallback_scaling: float | None  # ...the primary inputs' median body scale
    key: str
    jukebox_cache: str | None = None  # the store's Jukebox feature cache (Jukebox features)

    @property
    def music_id(self) -> str:
        """The track's AIST++-style music id."""
        return pseudo_music_id(self.music_file, self.music_sha256)

    @property
    def sequence(self) -> str:
        """The pseudo-motion's sequence name."""
        return pseudo_sequence(self.music_id)

    @property
    def unit_id(self) -> str:
        """Name of the unit in logs and failure records."""
        return f"synthesis/{self.music_id}"


@dataclass(frozen=True)
class TrackResult:
    """What travels back: counts and timings."""

    unit_id: str
    sequence: str
    music_seconds: float
    frames: int
    windows: int
    seconds: float


def track_key(music_sha256: str, checkpoint_token: str, scalings: tuple[float | None, ...],
              features: str, config: DancegenConfig) -> str:
    """Everything a pseudo-motion depends on (the content of the music, not its file name:
    two copies of a track get the same dance); ``features``: the Jukebox weights token."""
    parts = [music_sha256, checkpoint_token, repr(scalings), features, SYNTHESIS_VERSION,
             config.section_hash("dataset", "music"),
             config.edge.diffusion.model_dump_json(), config.edge.synthesis.seed]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass
class WorkerEdge:
    """A loaded EDGE model on the worker's device."""

    diffusion: EdgeDiffusion
    normalizer: MinMaxNormalizer
    smpl_scaling: float | None
    fps: int


@functools.lru_cache(maxsize=2)
def _edge(checkpoint_url: str, version: str, timesteps: int, guidance: float) -> WorkerEdge:
    checkpoint = load_checkpoint(checkpoint_url)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = DanceDecoder(checkpoint.model_config)
    try:
        model.load_state_dict(checkpoint.ema_state)  # EDGE samples with the EMA weights
    except RuntimeError as error:
        raise InputError(f"{checkpoint_url}: weights do not fit a DanceDecoder of "
                         f"{checkpoint.model_config} ({error})") from None
    diffusion = EdgeDiffusion(model, timesteps, guidance_weight=guidance).to(device).eval()
    scaling = checkpoint.dancegen.get("smpl_scaling")
    return WorkerEdge(diffusion, checkpoint.normalizer.to(device),
                      None if scaling is None else float(scaling),
                      int(checkpoint.dancegen.get("fps", 30)))


def worker_edge(checkpoint_url: str, config: DancegenConfig) -> WorkerEdge:
    """The process's EDGE model for this checkpoint (loaded once; again if the file changes)."""
    version = file_version(checkpoint_url)
    if version is None:
        raise InputError(f"EDGE checkpoint not found: {checkpoint_url}")
    diffusion = config.edge.diffusion
    return _edge(checkpoint_url, version, diffusion.timesteps, diffusion.guidance_weight)


def check_fits(edge: WorkerEdge, checkpoint_url: str, config: DancegenConfig) -> None:
    """The checkpoint must take the configured features and make windows of the dataset."""
    model = edge.diffusion.model.config
    features = config.edge.features
    expected = FEATURE_DIMS[features]
    if model.cond_feature_dim != expected:
        raise InputError(f"{checkpoint_url} is conditioned on {model.cond_feature_dim}-d music "
                         f"features, edge.features={features} gives {expected}-d")
    frames = config.dataset.segment_frames
    if model.seq_len != frames or edge.fps != config.dataset.fps:
        raise InputError(f"{checkpoint_url} makes {model.seq_len}-frame windows at {edge.fps} "
                         f"fps; the dataset has {frames} frames at {config.dataset.fps} fps")


def window_starts_covering(seconds: float, window: float) -> list[float]:
    """Half-overlapping window starts whose windows cover ``seconds`` (the last one padded)."""
    stride = window / 2
    count = 1 if seconds <= window else math.ceil((seconds - window) / stride - 1e-9) + 1
    return [round(i * stride, 6) for i in range(count)]


def sample_track(edge: WorkerEdge, cond: np.ndarray, scaling: float, steps: int, eta: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Long-form sample for (W, S, F) window features -> AIST++ poses (T, 72), trans (T, 3)."""
    device = edge.normalizer.scale.device
    generator = torch.Generator(device=device).manual_seed(seed)
    features = torch.from_numpy(cond).float().to(device)
    sample = edge.diffusion.sample_long(features, steps=steps, eta=eta, generator=generator)
    motion = edge.normalizer.unnormalize(sample).float().cpu()   # (W, S, 151)
    windows, length = motion.shape[0], motion.shape[1]
    rotations = rotation_6d_to_axis_angle(motion[..., 7:].reshape(windows, length, 24, 6))
    root, rotations = stitch_windows(motion[..., 4:7], rotations)
    stitched = torch.cat([torch.zeros(len(root), 4), root,
                          axis_angle_to_rotation_6d(rotations).reshape(len(root), -1)], dim=-1)
    poses, trans = decode_edge151(stitched, scaling)
    return poses.numpy().astype(np.float32), trans.numpy().astype(np.float32)


def motion_npz(poses: np.ndarray, trans: np.ndarray, scaling: float, fps: float,
               checkpoint: str) -> bytes:
    """A pseudo-motion file: AIST++'s keys (smpl_scaling always) plus fps and provenance, as
    an .npz of plain arrays that loads with ``allow_pickle=False``."""
    buffer = io.BytesIO()
    np.savez(buffer, smpl_poses=poses, smpl_trans=trans,
             smpl_scaling=np.array([scaling], np.float32), fps=np.array(fps, np.float64),
             generator=np.array("EDGE"), checkpoint=np.array(checkpoint), allow_pickle=False)
    return buffer.getvalue()


def _seed(base: int, music_sha256: str) -> int:
    return (base * 1_000_003 + int(music_sha256[:12], 16)) % (2**63)


def synthesize_track_now(unit: TrackUnit, config: DancegenConfig) -> TrackResult:
    """Sample, stitch and write one track's pseudo-motion, then its completion record."""
    started = time.perf_counter()
    music = StoreLocation.parse(unit.music_root)
    data = music.read_bytes(unit.music_file)
    if data is None:
        raise InputError(f"music file missing: {music.url}/{unit.music_file}")
    audio, rate = decode_audio(data, f"{music.url}/{unit.music_file}")
    seconds = len(audio) / rate
    edge = worker_edge(unit.checkpoint_url, config)
    check_fits(edge, unit.checkpoint_url, config)
    scaling = unit.smpl_scaling or edge.smpl_scaling or unit.fallback_scaling
    if scaling is None:
        raise InputError(f"{unit.checkpoint_url} does not record the training set's "
                         "smpl_scaling: set edge.synthesis.smpl_scaling")
    starts = window_starts_covering(seconds, config.dataset.segment_seconds)
    cache = FeatureCache.at(unit.jukebox_cache) if unit.jukebox_cache else None
    cond = music_conditioning(audio, rate, starts, unit.music_id, config,
                              AistppInputs(unit.inputs_url), unit.music_sha256, cache)
    diffusion = config.edge.diffusion
    poses, trans = sample_track(edge, cond, scaling, diffusion.sampling_steps, diffusion.eta,
                                _seed(config.edge.synthesis.seed, unit.music_sha256))
    frames = min(len(poses), round(seconds * config.dataset.fps))
    pseudo = StoreLocation.parse(unit.pseudo_url)
    suffix = posixpath.splitext(unit.music_file)[1].lower()
    music_key = f"music/{unit.music_id}{suffix}"
    motion_key = f"motions/{unit.sequence}.npz"
    pseudo.write_bytes(motion_key, motion_npz(poses[:frames], trans[:frames], scaling,
                                              config.dataset.fps, unit.checkpoint_url))
    pseudo.delete(f"motions/{unit.sequence}.pkl")  # an older version's pickle: one file each
    pseudo.write_bytes(music_key, data)
    pseudo.write_json(f"records/{unit.music_id}.json", {
        "key": unit.key, "sequence": unit.sequence, "source_file": unit.music_file,
        "music_file": music_key, "motion_file": motion_key, "music_seconds": seconds,
        "frames": frames,
        "windows": len(starts), "checkpoint": unit.checkpoint_url,
    })
    return TrackResult(unit.unit_id, unit.sequence, seconds, frames, len(starts),
                       time.perf_counter() - started)


@task(name="synthesize-track", task_run_name="synthesize-{unit.music_file}",
      cache_policy=NO_CACHE, persist_result=False,
      retry_condition_fn=retry_unless_deterministic)
def synthesize_track(unit: TrackUnit, config: DancegenConfig) -> TrackResult:
    """Prefect task (on a Ray worker): one track's pseudo-motion."""
    return synthesize_track_now(unit, config)
