"""EDGE's training data from an inputs root in the AIST++ layout, and its music conditioning.

As EDGE's ``data/create_dataset.py``: every train-split sequence is cut into 5-s windows at a
0.5-s stride, motion resampled to 30 fps (every 2nd AIST++ frame) and encoded to the 151-d
vector, music features computed on each window's own audio. Windows are the model's samples.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np
import torch

from dancegen.config import DancegenConfig
from dancegen.errors import InputError
from dancegen.models.edge import BASELINE_FEATURE_DIM, JUKEBOX_FEATURE_DIM
from dancegen.models.motion_repr import encode_edge151
from dancegen.storage.aistpp import AistppInputs, SequenceInputs
from dancegen.storage.feature_cache import FeatureCache
from dancegen.tasks.music_features import baseline_features, edge_start_bpm, feature_sample_rate
from dancegen.tasks.plan import window_starts
from dancegen.tasks.segment_inputs import audio_window, motion_window, resample_audio

FEATURE_DIMS = {"baseline": BASELINE_FEATURE_DIM, "jukebox": JUKEBOX_FEATURE_DIM}


@dataclass
class EdgeWindows:
    """Training windows: unnormalised 151-d motion and the music features of each window."""

    motion: torch.Tensor     # (N, S, 151) float32
    cond: torch.Tensor       # (N, S, F) float32
    names: list[str]         # "<sequence>@<start seconds>"
    smpl_scaling: float      # median AIST++ body scale of the sequences (for decoding samples)

    def to_bytes(self) -> bytes:
        """Serialise (a cache in the store: feature extraction is the slow part)."""
        buffer = io.BytesIO()
        torch.save({"motion": self.motion, "cond": self.cond, "names": self.names,
                    "smpl_scaling": self.smpl_scaling}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EdgeWindows:
        """Inverse of :meth:`to_bytes`."""
        content = torch.load(io.BytesIO(data), weights_only=True)
        return cls(content["motion"], content["cond"], list(content["names"]),
                   float(content["smpl_scaling"]))


def check_feature_backend(inputs: AistppInputs, config: DancegenConfig) -> None:
    """The configured features can be computed: Jukebox needs its two weight files."""
    if config.edge.features == "jukebox":
        from dancegen.tasks.jukebox_features import weights_of

        weights_of(inputs, config.jukebox)


def _jukebox_conditioning(audio: np.ndarray, rate: int, starts: list[float],
                          config: DancegenConfig, weights_root: AistppInputs, sha256: str,
                          cache: FeatureCache | None) -> np.ndarray:
    """Jukebox features (W, S, 4800) of the windows, cut from the track's on the chunk grid."""
    from dancegen.tasks.jukebox_features import cached_track_features

    data = config.dataset
    track = cached_track_features(audio, rate, config, weights_root, sha256, cache)
    needed = round(max(starts) * data.fps) + data.segment_frames
    if len(track) < needed:  # a covering window past the last chunk: zero features
        track = np.pad(track, ((0, needed - len(track)), (0, 0)))
    firsts = [round(start * data.fps) for start in starts]
    return np.stack([track[f:f + data.segment_frames] for f in firsts])


def music_conditioning(audio: np.ndarray, rate: int, starts: list[float], music_id: str,
                       config: DancegenConfig, weights_root: AistppInputs, sha256: str = "",
                       cache: FeatureCache | None = None) -> np.ndarray:
    """EDGE's music features (W, S, 35 or 4800) of the windows starting at ``starts``.

    ``weights_root`` is the inputs root that relative Jukebox weight paths are under; Jukebox
    features of the track (content hash ``sha256``) come from / go to ``cache``.
    """
    if config.edge.features == "jukebox":
        return _jukebox_conditioning(audio, rate, starts, config, weights_root, sha256, cache)
    data, music = config.dataset, config.music
    feature_rate = feature_sample_rate(data.fps, music.hop_length)
    audio = resample_audio(audio, rate, feature_rate)
    return np.stack([
        baseline_features(audio_window(audio, feature_rate, start, data.segment_seconds),
                          data.fps, data.segment_frames, music.hop_length,
                          start_bpm=edge_start_bpm(music_id), tightness=music.tightness)
        for start in starts
    ])


def sequence_windows(inputs: AistppInputs, sequence: SequenceInputs, config: DancegenConfig,
                     cache: FeatureCache | None = None,
                     ) -> tuple[np.ndarray, np.ndarray, list[float], float]:
    """(motion (W, S, 151), features (W, S, F), window starts, smpl_scaling) of one sequence."""
    if sequence.music_file is None:
        raise InputError(f"no music file for sequence {sequence.name}")
    data = config.dataset
    motion = inputs.load_motion(sequence.motion_file)
    audio, rate = inputs.load_audio(sequence.music_file)
    starts = window_starts(min(motion.seconds, len(audio) / rate), data.segment_seconds,
                           config.edge.train.window_stride_seconds, None)
    if not starts:
        width = FEATURE_DIMS[config.edge.features]
        return (np.zeros((0, data.segment_frames, 151), np.float32),
                np.zeros((0, data.segment_frames, width), np.float32), [], motion.scaling)
    windows = [motion_window(motion, start, data.segment_frames, data.fps) for start in starts]
    encoded = encode_edge151(np.stack([w.poses for w in windows]),
                             np.stack([w.trans for w in windows]), motion.scaling)
    sha = inputs.sha256(sequence.music_file) if config.edge.features == "jukebox" else ""
    features = music_conditioning(audio, rate, starts, sequence.music_id, config, inputs, sha,
                                  cache)
    return encoded.numpy(), features.astype(np.float32), starts, motion.scaling


def training_sequences(inputs: AistppInputs) -> list[SequenceInputs]:
    """The train split (EDGE trains on AIST++'s crossmodal train list minus the ignore list)."""
    return [s for s in inputs.sequences() if s.split == "train"]


def windows_key(inputs: AistppInputs, sequences: list[SequenceInputs],
                config: DancegenConfig) -> str:
    """What the windows depend on: input file contents and the settings that cut them."""
    files = sorted({f for s in sequences for f in (s.motion_file, s.music_file) if f})
    settings = {"dataset": config.dataset.model_dump(mode="json"),
                "music": config.music.model_dump(mode="json"),
                "features": config.edge.features,
                "stride": config.edge.train.window_stride_seconds,
                "jukebox": features_token(inputs, config)}
    blob = json.dumps([[f, inputs.sha256(f)] for f in files] + [settings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def features_token(inputs: AistppInputs, config: DancegenConfig) -> str:
    """The Jukebox weights and settings EDGE's conditioning depends on ("" for baseline)."""
    if config.edge.features != "jukebox":
        return ""
    from dancegen.tasks.jukebox_features import cache_key

    return cache_key(inputs, config)


def build_windows(inputs: AistppInputs, sequences: list[SequenceInputs],
                  config: DancegenConfig, cache: FeatureCache | None = None) -> EdgeWindows:
    """Every window of every sequence. A sequence that cannot be read is an InputError."""
    motions, conds, names, scalings = [], [], [], []
    for sequence in sequences:
        motion, cond, starts, scaling = sequence_windows(inputs, sequence, config, cache)
        motions.append(motion)
        conds.append(cond)
        names += [f"{sequence.name}@{start:g}" for start in starts]
        scalings.append(scaling)
    if not names:
        raise InputError("no training windows: the train split has no sequence of at least "
                         f"{config.dataset.segment_seconds} s")
    return EdgeWindows(torch.from_numpy(np.concatenate(motions)),
                       torch.from_numpy(np.concatenate(conds)), names,
                       float(np.median(scalings)))
